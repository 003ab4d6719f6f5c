"""``facepriv unlinkability`` and ``facepriv identify`` end to end on real CelebA templates (dlib ResNet)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from facepriv.cli.main import main
from facepriv.embeddings import EmbeddingSet, load_embeddings, save_embeddings

N_IDS, PER_ID = 12, 4


@pytest.fixture(scope="module")
def files(celeba_dir, tmp_path_factory) -> dict[str, Path]:
    """E.npz (unprotected), K1/K2.npz (PE-MIU 16 under two keys), gallery/probe/stranger splits."""
    from facepriv.models.zoo import get_model
    from facepriv.pipeline import align_images

    with open(celeba_dir / "labels.csv", newline="") as f:
        rows = sorted((r["image"], r["identity"]) for r in csv.DictReader(f))
    by_id: dict[str, list] = {}
    for r in rows:
        by_id.setdefault(r[1], []).append(r)
    pick = [r for i in sorted(i for i in by_id if len(by_id[i]) >= PER_ID + 2)[:N_IDS] for r in by_id[i][: PER_ID]]
    model = get_model("dlib_resnet")
    ac = align_images(celeba_dir, [r[0] for r in pick], model.card.alignment)
    ident = dict(pick)
    es = EmbeddingSet(model.embed(ac.crops), np.array(ac.ids), np.array([ident[i] for i in ac.ids]), {}, "dlib_resnet", None)
    d = tmp_path_factory.mktemp("evaluate-cli")
    out = {"E": save_embeddings(es, d / "E.npz")}
    for k, seed in (("K1", "1234567"), ("K2", "7654321")):
        assert main(["-q", "protect", "pe_miu", str(out["E"]), "--block-size", "16", "--seed", seed,
                     "--out", str(d / f"{k}.npz")]) == 0
        out[k] = d / f"{k}.npz"
    subjects = sorted(set(es.identity.tolist()))
    enrolled = np.isin(es.identity, subjects[:8])
    first = np.zeros(len(es), dtype=bool)
    first[np.unique(es.identity, return_index=True)[1]] = True
    for name, mask in (("G", enrolled & first), ("P", enrolled & ~first), ("S", ~enrolled)):
        out[name] = save_embeddings(es.subset(mask), d / f"{name}.npz")
    return out


def test_unlinkability_unprotected_is_linkable(files, tmp_path, capsys):
    out = tmp_path / "u"
    assert main(["unlinkability", str(files["E"]), str(files["E"]), "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["dsys"] > 0.8 and s["comparator"] == "cosine" and (out / "unlinkability.png").stat().st_size > 10_000
    counts = np.unique(load_embeddings(files["E"]).identity, return_counts=True)[1]
    assert s["n_mated"] == int((counts * (counts - 1)).sum())  # ordered pairs of different samples
    assert len(s["local_linkability"]) == s["bins"] == len(s["bin_edges"]) - 1
    assert "Dsys" in capsys.readouterr().out
    # no overwrite without --overwrite; with it, the same numbers
    assert main(["unlinkability", str(files["E"]), str(files["E"]), "--out", str(out)]) == 2
    assert main(["unlinkability", str(files["E"]), str(files["E"]), "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "summary.json").read_text())["dsys"] == s["dsys"]


def test_unlinkability_pe_miu_two_keys_never_leaks_the_keys(files, tmp_path):
    out = tmp_path / "u"
    assert main(["unlinkability", str(files["K1"]), str(files["K2"]), "--out", str(out), "--omega", "1"]) == 0
    text = (out / "summary.json").read_text()
    s = json.loads(text)
    assert s["comparator"] == "pe_miu" and 0.0 <= s["dsys"] <= 1.0
    assert "1234567" not in text and "7654321" not in text


def test_identify_one_file_and_open_set(files, tmp_path):
    one = tmp_path / "one"
    assert main(["identify", str(files["E"]), "--out", str(one), "--ranks", "1,3", "--max-rank", "5"]) == 0
    s = json.loads((one / "summary.json").read_text())
    assert s["n_gallery"] == N_IDS and s["search"] == "cosine" and len(s["cmc"]) == 5
    assert s["rank_k"]["1"]["value"] >= 0.7 and (one / "cmc.png").is_file()
    split = tmp_path / "split"
    assert main(["identify", str(files["G"]), str(files["P"]), "--open-set", str(files["S"]), "--out", str(split)]) == 0
    t = json.loads((split / "summary.json").read_text())
    assert t["n_gallery"] == 8 and t["n_nonmated_probes"] == len(load_embeddings(files["S"]))
    assert set(t["dir_at_fpir"]) == {"0.01", "0.1"}
    assert t["dir_at_fpir"]["0.1"]["value"] >= t["dir_at_fpir"]["0.01"]["value"]


def test_identify_protected_file_uses_its_comparator(files, tmp_path):
    assert main(["identify", str(files["K1"]), "--out", str(tmp_path / "k")]) == 0
    s = json.loads((tmp_path / "k" / "summary.json").read_text())
    assert s["comparator"] == "pe_miu" and s["search"] == "generic" and s["protection"]["params"]["seed"] == "<secret>"


def test_dimension_not_matching_the_recorded_protection_is_named(files, tmp_path, capsys):
    z = dict(np.load(files["K1"], allow_pickle=False))
    z["protection"] = np.array(json.dumps({"name": "pe_miu", "params": {"block_size": 48, "seed": "<secret>"}}))
    bad = tmp_path / "bad48.npz"
    with open(bad, "wb") as f:
        np.savez(f, **z)
    for argv in (["unlinkability", str(bad), str(bad)], ["identify", str(bad)]):
        assert main([*argv, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "bad48.npz" in err[0] and "comparator" in err[0], err
    assert not (tmp_path / "o").exists()
