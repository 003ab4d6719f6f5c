"""dlib ResNet port: .dat reader, exactness against dlib-bin on real chips, gradients, split."""

from __future__ import annotations

import csv
from collections import defaultdict

import numpy as np
import pytest
import torch

from facepriv import artifacts
from facepriv.errors import InputFileError, ParameterError
from facepriv.images import load_rgb
from facepriv.models.dlib_dat import EXPECTED_PARAMS, read_dlib_resnet
from facepriv.models.dlib_resnet import DlibResNet, zero_pad_add
from facepriv.models.zoo import get_model


@pytest.fixture(scope="module")
def dat_path():
    return artifacts.fetch("dlib_resnet_v1")


@pytest.fixture(scope="module")
def weights(dat_path):
    return read_dlib_resnet(dat_path)


# ---------------------------------------------------------------------------------------------- reader


def test_reader_shapes_and_param_count(weights):
    assert weights.num_params == EXPECTED_PARAMS == 5_614_592
    assert len(weights.convs) == 29 and len(weights.affines) == 29
    assert weights.convs[0].weight.shape == (32, 3, 7, 7)
    assert (weights.convs[0].stride, weights.convs[0].padding) == (2, 0)
    assert weights.convs[1].weight.shape == (32, 32, 3, 3) and weights.convs[1].padding == 1
    assert weights.convs[-1].weight.shape == (256, 256, 3, 3)
    assert weights.fc.shape == (256, 128)
    np.testing.assert_allclose(weights.input_mean, [122.782, 117.001, 104.298], atol=1e-3)
    assert weights.input_size == (150, 150)
    assert weights.loss_distance_threshold == pytest.approx(0.6)
    for c, a in zip(weights.convs, weights.affines, strict=True):
        assert c.weight.dtype == np.float32 and np.isfinite(c.weight).all()
        assert a.gamma.shape == a.beta.shape == (c.weight.shape[0],)
    # down-sampling convs (stride 2, no padding) open stages 2..5
    assert [i for i, c in enumerate(weights.convs) if c.stride == 2] == [0, 7, 15, 21, 27]


@pytest.mark.parametrize("keep", [0, 3, 400, 11_000_000, -1])
def test_truncated_file_gives_clear_error(dat_path, tmp_path, keep):
    data = dat_path.read_bytes()
    bad = tmp_path / "truncated.dat"
    bad.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    with pytest.raises(InputFileError) as exc:
        read_dlib_resnet(bad)
    assert str(bad) in str(exc.value)
    assert "truncated" in str(exc.value) or "ends" in str(exc.value)


def test_corrupt_and_missing_files(dat_path, tmp_path):
    data = bytearray(dat_path.read_bytes())
    i = data.index(b"con_4")
    data[i : i + 5] = b"con_9"
    bad = tmp_path / "corrupt.dat"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputFileError, match="expected layer name of conv 1 'con_4', found 'con_9'"):
        read_dlib_resnet(bad)
    extra = tmp_path / "extra.dat"
    extra.write_bytes(dat_path.read_bytes() + b"\x00")
    with pytest.raises(InputFileError, match="unexpected bytes after the network"):
        read_dlib_resnet(extra)
    with pytest.raises(InputFileError, match="cannot read"):
        read_dlib_resnet(tmp_path / "absent.dat")


# ---------------------------------------------------------------------------------------------- model


def test_registry_card_and_params():
    m = get_model("dlib_resnet")
    assert isinstance(m, DlibResNet)
    assert m.card.input_size == (150, 150) and m.card.embedding_dim == 128
    assert m.card.alignment == "dlib_chip150" and m.card.differentiable and m.card.licence == "CC0-1.0"
    with pytest.raises(ParameterError, match="batch_size"):
        get_model("dlib_resnet", batch_size=0)
    assert m.torch_module() is DlibResNet(batch_size=4).torch_module()  # loaded once per process


def test_zero_pad_add_pads_smaller_operand_at_the_end():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 4, 4, 4), 2.0)
    out = zero_pad_add(a, b)
    assert out.shape == (1, 4, 4, 4)
    assert torch.all(out[:, :2, :3, :3] == 3) and torch.all(out[:, 2:] == 2) and torch.all(out[:, :, 3, :] == 2)


def test_gradients_reach_pixels():
    net = DlibResNet().torch_module()
    x = torch.rand(2, 3, 150, 150, requires_grad=True)
    net(x).pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match=r"\(N, 3, 150, 150\)"):
        net(torch.rand(1, 3, 112, 112))


def test_split_composes_exactly_for_every_cut():
    m = DlibResNet()
    cuts = DlibResNet.cut_points()
    assert cuts == ["conv1", "stage1", "stage2", "stage3", "stage4", "stage5"]
    x = torch.rand(2, 3, 150, 150)
    with torch.inference_mode():
        full = m.torch_module()(x)
        for cut in cuts:
            client, server = m.split(cut)
            z = client(x)
            z_before = z.clone()
            assert tuple(z.shape[1:]) == m.feature_shape(cut)
            assert torch.equal(server(z), full), cut
            assert torch.equal(z, z_before)  # the server part never edits the features in place
    with pytest.raises(ParameterError, match="allowed: conv1, stage1"):
        m.split("layer4")
    client, server = m.split()  # default: stem + first three residual stages
    assert tuple(client(x).shape[1:]) == (128, 8, 8)


# ---------------------------------------------------------------------------------------------- real faces


@pytest.fixture(scope="module")
def real_chips(celeba_dir):
    """16 dlib chips (8 identities x 2) cut by dlib itself from real CelebA photos."""
    dlib = pytest.importorskip("dlib")
    detector = dlib.get_frontal_face_detector()
    shaper = dlib.shape_predictor(str(artifacts.fetch("dlib_landmarks5")))
    by_id: dict[str, list[str]] = defaultdict(list)
    with open(celeba_dir / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            by_id[row["identity"]].append(row["image"])
    chips, ids = [], []
    for ident in sorted(by_id):
        got = []
        for rel in by_id[ident]:
            img = load_rgb(celeba_dir / rel)
            dets = detector(img, 1)
            if dets:
                got.append(np.asarray(dlib.get_face_chip(img, shaper(img, dets[0]), size=150, padding=0.25)))
            if len(got) == 2:
                break
        if len(got) == 2:
            chips += got
            ids += [ident, ident]
        if len(chips) == 16:
            break
    assert len(chips) == 16
    return np.stack(chips), np.array(ids), dlib


def test_port_matches_dlib_descriptors(real_chips):
    chips, _, dlib = real_chips
    ref_model = dlib.face_recognition_model_v1(str(artifacts.fetch("dlib_resnet_v1")))
    ref = np.array([np.asarray(ref_model.compute_face_descriptor(c)) for c in chips], dtype=np.float32)
    ours = DlibResNet(batch_size=8).embed(chips)
    assert ours.shape == (16, 128) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-4


def test_genuine_pairs_score_higher_than_impostors(real_chips):
    chips, ids, _ = real_chips
    emb = DlibResNet().embed(chips)
    dist = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
    same = ids[:, None] == ids[None]
    off_diag = ~np.eye(len(ids), dtype=bool)
    genuine, impostor = dist[same & off_diag], dist[~same]
    assert genuine.mean() < 0.6 < impostor.mean()  # dlib's own decision threshold
    # AUC of -distance: fraction of (genuine, impostor) pairs ranked correctly
    auc = (genuine[:, None] < impostor[None]).mean()
    assert auc > 0.95
