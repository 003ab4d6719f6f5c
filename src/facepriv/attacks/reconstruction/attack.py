"""The registered ``reconstruction`` attack: a face decoder trained on (protected) templates (WIFS 2023).

The constructor parameters of :class:`ReconstructionAttack` are the one source of every parameter
of the reconstruction attack and its default: ``facepriv run`` (YAML), ``facepriv reconstruct
train|eval|grid`` (flags, and :class:`~facepriv.attacks.reconstruction.runfolder.TrainConfig`)
and ``facepriv describe reconstruction`` all read them from here. The defaults are CPU-sized
(64 px decoder, 5 epochs, 20 % of the identities held out); the paper's values are size 112,
100 epochs, test_fraction 0.1 (see docs/reconstruction.md).

This module imports nothing heavy; the work is in :mod:`.runs`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from facepriv.attacks.base import Attack, AttackData, AttackOutcome, headline
from facepriv.determinism import machine_threads, torch_threads
from facepriv.errors import InputFileError, ParameterError
from facepriv.registry import register

#: FMRs at which RSR / SRRA are reported (the headline is one of them)
FMRS = (0.001, 0.01, 0.1)
SEED_MAX = 2**32 - 1


def _int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ParameterError(f"{name}: must be an integer >= {low}, got {value!r}", param=name)


def _number(name: str, value: Any, positive: bool) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        raise ParameterError(f"{name}: must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}", param=name)


def check_train_params(*, size: Any, epochs: Any, batch_size: Any, lr: Any, step_size: Any, gamma: Any,
                       w_ssim: Any, w_id: Any, test_fraction: Any, seed: Any) -> None:
    """Validate the training parameters (shared by the attack and ``TrainConfig``).

    Raises
    ------
    ParameterError
        With ``param`` naming the parameter at fault.
    """
    from facepriv.attacks.reconstruction.decoder import STAGES  # torch: imported only when validating

    if isinstance(size, bool) or size not in STAGES:
        raise ParameterError(f"size: the decoder's output side must be one of {sorted(STAGES)}, got {size!r}",
                             param="size")
    _int("epochs", epochs, 1)
    _int("batch_size", batch_size, 2)  # BatchNorm needs two samples per batch
    _number("lr", lr, positive=True)
    _int("step_size", step_size, 1)
    _number("gamma", gamma, positive=True)
    _number("w_ssim", w_ssim, positive=False)
    _number("w_id", w_id, positive=False)
    ok = not isinstance(test_fraction, bool) and isinstance(test_fraction, (int, float)) and 0 < test_fraction < 1
    if not ok:
        raise ParameterError(f"test_fraction: must be a number strictly between 0 and 1, got {test_fraction!r}",
                             param="test_fraction")
    _int("seed", seed, 0)
    if seed > SEED_MAX:
        raise ParameterError(f"seed: must be at most {SEED_MAX}, got {seed}", param="seed")


@register("attack", "reconstruction")
class ReconstructionAttack(Attack):
    """Face reconstruction from templates: a decoder trained on the attacker's (protected) templates.

    The identities of the cell are split (seeded, identity-disjoint): the attacker trains the
    decoder of Shahreza et al. (ICIP 2022) from its templates, protected with the cell's
    protection as the system would protect them, to the aligned face crops they came from; the
    decoder then reconstructs the faces of the held-out identities from their protected templates.
    RSR = share of reconstructions that, re-embedded by the recognition model, are accepted
    against the original template at the threshold of an FMR; SRRA = the same against another
    photo of the person; plus SSIM / PSNR / MSE and gender from the reconstructions. Headline:
    RSR at ``headline_fmr``.

    Parameters
    ----------
    size : int
        Output side of the decoder in pixels: 64 (CPU-sized) or 112 (the paper).
    epochs : int
        Training epochs (the paper: 100).
    batch_size : int
        Training batch size (>= 2; the paper: 32).
    lr : float
        Adam learning rate (the paper: 1e-3).
    step_size : int
        StepLR period in epochs (the paper: 10).
    gamma : float
        StepLR factor (the paper: 0.5).
    w_ssim : float
        Weight of the (1 - SSIM) / 2 loss term (the paper: 0.1).
    w_id : float
        Weight of the identity loss, MSE of the embeddings through the frozen recognition model
        (the paper: 0.005, for ArcFace-scale embeddings; about 1.8 gives dlib templates the same
        weight, see docs/reconstruction.md).
    test_fraction : float
        Share of the identities held out from training (0 < f < 1; the paper: 0.1).
    max_train : int or None
        Train on at most this many images (a seeded subset, >= 2); None or 0 = every training image.
    max_test : int or None
        Evaluate on a seeded subset of this many held-out images (>= 2); None or 0 = all of them.
    transfer : sequence of str
        Further recognition models that re-embed the reconstructions, resized to their input
        without re-alignment (kept for comparison with earlier runs; prefer ``judges``); empty = none.
    gender : bool
        Also measure gender from the reconstructions (needs a ``gender`` column).
    headline_fmr : float
        FMR of the headline RSR: 0.001, 0.01 or 0.1.
    seed : int
        Seeds the identity split, the training subset, the decoder's initialisation and batch
        order, the enrolment pairing and the gender cross-validation folds (0 .. 2**32 - 1).
    loss_model : str or None
        Recognition model whose network gives the identity loss: None = the system's model (white
        box); another model = a black-box attacker with a proxy.
    judges : sequence of str
        Recognition models that judge the reconstructions like any photo (re-detected and
        re-aligned with their own recipe, compared with their template of the original photo):
        the success attack rate (SAR) per (template model, loss model, judge). A judge must be a
        model the decoder never saw; empty = none.
    white_box_judges : bool
        Allow a judge among the models the decoder saw (template or loss model).
    """

    summary = "Decoder that reconstructs face images from (protected) templates; RSR/SRRA/SSIM on unseen identities"
    reference = "Osorio-Roig et al., WIFS 2023; decoder of Otroshi Shahreza et al., ICIP 2022"
    needs_images = True

    def __init__(
        self,
        size: int = 64,
        epochs: int = 5,
        batch_size: int = 32,
        lr: float = 1e-3,
        step_size: int = 10,
        gamma: float = 0.5,
        w_ssim: float = 0.1,
        w_id: float = 0.005,
        test_fraction: float = 0.2,
        max_train: int | None = None,
        max_test: int | None = None,
        transfer: Sequence[str] = (),
        gender: bool = True,
        headline_fmr: float = 0.001,
        seed: int = 0,
        loss_model: str | None = None,
        judges: Sequence[str] = (),
        white_box_judges: bool = False,
    ) -> None:
        self.size = size
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.step_size = step_size
        self.gamma = gamma
        self.w_ssim = w_ssim
        self.w_id = w_id
        self.test_fraction = test_fraction
        self.max_train = max_train
        self.max_test = max_test
        self.transfer = transfer
        self.gender = gender
        self.headline_fmr = headline_fmr
        self.seed = seed
        self.loss_model = loss_model
        self.judges = judges
        self.white_box_judges = white_box_judges

    def validate_params(self) -> None:
        """Raise ParameterError naming the parameter at fault (no model is loaded)."""
        check_train_params(size=self.size, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           step_size=self.step_size, gamma=self.gamma, w_ssim=self.w_ssim, w_id=self.w_id,
                           test_fraction=self.test_fraction, seed=self.seed)
        for name in ("max_train", "max_test"):
            v = getattr(self, name)
            if v is not None and v != 0:
                _int(name, v, 2)
        if isinstance(self.transfer, str) or not isinstance(self.transfer, Sequence):
            raise ParameterError(f"transfer: give a list of recognition models (or none), got {self.transfer!r}",
                                 param="transfer")

        for name in ("transfer", "judges"):
            check_model_names(name, getattr(self, name))
        if self.loss_model is not None:
            check_model_name("loss_model", self.loss_model)
        if not isinstance(self.white_box_judges, bool):
            raise ParameterError(f"white_box_judges: must be true or false, got {self.white_box_judges!r}",
                                 param="white_box_judges")
        if self.loss_model is not None:
            from facepriv.attacks.reconstruction.judges import check_judges

            check_judges(list(self.judges), [self.loss_model], self.white_box_judges)
        if not isinstance(self.gender, bool):
            raise ParameterError(f"gender: must be true or false, got {self.gender!r}", param="gender")
        if isinstance(self.headline_fmr, bool) or self.headline_fmr not in FMRS:
            raise ParameterError(f"headline_fmr: must be one of {', '.join(f'{f:g}' for f in FMRS)}, "
                                 f"got {self.headline_fmr!r}", param="headline_fmr")

    def train_config(self):
        """The :class:`~facepriv.attacks.reconstruction.runfolder.TrainConfig` of these parameters."""
        from facepriv.attacks.reconstruction.runfolder import TrainConfig

        return TrainConfig(size=self.size, epochs=self.epochs, batch_size=self.batch_size, lr=float(self.lr),
                           step_size=self.step_size, gamma=float(self.gamma), w_ssim=float(self.w_ssim),
                           w_id=float(self.w_id), seed=self.seed, test_fraction=float(self.test_fraction))

    def run(self, data: AttackData) -> AttackOutcome:
        """Train on the cell's attacker side of the split, reconstruct the held-out faces (in memory).

        Checkpoints (resumed when the cell is run again) go to ``work_dir/decoder``, the
        evaluation files (``summary.json``, ``samples.png``, ``scores.csv``) to ``work_dir/eval``;
        without a ``work_dir`` nothing is written. Torch works with :func:`machine_threads`
        threads, whatever earlier work in the process left, so the numbers do not depend on which
        cells ran before.
        """
        with torch_threads(machine_threads()):
            return self._run(data)

    def _run(self, data: AttackData) -> AttackOutcome:
        from facepriv.attacks.reconstruction.data import check_embeddings, pair_crops
        from facepriv.attacks.reconstruction.runfolder import CONFIG
        from facepriv.attacks.reconstruction.runs import (
            evaluate_decoder_on,
            held_out,
            is_unprotected,
            train_decoder_on,
        )

        self.validate_params()
        model = data.model
        if model is None or (data.image_root is None and data.aligned is None):
            raise ParameterError("the reconstruction attack needs the photos; the data are an embeddings file")
        if model.card.embedding_dim != data.clean.dim:
            raise ParameterError(f"templates have dimension {data.clean.dim}, but model {model.name!r} makes "
                                 f"{model.card.embedding_dim}-d templates")
        try:
            check_embeddings(data.clean, "templates")
        except InputFileError as exc:
            raise ParameterError(f"the cell's templates: {exc.problem}") from None
        where = str(data.image_root or "images")
        paired = pair_crops(data.clean, data.aligned_faces(model.card.alignment), where)
        prot = data.fitted_protection()
        prot = None if is_unprotected(prot) else prot
        work = data.work_dir
        run = None if work is None else work / "decoder"
        from facepriv.attacks.reconstruction.judges import check_judges
        from facepriv.models.zoo import get_model

        touched = sorted({model.name, self.loss_model or model.name})
        check_judges(list(self.judges), touched, self.white_box_judges)
        loss_model = None if self.loss_model in (None, model.name) else get_model(self.loss_model)
        trained = train_decoder_on(paired, prot, self.train_config(), run, model, max_train=self.max_train or None,
                                   resume=run is not None and (run / CONFIG).is_file(), loss_model=loss_model,
                                   device=getattr(data, "device", "cpu"))
        test = held_out(paired, trained.train_identities, where)
        scenario = {"template_model": model.name, "loss_model": self.loss_model or model.name,
                    "models_touched": touched, "judges": list(self.judges)}
        summary = evaluate_decoder_on(
            trained.decoder, test, prot, model, transfer=tuple(self.transfer), gender=self.gender, seed=self.seed,
            max_test=self.max_test or None, out_dir=None if work is None else work / "eval", overwrite=True,
            head={"run": None if run is None else str(run), "train_config": trained.public_config(),
                  "scenario": scenario},
            judges=tuple(self.judges), originals_for=data.aligned_faces, device=getattr(data, "device", "cpu"),
        )
        return outcome(summary, float(self.headline_fmr), ["eval/samples.png"] if work is not None else [])


def check_model_names(param: str, value: Any) -> None:
    """Raise ParameterError (``param``) unless ``value`` is a list of registered recognition models."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ParameterError(f"{param}: give a list of recognition models (or none), got {value!r}", param=param)
    for name in value:
        check_model_name(param, name)


