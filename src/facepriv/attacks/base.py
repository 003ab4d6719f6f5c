"""The attack protocol: an attack is a registered component that runs in memory on a cell's data.

A cell of the protection x attack matrix is (recognition model, protection, attack). The runner
(or a user's own script) hands the attack an :class:`AttackData`: the clean templates of every
sample, the identity-disjoint attacker / victim rows, the protection (already configured, with
its secret if it has one), the recognition model and, for attacks on photos, the image folder.
The attack returns an :class:`AttackOutcome`: a headline number with its interval, further
metrics, small curves for plots, tables and the names of image files it wrote.

Writing a new attack::

    from facepriv.attacks.base import Attack, AttackData, AttackOutcome, headline
    from facepriv.registry import register

    @register("attack", "my_attack")          # or an entry point in group facepriv.attacks
    class MyAttack(Attack):
        '''One line shown by ``facepriv list attacks``.

        Parameters
        ----------
        k : int
            What k means (shown by ``facepriv describe my_attack``).
        seed : int
            Seeds every random choice of the attack.
        '''
        summary = "..."
        def __init__(self, k: int = 5, seed: int = 0) -> None:
            self.k = k
            self.seed = seed
        def run(self, data: AttackData) -> AttackOutcome:
            gallery = data.protect(data.clean.subset(data.attacker))
            ...
            return AttackOutcome(headline=headline("accuracy", acc, (lo, hi), "fraction"))

Constructor parameters are the whole configuration (defaults live there and nowhere else);
``validate_params`` raises :class:`~facepriv.errors.ParameterError` naming the parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from facepriv.base import Component
from facepriv.embeddings import EmbeddingSet
from facepriv.metrics.stats import wilson_interval


@dataclass
class AttackData:
    """What an attack gets: everything in memory, files only as optional working state.

    Attributes
    ----------
    clean : EmbeddingSet
        Unprotected templates of every sample with a detected face (ids = image paths relative
        to ``image_root`` when there are photos).
    attacker, victim : ndarray of int
        Row indices of ``clean``: the attacker's labelled database and the victims; the two sets
        share no identity.
    protection : TemplateProtection
        The protection of this cell, configured (its key, if any, set) but not fitted.
    model : RecognitionModel or None
        The system's recognition model (None when the data are an embeddings file).
    image_root : Path or None
        Folder of the photos (None when the data are an embeddings file).
    seed : int
        Seed of this cell, derived from the config and the cell's own identity only.
    work_dir : Path or None
        Folder for resume state (checkpoints) and result images; None = the attack keeps
        nothing on disk.
    aligned : callable(recipe) -> AlignedCrops, optional
        Aligned face crops of ``clean.ids`` for an alignment recipe (cached by the caller);
        default aligns the photos of ``image_root``.
    device : str
        Torch device of the attack's work (``"cpu"``, ``"cuda:0"``), already resolved by
        :func:`facepriv.device.resolve_device`; CPU results are the reference.
    """

    clean: EmbeddingSet
    attacker: np.ndarray
    victim: np.ndarray
    protection: Any
    model: Any = None
    image_root: Path | None = None
    seed: int = 0
    work_dir: Path | None = None
    aligned: Callable[[str], Any] | None = None
    device: str = "cpu"
    _fitted: bool = field(default=False, repr=False)

    @property
    def has_images(self) -> bool:
        """Whether the photos are available (attacks on images need them)."""
        return self.image_root is not None

    @property
    def protection_name(self) -> str:
        """Registered name of the protection."""
        return getattr(self.protection, "name", "") or type(self.protection).__name__

    def fitted_protection(self):
        """The protection, fitted once on the clean set (same key for every call)."""
        if not self._fitted:
            self.protection.fit(self.clean)
            self._fitted = True
        return self.protection

    def protect(self, es: EmbeddingSet) -> EmbeddingSet:
        """``es`` protected with this cell's protection (recorded in the set, secrets masked)."""
        prot = self.fitted_protection()
        out = protect_rows(prot, es.embeddings, es.identity)
        return es.with_embeddings(out, None if self.protection_name == "unprotected" else prot.record())

    def aligned_faces(self, recipe: str):
        """Aligned crops of every sample of ``clean`` for ``recipe`` (see :mod:`facepriv.pipeline`)."""
        if self.aligned is not None:
            return self.aligned(recipe)
        if self.image_root is None:
            from facepriv.errors import ParameterError

            raise ParameterError("this attack needs the photos; the data are an embeddings file")
        from facepriv.pipeline import align_images

        return align_images(self.image_root, self.clean.ids.tolist(), recipe)

    def work(self, name: str) -> Path | None:
        """A sub-folder of ``work_dir`` (created), or None without a work folder."""
        if self.work_dir is None:
            return None
        p = self.work_dir / name
        p.mkdir(parents=True, exist_ok=True)
        return p


