"""The registered ``saliency`` attack: which pixels drive identity and gender, in originals and reconstructions.

A reconstruction decoder is trained on the attacker's (protected) templates as in the
``reconstruction`` attack; for a sample of held-out faces, integrated gradients
(:mod:`facepriv.metrics.saliency`) attribute two differentiable scores to the pixels of the
original crop and of its reconstruction:

* identity: cosine of the recognition network's embedding of the image with the stored template
  of the original photo (the reconstruction is resized to the network's input inside the scored
  function, so attributions are on its own pixels);
* gender: the logit of P(male) of a logistic-regression head on the (unit) embeddings, trained on
  the attacker's own photos. The CC0 gender classifier of :mod:`facepriv.models.gender_classifier`
  is an ONNX network behind dlib's landmark chipping, not differentiable end to end, so the head on
  the differentiable recognition network stands in for it.

This module imports nothing heavy at import time.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from facepriv.attacks.base import Attack, AttackData, AttackOutcome, headline
from facepriv.errors import ParameterError
from facepriv.registry import register

BASELINES = ("black", "blur")
FIGURE = "saliency.png"
#: side at which the maps of an original and its reconstruction are compared
COMPARE_SIDE = 64
TABLE_HEADER = ["sample", "gender", "identity score (reconstruction)", "P(male) original", "P(male) reconstruction",
                "identity map agreement", "gender map agreement", "identity completeness gap (relative)",
                "gender completeness gap (logit)"]


def _int(name: str, v: Any, low: int, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
        raise ParameterError(f"{name}: must be an integer >= {low}{' or null' if allow_none else ''}, got {v!r}",
                             param=name)


@register("attack", "saliency")
class SaliencyAttack(Attack):
    """Integrated-gradients maps of the identity score and the gender logit, originals vs reconstructions.

    Trains the ``reconstruction`` attack's decoder on the cell's (protected) templates (seeded
    identity-disjoint split), reconstructs a sample of held-out faces and attributes, by
    integrated gradients, (a) the cosine of the recognition network's embedding with the
    original's stored template and (b) the gender logit of a logistic-regression head on the
    embeddings (trained on the decoder's training identities, the attacker's data) to the pixels
    of each original and each reconstruction. Figure ``saliency.png`` (per face: image | identity
    saliency | gender saliency, for the original and the reconstruction). Headline: the mean
    agreement (cosine) of the identity maps of an original and its reconstruction, with a 95 %
    bootstrap interval over the sampled faces.

    Parameters
    ----------
    samples : int
        Held-out faces explained (>= 1), one per person.
    steps : int
        Trapezoid intervals of the integrated-gradients path integral (>= 1); the completeness
        gap falls as 1/steps^2.
    baseline : {"black", "blur"}
        Reference image of the path: all black, or the image blurred (Gaussian, sigma = side / 16).
    size : int
        Decoder output side: 64 (CPU-sized) or 112.
    epochs : int
        Decoder training epochs (>= 1).
    max_train : int or None
        Train the decoder on at most this many photos (>= 2); None = every training photo.
    w_id : float
        Weight of the decoder's identity loss (as the ``reconstruction`` attack's ``w_id``).
    seed : int
        Seeds the decoder split, training and the sample of faces (0 .. 2**32 - 1).
    """

    summary = "Integrated-gradients saliency of identity and gender, on originals and their reconstructions"
    reference = "Sundararajan et al., ICML 2017 (integrated gradients); decoder of Shahreza et al., ICIP 2022"
    needs_images = True
    applies_to = ("template",)

    def __init__(self, samples: int = 6, steps: int = 128, baseline: str = "black", size: int = 64, epochs: int = 3,
                 max_train: int | None = 800, w_id: float = 0.005, seed: int = 0) -> None:
        self.samples = samples
        self.steps = steps
        self.baseline = baseline
        self.size = size
        self.epochs = epochs
        self.max_train = max_train
        self.w_id = w_id
        self.seed = seed

    def _decoder_params(self) -> dict[str, Any]:
        return {"size": self.size, "epochs": self.epochs, "w_id": self.w_id, "seed": self.seed,
                "max_train": self.max_train, "gender": False}

    def validate_params(self) -> None:
        """Raise ParameterError naming the parameter at fault."""
        from facepriv.attacks.reconstruction.attack import ReconstructionAttack

        _int("samples", self.samples, 1)
        _int("steps", self.steps, 1)
        if self.baseline not in BASELINES:
            raise ParameterError(f"baseline: must be one of {', '.join(BASELINES)}, got {self.baseline!r}",
                                 param="baseline")
        _int("max_train", self.max_train, 2, allow_none=True)
        ReconstructionAttack(**self._decoder_params()).validate_params()

    def run(self, data: AttackData) -> AttackOutcome:
        """Train the decoder, explain the sampled originals and reconstructions, draw the figure."""
        from facepriv.determinism import machine_threads, torch_threads

        self.validate_params()
        model = data.model
        if model is None or (data.image_root is None and data.aligned is None):
            raise ParameterError("the saliency attack needs the photos and a recognition model")
        try:
            model.torch_module()
        except NotImplementedError:
            raise ParameterError(f"saliency needs a differentiable recognition model; {model.name} is not") from None
        with torch_threads(machine_threads()):
            return self._run(data)

    def _run(self, data: AttackData) -> AttackOutcome:
        from facepriv.attacks.reconstruction.attack import ReconstructionAttack
        from facepriv.attacks.reconstruction.data import pair_crops
        from facepriv.attacks.reconstruction.runs import (
            held_out,
            is_unprotected,
            protect_templates,
            train_decoder_on,
        )

        model = data.model
        where = str(data.image_root or "images")
        paired = pair_crops(data.clean, data.aligned_faces(model.card.alignment), where)
        prot = data.fitted_protection()
        prot = None if is_unprotected(prot) else prot
        rec = ReconstructionAttack(**self._decoder_params())
        trained = train_decoder_on(paired, prot, rec.train_config(), None, model, max_train=self.max_train)
        head = _gender_head(paired, trained.train_identities, self.seed)
        test = held_out(paired, trained.train_identities, where)
        rows = _sample(test.es.identity, int(self.samples), int(self.seed))
        sample = test.subset(rows)
        import torch

        with torch.no_grad():
            recon = trained.decoder(torch.from_numpy(np.ascontiguousarray(protect_templates(prot, sample.es),
                                                                          dtype=np.float32)))
        maps = explain(model, sample, recon, head, int(self.steps), self.baseline)
        return _outcome(maps, sample, data.work_dir, int(self.seed))


def _gender_head(paired, train_identities, seed: int):
    """Logistic regression P(male) on unit embeddings of the attacker's own (training) photos, or None."""
    from sklearn.linear_model import LogisticRegression

    g = paired.es.gender
    if g is None:
        return None
    mask = np.isin(paired.es.identity, sorted(train_identities)) & np.isin(g, ("female", "male"))
    if mask.sum() < 10 or len(np.unique(g[mask])) < 2:
        return None
    x = paired.es.embeddings[mask].astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    clf = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(x, (g[mask] == "male").astype(int))
    return clf.coef_[0].astype(np.float32), float(clf.intercept_[0])


