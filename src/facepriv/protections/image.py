"""Image protections: cloaks a user puts on a photo before publishing it (kind ``"image"``).

An image protection changes the **photo**, not a stored template: the user runs it on their own
picture against a model they have (the *source*), publishes the result, and an invader later
detects, aligns and identifies the published file with its own model. The photo de-identification
attack (:class:`facepriv.attacks.deid.attack.DeidAttack`) evaluates any image protection: it
splits the photos into gallery and probes, gives the protection the source model's differentiable
pipeline (:class:`SourcePipeline`), stores the cloaked probes and identifies them with every
target model (PSR@k).

Writing your own photo cloak::

    from facepriv.protections.image import Cloaked, ImageProtection
    from facepriv.registry import register

    @register("protection", "my_cloak")       # or an entry point in group facepriv.protections
    class MyCloak(ImageProtection):
        '''One line shown by ``facepriv list protections``.

        Parameters
        ----------
        (the base parameters eps ... seed, documented in ImageProtection, then your own)
        '''
        def __init__(self, eps=(4, 8, 16, 32), alpha=1.0, jpeg_quality=95, max_side=400,
                     batch_size=8, seed=0, strength=1.0):
            super().__init__(eps, alpha, jpeg_quality, max_side, batch_size, seed)
            self.strength = strength

        def cloak(self, photos, matrices, labels, ids, source, eps):
            ...  # uint8 photos (N, H, W, 3) -> cloaked uint8 photos, |change| <= eps
            return Cloaked(photos=cloaked)

and evaluate it with ``facepriv run`` (attack ``deid``, ``method: my_cloak``) or ``facepriv deid run
--method my_cloak`` (or ``--method my_pkg.cloaks:MyCloak``). The attack checks the contract on
every batch: same shape, uint8, and no pixel moved by more than ``floor(eps)``.

The three built-in cloaks are the sign-gradient attacks of Ghafourian et al. (2023):
``bim_cloak`` (untargeted BIM), ``illc_cloak`` (iterative least-likely class) and ``push_cloak``
(open-set: push the embedding away from the enrolled template, with a seeded random start).
"""

from __future__ import annotations

import math
import numbers
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np

from facepriv.errors import ParameterError
from facepriv.protections.base import TemplateProtection
from facepriv.registry import available, create, get_class, register

#: short method names of the built-in cloaks (``method: bim`` in a config, ``--method bim``)
METHOD_ALIASES = {"bim": "bim_cloak", "illc": "illc_cloak", "push": "push_cloak"}


@dataclass
class SourcePipeline:
    """The source model's differentiable path from a 0..255 photo to identity logits.

    Attributes
    ----------
    net : torch.nn.Module
        Frozen recognition module: aligned [0, 1] RGB crops (N, 3, h, w) -> embeddings (N, D).
    head : torch.nn.Module
        Identification head: embeddings -> logits over the gallery identities (N, C).
    crop_hw : (int, int)
        The model's input size (the alignment recipe's crop size).
    templates : ndarray (C, D)
        Enrolled template of each head class (unit-norm mean gallery embedding).
    name : str
        The model's registered name.
    classes : list of str
        Identity of each head class (maps one member's class indices to another's).
    matrices : dict
        Photo->crop matrix of every probe (by image id) this model's detector found a face in;
        filled for the further members of an ensemble (the run's source gets them per batch).
    members : list of SourcePipeline
        Further source models of an ensemble cloak (empty for a single source).
    device : str
        Resolved torch device ``net`` and ``head`` are on (``"cpu"`` by default); the cloak moves
        its photos there.
    """

    net: Any
    head: Any
    crop_hw: tuple[int, int]
    templates: np.ndarray
    name: str = ""
    classes: list[str] = field(default_factory=list)
    matrices: dict[str, np.ndarray] = field(default_factory=dict)
    members: list[SourcePipeline] = field(default_factory=list)
    device: str = "cpu"

    def photo_model(self, matrices: np.ndarray, photo_hw: tuple[int, int], logits: bool = True,
                    crop_transform: Any = None):
        """``photos (N, 3, H, W) in 0..255 -> logits`` (or embeddings) through the alignment warp.

        ``matrices`` (N, 2, 3) are the photo->crop affine matrices of the source recipe's
        detector; only the warp (bilinear ``grid_sample``) is differentiated. ``crop_transform``
        (e.g. input diversity) is applied to the aligned crops.
        """
        import torch

        from facepriv.attacks.deid.cloak import PhotoClassifier, affine_grid_from_matrix

        grid = affine_grid_from_matrix(torch.as_tensor(np.asarray(matrices)), tuple(photo_hw), self.crop_hw)
        if self.device != "cpu":
            grid = grid.to(self.device)
        return PhotoClassifier(self.net, grid, self.head if logits else None, crop_transform)