def protect_rows(protection: Any, x: np.ndarray, identity: np.ndarray | None = None) -> np.ndarray:
    """``protection.transform(x)``, with the rows' subjects when it takes them (per-user keys)."""
    import inspect

    if identity is not None and "identity" in inspect.signature(protection.transform).parameters:
        return protection.transform(x, identity=identity)
    return protection.transform(x)


@dataclass
class AttackOutcome:
    """Result of one attack on one cell.

    Attributes
    ----------
    headline : dict
        ``{"metric", "value", "ci_low", "ci_high", "unit"}``: the number shown in the matrix.
    metrics : dict
        Further numbers (JSON numbers and short strings only).
    curves : dict of str -> dict
        Small series for plots, e.g. ``{"accuracy_vs_n": {"x": [...], "series": {...}}}``.
    images : list of str
        PNG files written into ``work_dir`` (names relative to it).
    status : str
        ``ok`` or ``not_applicable``.
    message : str
    tables : dict of str -> {"header": [...], "rows": [[...], ...]}
        Detail tables shown under the matrix.
    """

    headline: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, dict[str, Any]] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)
    status: str = "ok"
    message: str = ""
    tables: dict[str, dict[str, list]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"status": self.status, "message": self.message, "headline": self.headline,
                "metrics": self.metrics, "curves": self.curves, "images": self.images, "tables": self.tables}


def headline(metric: str, value: float, ci: tuple[float, float] | None = None, unit: str = "") -> dict[str, Any]:
    """A headline entry (``ci`` may be None when no interval applies)."""
    lo, hi = ci if ci is not None else (None, None)
    return {"metric": metric, "value": float(value), "ci_low": None if lo is None else float(lo),
            "ci_high": None if hi is None else float(hi), "unit": unit}


def accuracy_headline(correct: int, n: int, metric: str = "attack_accuracy") -> dict[str, Any]:
    """Accuracy with its 95 % Wilson interval."""
    return headline(metric, correct / n if n else float("nan"), wilson_interval(correct, n), "fraction")


class Attack(Component):
    """Base of every registered attack.

    Class attributes say where the attack applies; :meth:`run` does the work.

    Attributes
    ----------
    needs_images : bool
        The attack needs the photos (not applicable to an embeddings-file dataset).
    applies_to : tuple of str or None
        Protection kinds it attacks (``"template"``, ``"feature"``); None = every protection.
    only_protections : tuple of str or None
        Registered protection names it is limited to (e.g. a photo cloak is evaluated on the
        ``unprotected`` row, since the cloak is its own protection); None = no such limit.
    """

    needs_images: ClassVar[bool] = False
    applies_to: ClassVar[tuple[str, ...] | None] = ("template",)
    only_protections: ClassVar[tuple[str, ...] | None] = None

    def run(self, data: AttackData) -> AttackOutcome:
        """Attack one cell; must not depend on anything but ``data`` and the parameters."""
        raise NotImplementedError

    @classmethod
    def not_applicable(cls, protection: Any, has_images: bool) -> str | None:
        """None if the attack applies to this protection and data, else the reason it does not."""
        if cls.needs_images and not has_images:
            return "needs the photos; the dataset is an embeddings file"
        pname = getattr(protection, "name", "")
        if cls.only_protections is not None and pname not in cls.only_protections:
            return f"applies to {', '.join(cls.only_protections)} only"
        kind = getattr(protection, "kind", "template")
        if cls.applies_to is not None and kind not in cls.applies_to:
            return f"attacks {', '.join(cls.applies_to)} protections, not {kind} protections"
        return None