def _sample(identity: np.ndarray, n: int, seed: int) -> np.ndarray:
    """First photo of ``n`` seeded held-out people (one face per person)."""
    ids, first = np.unique(identity, return_index=True)
    order = np.random.default_rng(seed).permutation(len(ids))[:n]
    return np.sort(first[order])


def explain(model, sample, recon, head, steps: int, baseline: str) -> list[dict[str, Any]]:
    """Integrated-gradients maps of identity and gender for each original and reconstruction."""
    import torch

    from facepriv.attacks.reconstruction.losses import resize_to
    from facepriv.attacks.reconstruction.trainer import to_tensor
    from facepriv.metrics.saliency import integrated_gradients

    net = model.torch_module()
    side = tuple(model.card.input_size)
    originals = to_tensor(sample.crops)
    out = []
    for i in range(len(sample)):
        t = torch.nn.functional.normalize(torch.from_numpy(sample.es.embeddings[i]).float(), dim=0)

        def ident(x: torch.Tensor, t: torch.Tensor = t) -> torch.Tensor:
            return torch.nn.functional.normalize(net(resize_to(x, side)), dim=1) @ t

        def gender(x: torch.Tensor) -> torch.Tensor:
            w, b = head
            return torch.nn.functional.normalize(net(resize_to(x, side)), dim=1) @ torch.from_numpy(w) + b

        entry: dict[str, Any] = {}
        for which, img in (("original", originals[i]), ("reconstruction", recon[i])):
            ref = _baseline(img, baseline)
            entry[which] = {"image": img.numpy(), "identity": integrated_gradients(ident, img, ref, steps)}
            if head is not None:
                entry[which]["gender"] = integrated_gradients(gender, img, ref, steps)
        out.append(entry)
    return out


def _baseline(img, kind: str):
    import torch

    if kind == "black":
        return torch.zeros_like(img)
    from kornia.filters import gaussian_blur2d

    sigma = img.shape[-1] / 16.0
    k = 2 * int(3 * sigma) + 1
    return gaussian_blur2d(img[None], (k, k), (sigma, sigma), border_type="reflect")[0]


