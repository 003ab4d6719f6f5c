"""Reconstruction attack: decoder shapes, loss terms, RSR maths, splits, parameters, checkpoints and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from facepriv.attacks.reconstruction.attack import ReconstructionAttack
from facepriv.attacks.reconstruction.data import PairedData
from facepriv.attacks.reconstruction.decoder import FaceDecoder, stage_sizes
from facepriv.attacks.reconstruction.evaluate import enrolment_partner, success_rates, thresholds_at_fmrs
from facepriv.attacks.reconstruction.losses import ReconstructionLoss
from facepriv.attacks.reconstruction.runs import split_paired
from facepriv.attacks.reconstruction.trainer import (
    CHECKPOINT,
    WEIGHTS,
    TrainConfig,
    load_decoder,
    load_state,
    train_decoder,
)
from facepriv.embeddings import EmbeddingSet
from facepriv.errors import FacePrivError, InputFileError, OutputExistsError, ParameterError
from facepriv.metrics.image_quality import ssim


def test_stage_sizes_match_the_paper_and_the_64_variant():
    assert stage_sizes(112) == [4, 8, 16, 30, 58, 112]
    assert stage_sizes(64) == [2, 4, 8, 16, 32, 64]
    with pytest.raises(ValueError, match="one of"):
        stage_sizes(100)


@pytest.mark.parametrize("dim,size", [(128, 64), (512, 112)])
def test_decoder_output(dim, size):
    dec = FaceDecoder(dim, size).eval()
    with torch.no_grad():
        out = dec(torch.randn(2, dim))
    assert out.shape == (2, 3, size, size)
    assert out.min() >= 0 and out.max() <= 1
    convt = [m for m in dec.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(convt) == 6 and all(m.bias is None and m.kernel_size == (4, 4) for m in convt)
    with pytest.raises(ValueError, match="expects embeddings"):
        dec(torch.randn(2, dim + 1))


class _MeanPool(nn.Module):
    """A known 'recognition network': per-channel means at the input size (3-d embedding)."""

    def forward(self, x):
        assert x.shape[-2:] == (20, 20)  # the loss resized to the network's input size
        return x.mean(dim=(2, 3))


def test_loss_terms_on_known_inputs():
    torch.manual_seed(0)
    real = torch.rand(2, 3, 16, 16)
    gen = (real + 0.1 * torch.rand(2, 3, 16, 16)).clamp(0, 1)
    lf = ReconstructionLoss(_MeanPool(), (20, 20), w_ssim=0.1, w_id=0.005)
    t = lf(gen, real)
    want_mse = ((gen - real) ** 2).mean().item()
    g20 = torch.nn.functional.interpolate(gen, size=(20, 20), mode="bilinear", align_corners=False)
    r20 = torch.nn.functional.interpolate(real, size=(20, 20), mode="bilinear", align_corners=False)
    want_id = ((g20.mean(dim=(2, 3)) - r20.mean(dim=(2, 3))) ** 2).mean().item()
    s = ssim(gen, real).item()
    assert t.mse == pytest.approx(want_mse, rel=1e-5)
    assert t.id == pytest.approx(want_id, rel=1e-4)
    assert t.ssim == pytest.approx(s, rel=1e-6)
    assert t.total.item() == pytest.approx(want_mse + 0.1 * (1 - s) / 2 + 0.005 * want_id, rel=1e-5)
    same = ReconstructionLoss(None)(real, real)
    assert same.total.item() == pytest.approx(0.0, abs=1e-6) and same.ssim == pytest.approx(1.0, abs=1e-5)


def test_rsr_on_hand_made_scores():
    scores = np.array([0.1, 0.5, 0.6, 0.9])
    rates = success_rates(scores, {"0.01": 0.55, "0.1": 0.5})
    assert rates["0.01"].rate == 0.5 and rates["0.1"].rate == 0.75  # >= threshold accepts
    assert rates["0.01"].n == 4 and 0 < rates["0.01"].low < 0.5 < rates["0.01"].high < 1


def test_thresholds_from_impostors():
    # 2 identities x 2 samples: impostor cosines are known exactly
    emb = np.array([[1, 0], [1, 0.1], [0, 1], [0.2, 1]], dtype=np.float32)
    ident = np.array(["a", "a", "b", "b"])
    thr = thresholds_at_fmrs(emb, ident, (0.0, 0.5))
    e64 = emb.astype(np.float64)
    cos = e64 / np.linalg.norm(e64, axis=1, keepdims=True)
    imp = sorted((cos[[0, 0, 1, 1]] * cos[[2, 3, 2, 3]]).sum(1))
    assert thr["0"] > imp[-1]  # FMR 0: above every impostor
    assert imp[1] < thr["0.5"] <= imp[2]  # 2 of 4 impostors may pass


def test_enrolment_partner_is_another_image_of_the_same_person():
    ident = np.array(["a", "a", "a", "b", "c", "c"])
    p = enrolment_partner(ident, seed=3)
    assert p[3] == -1
    for i in (0, 1, 2, 4, 5):
        assert p[i] != i and ident[p[i]] == ident[i]


def _old_identity_split(identity, test_fraction, seed):
    """The splitter this module had before facepriv.splits (kept here to pin the numbers)."""
    ids = np.unique(np.asarray(identity).astype(str))
    n_test = int(min(len(ids) - 1, max(1, round(test_fraction * len(ids)))))
    test_ids = set(np.random.default_rng(seed).permutation(ids)[:n_test].tolist())
    test = np.array([str(i) in test_ids for i in identity])
    return ~test, test


@pytest.mark.parametrize("n_ids,fraction,seed", [(20, 0.2, 1), (24, 0.2, 0), (249, 0.1, 0), (7, 0.25, 5), (2, 0.5, 3)])
def test_split_is_identity_disjoint_seeded_and_reproduces_the_old_splitter(n_ids, fraction, seed):
    ident = np.repeat([f"id{i:03d}" for i in range(n_ids)], 3)
    es = EmbeddingSet(np.zeros((len(ident), 4), np.float32), np.array([f"{i}/{k}.jpg" for k, i in enumerate(ident)]), ident)
    data = PairedData(es, np.zeros((len(ident), 2, 2, 3), np.uint8))
    train, test = split_paired(data, fraction, seed)
    old_train, old_test = _old_identity_split(ident, fraction, seed)
    assert train.es.ids.tolist() == es.ids[old_train].tolist() and test.es.ids.tolist() == es.ids[old_test].tolist()
    assert not set(train.es.identity) & set(test.es.identity)
    capped, _ = split_paired(data, fraction, seed, max_train=4)
    assert len(capped) == min(4, len(train)) and set(capped.es.ids) <= set(train.es.ids)


@pytest.mark.parametrize("param,value", [("size", 32), ("size", True), ("epochs", 0), ("batch_size", 1), ("lr", 0.0),
                                         ("lr", float("nan")), ("w_id", -1.0), ("w_ssim", float("inf")),
                                         ("test_fraction", 1.0), ("test_fraction", 0), ("max_train", 1),
                                         ("max_test", -4), ("transfer", "sface"), ("transfer", ["no_such_model"]),
                                         ("gender", "yes"), ("headline_fmr", 0.05), ("seed", -1), ("seed", 2**40),
                                         ("step_size", 0), ("gamma", -0.5)])
def test_parameters_are_validated_and_named(param, value):
    with pytest.raises(ParameterError) as err:
        ReconstructionAttack(**{param: value}).validate_params()
    assert err.value.param == param and str(err.value).startswith(f"{param}: ")


def test_one_default_per_parameter():
    d = ReconstructionAttack.param_defaults()
    assert (d["size"], d["epochs"], d["test_fraction"], d["batch_size"], d["w_id"]) == (64, 5, 0.2, 32, 0.005)
    assert (d["max_train"], d["gender"], d["headline_fmr"], d["seed"], tuple(d["transfer"])) == (None, True, 0.001, 0, ())
    cfg = ReconstructionAttack().train_config()
    plain = TrainConfig()
    for k in ("size", "epochs", "batch_size", "lr", "step_size", "gamma", "w_ssim", "w_id", "seed", "test_fraction"):
        assert getattr(cfg, k) == getattr(plain, k) == d[k], k
    ReconstructionAttack(max_train=0, max_test=0).validate_params()  # 0 = no cap (as in the paper configs)


def _tiny(n=8, size=64, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, dim)).astype(np.float32)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return z, x


def _cfg(**kw):
    base = dict(size=64, embedding_dim=16, epochs=2, batch_size=4, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_equals_uninterrupted_run_bit_for_bit(tmp_path):
    z, x = _tiny()
    full = train_decoder(z, x, _cfg(epochs=2), tmp_path / "full", None)
    train_decoder(z, x, _cfg(epochs=1), tmp_path / "part", None)
    torch.manual_seed(999)  # global state left by other work must not matter
    torch.rand(5)
    res = train_decoder(z, x, _cfg(epochs=2), tmp_path / "part", None, resume=True)
    assert [h["epoch"] for h in res.history] == [1, 2]
    assert _same_weights(full.decoder.state_dict(), res.decoder.state_dict())
    on_disk = load_state(tmp_path / "part" / WEIGHTS)
    assert _same_weights(on_disk, full.decoder.state_dict())
    assert "torch_rng" in load_state(tmp_path / "part" / CHECKPOINT)
    in_memory = train_decoder(z, x, _cfg(epochs=2), None, None)  # no run folder: nothing written
    assert _same_weights(in_memory.decoder.state_dict(), full.decoder.state_dict())
    dec, cfg = load_decoder(tmp_path / "part")
    assert cfg.epochs == 2 and cfg.embedding_dim == 16
    assert json.loads((tmp_path / "part" / "history.json").read_text())[-1]["epoch"] == 2


def test_training_neither_reads_nor_changes_the_global_random_state(tmp_path):
    z, x = _tiny()
    torch.manual_seed(1)
    a = train_decoder(z, x, _cfg(epochs=1), None, None)
    after = torch.get_rng_state()
    torch.manual_seed(2)
    b = train_decoder(z, x, _cfg(epochs=1), None, None)
    assert _same_weights(a.decoder.state_dict(), b.decoder.state_dict())
    torch.manual_seed(1)
    assert torch.equal(torch.get_rng_state(), after)


def test_run_folder_is_not_overwritten_and_resume_checks_config(tmp_path):
    z, x = _tiny()
    train_decoder(z, x, _cfg(epochs=1), tmp_path / "r", None, split={"train_identities": ["a", "b"]})
    with pytest.raises(OutputExistsError):
        train_decoder(z, x, _cfg(epochs=1), tmp_path / "r", None)
    with pytest.raises(ParameterError, match="lr"):
        train_decoder(z, x, _cfg(epochs=2, lr=0.01), tmp_path / "r", None, resume=True)
    with pytest.raises(InputFileError, match="nothing to resume"):
        train_decoder(z, x, _cfg(), tmp_path / "empty", None, resume=True)
    with pytest.raises(ParameterError, match="other identities"):
        train_decoder(z, x, _cfg(epochs=2), tmp_path / "r", None, resume=True,
                      split={"train_identities": ["someone else"]})


def test_run_folder_states(tmp_path):
    """A non-run folder is refused untouched; a run killed before its first checkpoint restarts as is."""
    z, x = _tiny()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    for kw in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(InputFileError, match="holds no reconstruction run"):
            train_decoder(z, x, _cfg(epochs=1), mine, None, **kw)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{broken")
    with pytest.raises(InputFileError, match="config.json: not a valid run config"):
        train_decoder(z, x, _cfg(epochs=1), broken, None, overwrite=True)
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(InputFileError, match="not a folder"):
        train_decoder(z, x, _cfg(epochs=1), afile, None)
    # killed before the first checkpoint: config, split, a half-written checkpoint -> starts afresh
    started = tmp_path / "started"
    train_decoder(z, x, _cfg(epochs=1), started, None, split={"train_identities": ["a"]})
    (started / CHECKPOINT).unlink()
    (started / ".checkpoint.pt.abc123.tmp.pt").write_bytes(b"half")
    res = train_decoder(z, x, _cfg(epochs=1), started, None)
    assert res.history[-1]["epoch"] == 1 and not list(started.glob(".*.tmp*"))


def test_a_second_training_into_the_same_folder_is_refused(tmp_path):
    from facepriv.fileio import FolderLock

    z, x = _tiny()
    with FolderLock(tmp_path / "r", "training"):
        with pytest.raises(FacePrivError, match="another training .* is writing"):
            train_decoder(z, x, _cfg(epochs=1), tmp_path / "r", None)


def test_interrupted_checkpoint_write_keeps_last_checkpoint(tmp_path, monkeypatch):
    z, x = _tiny()
    train_decoder(z, x, _cfg(epochs=1), tmp_path / "r", None)
    before = load_state(tmp_path / "r" / CHECKPOINT)
    real_save = torch.save

    def crash(obj, f, *a, **k):  # the machine dies while the epoch-2 checkpoint is being written
        real_save({"partial": torch.zeros(1)}, f)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        train_decoder(z, x, _cfg(epochs=2), tmp_path / "r", None, resume=True)
    monkeypatch.setattr(torch, "save", real_save)
    after = load_state(tmp_path / "r" / CHECKPOINT)
    assert after["epoch"] == before["epoch"] == 1
    assert not [p for p in (tmp_path / "r").iterdir() if ".tmp" in p.name]  # no temp files left
    # a SIGKILL leaves its temporary file behind (no finally runs): resume removes it
    (tmp_path / "r" / ".checkpoint.pt.k1ll3d.tmp.pt").write_bytes(b"\x00" * 1000)
    (tmp_path / "r" / ".decoder.pt.k1ll3d.tmp.pt").write_bytes(b"\x00" * 10)
    res = train_decoder(z, x, _cfg(epochs=2), tmp_path / "r", None, resume=True)
    assert res.history[-1]["epoch"] == 2
    assert not [p for p in (tmp_path / "r").iterdir() if ".tmp" in p.name]


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    z, x = _tiny()
    train_decoder(z, x, _cfg(epochs=1), tmp_path / "r", None)
    (tmp_path / "r" / WEIGHTS).write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputFileError, match="corrupt or not a facepriv checkpoint"):
        load_decoder(tmp_path / "r")
    torch.save([1, 2, 3], tmp_path / "r" / CHECKPOINT)
    with pytest.raises(InputFileError, match="expected a dict"):
        train_decoder(z, x, _cfg(epochs=2), tmp_path / "r", None, resume=True)
    torch.save({"other": torch.zeros(3)}, tmp_path / "r" / WEIGHTS)
    with pytest.raises(InputFileError, match="do not fit"):
        load_decoder(tmp_path / "r")


def test_bad_training_inputs(tmp_path):
    z, x = _tiny()
    with pytest.raises(ParameterError, match="inputs must be"):
        train_decoder(z[:, :8], x, _cfg(), tmp_path / "a", None)
    with pytest.raises(ParameterError, match="targets must be"):
        train_decoder(z, x[:, :32, :32], _cfg(), tmp_path / "b", None)
    with pytest.raises(ParameterError, match="size"):
        train_decoder(z, x, _cfg(size=100), tmp_path / "c", None)
    assert not (tmp_path / "c").exists()


def test_grid_report_table_and_heatmap(tmp_path):
    from facepriv.attacks.reconstruction.kp_grid import write_grid_report

    def cell(r):
        return {"rsr": {"0.001": r / 2, "0.01": r, "0.1": min(1.0, 2 * r)}, "ssim": 0.3, "psnr": 14.0, "gender_accuracy": {"svm": 0.7}}

    res = {"unprotected": cell(0.8), "K16_P2": cell(0.5), "K32_P4": cell(0.0), "naive_K16_P2": cell(0.1)}
    table = write_grid_report(tmp_path, res, [16, 32], [2, 4])
    assert set(table) == set(res)
    md = (tmp_path / "rsr_table.md").read_text()
    assert "| K16_P2 | 25.0 | 50.0 | 100.0 | 0.300 | 14.00 | 0.700 | n/a |" in md
    assert "| naive_K16_P2 | 5.0 | 10.0 | 20.0 |" in md
    assert (tmp_path / "rsr_table.csv").read_text().count("\n") == 1 + 4 * 3
    for f in ("0.001", "0.01", "0.1"):
        assert (tmp_path / f"rsr_heatmap_fmr{f}.png").stat().st_size > 1000
        assert (tmp_path / f"rsr_heatmap_naive_fmr{f}.png").stat().st_size > 1000


def test_column_grid_titles_and_protection_titles():
    from facepriv.attacks.reconstruction.figure import protection_title
    from facepriv.attacks.reconstruction.viz import column_grid

    cols = [np.full((3, 64, 64, 3), v, np.uint8) for v in (0, 128)]
    plain = column_grid(cols)
    assert plain.shape == (3 * 66 + 2, 2 * 66 + 2, 3)
    titled = column_grid(cols, titles=["original", "PE-MIU 32"], cell=96)
    assert titled.shape == (18 + 3 * 98 + 2, 2 * 98 + 2, 3)
    assert (titled[:18] < 128).any()  # the titles are drawn in the header band
    np.testing.assert_array_equal(titled[20:116, 2:98], 0)  # images resized into their cells
    with pytest.raises(ValueError, match="titles"):
        column_grid(cols, titles=["one"])
    assert protection_title(None) == "unprotected"
    assert protection_title({"name": "pe_miu", "params": {"block_size": 32, "moved_blocks": None}}) == "PE-MIU 32"
    assert protection_title({"name": "pe_miu", "params": {"block_size": 16, "moved_blocks": 4}}) == "K16 P4"
