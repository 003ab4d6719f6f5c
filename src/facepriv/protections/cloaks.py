"""The built-in photo cloaks (sign-gradient attacks of Ghafourian et al. 2023) and the lookup of
an image protection by method name.

``bim_cloak`` (untargeted BIM), ``illc_cloak`` (iterative least-likely class) and ``push_cloak``
(open set: away from the enrolled template, seeded random start) all run the one L-inf
sign-gradient core (:mod:`facepriv.adversarial.core`) with its transfer-enhancing options.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from facepriv.errors import ParameterError
from facepriv.protections.image import METHOD_ALIASES, Cloaked, ImageProtection, SourcePipeline
from facepriv.registry import available, create, get_class, register

__all__ = ["BimCloak", "IllcCloak", "PushCloak", "SignGradientCloak", "build_image_protection",
           "image_protection_class"]


_TRANSFER_DOC = """
    momentum : float
        MI-FGSM decay mu (Dong et al. 2018): the step is sign(g) with g = mu g + grad / mean|grad|;
        0 = no momentum (the paper's plain BIM/ILLC step).
    diversity_prob : float
        DI-FGSM (Xie et al. 2019): probability that the source's aligned crop is shrunk by a
        random factor in [resize_rate, 1) and zero-padded back at a random offset before each
        gradient (seeded per photo); 0 = off.
    resize_rate : float
        Smallest DI shrink factor, in (0, 1).
    ti_kernel : int
        TI-FGSM (Dong et al. 2019): size in photo pixels of the Gaussian kernel (nsig 3) the
        gradient is convolved with before the sign; 0 = off (else odd, >= 3).
    vmi_samples : int
        VMI-FGSM (Wang & He 2021): neighbours per step whose mean gradient tunes the next one
        (radius 1.5 eps); 0 = off. Implies the momentum update.
    ensemble : list of str or None
        Further differentiable source models: the loss is the mean of the run's source model's
        and theirs, each through its own detector's alignment warp and its own head; None = the
        source alone.
    eot : list of str or None
        Expectation over transformation: the loss is averaged over these differentiable
        transforms of the photo (``jpeg:Q``, ``resize:F``, ``blur:S``; see
        facepriv.attacks.deid.postprocess) at every step; None = off.
"""


class SignGradientCloak(ImageProtection):
    """A cloak made by the L-inf sign-gradient core (:mod:`facepriv.adversarial.core`).

    Besides the common parameters it takes the transfer-enhancing options of the core (momentum,
    input diversity, translation-invariant gradients, variance tuning), an ensemble of source
    models and expectation over transformation; their defaults give the paper's plain method.
    """

    method: ClassVar[str] = ""
    reference = "Ghafourian et al., Toward face biometric de-identification using adversarial examples, 2023"
    _transfer_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, eps: Sequence[float] = (4, 8, 16, 32), alpha: float = 1.0, jpeg_quality: int | None = 95,
                 max_side: int = 400, batch_size: int = 8, seed: int = 0, momentum: float = 0.0,
                 diversity_prob: float = 0.0, resize_rate: float = 0.9, ti_kernel: int = 0, vmi_samples: int = 0,
                 ensemble: Sequence[str] | None = None, eot: Sequence[str] | None = None) -> None:
        super().__init__(eps, alpha, jpeg_quality, max_side, batch_size, seed)
        self.momentum = momentum
        self.diversity_prob = diversity_prob
        self.resize_rate = resize_rate
        self.ti_kernel = ti_kernel
        self.vmi_samples = vmi_samples
        self.ensemble = ensemble
        self.eot = eot

    def validate_params(self) -> None:
        """Raise ParameterError naming the parameter at fault (models are checked by name only)."""
        super().validate_params()
        from facepriv.attacks.deid.transfer_cloak import check_transfer_params

        check_transfer_params(self)

    def cloak(self, photos: np.ndarray, matrices: np.ndarray, labels: np.ndarray, ids: Sequence[str],
              source: SourcePipeline, eps: float) -> Cloaked:
        from facepriv.attacks.deid.cloak import cloak_photos

        return cloak_photos(photos, matrices, labels, source=source, method=self.method, eps=eps, alpha=float(self.alpha),
                            iterations=self.iterations(eps), seeds=self.photo_seeds(ids, eps), ids=list(ids),
                            transfer=self)


_COMMON_DOC = """
    eps : sequence of float
        L-inf budgets in pixel units on 0..255, one cloak per budget.
    alpha : float
        Step size in pixel units; iterations min(eps/alpha + 4, 1.25 eps/alpha).
    jpeg_quality : int or None
        Publish as JPEG at this quality; None = PNG.
    max_side : int
        Working resolution (longer photo side in pixels).
    batch_size : int
        Photos cloaked together.
    seed : int
        Seeds every random choice of the cloak (random start, DI, VMI) per photo."""


def _params_doc(cls: type) -> type:
    """Append the common and transfer parameter sections to a cloak's docstring (one text, three cloaks)."""
    cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n\n    Parameters\n    ----------" + _COMMON_DOC + _TRANSFER_DOC
    return cls


@register("protection", "bim_cloak")
@_params_doc
class BimCloak(SignGradientCloak):
    """BIM photo cloak: ascend the source head's cross-entropy of the true identity (untargeted).
    """

    method = "bim"
    summary = "BIM photo cloak (untargeted, true-identity cross-entropy ascent) on the source model"


@register("protection", "illc_cloak")
@_params_doc
class IllcCloak(SignGradientCloak):
    """ILLC photo cloak: descend the cross-entropy of the least-likely identity (targeted).
    """

    method = "illc"
    summary = "ILLC photo cloak (targeted at the least-likely identity) on the source model"


@register("protection", "push_cloak")
@_params_doc
class PushCloak(SignGradientCloak):
    """Open-set photo cloak: minimise the cosine similarity to the enrolled template.

    Starts from a seeded uniform point of the eps-ball (per photo, from ``seed``, the image id and
    eps): at a photo whose embedding equals its template the gradient is zero.
    """

    method = "push"
    summary = "Embedding-push photo cloak (open set: away from the enrolled template, random start)"


def image_protection_class(method: str) -> type[ImageProtection]:
    """The image-protection class of ``method`` (bim / illc / push, a registered name, or module:Class)."""
    if not isinstance(method, str) or not method:
        raise ParameterError(f"method: name an image protection (bim, illc, push, a registered image "
                             f"protection or package.module:Class), got {method!r}", param="method")
    name = METHOD_ALIASES.get(method, method)
    try:
        cls = get_class("protection", name)
    except ParameterError:
        images = sorted(METHOD_ALIASES) + sorted(n for n, c in available("protection").items()
                                                 if issubclass(c, ImageProtection))
        raise ParameterError(f"method: unknown image protection {method!r}; choose from {', '.join(images)} "
                             "(or a package.module:Class reference)", param="method") from None
    if not issubclass(cls, ImageProtection):
        raise ParameterError(f"method: {method!r} is a {getattr(cls, 'kind', 'template')} protection, not an image "
                             "protection (derive from facepriv.protections.image.ImageProtection)", param="method")
    return cls


def build_image_protection(method: str, params: dict[str, Any]) -> ImageProtection:
    """Build and validate the image protection ``method`` with ``params`` (its constructor's)."""
    name = METHOD_ALIASES.get(method, method)
    cls = image_protection_class(method)
    missing = sorted(set(ImageProtection.param_names()) - set(cls.param_names()))
    if missing:
        raise ParameterError(f"method: image protection {method!r} does not take the common parameter(s) "
                             f"{', '.join(missing)}; its constructor must accept them (see ImageProtection)",
                             param="method")
    return create("protection", name, params)  # type: ignore[return-value]