def check_model_name(param: str, name: Any) -> None:
    """Raise ParameterError (``param``) unless ``name`` is a registered recognition model."""
    from facepriv.registry import get_class

    if not isinstance(name, str) or not name:
        raise ParameterError(f"{param}: name recognition models, got {name!r}", param=param)
    try:
        get_class("model", name)
    except ParameterError as exc:
        raise ParameterError(f"{param}: {exc}", param=param) from None


def _scenario_table(s: dict[str, Any]) -> dict[str, Any] | None:
    """Success attack rate per (template model, loss model, judge): the system's own judgement first."""
    sc = s.get("scenario")
    if not sc:
        return None
    keys = sorted(s["rsr"], key=float)
    pct = [f"SAR @ FMR {100 * float(k):g} %" for k in keys]
    white = "white box" if s["model"] == sc["loss_model"] else "the system"
    rows = [[sc["template_model"], sc["loss_model"], f"{s['model']} ({white}; chip resized, not re-detected)",
             *[f"{100 * s['rsr'][k]:.1f}" for k in keys], "-"]]
    for name, j in s.get("judges", {}).items():
        rows.append([sc["template_model"], sc["loss_model"], name, *[f"{100 * j['sar'][k]:.1f}" for k in keys],
                     f"{100 * j['detected']:.1f}"])
    return {"header": ["template model", "loss model", "judge", *pct, "detected (%)"], "rows": rows}


