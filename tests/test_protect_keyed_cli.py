"""``facepriv protect`` with keyed and fitted protections: key files, --like, errors; and the
key-disclosure inversion end to end on real CelebA faces embedded with dlib."""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from facepriv.cli.main import main
from facepriv.embeddings import EmbeddingSet, load_embeddings, save_embeddings
from facepriv.protections.base import CosineComparator, protection_from_record


def _run(capsys, *args: object) -> tuple[int, str, str]:
    code = main(["-q", "protect", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """A small synthetic embeddings file with gender (CLI behaviour only; the maths is tested elsewhere)."""
    rng = np.random.default_rng(0)
    n, dim = 40, 32
    g = np.array(["female", "male"])[np.arange(n) % 2]
    x = (rng.normal(size=(n, dim)) + np.where(g == "male", 1.0, -1.0)[:, None] * (np.arange(dim) < 4)).astype(np.float32)
    es = EmbeddingSet(x, np.array([f"img{i}.jpg" for i in range(n)]), np.repeat([f"p{i}" for i in range(10)], 4),
                      {"gender": g}, "synthetic")
    return save_embeddings(es, tmp_path_factory.mktemp("keyed") / "E.npz")


def test_new_key_is_written_private_and_never_shown(synth, tmp_path, capsys):
    key, out = tmp_path / "bh.key", tmp_path / "P.npz"
    code, stdout, err = _run(capsys, "biohash", synth, "--length", 16, "--key-out", key, "--out", out)
    assert code == 0, err
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    seed = json.loads(key.read_text())["seed"]
    assert isinstance(seed, int) and seed.bit_length() > 64
    assert str(seed) not in stdout + err and str(seed).encode() not in out.read_bytes()
    es = load_embeddings(out)
    assert es.dim == 16 and es.protection["params"]["seed"] == "<secret>"
    # the same key from the file gives the same codes
    code, _, err = _run(capsys, "biohash", synth, "--length", 16, "--key-file", key, "--out", tmp_path / "Q.npz")
    assert code == 0, err
    np.testing.assert_array_equal(load_embeddings(tmp_path / "Q.npz").embeddings, es.embeddings)


def test_like_protects_a_probe_file_with_the_enrolment_parameters(synth, tmp_path, capsys):
    key, enrol = tmp_path / "k.json", tmp_path / "P.npz"
    assert _run(capsys, "biohash", synth, "--length", 16, "--key-scope", "user", "--key-out", key, "--out", enrol)[0] == 0
    full = load_embeddings(synth)
    probes = save_embeddings(full.subset(np.arange(8)), tmp_path / "probes.npz")
    code, _, err = _run(capsys, "biohash", probes, "--like", enrol, "--key-file", key, "--out", tmp_path / "Pp.npz")
    assert code == 0, err
    # the centre comes from the enrolment record, not from the 8 probes
    np.testing.assert_array_equal(load_embeddings(tmp_path / "Pp.npz").embeddings, load_embeddings(enrol).embeddings[:8])


def test_ive_records_the_removed_dimensions(synth, tmp_path, capsys):
    code, _, err = _run(capsys, "ive", synth, "--n-remove", 2, "--steps", 2, "--out", tmp_path / "I.npz")
    assert code == 0, err
    es = load_embeddings(tmp_path / "I.npz")
    assert es.dim == 28 and len(es.protection["params"]["removed"]) == 4


def _bad_key(tmp_path: Path, text: str, name: str = "bad.key") -> Path:
    p = tmp_path / name
    p.parent.mkdir(exist_ok=True)
    p.write_text(text)
    return p


@pytest.mark.parametrize(("case", "pattern"), [
    ("no_key", r"keyed: give --key-file"),
    ("both", r"not both"),
    ("keyless_key", r"'ive' has no key"),
    ("seed_and_key", r"--seed and --key-out"),
    ("key_not_json", r"bad\.key: not a key file"),
    ("key_names", r"bad\.key: a key file for this protection holds exactly \['seed'\]"),
    ("key_negative", r"bad\.key: key 'seed' must be a non-negative integer"),
    ("key_missing", r"nokey\.json: key file not found"),
    ("key_out_exists", r"exists\.key: already exists"),
    ("no_gender", r"E_nogender\.npz.*gender"),
    ("overlap", r"--overlap.*0\.\.4"),
    ("length", r"--length.*exceeds"),
    ("like_other", r"--like: this file was protected with 'biohash'"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(case, pattern, synth, tmp_path, capsys):
    out = tmp_path / "o" / "P.npz"
    ko = tmp_path / "o" / "new.key"
    good = tmp_path / "good.key"
    good.write_text('{"seed": 123456789}')
    if case == "no_gender":
        es = load_embeddings(synth)
        src = save_embeddings(EmbeddingSet(es.embeddings, es.ids, es.identity, {}, "synthetic"), tmp_path / "E_nogender.npz")
    else:
        src = synth
    args = {
        "no_key": ["biohash", src, "--out", out],
        "both": ["biohash", src, "--key-file", good, "--key-out", ko, "--out", out],
        "keyless_key": ["ive", src, "--key-out", ko, "--out", out],
        "seed_and_key": ["polyprotect", src, "--seed", 5, "--key-out", ko, "--out", out],
        "key_not_json": ["biohash", src, "--key-file", _bad_key(tmp_path, "seed=5", "1/bad.key"), "--out", out],
        "key_names": ["biohash", src, "--key-file", _bad_key(tmp_path, '{"key": 5}', "2/bad.key"), "--out", out],
        "key_negative": ["biohash", src, "--key-file", _bad_key(tmp_path, '{"seed": -987654}', "3/bad.key"), "--out", out],
        "key_missing": ["biohash", src, "--key-file", tmp_path / "nokey.json", "--out", out],
        "key_out_exists": ["biohash", src, "--key-out", _bad_key(tmp_path, "old", "exists.key"), "--out", out],
        "no_gender": ["ive", src, "--n-remove", 2, "--steps", 2, "--out", out],
        "overlap": ["polyprotect", src, "--overlap", 5, "--key-file", good, "--out", out],
        "length": ["biohash", src, "--length", 64, "--key-file", good, "--out", out],
        "like_other": ["polyprotect", src, "--like", tmp_path / "bh.npz", "--key-file", good, "--out", out],
    }[case]
    if case == "like_other":
        assert _run(capsys, "biohash", src, "--length", 8, "--key-file", good, "--out", tmp_path / "bh.npz")[0] == 0
    code, stdout, err = _run(capsys, *args)
    assert code == 2, (stdout, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and __import__("re").search(pattern, lines[0]), err
    assert "987654" not in err
    assert not out.exists() and not ko.exists()


# ------------------------------------------------------------------ real faces, end to end
N_IDS, PER_ID = 12, 5


@pytest.fixture(scope="module")
def real_npz(celeba_dir, tmp_path_factory) -> Path:
    """dlib templates of 60 real CelebA photos: 6 female and 6 male identities, 5 photos each."""
    from facepriv.models.zoo import get_model
    from facepriv.pipeline import align_images

    with open(celeba_dir / "labels.csv", newline="") as f:
        rows = sorted((r["image"], r["identity"], r["gender"]) for r in csv.DictReader(f) if r["gender"])
    by_id: dict[str, list] = {}
    for r in rows:
        by_id.setdefault(r[1], []).append(r)
    chosen = []
    for g in ("female", "male"):
        ids = [i for i in sorted(by_id) if by_id[i][0][2] == g and len(by_id[i]) >= PER_ID + 2][: N_IDS // 2]
        chosen += [r for i in ids for r in by_id[i][: PER_ID + 2]]
    model = get_model("dlib_resnet")
    ac = align_images(celeba_dir, [r[0] for r in chosen], model.card.alignment)
    keep = {im: k for k, im in enumerate(ac.ids)}
    rows = [r for r in chosen if r[0] in keep]
    per: dict[str, int] = {}
    rows = [r for r in rows if per.setdefault(r[1], 0) < PER_ID and not per.update({r[1]: per[r[1]] + 1})]
    crops = ac.crops[[keep[r[0]] for r in rows]]
    es = EmbeddingSet(model.embed(crops), np.array([r[0] for r in rows]), np.array([r[1] for r in rows]),
                      {"gender": np.array([r[2] for r in rows])}, "dlib_resnet")
    return save_embeddings(es, tmp_path_factory.mktemp("real") / "celeba60_dlib.npz")


def _closer_to_own(est: np.ndarray, orig: np.ndarray, ident: np.ndarray) -> float:
    """Share of estimates more similar (cosine) to their own original than to any other identity's template."""
    s = CosineComparator().pairwise(est, orig)
    other = np.where(ident[:, None] != ident[None, :], s, -np.inf).max(axis=1)
    return float((np.diag(s) > other).mean())


@pytest.mark.slow
@pytest.mark.parametrize(("name", "flags"), [
    ("biohash", ["--length", 128]),
    ("biohash", ["--length", 128, "--key-scope", "user"]),
    ("polyprotect", ["--m", 5, "--overlap", 4]),
    ("pe_miu", ["--block-size", 16, "--seed", 31337]),
])
def test_key_disclosure_inversion_on_real_faces(name, flags, real_npz, tmp_path, capsys):
    key, out = tmp_path / "k.json", tmp_path / "P.npz"
    keyed = name != "pe_miu"
    code, _, err = _run(capsys, name, real_npz, *flags, *(["--key-out", key] if keyed else []), "--out", out)
    assert code == 0, err
    es, prot_es = load_embeddings(real_npz), load_embeddings(out)
    ids = np.unique(es.identity)
    victim = np.isin(es.identity, ids[::2])  # every other identity (both genders): victims
    secret = json.loads(key.read_text()) if keyed else {"seed": 31337}
    prot = protection_from_record(prot_es.protection, secrets=secret, require_key=True).fit()
    est = prot.invert(prot_es.embeddings[victim], es.embeddings[~victim], identity=es.identity[victim])
    assert est.shape == (int(victim.sum()), es.dim) and np.isfinite(est).all()
    share = _closer_to_own(est, es.embeddings[victim], es.identity[victim])
    # the attacker's mean template alone, the no-information estimate, is the yardstick
    mean_only = _closer_to_own(np.tile(es.embeddings[~victim].mean(0), (int(victim.sum()), 1)),
                               es.embeddings[victim], es.identity[victim])
    assert share >= 0.8 and share >= mean_only + 0.5, (share, mean_only)


def test_pe_miu_fixed_permutation_is_undone_exactly_and_unprotected_is_the_identity():
    from facepriv.protections.base import Unprotected
    from facepriv.protections.pe_miu import PEMIU

    x = np.random.default_rng(2).normal(size=(5, 64)).astype(np.float32)
    fixed = PEMIU(block_size=8, moved_blocks=4, seed=4711)
    np.testing.assert_array_equal(fixed.invert(fixed.transform(x), x), x)
    np.testing.assert_array_equal(Unprotected().invert(x, x), x)
