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
(open-set: push the embedding away from the enrolled template, with a seeded random start), in
:mod:`facepriv.protections.cloaks`.
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
