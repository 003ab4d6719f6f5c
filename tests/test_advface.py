"""AdvFace: split system, decoders, PGD bound, baselines' noise, bad inputs, end-to-end CLI on real faces."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from facepriv.advface.data import identity_roles
from facepriv.advface.decoders import ARCHITECTURES, build_decoder
from facepriv.advface.features import FeatureSet, load_features, save_features
from facepriv.advface.protect import AdvFace, LaplaceDP, RandomNoise, _attack_budget
from facepriv.advface.split import SplitSystem
from facepriv.advface.train import DecoderConfig, _build, images_to_tensor, load_decoder, train_decoder
from facepriv.cli.main import main
from facepriv.errors import InputFileError, OutputExistsError, ParameterError


@pytest.fixture(scope="module")
def system() -> SplitSystem:
    return SplitSystem.create("dlib_resnet", "stage1")


@pytest.fixture(scope="module")
def small_faces(celeba_dir, tmp_path_factory):
    """12 identities x 4 real CelebA images in a temporary folder with a labels CSV."""
    root = tmp_path_factory.mktemp("celeba48")
    people = sorted(p for p in celeba_dir.iterdir() if p.is_dir() and len(list(p.iterdir())) >= 6)[:12]
    rows = []
    for person in people:
        (root / person.name).mkdir()
        for img in sorted(person.iterdir())[:4]:
            shutil.copy(img, root / person.name / img.name)
            rows.append((f"{person.name}/{img.name}", person.name))
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "identity", "gender"])
        w.writerows([(a, b, "") for a, b in rows])
    return root


def test_split_composes_to_full_model(system):
    from facepriv.models.zoo import get_model

    x = torch.rand(2, 3, 150, 150)
    full = get_model("dlib_resnet").torch_module()
    with torch.no_grad():
        torch.testing.assert_close(system.server(system.client(x)), full(x), rtol=0, atol=0)
    assert system.feature_shape == (32, 35, 35)


def test_unknown_cut_is_a_clear_error():
    with pytest.raises(ParameterError, match="no cut point 'stage9'"):
        SplitSystem.create("dlib_resnet", "stage9")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_decoders_map_features_to_images(system, arch):
    dec = build_decoder(arch, system.feature_shape, 64, system.client, system.input_shape)
    out = dec(torch.randn(2, *system.feature_shape))
    assert out.shape == (2, 3, 64, 64)
    assert float(out.detach().min()) >= 0 and float(out.detach().max()) <= 1


def test_attack_budget_modes():
    assert _attack_budget(0.2, 0.2, 40, "ball") == (0.2, 0.2)
    radius, step = _attack_budget(0.1, 0.2, 40, "step")
    assert step == 0.1 and radius == pytest.approx(4.0)


def test_random_noise_bound_and_statistics():
    x = np.zeros((50, 8, 10, 10), np.float32)
    z = RandomNoise(eps=0.2, alpha=0.2, steps=40, bound="ball", seed=1).transform(x)
    assert np.abs(z - x).max() <= 0.2 + 1e-7
    assert abs(float((z - x).mean())) < 0.01  # symmetric noise
    z2 = RandomNoise(eps=0.05, alpha=0.2, steps=40, bound="step", seed=1).transform(x)
    assert np.abs(z2 - x).max() <= 40 * 0.05 + 1e-6
    np.testing.assert_array_equal(z, RandomNoise(eps=0.2, seed=1).transform(x))  # seeded


def test_laplace_statistics():
    x = np.zeros((200, 8, 10, 10), np.float32)
    d = LaplaceDP(eps=0.2, budget=1.0, seed=0).transform(x) - x
    # Laplace(0, b): mean |X| = b, median 0
    assert abs(float(np.abs(d).mean()) - 0.2) < 0.005
    assert abs(float(np.median(d))) < 0.01
    d2 = LaplaceDP(eps=0.2, budget=2.0, seed=0).transform(x) - x
    assert abs(float(np.abs(d2).mean()) - 0.1) < 0.003


@pytest.mark.parametrize("bad", [{"eps": -0.1}, {"steps": 0}, {"bound": "cube"}])
def test_bad_noise_parameters(bad):
    with pytest.raises(ParameterError):
        RandomNoise(**bad).validate_params()


def test_features_from_another_cut_are_refused(tmp_path):
    fs = FeatureSet(np.zeros((2, 64, 17, 17), np.float32), np.array(["a", "b"]), np.array(["x", "y"]), "dlib_resnet", "stage2")
    save_features(fs, tmp_path / "f.npz")
    back = load_features(tmp_path / "f.npz")
    with pytest.raises(InputFileError, match="cut at 'stage2'"):
        back.check_compatible("dlib_resnet", "stage1")


def _old_identity_roles(identity: np.ndarray, seed: int) -> np.ndarray:
    """The roles facepriv drew before the one splitter (facepriv.splits) existed, kept to prove equality."""
    ids = np.unique(identity)
    perm = np.random.default_rng(seed).permutation(ids)
    n1, n2 = max(1, round(0.3 * len(ids))), max(1, round(0.3 * len(ids)))
    role_of = {i: "shadow" for i in perm[:n1]} | {i: "attacker" for i in perm[n1 : n1 + n2]}
    role_of |= {i: "eval" for i in perm[n1 + n2 :]}
    return np.array([role_of[i] for i in identity])


@pytest.mark.parametrize("n_ids, seed", [(3, 0), (4, 1), (20, 3), (90, 0), (249, 7)])
def test_identity_roles_are_disjoint_seeded_and_unchanged(n_ids, seed):
    ident = np.repeat(np.array([f"p{i:03d}" for i in range(n_ids)]), 3)
    r = identity_roles(ident, seed=seed)
    for a in ("shadow", "attacker", "eval"):
        assert (r == a).any()
    for i in np.unique(ident):
        assert len(set(r[ident == i])) == 1
    np.testing.assert_array_equal(r, _old_identity_roles(ident, seed))
    with pytest.raises(ParameterError, match="at least 3 identities"):
        identity_roles(ident[:6], seed)


@pytest.mark.slow
def test_shadow_training_reduces_l1_and_advface_respects_the_bound(system, small_faces, tmp_path):
    from facepriv.advface.data import extract_features, load_faces

    faces = load_faces(small_faces, str(small_faces / "labels.csv"), "dlib_chip150")
    fs = extract_features(faces, system)
    cfg = DecoderConfig(arch="resrec", feature_shape=system.feature_shape, out_size=32, model="dlib_resnet",
                        cut="stage1", input_shape=system.input_shape, epochs=4, batch_size=8, lr=3e-3, seed=0,
                        role="shadow", split_seed=0, n_train=len(fs))
    z = torch.from_numpy(fs.features)
    target = images_to_tensor(faces.crops, 32)
    before = _build(cfg, None).eval()  # the initial weights of the run
    with torch.no_grad():
        l1_before = float((before(z) - target).abs().mean())
    dec = train_decoder(fs.features, faces.crops, cfg, tmp_path / "shadow", client=system.client)
    with torch.no_grad():
        l1_after = float((dec(z) - target).abs().mean())
    assert l1_after < 0.8 * l1_before
    # a reloaded decoder gives the same output
    again, _ = load_decoder(tmp_path / "shadow", system.client)
    with torch.no_grad():
        torch.testing.assert_close(again(z[:4]), dec(z[:4]))
    for bound, eps in (("ball", 0.2), ("step", 0.05)):
        prot = AdvFace(shadow=str(tmp_path / "shadow"), eps=eps, alpha=0.2, steps=5, bound=bound).fit()
        z_shadow, adv = prot.protect_batch(z[:8])
        delta = (adv - z_shadow).abs().numpy()
        limit = eps if bound == "ball" else 5 * min(0.2, eps)
        assert delta.max() <= limit * (1 + 1e-6) + 1e-6  # exact up to float32 rounding of z +- eps
        assert delta.max() >= 0.5 * min(eps, 0.2)  # it did move
    # a corrupt checkpoint is a clear error
    (tmp_path / "shadow" / "decoder.pt").write_bytes(b"garbage")
    with pytest.raises(InputFileError, match="corrupt"):
        load_decoder(tmp_path / "shadow", system.client)


@pytest.mark.slow
def test_cli_end_to_end_on_real_faces(small_faces, tmp_path, capsys):
    d, f = str(small_faces), str(tmp_path / "feat.npz")
    assert main(["-q", "advface", "extract", "--images", d, "--labels", f"{d}/labels.csv", "--out", f]) == 0
    for role in ("shadow", "attacker"):
        assert main(["-q", "advface", "train", "--features", f, "--images", d, "--role", role, "--epochs", "1",
                     "--size", "32", "--batch-size", "4", "--out", str(tmp_path / role)]) == 0
    assert main(["-q", "advface", "protect", "--features", f, "--shadow", str(tmp_path / "shadow"), "--steps", "3",
                 "--out", str(tmp_path / "prot.npz")]) == 0
    prot = load_features(tmp_path / "prot.npz")
    assert prot.protection["name"] == "advface" and prot.protection["params"]["steps"] == 3
    out = tmp_path / "eval"
    assert main(["-q", "advface", "eval", "--features", f, "--images", d, "--shadow", f"resrec={tmp_path / 'shadow'}",
                 "--attacker", f"resrec={tmp_path / 'attacker'}", "--steps", "3", "--sweep", "0,0.2",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["method"] for r in summary["table"]] == ["unprotected", "random", "dp", "advface"]
    for r in summary["table"]:
        assert 0 <= r["ssim"] <= 1 and r["psnr"] > 0 and 0 <= r["srra"] <= 1 and 0 <= r["accuracy"] <= 1
    assert (out / "tradeoff_psnr_accuracy.png").stat().st_size > 1000
    assert (out / "reconstructions.png").stat().st_size > 1000
    md = (out / "summary.md").read_text()
    assert "| AdvFace | 0.20 |" in md and "| unprotected | 0.00 |" in md and "### Transfer" in md
    # a finished evaluation is not replaced without --overwrite
    assert main(["advface", "eval", "--features", f, "--images", d, "--shadow", f"resrec={tmp_path / 'shadow'}",
                 "--attacker", f"resrec={tmp_path / 'attacker'}", "--out", str(out)]) == 2
    # bad inputs exit 2 with a message
    assert main(["advface", "protect", "--features", f, "--method", "random_noise", "--eps", "-1",
                 "--out", str(tmp_path / "x.npz")]) == 2
    assert main(["advface", "extract", "--images", d, "--cut", "nowhere", "--out", str(tmp_path / "y.npz")]) == 2
    assert "no cut point 'nowhere'" in capsys.readouterr().err


def test_second_backbone_splits_and_composes():
    from facepriv.models.zoo import get_model

    s = SplitSystem.create("mobilefacenet")
    assert s.cut == "347" and s.feature_shape == (128, 56, 56)
    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(s.server(s.client(x)), get_model("mobilefacenet").torch_module()(x), rtol=1e-5, atol=1e-5)


def test_offline_finetuning_moves_templates_of_perturbed_features_towards_the_clean_ones(system, small_faces):
    """Offline mode: Psi' is fitted so that Psi'(perturbed feature) points where Psi(clean feature) does."""
    from facepriv.advface.data import extract_features, load_faces
    from facepriv.advface.evaluate import finetune_server

    fs = extract_features(load_faces(small_faces, str(small_faces / "labels.csv"), "dlib_chip150"), system)
    clean = fs.features
    noisy = RandomNoise(eps=2.0, alpha=2.0, steps=3, seed=1).transform(clean)
    target = torch.from_numpy(system.describe(clean))

    def mean_cos(server):
        with torch.inference_mode():
            return float(torch.nn.functional.cosine_similarity(server(torch.from_numpy(noisy)), target).mean())

    before = mean_cos(system.server)
    tuned = finetune_server(system, noisy, clean, epochs=3, batch=16)
    assert mean_cos(tuned) > before + 0.2 * (1 - before)
    assert all(not p.requires_grad for p in tuned.parameters())
    assert tuned is not system.server  # the system's own Psi is left as it was


@pytest.fixture(scope="module")
def feats(system, small_faces):
    from facepriv.advface.data import extract_features, load_faces

    faces = load_faces(small_faces, str(small_faces / "labels.csv"), system.alignment)
    return extract_features(faces, system), faces


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_resumed_training_equals_an_uninterrupted_run(system, feats, tmp_path, monkeypatch):
    """Killed after a checkpoint (and with a half-written checkpoint left), resumed: the same weights exactly."""
    import facepriv.advface.train as train_mod

    fs, faces = feats
    cfg = DecoderConfig(arch="resrec", feature_shape=system.feature_shape, out_size=32, model="dlib_resnet",
                        cut="stage1", input_shape=system.input_shape, epochs=3, batch_size=8, lr=1e-3, seed=4,
                        role="shadow", split_seed=0, n_train=len(fs))
    train_decoder(fs.features, faces.crops, cfg, tmp_path / "full")
    full = torch.load(tmp_path / "full" / "decoder.pt", weights_only=True)

    class Killed(Exception):
        pass

    real_grid = train_mod.save_grid

    def dies_after_epoch_1(orig, rec, path, n=8):
        real_grid(orig, rec, path, n)
        if path.name == "samples_epoch001.png":
            raise Killed

    monkeypatch.setattr(train_mod, "save_grid", dies_after_epoch_1)
    with pytest.raises(Killed):
        train_decoder(fs.features, faces.crops, cfg, tmp_path / "cut")
    monkeypatch.setattr(train_mod, "save_grid", real_grid)
    assert torch.load(tmp_path / "cut" / "decoder.pt", weights_only=True)["epoch"] == 1
    (tmp_path / "cut" / ".decoder.pt.k1ll3d.tmp.pt").write_bytes(b"half a checkpoint")  # SIGKILL mid-write
    torch.manual_seed(999)  # global random state left by other work must not matter
    np.random.seed(999)  # noqa: NPY002
    with pytest.raises(OutputExistsError):  # neither --resume nor --overwrite: refused
        train_decoder(fs.features, faces.crops, cfg, tmp_path / "cut")
    train_decoder(fs.features, faces.crops, cfg, tmp_path / "cut", resume=True)
    resumed = torch.load(tmp_path / "cut" / "decoder.pt", weights_only=True)
    assert resumed["epoch"] == full["epoch"] == 3
    assert _same_weights(resumed["state_dict"], full["state_dict"])
    assert resumed["rng_state"] == full["rng_state"] and resumed["train_l1"] == full["train_l1"]
    assert not list((tmp_path / "cut").glob(".decoder.pt.*"))  # the stale temporary file is gone
    # resuming with other settings is refused, naming what differs
    with pytest.raises(ParameterError, match="lr"):
        train_decoder(fs.features, faces.crops, replace(cfg, lr=2e-3), tmp_path / "cut", resume=True)