@dataclass(frozen=True)
class Cloaked:
    """What :meth:`ImageProtection.cloak` returns for one batch.

    Attributes
    ----------
    photos : ndarray uint8 (N, H, W, 3)
        The cloaked photos, as they will be published.
    loss_before, loss_after : ndarray (N,), optional
        The cloak's own objective on the clean photo and on the result (reported as means).
    targets : ndarray of int (N,), optional
        Target class of a targeted cloak (ILLC), for the target hit rate.
    """

    photos: np.ndarray
    loss_before: np.ndarray | None = None
    loss_after: np.ndarray | None = None
    targets: np.ndarray | None = None


class ImageProtection(TemplateProtection):
    """Base of every photo cloak: the parameters every image protection shares.

    Parameters
    ----------
    eps : sequence of float
        L-inf perturbation budgets in pixel units on 0..255, one cloak per budget (the x-axis of
        the PSR-vs-eps curves). Default 4, 8, 16, 32: the paper's budgets up to 32 (64 and 128
        visibly damage the photo and need 68 / 132 iterations).
    alpha : float
        Step size per iteration in pixel units; iterations per budget are
        min(eps / alpha + 4, 1.25 eps / alpha) (Kurakin et al.).
    jpeg_quality : int or None
        The cloaked photo is published as JPEG at this quality (1..100); None stores it
        losslessly as PNG.
    max_side : int
        Working resolution: a photo whose longer side exceeds this many pixels is first
        downscaled (INTER_AREA); the cloak is computed and published at that size.
    batch_size : int
        Photos (of the same size) cloaked together.
    seed : int
        Seeds every random choice of the cloak (e.g. a random start), per photo.
    """

    kind: ClassVar[str] = "image"
    threat_model: ClassVar[str] = "keyless"

    def __init__(self, eps: Sequence[float] = (4, 8, 16, 32), alpha: float = 1.0, jpeg_quality: int | None = 95,
                 max_side: int = 400, batch_size: int = 8, seed: int = 0) -> None:
        self.eps = eps
        self.alpha = alpha
        self.jpeg_quality = jpeg_quality
        self.max_side = max_side
        self.batch_size = batch_size
        self.seed = seed

    # --- parameters -----------------------------------------------------------------------------
    def validate_params(self) -> None:
        """Raise ParameterError naming the parameter at fault."""
        eps = self.eps
        if isinstance(eps, (str, bytes)) or not isinstance(eps, Sequence) or len(eps) == 0:
            raise ParameterError(f"eps: give a list of one or more budgets, got {eps!r}", param="eps")
        for e in eps:
            if isinstance(e, bool) or not isinstance(e, numbers.Real) or not math.isfinite(e) or e <= 0:
                raise ParameterError(f"eps: every budget must be > 0 (pixel units on 0..255), got {e!r}", param="eps")
            if e > 255:
                raise ParameterError(f"eps: {e:g} exceeds the pixel range 0..255", param="eps")
        if len({float(e) for e in eps}) != len(eps):
            raise ParameterError(f"eps: budgets repeat ({', '.join(f'{e:g}' for e in eps)})", param="eps")
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, numbers.Real) or not math.isfinite(a) or a <= 0:
            raise ParameterError(f"alpha: must be > 0, got {a!r}", param="alpha")
        q = self.jpeg_quality
        if q is not None and (isinstance(q, bool) or not isinstance(q, numbers.Integral) or not 1 <= q <= 100):
            raise ParameterError(f"jpeg_quality: must be an integer in 1..100 (or None for PNG), got {q!r}",
                                 param="jpeg_quality")
        _int_at_least("max_side", self.max_side, 64)
        _int_at_least("batch_size", self.batch_size, 1)
        _int_at_least("seed", self.seed, 0)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Not applicable: an image protection changes photos, not templates."""
        raise ParameterError(f"{self.name or type(self).__name__}: an image protection protects photos, not "
                             "templates; evaluate it with the deid attack (method: <its name>)")

    # --- publishing -----------------------------------------------------------------------------
    @property
    def storage(self) -> str:
        """``"png"`` or ``"jpeg q<Q>"``."""
        return "png" if self.jpeg_quality is None else f"jpeg q{self.jpeg_quality}"

    def budgets(self) -> list[float]:
        """The budgets as floats, in the given order."""
        return [float(e) for e in self.eps]

    def iterations(self, eps: float) -> int:
        """Iterations for a budget: min(eps/alpha + 4, 1.25 eps/alpha), at least 1."""
        from facepriv.adversarial.core import kurakin_iterations

        return kurakin_iterations(eps, self.alpha)

    def working_photo(self, photo: np.ndarray) -> np.ndarray:
        """The photo at working resolution (longer side <= ``max_side``, INTER_AREA)."""
        from facepriv.attacks.deid.cloak import working_resolution

        return working_resolution(photo, int(self.max_side))

    def stored_name(self, image: str) -> str:
        """Relative path of a published photo: the image path with ``.jpg`` or ``.png``."""
        return stored_name(image, self.jpeg_quality)

    def save(self, photo: np.ndarray, path: Path) -> None:
        """Publish (write) a photo as JPEG at ``jpeg_quality`` or as PNG, atomically."""
        from facepriv.images import save_rgb

        save_rgb(photo, path, jpeg_quality=self.jpeg_quality or 95)

    def photo_seeds(self, ids: Sequence[str], eps: float) -> list[int]:
        """One seed per photo from (``seed``, the photo's id, eps): independent of batching."""
        return [int(np.random.SeedSequence([int(self.seed), zlib.crc32(str(i).encode("utf-8")),
                                            int(round(float(eps) * 1000))]).generate_state(1)[0]) for i in ids]

    # --- the cloak ------------------------------------------------------------------------------
    def cloak(self, photos: np.ndarray, matrices: np.ndarray, labels: np.ndarray, ids: Sequence[str],
              source: SourcePipeline, eps: float) -> Cloaked:
        """Cloak a batch of same-size photos at budget ``eps``.

        Parameters
        ----------
        photos : ndarray uint8 (N, H, W, 3)
            Clean photos at working resolution.
        matrices : ndarray (N, 2, 3)
            Photo->crop affine matrices of the source model's alignment recipe.
        labels : ndarray of int (N,)
            True class of each photo in ``source.head`` (and row of ``source.templates``).
        ids : sequence of str
            Image ids (paths relative to the dataset root), e.g. for per-photo seeds.
        source : SourcePipeline
            The source model's differentiable pipeline.
        eps : float
            L-inf budget in pixel units: no pixel may change by more than ``floor(eps)``.

        Returns
        -------
        Cloaked
        """
        raise NotImplementedError


def stored_name(image: str, jpeg_quality: int | None) -> str:
    """Relative path of a stored photo (original path with ``.jpg``, or ``.png`` when None)."""
    return PurePosixPath(image).with_suffix(".png" if jpeg_quality is None else ".jpg").as_posix()


def _int_at_least(name: str, v: Any, low: int) -> None:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
        raise ParameterError(f"{name}: must be an integer >= {low}, got {v!r}", param=name)


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
