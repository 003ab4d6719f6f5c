"""Reconstruction attack end to end on real CelebA faces (dlib ResNet, real crops), CLI included."""

from __future__ import annotations

import csv
import json
from collections import defaultdict

import numpy as np
import pytest

from facepriv.attacks.reconstruction.data import check_embeddings, load_paired, resize_crops
from facepriv.attacks.reconstruction.trainer import TrainConfig, train_decoder
from facepriv.cli.main import main
from facepriv.embeddings import EmbeddingSet, load_embeddings, save_embeddings
from facepriv.errors import InputFileError

pytestmark = pytest.mark.slow

N_IDS, PER_ID = 6, 3


@pytest.fixture(scope="module")
def small_set(celeba_dir, tmp_path_factory):
    """18 CelebA photos (6 identities x 3) with gender, embedded by dlib_resnet via the pipeline."""
    from facepriv.models.zoo import get_model
    from facepriv.pipeline import align_images

    rows = list(csv.DictReader(open(celeba_dir / "labels.csv", encoding="utf-8")))
    by = defaultdict(list)
    for r in rows:
        if r["gender"]:
            by[r["identity"]].append(r)
    picked = [r for ident in sorted(by)[:N_IDS] for r in by[ident][:PER_ID]]
    ac = align_images(celeba_dir, [r["image"] for r in picked], "dlib_chip150")
    lab = {r["image"]: r for r in picked}
    emb = get_model("dlib_resnet").embed(ac.crops)
    es = EmbeddingSet(
        emb,
        np.array(ac.ids),
        np.array([lab[i]["identity"] for i in ac.ids]),
        {"gender": np.array([lab[i]["gender"] for i in ac.ids])},
        "dlib_resnet",
    )
    path = tmp_path_factory.mktemp("recon") / "small.npz"
    save_embeddings(es, path)
    return path, es


def test_loss_decreases_on_real_crops(small_set, celeba_dir, tmp_path):
    from facepriv.models.zoo import get_model

    _, es = small_set
    model = get_model("dlib_resnet")
    data = load_paired(es, celeba_dir, model.card.alignment)
    z, x = data.es.embeddings[:16], resize_crops(data.crops[:16], 64)
    cfg = TrainConfig(size=64, embedding_dim=128, epochs=6, batch_size=16, seed=0, w_id=1.0)
    res = train_decoder(z, x, cfg, tmp_path / "run", model.torch_module(), model.card.input_size, preview=(z[:4], x[:4]))
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < losses[0], losses
    assert all(h["id"] > 0 for h in res.history)  # the ID term went through the dlib network
    assert (tmp_path / "run" / "samples" / "epoch_006.png").is_file()


def test_cli_train_eval_on_real_faces(small_set, celeba_dir, tmp_path):
    path, _ = small_set
    run, out = tmp_path / "run", tmp_path / "eval"
    base = ["-q", "reconstruct", "train", "--embeddings", str(path), "--images", str(celeba_dir), "--out", str(run)]
    opts = ["--size", "64", "--epochs", "1", "--batch-size", "6", "--test-fraction", "0.34", "--protection", "pe_miu", "--block-size", "32"]
    assert main(base + opts) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["protection"] == {"name": "pe_miu", "params": {"block_size": 32, "moved_blocks": None, "seed": "<secret>"}}
    split = json.loads((run / "split.json").read_text())
    assert not set(split["train_identities"]) & set(split["test_identities"])
    assert main(base + opts) == 2  # refuses to overwrite a run
    assert main(base + opts + ["--epochs", "2", "--resume"]) == 0
    assert len(json.loads((run / "history.json").read_text())) == 2

    ev = ["-q", "reconstruct", "eval", str(run), "--embeddings", str(path), "--images", str(celeba_dir), "--out", str(out), "--transfer", ""]
    assert main(ev) == 0
    s = json.loads((out / "summary.json").read_text())
    assert set(s["rsr"]) == {"0.001", "0.01", "0.1"} and set(s["srra"]) == set(s["rsr"])
    assert s["n_test_identities"] == 2 and set(s["rsr"].values()) <= set(np.arange(0, 7) / 6)
    assert 0 < s["ssim"] < 1 and s["psnr"] > 0 and 0 < s["mse"] < 1
    assert "gender_accuracy" in s and (out / "samples.png").is_file()
    assert s["protection"]["name"] == "pe_miu" and s["protection"]["params"]["seed"] == "<secret>"
    assert main(ev) == 2  # summary exists: refuses without --overwrite
    # the same decoder attacking plain templates (protection override at evaluation)
    assert main(ev + ["--overwrite", "--protection", "unprotected", "--no-gender"]) == 0
    assert json.loads((out / "summary.json").read_text())["protection"] is None

    (run / "decoder.pt").write_bytes(b"\x00garbage")
    assert main(ev + ["--overwrite"]) == 2


def test_mismatched_ids_and_dimensions(small_set, celeba_dir, tmp_path, capsys):
    path, es = small_set
    bad_ids = EmbeddingSet(es.embeddings, np.array([f"nope/{i}" for i in es.ids]), es.identity, {}, "dlib_resnet")
    with pytest.raises(InputFileError, match="do not name an image"):
        load_paired(bad_ids, celeba_dir, "dlib_chip150", "bad.npz")
    wide = EmbeddingSet(np.hstack([es.embeddings] * 4), es.ids, es.identity, {}, "dlib_resnet")
    wide_path = tmp_path / "wide.npz"
    save_embeddings(wide, wide_path)
    rc = main(["-q", "reconstruct", "train", "--embeddings", str(wide_path), "--images", str(celeba_dir), "--out", str(tmp_path / "r")])
    assert rc == 2 and "dimension 512" in capsys.readouterr().err
    with pytest.raises(InputFileError, match="decoder was trained on 128"):
        check_embeddings(load_embeddings(wide_path), wide_path, expect_dim=128)
    prot = EmbeddingSet(es.embeddings, es.ids, es.identity, {}, "dlib_resnet", {"name": "pe_miu", "params": {}})
    with pytest.raises(InputFileError, match="unprotected"):
        check_embeddings(prot, "p.npz")


def test_kp_grid_end_to_end_with_naive_rows(small_set, celeba_dir, tmp_path):
    path, _ = small_set
    out = tmp_path / "grid"
    args = ["-q", "reconstruct", "grid", "--embeddings", str(path), "--images", str(celeba_dir), "--out", str(out),
            "--block-sizes", "64", "--moved-blocks", "2", "--size", "64", "--epochs", "1", "--batch-size", "6",
            "--test-fraction", "0.34", "--protection-seed", "3"]
    assert main(args) == 0
    table = json.loads((out / "grid.json").read_text())
    assert set(table) == {"unprotected", "K64_P2", "naive_K64_P2"}
    for f in ("0.001", "0.01", "0.1"):
        assert (out / f"rsr_heatmap_fmr{f}.png").is_file() and (out / f"rsr_heatmap_naive_fmr{f}.png").is_file()
    naive = json.loads((out / "cells" / "unprotected" / "naive_K64_P2" / "summary.json").read_text())
    assert naive["protection"]["params"]["moved_blocks"] == 2 and naive["protection"]["params"]["seed"] == "<secret>"
    # a second call reuses every finished cell
    before = (out / "grid.json").read_bytes()
    assert main(args) == 0 and (out / "grid.json").read_bytes() == before
