"""Score-only inversion: the attacker reads comparison scores and nothing else.

Modules: :mod:`.oracle` (the system side: it holds the stored templates and answers score
queries through :class:`~.oracle.ScoreOracle` objects that count them), :mod:`.estimate` (the
attacker side: a ridge regression from score vectors to embeddings, learned on the attacker's own
photos), :mod:`.attack` (the registered ``score_only`` attack). Nothing heavy is imported here.
"""
