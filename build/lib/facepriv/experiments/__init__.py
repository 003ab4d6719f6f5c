"""Experiments: one YAML config -> the protection x attack matrix -> metrics.json + report.

Modules: :mod:`.config` (YAML -> validated dataclasses), :mod:`.sources` (dataset listing, subset,
cached embeddings; registers the ``five_celebrities`` and ``embeddings`` datasets), :mod:`.cells`
(cell interface, attack adapters registry), :mod:`.adapters` (one adapter per attack, calling the
attack libraries), :mod:`.runner` (resumable, atomic, deterministic execution), :mod:`.report` and
:mod:`.report_html` (Markdown / self-contained HTML), :mod:`.demo`, :mod:`.fetch` (dataset
downloads), :mod:`.envinfo` (``env.json``).
"""