def _outcome(maps: list[dict[str, Any]], sample, work_dir, seed: int) -> AttackOutcome:
    from facepriv.metrics.saliency import map_agreement, pixel_map, resize_map

    rows, id_agree, gaps, g_gaps, same_gender = [], [], [], [], []
    for i, m in enumerate(maps):
        o, r = m["original"], m["reconstruction"]
        a_id = map_agreement(resize_map(pixel_map(o["identity"].attributions), COMPARE_SIDE),
                             resize_map(pixel_map(r["identity"].attributions), COMPARE_SIDE))
        id_agree.append(a_id)
        # identity paths change the cosine by 0.1-0.3: a relative gap reads well; a gender logit may hardly
        # change between image and baseline, so its gap is given in logit units
        gap = max(abs(x.gap) / max(abs(x.f_input - x.f_baseline), 1e-12) for x in (o["identity"], r["identity"]))
        gaps.append(gap)
        p_o = p_r = a_g = g_gap = None
        if "gender" in o:
            g_gap = max(abs(o["gender"].gap), abs(r["gender"].gap))
            g_gaps.append(g_gap)
            p_o, p_r = _sigmoid(o["gender"].f_input), _sigmoid(r["gender"].f_input)
            same_gender.append((p_o >= 0.5) == (p_r >= 0.5))
            a_g = map_agreement(resize_map(o["gender"].attributions.sum(0), COMPARE_SIDE).clip(0),
                                resize_map(r["gender"].attributions.sum(0), COMPARE_SIDE).clip(0))
        g = sample.es.gender[i] if sample.es.gender is not None else ""
        rows.append([i, str(g), round(r["identity"].f_input, 4), _r(p_o), _r(p_r), round(a_id, 3), _r(a_g),
                     round(gap, 4), None if g_gap is None else round(g_gap, 4)])
    agree = np.asarray(id_agree)
    lo, hi = _bootstrap_mean(agree, seed)
    metrics: dict[str, Any] = {
        "n_samples": len(maps), "identity_map_agreement": float(agree.mean()),
        "identity_score_reconstruction_mean": float(np.mean([m["reconstruction"]["identity"].f_input for m in maps])),
        "completeness_gap_identity_max_relative": float(max(gaps)),
    }
    if g_gaps:
        metrics["completeness_gap_gender_max_logit"] = float(max(g_gaps))
    if same_gender:
        metrics["gender_prediction_kept"] = float(np.mean(same_gender))
    images: list[str] = []
    if work_dir is not None:
        from facepriv.attacks.reconstruction.viz import save_png

        save_png(figure(maps), work_dir / FIGURE)
        images = [FIGURE]
    return AttackOutcome(headline=headline("identity saliency agreement (original vs reconstruction)",
                                           float(agree.mean()), (lo, hi), "cosine"),
                         metrics=metrics, images=images,
                         tables={"saliency per face": {"header": TABLE_HEADER, "rows": rows}})


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 3)


def _sigmoid(z: float) -> float:
    return float(1.0 / (1.0 + np.exp(-z)))


def _bootstrap_mean(x: np.ndarray, seed: int, n_boot: int = 2000) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean (seeded)."""
    if len(x) < 2:
        return float(x.mean()), float(x.mean())
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def _heat(image: np.ndarray, sal: np.ndarray, signed: bool, cell: int) -> np.ndarray:
    """A saliency map over the grey image: |attribution| in 'inferno', or signed in 'bwr' (red = male)."""
    from matplotlib import colormaps

    from facepriv.metrics.saliency import resize_map

    grey = image.mean(0)
    grey = resize_map(grey, cell)
    m = resize_map(sal, cell)
    scale = np.quantile(np.abs(m), 0.99) or 1.0
    if signed:
        rgb = colormaps["bwr"](np.clip(0.5 + 0.5 * m / scale, 0, 1))[..., :3]
    else:
        rgb = colormaps["inferno"](np.clip(m / scale, 0, 1))[..., :3]
    return (255 * (0.35 * grey[..., None] + 0.65 * rgb)).clip(0, 255).astype(np.uint8)


def figure(maps: list[dict[str, Any]], cell: int = 112) -> np.ndarray:
    """Rows = faces; columns = original | identity | gender | reconstruction | identity | gender."""
    from facepriv.attacks.reconstruction.viz import column_grid
    from facepriv.metrics.saliency import pixel_map

    cols: list[list[np.ndarray]] = [[] for _ in range(6)]
    titles = ["original", "identity IG", "gender IG", "reconstruction", "identity IG", "gender IG"]
    for m in maps:
        for j, which in enumerate(("original", "reconstruction")):
            e = m[which]
            img = e["image"]
            cols[3 * j].append((255 * np.transpose(img, (1, 2, 0))).round().clip(0, 255).astype(np.uint8))
            cols[3 * j + 1].append(_heat(img, pixel_map(e["identity"].attributions), False, cell))
            g = e.get("gender")
            cols[3 * j + 2].append(_heat(img, g.attributions.sum(0), True, cell) if g is not None
                                   else np.full((cell, cell, 3), 255, np.uint8))
    return column_grid([np.stack(c) for c in cols], titles=titles, cell=cell)
