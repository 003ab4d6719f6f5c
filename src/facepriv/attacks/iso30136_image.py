"""Image-level irreversibility under key disclosure (ISO/IEC 30136): inverted templates -> faces.

The template-level ``irreversibility`` attack (:mod:`facepriv.attacks.iso30136`) asks whether a
template inverted with the disclosed key matches the original template. This attack goes one step
further, to a face image that any camera-facing system would accept:

1. **decoder** -- the attacker trains the reconstruction decoder of the ``reconstruction`` attack
   (Otroshi Shahreza et al., ICIP 2022; :func:`facepriv.attacks.reconstruction.runs.train_decoder_on`)
   on its own **unprotected** templates (``data.attacker`` rows) and their aligned crops, in memory;
2. **inversion** -- each victim's protected template (cell key) is inverted with the disclosed
   key by ``protection.invert(protected, attacker_templates, identity)``;
3. **decoding** -- the inverted templates are decoded to face images;
4. **judging** -- the system's model judges the images like any photo (placed on a canvas,
   re-detected and re-aligned with its own recipe, re-embedded:
   :func:`facepriv.attacks.reconstruction.judges.judge`) against its template of the victim's
   original photo. Success rate at FMR 0.1 / 1 / 10 % (thresholds on the impostor scores of the
   victims' originals); an image the detector misses counts as a failure.

The reference row decodes the victims' **unprotected** templates with the same decoder: the
success an attacker holding the clean templates would get, the ceiling of step 2.

CPU-sized defaults: 64 px decoder, 5 epochs, batch 32, identity-loss weight 1.8 (dlib scale;
~0.005 for ArcFace-scale embeddings, see docs/reconstruction.md), every victim. A dlib cell of 50
attacker / 50 victim identities (~1,000 photos) takes a few minutes on one core.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from facepriv.attacks.base import Attack, AttackData, AttackOutcome, headline, protect_rows
from facepriv.attacks.iso30136 import no_inversion
from facepriv.determinism import machine_threads, torch_threads
from facepriv.errors import ParameterError
from facepriv.registry import register

__all__ = ["ImageIrreversibility"]

#: operating points of the success rates (the headline is FMR 1 %)
FMRS = (0.001, 0.01, 0.1)
_STREAM = 301361  # separates this attack's draws from other uses of the cell seed


def _pos_int(name: str, v: Any, lo: int = 1) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ParameterError(f"{name} must be an integer >= {lo}, got {v!r}", param=name)


@register("attack", "irreversibility_image")
class ImageIrreversibility(Attack):
    """Image-level irreversibility with the key disclosed: invert, decode to faces, re-embed, match.

    The attacker trains a reconstruction decoder on its own unprotected templates and crops, inverts
    each victim's protected template with the disclosed key (``protection.invert``), decodes it to a
    face and presents the face to the system's model (re-detected and re-aligned). Headline: success
    rate at the FMR 1 % threshold of the victims' original templates; also FMR 0.1 % / 10 % and the
    reference of decoding the unprotected templates. CPU-sized defaults (64 px, 5 epochs).

    Parameters
    ----------
    size : int
        Decoder output side in pixels: 64 (CPU-sized) or 112.
    epochs : int
        Decoder training epochs.
    batch_size : int
        Training batch size (>= 2).
    w_id : float
        Weight of the identity loss (1.8 suits dlib's 128-d templates; ~0.005 ArcFace-scale ones).
    max_train : int or None
        Train on at most this many attacker photos (seeded subset); None = all.
    max_templates : int or None
        Invert, decode and judge at most this many victim photos (seeded subset); None = all.
    """

    summary = ("ISO/IEC 30136 irreversibility at image level: key-disclosure inversion, decoded to faces by a "
               "reconstruction decoder, re-embedded by the system's model; success rate at FMR 0.1/1/10 %.")
    reference = ("ISO/IEC 30136:2018; Hahn & Marcel, IEEE TBIOM 2022; decoder of Otroshi Shahreza et al., ICIP 2022")
    applies_to: ClassVar[tuple[str, ...] | None] = ("template",)
    needs_images = True

    def __init__(self, size: int = 64, epochs: int = 5, batch_size: int = 32, w_id: float = 1.8,
                 max_train: int | None = None, max_templates: int | None = None) -> None:
        self.size = size
        self.epochs = epochs
        self.batch_size = batch_size
        self.w_id = w_id
        self.max_train = max_train
        self.max_templates = max_templates

    def validate_params(self) -> None:
        from facepriv.attacks.reconstruction.attack import check_train_params

        check_train_params(size=self.size, epochs=self.epochs, batch_size=self.batch_size, lr=1e-3, step_size=10,
                           gamma=0.5, w_ssim=0.1, w_id=self.w_id, test_fraction=0.1, seed=0)
        if self.max_train is not None:
            _pos_int("max_train", self.max_train, 2)
        if self.max_templates is not None:
            _pos_int("max_templates", self.max_templates, 2)

    @classmethod
    def not_applicable(cls, protection: Any, has_images: bool) -> str | None:
        return super().not_applicable(protection, has_images) or no_inversion(protection)

    def run(self, data: AttackData) -> AttackOutcome:
        """Train, invert, decode and judge in memory; nothing is written (no key, no decoder)."""
        self.validate_params()
        why = self.not_applicable(data.protection, data.has_images)
        if why:
            return AttackOutcome(status="not_applicable", message=why)
        with torch_threads(machine_threads()):
            return self._run(data)

    def _run(self, data: AttackData) -> AttackOutcome:
        from facepriv.attacks.reconstruction.attack import ReconstructionAttack
        from facepriv.attacks.reconstruction.data import pair_crops
        from facepriv.attacks.reconstruction.judges import judge
        from facepriv.attacks.reconstruction.runs import train_decoder_on
        from facepriv.attacks.reconstruction.trainer import reconstruct

        model = data.model
        if model is None or (data.image_root is None and data.aligned is None):
            raise ParameterError("irreversibility_image needs the photos; the data are an embeddings file")
        prot = data.fitted_protection()
        where = str(data.image_root or "images")
        paired = pair_crops(data.clean, data.aligned_faces(model.card.alignment), where)
        have = set(paired.es.ids.tolist())
        att_ids = set(data.clean.ids[data.attacker].tolist())
        att_rows = np.flatnonzero([i in att_ids for i in paired.es.ids])
        if np.unique(paired.es.identity[att_rows]).size < 2:
            raise ParameterError("the attacker's side holds photos of fewer than 2 identities: no decoder to train")
        cfg = ReconstructionAttack(size=self.size, epochs=self.epochs, batch_size=self.batch_size, w_id=self.w_id,
                                   test_fraction=0.1, seed=int(data.seed) % 2**32).train_config()
        # the attacker's decoder: its own unprotected templates -> its own crops (in memory)
        trained = train_decoder_on(paired.subset(att_rows), None, cfg, None, model, max_train=self.max_train,
                                   device=getattr(data, "device", "cpu"))
        vic = data.clean.subset(data.victim)
        vic = vic.subset(np.flatnonzero([i in have for i in vic.ids]))
        if self.max_templates is not None and len(vic) > self.max_templates:
            rng = np.random.default_rng(np.random.SeedSequence([int(data.seed), _STREAM]))
            vic = vic.subset(np.sort(rng.choice(len(vic), size=int(self.max_templates), replace=False)))
        if np.unique(vic.identity).size < 2:
            raise ParameterError("the victims hold fewer than 2 identities with photos: no impostor thresholds")
        att = data.clean.subset(data.attacker)
        est = np.asarray(prot.invert(protect_rows(prot, vic.embeddings, vic.identity), att.embeddings,
                                     identity=vic.identity), dtype=np.float32)
        if est.shape != vic.embeddings.shape or not np.isfinite(est).all():
            raise ParameterError(f"{data.protection_name}.invert returned shape {est.shape} (want "
                                 f"{vic.embeddings.shape}, finite)")
        ids = [str(i) for i in vic.ids]
        res = {}
        for name, templates in (("inverted", est), ("unprotected_reference", vic.embeddings)):
            images = reconstruct(trained.decoder, np.asarray(templates, dtype=np.float32))
            res[name] = judge(model.name, images, ids, vic.identity, data.aligned_faces, FMRS)
        sar = res["inverted"]["sar"]
        ci = res["inverted"]["sar_ci95"]
        key = _fmr_key(sar, 0.01)
        rows = [[f"{100 * f:g} %", float(_at(res["inverted"]["sar"], f)),
                 float(_at(res["unprotected_reference"]["sar"], f))] for f in FMRS]
        return AttackOutcome(
            headline=headline("image_inversion_success_at_fmr1", float(sar[key]), tuple(ci[key]), "fraction"),
            metrics={
                "image_inversion_success": {repr(f): float(_at(sar, f)) for f in FMRS},
                "image_inversion_success_ci95": {repr(f): list(_at(ci, f)) for f in FMRS},
                "unprotected_reference_success": {repr(f): float(_at(res["unprotected_reference"]["sar"], f))
                                                  for f in FMRS},
                "detected": res["inverted"]["detected"],
                "detected_reference": res["unprotected_reference"]["detected"],
                "n_victims": res["inverted"]["n"],
                "decoder": trained.public_config(),
                "protocol": res["inverted"]["protocol"],
            },
            tables={"image_inversion_success": {
                "header": ["FMR", "inverted templates -> images", "unprotected templates -> images"],
                "rows": rows}},
        )


def _fmr_key(d: dict, fmr: float) -> Any:
    """The key of ``d`` that stands for ``fmr`` (judges key their results by the FMR value)."""
    for k in d:
        if abs(float(k) - fmr) < 1e-12:
            return k
    raise KeyError(fmr)


def _at(d: dict, fmr: float) -> Any:
    return d[_fmr_key(d, fmr)]
