"""The ``device`` option of ``facepriv run``: resolved before any work, carried into every cell."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facepriv.cli.main import main
from facepriv.experiments.config import ConfigError, load_config
from facepriv.experiments.runner import Runner

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def _no_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")


def test_run_device_cuda_without_cuda_is_one_line_error(tmp_path, capsys):
    _no_cuda()
    out = tmp_path / "run"
    rc = main(["run", str(DEMO), "--out", str(out), "--device", "cuda"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert err.startswith("facepriv: error: --device: cuda asked for")
    assert not out.exists()  # nothing written


def test_run_device_malformed_is_one_line_error(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", str(DEMO), "--out", str(out), "--device", "gpu0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--device" in err and "gpu0" in err
    assert not out.exists()


def test_yaml_device_key(tmp_path):
    _no_cuda()
    text = DEMO.read_text(encoding="utf-8")
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(text + "\ndevice: cuda:1\n", encoding="utf-8")
    cfg = load_config(cfg_path)
    assert cfg.device == "cuda:1"
    assert "device" not in cfg.as_dict()  # a run-time choice: resumable on another device
    with pytest.raises(Exception, match="device") as info:
        Runner(cfg, tmp_path / "run")
    assert getattr(info.value, "param", None) == "device"
    assert not (tmp_path / "run").exists()
    assert Runner(cfg, tmp_path / "run", device="cpu").device == "cpu"  # --device wins over the YAML
    cfg_path.write_text(text + "\ndevice: tpu\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="device"):
        load_config(cfg_path)


def test_device_reaches_every_cell(tmp_path):
    cfg = load_config(DEMO)
    runner = Runner(cfg, tmp_path / "run", device="cpu")
    pspec = cfg.protections[0]
    idx = np.arange(2)
    data = runner._data("m", None, None, idx, idx, pspec, "similarity", None)
    assert data.device == "cpu"
    assert Runner(cfg, tmp_path / "run", device="auto").device in ("cpu", "cuda:0")


# --------------------------------------------------------------- --device on the torch commands
#: every command that does torch work, with arguments that need not exist: --device is resolved first
DEVICE_COMMANDS = {
    "embed": ["embed", "{tmp}/photos", "--out", "{tmp}/o/E.npz"],
    "reconstruct-train": ["reconstruct", "train", "--embeddings", "{tmp}/E.npz", "--images", "{tmp}/photos",
                          "--out", "{tmp}/o/rt"],
    "reconstruct-eval": ["reconstruct", "eval", "{tmp}/rt", "--embeddings", "{tmp}/E.npz", "--images", "{tmp}/photos",
                         "--out", "{tmp}/o/re"],
    "advface-extract": ["advface", "extract", "--images", "{tmp}/photos", "--out", "{tmp}/o/F.npz"],
    "advface-train": ["advface", "train", "--features", "{tmp}/F.npz", "--images", "{tmp}/photos", "--role", "shadow",
                      "--out", "{tmp}/o/at"],
    "advface-protect": ["advface", "protect", "--features", "{tmp}/F.npz", "--method", "random_noise",
                        "--out", "{tmp}/o/FP.npz"],
    "advface-eval": ["advface", "eval", "--features", "{tmp}/F.npz", "--images", "{tmp}/photos", "--shadow", "resrec={tmp}/s",
                     "--attacker", "resrec={tmp}/a", "--out", "{tmp}/o/ae"],
    "deid-run": ["deid", "run", "--images", "{tmp}/photos", "--labels", "{tmp}/labels.csv", "--source", "dlib_resnet",
                 "--out", "{tmp}/o/dr"],
    "deid-eval": ["deid", "eval", "{tmp}/dr", "--out", "{tmp}/o/de"],
}


def _argv(name: str, tmp: Path, *extra: str) -> list[str]:
    return [a.replace("{tmp}", str(tmp)) for a in DEVICE_COMMANDS[name]] + list(extra)


@pytest.mark.parametrize("name", sorted(DEVICE_COMMANDS))
def test_device_cuda_without_cuda_on_every_torch_command(name, tmp_path, capsys):
    _no_cuda()
    rc = main(_argv(name, tmp_path, "--device", "cuda"))
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("facepriv: error: --device: cuda asked for"), err
    assert list(tmp_path.iterdir()) == []  # refused before anything was read or written


@pytest.mark.parametrize("name", sorted(DEVICE_COMMANDS))
@pytest.mark.parametrize("value", ["gpu0", "cuda:x"])
def test_device_malformed_on_every_torch_command(name, value, tmp_path, capsys):
    rc = main(_argv(name, tmp_path, "--device", value))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("facepriv: error: --device:") and value in err
    assert list(tmp_path.iterdir()) == []


def test_amp_flag_only_on_training_commands():
    from facepriv.cli.main import build_parser

    parser = build_parser()
    ns = parser.parse_args(["reconstruct", "train", "--embeddings", "E.npz", "--images", "d", "--out", "r", "--no-amp"])
    assert ns.amp is False and ns.device == "auto"
    ns = parser.parse_args(["advface", "train", "--features", "F.npz", "--images", "d", "--role", "shadow", "--out", "r"])
    assert ns.amp is None  # default: on for CUDA, off on the CPU
    with pytest.raises(SystemExit):
        parser.parse_args(["embed", "d", "--out", "E.npz", "--amp"])


# ------------------------------------------------------------------------ helpers of facepriv.device
def test_resolve_amp_and_cpu_helpers_change_nothing_on_the_cpu():
    import torch

    from facepriv.device import autocast, grad_scaler, module_on, resolve_amp, to_device

    assert resolve_amp("cpu") is False and resolve_amp("cpu", True) is False
    assert resolve_amp("cuda:0") is True and resolve_amp("cuda:0", False) is False
    net = torch.nn.Linear(3, 2)
    assert module_on(net, "cpu") is net and module_on(None, "cuda:0") is None
    t = torch.ones(2)
    assert to_device(t, "cpu") is t
    assert grad_scaler("cpu", True) is None
    with autocast("cpu", True):  # a no-op context on the CPU
        assert net(torch.ones(1, 3)).dtype == torch.float32


# ------------------------------------------------------ --device cpu equals no flag, on real faces
def _few_photos(celeba_dir: Path, dst: Path, n_ids: int = 2, per_id: int = 3) -> Path:
    import shutil

    from conftest import celeba_rows

    rows = celeba_rows(celeba_dir, n_ids=n_ids, per_id=per_id)
    for im, _, _ in rows:
        (dst / im).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(celeba_dir / im, dst / im)
    (dst / "labels.csv").write_text("image,identity,gender\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    return dst


def test_embed_device_cpu_equals_no_flag(celeba_dir, tmp_path):
    pytest.importorskip("dlib")
    data = _few_photos(celeba_dir, tmp_path / "data")
    outs = {}
    for tag, extra in (("none", []), ("cpu", ["--device", "cpu"]), ("auto", ["--device", "auto"])):
        out = tmp_path / f"E_{tag}.npz"
        assert main(["-q", "embed", str(data), "--labels", str(data / "labels.csv"), "--out", str(out), *extra]) == 0
        with np.load(out) as z:
            outs[tag] = {k: z[k].copy() for k in z.files}
    for tag in ("cpu",) if _has_cuda() else ("cpu", "auto"):  # auto is the CPU here
        assert outs[tag].keys() == outs["none"].keys()
        for k in outs["none"]:
            assert np.array_equal(outs[tag][k], outs["none"][k]), (tag, k)  # bit-identical


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_bim_cloak_device_cpu_equals_default(celeba_dir):
    """The same BIM cloak through the device plumbing (device='cpu') and through the defaults."""
    pytest.importorskip("dlib")
    from conftest import celeba_rows

    from facepriv.attacks.deid.cloak import cloak_photos
    from facepriv.attacks.deid.heads import train_head
    from facepriv.device import module_on
    from facepriv.models.zoo import get_model
    from facepriv.pipeline import align_images
    from facepriv.protections.image import SourcePipeline

    rows = celeba_rows(celeba_dir, n_ids=2, per_id=2)
    model = get_model("dlib_resnet")
    ac = align_images(celeba_dir, [r[0] for r in rows], model.card.alignment)
    ident = np.array([dict((r[0], r[1]) for r in rows)[i] for i in ac.ids])
    emb = model.embed(ac.crops)
    head, info = train_head(emb, ident, model=model.name, seed=0, epochs=50)
    head_dev, info_dev = train_head(emb, ident, model=model.name, seed=0, epochs=50, device="cpu")
    assert info_dev == info
    for a, b in zip(head.state_dict().values(), head_dev.state_dict().values(), strict=True):
        assert torch_equal(a, b)
    labels = np.searchsorted(np.array(info.classes), ident)
    mats = np.repeat(np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]), len(ac.crops), axis=0)
    means = np.zeros((len(info.classes), emb.shape[1]), np.float32)
    plain = SourcePipeline(net=model.torch_module(), head=head, crop_hw=(150, 150), templates=means)
    viadev = SourcePipeline(net=module_on(model.torch_module(), "cpu"), head=module_on(head, "cpu"), crop_hw=(150, 150),
                            templates=means, device="cpu")
    a = cloak_photos(ac.crops[:2], mats[:2], labels[:2], source=plain, method="bim", eps=2)
    b = cloak_photos(ac.crops[:2], mats[:2], labels[:2], source=viadev, method="bim", eps=2)
    assert np.array_equal(a.photos, b.photos) and np.array_equal(a.loss_after, b.loss_after)
    assert np.abs(a.photos.astype(int) - ac.crops[:2].astype(int)).max() <= 2


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


# ------------------------------------------------------------------- device and AMP in run configs
def test_reconstruction_config_records_device_and_amp(tmp_path):
    import json

    from facepriv.attacks.reconstruction.trainer import TrainConfig, train_decoder

    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(6, 16)).astype(np.float32)
    targets = rng.integers(0, 256, size=(6, 64, 64, 3), dtype=np.uint8)
    cfg = TrainConfig(size=64, embedding_dim=16, epochs=1, batch_size=3, w_id=0.0, seed=1)
    a = train_decoder(inputs, targets, cfg, tmp_path / "a", None, max_steps=1)
    b = train_decoder(inputs, targets, cfg, tmp_path / "b", None, max_steps=1, device="cpu", amp=True)
    extra = json.loads((tmp_path / "b" / "config.json").read_text())["extra"]
    assert extra["device"] == "cpu" and extra["amp"] is False  # AMP is never used on the CPU
    for p, q in zip(a.decoder.state_dict().values(), b.decoder.state_dict().values(), strict=True):
        assert torch_equal(p, q)
    assert a.history[0]["loss"] == b.history[0]["loss"]


def test_advface_config_amp_is_recorded_but_not_a_resume_key():
    from dataclasses import asdict, replace

    from facepriv.advface.train import DecoderConfig

    cfg = DecoderConfig(arch="resrec", feature_shape=(32, 38, 38), out_size=64, model="dlib_resnet", cut="stage1",
                        input_shape=(3, 150, 150), epochs=1, batch_size=4, lr=1e-3, seed=0, role="shadow",
                        split_seed=0, n_train=8)
    assert cfg.amp is False and "amp" in asdict(cfg)
    assert replace(cfg, amp=True).differences(cfg) == []
    old = {k: v for k, v in asdict(cfg).items() if k != "amp"}  # a config.json of an older facepriv
    assert DecoderConfig(**old) == cfg


# ---------------------------------------------------------------------- the GPU smoke script's CPU half
def test_gpu_smoke_cpu_half(celeba_dir, capsys):
    pytest.importorskip("dlib")
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_smoke.py"
    spec = importlib.util.spec_from_file_location("gpu_smoke", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main([str(celeba_dir), "--cpu-only", "--n", "8", "--steps", "1", "--size", "64", "--batch", "4",
                   "--cloaks", "2", "--eps", "2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "CPU half only" in out and "| embedding | cpu |" in out and "| BIM cloak | cpu |" in out
    assert "FAIL" not in out


# ------------------------------------------- the non-CPU code paths, run on the CPU as device "cpu:0"
# "cpu:0" is a CPU device that is not the string "cpu": it takes every branch written for CUDA
# (network copies, tensor moves, results brought back) without a GPU. Same kernels, same data:
# the results must equal the CPU path's exactly. (AMP stays off: it is CUDA-only.)
ALT = "cpu:0"


def test_cuda_branches_via_cpu0_embed_and_cloak(celeba_dir):
    pytest.importorskip("dlib")
    from conftest import celeba_rows

    from facepriv.attacks.deid.cloak import cloak_photos
    from facepriv.attacks.deid.heads import train_head
    from facepriv.device import module_on
    from facepriv.models.base import embed_on
    from facepriv.models.zoo import get_model
    from facepriv.pipeline import align_images
    from facepriv.protections.image import SourcePipeline

    rows = celeba_rows(celeba_dir, n_ids=2, per_id=2)
    model = get_model("dlib_resnet")
    ac = align_images(celeba_dir, [r[0] for r in rows], model.card.alignment)
    ident = np.array([dict((r[0], r[1]) for r in rows)[i] for i in ac.ids])
    emb = model.embed(ac.crops)
    assert np.array_equal(embed_on(model, ac.crops, ALT), emb)
    head, info = train_head(emb, ident, model=model.name, seed=0, epochs=30)
    head_alt, info_alt = train_head(emb, ident, model=model.name, seed=0, epochs=30, device=ALT)
    assert info_alt == info
    assert all(torch_equal(a, b) for a, b in zip(head.state_dict().values(), head_alt.state_dict().values(), strict=True))
    labels = np.searchsorted(np.array(info.classes), ident)
    mats = np.repeat(np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]), 2, axis=0)
    means = np.zeros((len(info.classes), emb.shape[1]), np.float32)
    net = model.torch_module()
    cpu = SourcePipeline(net=net, head=head, crop_hw=(150, 150), templates=means)
    alt = SourcePipeline(net=module_on(net, ALT), head=module_on(head, ALT), crop_hw=(150, 150), templates=means,
                         device=ALT)
    assert alt.net is not net  # a copy: the cached network is not moved
    for method in ("bim", "push"):
        a = cloak_photos(ac.crops[:2], mats, labels[:2], source=cpu, method=method, eps=2)
        b = cloak_photos(ac.crops[:2], mats, labels[:2], source=alt, method=method, eps=2)
        assert np.array_equal(a.photos, b.photos), method
        assert np.array_equal(a.loss_after, b.loss_after), method


def test_cuda_branches_via_cpu0_decoder_training(tmp_path):
    import json

    import torch

    from facepriv.attacks.reconstruction.evaluate import embed_images
    from facepriv.attacks.reconstruction.trainer import TrainConfig, load_decoder, reconstruct, train_decoder

    torch.manual_seed(0)
    recog = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, stride=4), torch.nn.Flatten(), torch.nn.LazyLinear(8))
    recog(torch.zeros(1, 3, 32, 32))
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(6, 16)).astype(np.float32)
    targets = rng.integers(0, 256, size=(6, 64, 64, 3), dtype=np.uint8)
    cfg = TrainConfig(size=64, embedding_dim=16, epochs=2, batch_size=3, w_id=0.5, seed=1)
    a = train_decoder(inputs, targets, cfg, tmp_path / "a", recog, (32, 32))
    b = train_decoder(inputs, targets, cfg, tmp_path / "b", recog, (32, 32), device=ALT)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert all(torch_equal(p, q) for p, q in zip(a.decoder.state_dict().values(), b.decoder.state_dict().values(), strict=True))
    assert json.loads((tmp_path / "b" / "config.json").read_text())["extra"]["device"] == ALT
    dec, _ = load_decoder(tmp_path / "b")  # the checkpoint holds CPU tensors
    assert np.array_equal(reconstruct(dec, inputs, device=ALT), reconstruct(a.decoder, inputs))
    imgs = reconstruct(dec, inputs)
    assert np.array_equal(embed_images(recog, imgs, (32, 32), device=ALT), embed_images(recog, imgs, (32, 32)))


def test_cuda_branches_via_cpu0_advface():
    import torch

    from facepriv.advface.split import SplitSystem
    from facepriv.advface.train import DecoderConfig, train_decoder

    sys_cpu = SplitSystem.create("dlib_resnet")
    sys_alt = SplitSystem.create("dlib_resnet", device=ALT)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.random((4, 3, 150, 150), dtype=np.float32))
    feats = sys_cpu.extract(images)
    assert np.array_equal(sys_alt.extract(images), feats)
    assert np.array_equal(sys_alt.describe(feats), sys_cpu.describe(feats))
    assert sys_alt.client_on is not sys_cpu.client  # a copy: the cached network is not moved
    crops = rng.integers(0, 256, size=(4, 150, 150, 3), dtype=np.uint8)
    cfg = DecoderConfig(arch="resrec", feature_shape=sys_cpu.feature_shape, out_size=64, model="dlib_resnet",
                        cut=sys_cpu.cut, input_shape=sys_cpu.input_shape, epochs=1, batch_size=2, lr=1e-3, seed=0,
                        role="shadow", split_seed=0, n_train=4)
    d1 = train_decoder(feats, crops, cfg)
    d2 = train_decoder(feats, crops, cfg, device=ALT, amp=True)  # AMP is CUDA-only: ignored here
    assert all(torch_equal(p, q) for p, q in zip(d1.state_dict().values(), d2.state_dict().values(), strict=True))
