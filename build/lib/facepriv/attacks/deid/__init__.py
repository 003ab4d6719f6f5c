"""Photo de-identification with BIM / ILLC adversarial cloaks (Ghafourian et al. 2023).

Modules: :mod:`~.protocol` (gallery/probe split, PSR@k), :mod:`~.heads` (closed-set
identification heads), :mod:`~.cloak` (cloaks on the full photo through the alignment warp),
:mod:`~.run` (``deid run``), :mod:`~.evaluate` (``deid eval``), :mod:`~.plots`.
"""

from facepriv.attacks.deid.protocol import PAPER_KS, Split, psr_at_k, split_gallery_probes

__all__ = ["PAPER_KS", "Split", "psr_at_k", "split_gallery_probes"]