def outcome(summary: dict[str, Any], headline_fmr: float, images: list[str]) -> AttackOutcome:
    """The attack's result from an evaluation summary (the numbers the report shows)."""
    from facepriv.attacks.reconstruction.evaluate import fmr_key

    s = summary
    key = fmr_key(headline_fmr)
    lo, hi = s["rsr_ci95"][key]
    m: dict[str, Any] = {"n_test_images": s["n_test_images"], "n_test_identities": s["n_test_identities"],
                         "ssim": s["ssim"], "psnr": s["psnr"], "mse": s["mse"],
                         "mean_score_reconstruction_vs_original": s["mean_score_reconstruction_vs_original"]}
    for k, v in s["rsr"].items():
        m[f"rsr_at_fmr_{k}"] = v
    for k, v in s["srra"].items():
        m[f"srra_at_fmr_{k}"] = v
    for name, t in s.get("transfer", {}).items():
        for k, v in t["rsr"].items():
            m[f"transfer_{name}_rsr_at_fmr_{k}"] = v
    for name, j in s.get("judges", {}).items():
        for k, v in j["sar"].items():
            m[f"judge_{name}_sar_at_fmr_{k}"] = v
        m[f"judge_{name}_detected"] = j["detected"]
    g = s.get("gender_accuracy")
    if isinstance(g, dict):
        m.update({f"gender_{k}": v for k, v in g.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    keys = sorted(s["rsr"], key=float)
    curves = {"rsr_vs_fmr": {"x": [100 * float(k) for k in keys], "xlabel": "FMR of the threshold (%)",
                             "ylabel": "RSR (%)", "log_x": True,
                             "series": {"RSR": [100 * s["rsr"][k] for k in keys],
                                        "SRRA": [100 * s["srra"][k] for k in keys]}}}
    table = _scenario_table(s)
    return AttackOutcome(headline=headline(f"rsr@fmr{key}", s["rsr"][key], (lo, hi), "fraction"), metrics=m,
                         curves=curves, images=images, tables={"scenarios": table} if table else {})
