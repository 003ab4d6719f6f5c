"""The adapters: each calls one attack's (or the verification metrics') public library functions.

Utility of a protection (:func:`utility_cell`): verification on the protected templates with the
protection's comparator: EER with its FVC2000 interval, FNMR at FMR 1 %, and 10-fold accuracy on
an identity-disjoint generated pairs protocol (fewer folds when the set has < 20 identities).
"""

from __future__ import annotations

import logging

import numpy as np

from facepriv.experiments.cells import AttackAdapter, CellContext, CellResult, add_attack, headline
from facepriv.metrics.stats import wilson_interval

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- utility
def utility_cell(ctx: CellContext, metrics: tuple[str, ...]) -> tuple[CellResult, dict[str, np.ndarray]]:
    """Verification metrics of the protected templates of every sample.

    Returns
    -------
    (CellResult, scores)
        ``scores`` holds the ``genuine`` and ``impostor`` arrays (saved for the DET plot).
    """
    from facepriv.metrics.kfold import kfold_accuracy
    from facepriv.metrics.protocol import make_pairs
    from facepriv.metrics.verification import scores_all_pairs, scores_for_pairs, verification_report

    prot = ctx.protect(ctx.clean)
    comp = ctx.protection().comparator()
    sc = scores_all_pairs(prot, comp)
    kf = None
    n_ids = len(np.unique(prot.identity))
    folds = min(10, n_ids // 2)
    m: dict = {}
    if "kfold_accuracy" in metrics and folds >= 2:
        proto = make_pairs(prot.ids, prot.identity, n_folds=folds, pairs_per_fold=(300, 300), seed=ctx.seed)
        s = scores_for_pairs(prot, proto.id1, proto.id2, comp)
        kf = kfold_accuracy(s, proto.genuine, proto.fold)
        m["kfold_folds"] = folds
        m["kfold_pairs"] = len(proto)
    rep = verification_report(sc.genuine, sc.impostor, kfold=kf)
    d = rep.to_dict()
    m.update({k: v for k, v in d.items() if k not in ("fnmr_at_fmr", "threshold_at_fmr")})
    for key, v in d["fnmr_at_fmr"].items():
        m[f"fnmr_at_fmr_{key}"] = v
    for key, v in d["threshold_at_fmr"].items():
        m[f"threshold_at_fmr_{key}"] = v
    m["n_templates"] = len(prot)
    m["n_identities"] = n_ids
    res = CellResult(headline=headline("eer", rep.eer, (rep.eer_low, rep.eer_high), "fraction"), metrics=m)
    return res, {"genuine": sc.genuine, "impostor": sc.impostor}


def accuracy_headline(correct: int, n: int, metric: str = "attack_accuracy") -> dict:
    """Accuracy with its 95 % Wilson interval."""
    return headline(metric, correct / n if n else float("nan"), wilson_interval(correct, n), "fraction")


# ------------------------------------------------------------------ soft-biometric attacks
def _attack_sets(ctx: CellContext, attribute: str = "gender"):
    """Protected attacker database and victim probes, restricted to samples with a known attribute."""
    from facepriv.errors import ParameterError

    col = ctx.clean.attributes.get(attribute)
    if col is None:
        raise ParameterError(f"the dataset has no {attribute!r} labels; the attribute attacks need them")
    known = col != ""
    att = ctx.attacker[known[ctx.attacker]]
    vic = ctx.victim[known[ctx.victim]]
    for name, idx in (("attacker", att), ("victim", vic)):
        vals = np.unique(col[idx])
        if vals.size < 2 and name == "attacker":
            raise ParameterError(f"the {name} set has {attribute} value(s) {list(vals)} only; need both classes")
        if idx.size == 0:
            raise ParameterError(f"the {name} set has no samples with a known {attribute}")
    gallery = ctx.protect(ctx.clean.subset(att))
    probes = ctx.protect(ctx.clean.subset(vic))
    return gallery, probes


# ---------------------------------------------------------------------------- reconstruction
def _clean_file(ctx: CellContext):
    """The clean embeddings as a file (the reconstruction library works on files)."""
    from facepriv.embeddings import save_embeddings

    p = ctx.cache_dir / f"clean-{ctx.model_name}.npz"
    if not p.is_file():
        save_embeddings(ctx.clean, p, overwrite=True)
    return p


def _reconstruction(ctx: CellContext) -> CellResult:
    from facepriv.attacks.reconstruction.evaluate import fmr_key
    from facepriv.attacks.reconstruction.runs import evaluate_run, train_run
    from facepriv.attacks.reconstruction.trainer import TrainConfig

    p = ctx.attack_params
    emb = _clean_file(ctx)
    tc = TrainConfig(size=int(p["size"]), epochs=int(p["epochs"]), batch_size=int(p["batch_size"]),
                     w_id=float(p["w_id"]), seed=int(p["seed"]), test_fraction=float(p["test_fraction"]))
    run = ctx.out_dir / "decoder"
    resume = (run / "config.json").is_file()
    prot = None if ctx.protection_name == "unprotected" else ctx.protection_name
    train_run(emb, ctx.image_root, run, tc, protection=prot, protection_params=ctx.protection_params,
              model_name=ctx.model.name, resume=resume, max_train=int(p["max_train"]) or None)
    s = evaluate_run(run, emb, ctx.image_root, ctx.out_dir / "eval", protection_params=ctx.protection_params,
                     overwrite=True, seed=int(p["seed"]), gender=bool(p["gender"]))
    key = fmr_key(float(p["headline_fmr"]))
    lo, hi = s["rsr_ci95"][key]
    m = {"n_test_images": s["n_test_images"], "n_test_identities": s["n_test_identities"],
         "ssim": s["ssim"], "psnr": s["psnr"], "mse": s["mse"],
         "mean_score_reconstruction_vs_original": s["mean_score_reconstruction_vs_original"]}
    for k, v in s["rsr"].items():
        m[f"rsr_at_fmr_{k}"] = v
    for k, v in s["srra"].items():
        m[f"srra_at_fmr_{k}"] = v
    g = s.get("gender_accuracy")
    if isinstance(g, dict):
        m.update({f"gender_{k}": v for k, v in g.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    keys = sorted(s["rsr"], key=float)
    curves = {"rsr_vs_fmr": {"x": [100 * float(k) for k in keys], "xlabel": "FMR of the threshold (%)",
                             "ylabel": "RSR (%)", "log_x": True,
                             "series": {"RSR": [100 * s["rsr"][k] for k in keys],
                                        "SRRA": [100 * s["srra"][k] for k in keys]}}}
    return CellResult(headline=headline(f"rsr@fmr{key}", s["rsr"][key], (lo, hi), "fraction"), metrics=m,
                      curves=curves, images=["eval/samples.png"])


# ------------------------------------------------------------------------- de-identification
def _deid(ctx: CellContext) -> CellResult:
    from facepriv.attacks.deid.evaluate import evaluate_runs
    from facepriv.attacks.deid.run import RunConfig, run_cloaks

    p = ctx.attack_params
    src = str(p["source"] or ctx.model.name)
    targets = list(p["targets"] or [src])
    labels = _write_labels(ctx)
    eps = tuple(float(e) for e in p["eps"])
    rc = RunConfig(images=str(ctx.image_root), labels=str(labels), method=str(p["method"]), source=src, eps=eps,
                   probes_per_identity=int(p["probes_per_identity"]), min_gallery=int(p["min_gallery"]),
                   min_images=p["min_images"], max_identities=p["max_identities"], max_images=p["max_images"],
                   seed=int(p["seed"]), max_side=int(p["max_side"]), jpeg_quality=p["jpeg_quality"],
                   batch_size=int(p["batch_size"]))
    run_dir = ctx.out_dir / "cloaks"
    run_cloaks(rc, run_dir, overwrite=True)
    s = evaluate_runs([run_dir], targets, ctx.out_dir / "eval", overwrite=True)
    n = int(s["runs"][0]["probes"])
    keys = ["0"] + [f"{e:g}" for e in eps]
    m: dict = {"probes": n, "identities": s["dataset"]["identities"]}
    series = {}
    for t in targets:
        row = s["psr"][src][t]
        for key in keys:
            for k, v in row[key].items():
                m[f"psr@{k}_{t}_eps{key}"] = v
        series[f"{t} PSR@1"] = [row[key][1] for key in keys]
    top = keys[-1]
    psr1 = s["psr"][src][targets[0]][top][1]
    protected = int(round(psr1 * n / 100.0))
    lo, hi = wilson_interval(protected, n) if n else (float("nan"), float("nan"))
    q = s.get("quality", {}).get(src, {})
    for key, qd in q.items():
        if isinstance(qd, dict):
            m.update({f"{qk}_eps{key}": qv for qk, qv in qd.items() if isinstance(qv, (int, float))})
    curves = {"psr_vs_eps": {"x": [float(k) for k in keys], "xlabel": "eps (pixels, 0..255)",
                             "ylabel": "PSR@1 (%)", "series": series}}
    return CellResult(headline=headline(f"psr@1 eps{top} ({src}->{targets[0]})", psr1, (100 * lo, 100 * hi), "percent"),
                      metrics=m, curves=curves)


add_attack(AttackAdapter(
    name="reconstruction", run=_reconstruction, needs_images=True,
    modules=("facepriv.attacks.reconstruction.runs",),
    defaults={"epochs": 5, "size": 64, "batch_size": 32, "w_id": 0.005, "test_fraction": 0.2, "max_train": 0,
              "gender": True, "headline_fmr": 0.001, "seed": 0},
    summary="Decoder that reconstructs face images from (protected) templates; RSR/SRRA/SSIM on unseen identities",
    reference="Osorio-Roig et al., WIFS 2023; decoder of Otroshi Shahreza et al., ICIP 2022",
))
add_attack(AttackAdapter(
    name="deid", run=_deid, needs_images=True, protections=("unprotected",),
    modules=("facepriv.attacks.deid.run", "facepriv.attacks.deid.evaluate"),
    defaults={"method": "bim", "source": "", "targets": [], "eps": [4, 8, 16], "probes_per_identity": 2,
              "min_gallery": 3, "min_images": None, "max_identities": None, "max_images": None, "max_side": 400,
              "jpeg_quality": 95, "batch_size": 8, "seed": 0},
    summary="BIM/ILLC photo cloaks vs. closed-set identification: PSR@k per eps, source -> target transfer",
    reference="Ghafourian et al., 2023 (adversarial de-identification, BIM / ILLC)",
))


# ------------------------------------------------------------------ similarity / classifiers
def _similarity(ctx: CellContext) -> CellResult:
    from facepriv.registry import create

    gallery, probes = _attack_sets(ctx)
    attack = create("attack", "similarity", ctx.attack_params)
    res = attack.fit(gallery).evaluate(probes)
    rows = res.rows()
    best = res.best()
    m: dict = {"chance": res.chance(), "n_probes": best["n_probes"], "gallery_size": len(gallery),
               "best_rule": best["rule"], "best_n": best["n"], "best_decision": best["decision"],
               "balanced_accuracy": best["balanced_accuracy"]}
    series: dict[str, list] = {}
    ns = sorted({r["n"] for r in rows})
    for r in rows:
        m[f"accuracy_{r['rule']}_n{r['n']}_{r['decision']}"] = r["accuracy"]
        series.setdefault(f"{r['rule']} ({r['decision']})", [None] * len(ns))[ns.index(r["n"])] = 100 * r["accuracy"]
    curves = {"accuracy_vs_n": {"x": ns, "xlabel": "n (best scores fused)", "ylabel": "attack accuracy (%)",
                                "log_x": True, "series": series}}
    h = headline("accuracy (best rule, n)", best["accuracy"], (best["ci_low"], best["ci_high"]), "fraction")
    return CellResult(headline=h, metrics=m, curves=curves)


def _classifier(ctx: CellContext) -> CellResult:
    from facepriv.registry import create

    gallery, probes = _attack_sets(ctx)
    attack = create("attack", "classifier", ctx.attack_params)
    res = attack.fit(gallery).evaluate(probes)
    best = res.best()
    m: dict = {"chance": res.chance(), "n_probes": best["n_probes"], "best_classifier": best["classifier"],
               "balanced_accuracy": best["balanced_accuracy"]}
    for r in res.rows():
        m[f"accuracy_{r['classifier']}"] = r["accuracy"]
    name = "accuracy" if len(res.rows()) == 1 else "accuracy (best classifier)"
    return CellResult(headline=headline(name, best["accuracy"], (best["ci_low"], best["ci_high"]), "fraction"), metrics=m)


add_attack(AttackAdapter(
    name="similarity", run=_similarity, modules=("facepriv.attacks.soft_biometric",),
    summary="Similarity-based soft-biometric attack: fused top-n scores against a labelled protected database",
    reference="Osorio-Roig et al., IEEE TBIOM 2022",
))
add_attack(AttackAdapter(
    name="classifier", run=_classifier, modules=("facepriv.attacks.classifiers",),
    summary="Attribute classifiers (kNN, SVM) trained on the attacker's protected templates",
    reference="Osorio-Roig et al., IEEE TBIOM 2022 (baselines)",
))


# ---------------------------------------------------------------------------------- AdvFace
def _advface(ctx: CellContext) -> CellResult:
    """AdvFace Table 1 + eps sweep: split the model, extract client features, train the shadow and
    attacker reconstruction networks (disjoint identities), evaluate every feature protection."""
    from facepriv.advface.data import extract_features, faces_for, identity_roles, load_faces
    from facepriv.advface.experiment import run_experiment
    from facepriv.advface.split import SplitSystem
    from facepriv.advface.train import DecoderConfig, train_decoder

    p = ctx.attack_params
    labels = _write_labels(ctx)
    system = SplitSystem.create(ctx.model.name, p["cut"])
    recipe = ctx.model.card.alignment
    fs = extract_features(load_faces(str(ctx.image_root), str(labels), recipe), system)
    roles = identity_roles(fs.identity, int(p["seed"]))
    runs = {}
    for role in ("shadow", "attacker"):
        part = fs.subset(roles == role)
        if p["max_images"] and len(part) > p["max_images"]:
            part = part.subset(np.sort(np.random.default_rng(p["seed"]).permutation(len(part))[: p["max_images"]]))
        faces = faces_for(part, str(ctx.image_root), recipe)
        dc = DecoderConfig(arch=p["arch"], feature_shape=system.feature_shape, out_size=int(p["size"]), model=ctx.model.name,
                           cut=fs.cut, input_shape=system.input_shape, epochs=int(p["epochs"]),
                           batch_size=int(p["batch_size"]), lr=float(p["lr"]), seed=int(p["seed"]), role=role,
                           split_seed=int(p["seed"]), n_train=len(part))
        run = ctx.out_dir / f"{role}-{p['arch']}"
        train_decoder(part.features, faces.crops, dc, run, client=system.client, resume=(run / "decoder.pt").exists())
        runs[role] = {p["arch"]: str(run)}
    s = run_experiment(fs, str(ctx.image_root), runs["shadow"], runs["attacker"], ctx.out_dir / "eval",
                       main_arch=p["arch"], eps=float(p["eps"]), alpha=float(p["alpha"]), steps=int(p["steps"]),
                       sweep=tuple(float(x) for x in p["sweep"]), max_eval=int(p["max_eval"]) or None, seed=int(p["seed"]))
    cols = ["method", "eps", "ssim", "psnr", "mse", "srra", "accuracy", "accuracy_std", "n"]
    table = {"header": cols, "rows": [[r.get(c) for c in cols] for r in s["table"]]}
    m: dict = {"eval_images": s["eval_images"], "eval_identities": s["eval_identities"]}
    for r in s["table"]:
        for c in ("ssim", "psnr", "mse", "srra", "accuracy"):
            m[f"{r['method']}_{c}"] = r[c]
    sw = sorted(s["sweep"], key=lambda r: r["eps"])
    curves = {"eps_sweep": {"x": [r["eps"] for r in sw], "xlabel": "AdvFace eps", "ylabel": "%",
                            "series": {"SRRA (%)": [100 * r["srra"] for r in sw],
                                       "verification accuracy (%)": [100 * r["accuracy"] for r in sw],
                                       "SSIM x 100": [100 * r["ssim"] for r in sw]}}}
    adv = next(r for r in s["table"] if r["method"] == "advface")
    n = int(adv["n"])
    lo, hi = wilson_interval(int(round(adv["srra"] * n)), n) if n else (float("nan"), float("nan"))
    return CellResult(headline=headline("srra (advface)", adv["srra"], (lo, hi), "fraction"), metrics=m, curves=curves,
                      images=["eval/reconstructions.png", "eval/tradeoff_psnr_accuracy.png"],
                      tables={"AdvFace Table 1": table})


def _write_labels(ctx: CellContext):
    """labels.csv of the clean samples (image,identity,gender) in the cell folder."""
    import csv
    import io

    from facepriv.fileio import write_text_atomic

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "identity", "gender"])
    gender = ctx.clean.gender if ctx.clean.gender is not None else np.full(len(ctx.clean), "")
    w.writerows(zip(ctx.clean.ids.tolist(), ctx.clean.identity.tolist(), gender.tolist(), strict=True))
    path = ctx.out_dir / "labels.csv"
    write_text_atomic(path, buf.getvalue())
    return path


add_attack(AttackAdapter(
    name="advface_table1", run=_advface, needs_images=True, protections=("unprotected",),
    modules=("facepriv.advface.experiment", "facepriv.advface.train", "facepriv.advface.data"),
    defaults={"cut": None, "arch": "resrec", "size": 64, "epochs": 5, "batch_size": 32, "lr": 1e-3, "max_images": 0,
              "eps": 0.2, "alpha": 0.2, "steps": 40, "sweep": [0.0, 0.1, 0.2, 0.3], "max_eval": 300, "seed": 0},
    summary="AdvFace Table 1: reconstruction of client feature maps (SSIM/PSNR/SRRA) vs. utility, for "
            "unprotected / random noise / Laplace DP / AdvFace features, plus the eps sweep",
    reference="Wang et al., Privacy-preserving adversarial facial features, CVPR 2023",
))
