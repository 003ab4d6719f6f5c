"""Photo de-identification with adversarial cloaks (Ghafourian et al. 2023) and its evaluation.

Modules: :mod:`~.protocol` (gallery/probe split), :mod:`~.heads` (closed-set identification
heads), :mod:`~.cloak` (BIM / ILLC / push on the full photo through the alignment warp),
:mod:`~.run` (cloak the probes: ``deid run``), :mod:`~.evaluate` (identify the stored cloaks with
every target model: ``deid eval``), :mod:`~.attack` (the registered ``deid`` attack), :mod:`~.plots`.
The cloaks themselves are image protections (:mod:`facepriv.protections.image`); PSR@k is
:func:`facepriv.metrics.privacy.psr_at_k`.
"""

from facepriv.attacks.deid.protocol import PAPER_KS, Split, split_gallery_probes

__all__ = ["PAPER_KS", "Split", "split_gallery_probes"]
