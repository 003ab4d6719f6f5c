"""ONNX -> PyTorch ports (sface, mobilefacenet, edgeface), the user ONNX model and the gender classifier.

Ports are checked against onnxruntime on real, ArcFace-aligned FaceScrub crops (max abs diff of the
raw embeddings), for gradients to the pixels, batch-size freedom, graph cuts, and genuine > impostor.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from facepriv.artifacts import fetch
from facepriv.errors import InputFileError, ParameterError
from facepriv.images import load_rgb
from facepriv.models.zoo import get_model

PORTS = {  # model name -> (artifact, reference preprocessing of float RGB 0..255 NCHW)
    "sface": ("sface", lambda x: x),
    "mobilefacenet": ("mobilefacenet_w600k", lambda x: (x - 127.5) / 127.5),
    "edgeface": ("edgeface_s", lambda x: (x / 255.0 - 0.5) / 0.5),
}


def _ort(path) -> object:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _labels(root: Path) -> dict[str, list[dict[str, str]]]:
    by: dict[str, list[dict[str, str]]] = {}
    with open(root / "labels.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            by.setdefault(r["identity"], []).append(r)
    return {k: sorted(v, key=lambda r: r["image"]) for k, v in sorted(by.items())}


@pytest.fixture(scope="module")
def aligned(facescrub_dir):
    """ArcFace-aligned 112x112 crops: 3 photos of each of the 6 FaceScrub people."""
    from facepriv.models.alignment import get_aligner

    al = get_aligner("arcface112")
    crops, ids = [], []
    for ident, rows in _labels(facescrub_dir).items():
        got = 0
        for r in rows:
            res = al.align(load_rgb(facescrub_dir / r["image"]))
            if res.crop is not None:
                crops.append(res.crop)
                ids.append(ident)
                got += 1
            if got == 3:
                break
    return np.stack(crops), np.array(ids)


@pytest.mark.parametrize("name", list(PORTS))
def test_port_matches_onnxruntime_on_real_faces(name, aligned):
    crops = aligned[0][:8]
    key, pre = PORTS[name]
    model = get_model(name)
    assert model.card.alignment == "arcface112" and model.card.input_size == (112, 112)
    ours = model.embed(crops)  # one batch of 8 through the port (EdgeFace's ONNX is batch-1 only)
    sess = _ort(fetch(key))
    x = np.ascontiguousarray(pre(crops.astype(np.float32).transpose(0, 3, 1, 2)))
    ref = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i : i + 1]})[0] for i in range(len(x))])
    assert ours.shape == ref.shape == (8, model.card.embedding_dim)
    diff = float(np.abs(ours - ref).max())
    assert diff < 1e-4, f"{name}: max abs diff {diff:.2e} vs onnxruntime"
    assert model.torch_module() is get_model(name, batch_size=4).torch_module()  # cached per process


@pytest.mark.parametrize("name", list(PORTS))
def test_gradients_reach_pixels(name, aligned):
    net = get_model(name).torch_module()
    x = torch.from_numpy(aligned[0][:2]).permute(0, 3, 1, 2).float().div(255).requires_grad_(True)
    emb = net(x)
    torch.nn.functional.cosine_similarity(emb[0:1], emb[1:2]).sum().backward()
    g = x.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    assert not any(p.requires_grad for p in net.parameters())  # frozen weights


@pytest.mark.parametrize("name", list(PORTS))
def test_genuine_scores_beat_impostor_scores(name, aligned):
    crops, ids = aligned
    e = get_model(name).embed(crops)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    s = e @ e.T
    iu = np.triu_indices(len(e), 1)
    same = (ids[:, None] == ids[None, :])[iu]
    gen, imp = s[iu][same], s[iu][~same]
    auc = float(np.mean(gen[:, None] > imp[None, :]))
    assert gen.mean() > imp.mean() + 0.25, (gen.mean(), imp.mean())
    assert auc > 0.85, auc


def test_split_reproduces_full_model(aligned):
    model = get_model("mobilefacenet")
    x = torch.from_numpy(aligned[0][:3]).permute(0, 3, 1, 2).float().div(255)
    cuts = model.cut_points()
    assert len(cuts) > 10
    client, server = model.split(cuts[len(cuts) // 2])
    with torch.no_grad():
        assert torch.equal(server(client(x)), model.torch_module()(x))
    with pytest.raises(ParameterError):
        model.split("no such value")


# ---------------------------------------------------------------------- converter on synthetic graphs
def _graph(tmp_path: Path, nodes, inits, in_shape, out_name="y", opset=13) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        nodes, "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    p = tmp_path / "g.onnx"
    onnx.save(m, str(p))
    return p


def test_converter_ops_match_onnxruntime_and_free_the_batch(tmp_path):
    """Synthetic graph exercising shape ops as exporters write them (batch 1 traced into Reshape)."""
    from onnx import helper

    from facepriv.models.onnx_torch import onnx_to_torch

    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w"], ["c"], pads=[0, 1, 1, 0], strides=[2, 2]),  # asymmetric padding
        n("Sigmoid", ["c"], ["s"]),
        n("MaxPool", ["s"], ["mp"], kernel_shape=[2, 2], strides=[1, 1]),
        n("Reshape", ["mp", "shape"], ["r"]),  # [1, 4, -1]: traced batch 1
        n("Split", ["r", "split"], ["a", "b"], axis=1),
        n("Slice", ["b", "st", "en", "ax"], ["bs"]),
        n("Concat", ["a", "bs"], ["cat"], axis=1),
        n("ReduceMean", ["cat"], ["mean"], axes=[-1], keepdims=1),
        n("Sub", ["cat", "mean"], ["cen"]),
        n("Softmax", ["cen"], ["sm"], axis=-1),
        n("Shape", ["sm"], ["shp"]),
        n("Gather", ["shp", "i0"], ["bdim"]),
        n("Unsqueeze", ["bdim", "ax0"], ["bdim1"]),
        n("Concat", ["bdim1", "minus1"], ["flat_shape"], axis=0),
        n("Reshape", ["sm", "flat_shape"], ["fl"]),
        n("Gemm", ["fl", "fc", "fcb"], ["g"], transB=1),
        n("Clip", ["g", "lo", "hi"], ["y"]),
    ]
    inits = {
        "w": rng.normal(size=(6, 3, 3, 3)).astype(np.float32), "shape": np.array([1, 4, -1], np.int64),
        "split": np.array([2, 2], np.int64), "st": np.array([0], np.int64), "en": np.array([1], np.int64),
        "ax": np.array([1], np.int64), "i0": np.array(0, np.int64), "ax0": np.array([0], np.int64),
        "minus1": np.array([-1], np.int64), "fc": rng.normal(size=(5, 72)).astype(np.float32),
        "fcb": rng.normal(size=(5,)).astype(np.float32), "lo": np.array(-2.0, np.float32),
        "hi": np.array(2.0, np.float32),
    }
    path = _graph(tmp_path, nodes, inits, [1, 3, 11, 11])
    net = onnx_to_torch(path)
    x = rng.normal(size=(3, 3, 11, 11)).astype(np.float32)
    sess = _ort(path)
    ref = np.concatenate([sess.run(None, {"x": x[i : i + 1]})[0] for i in range(3)])
    with torch.no_grad():
        out = net(torch.from_numpy(x)).numpy()
    assert out.shape == (3, 5)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_converter_names_unsupported_operator(tmp_path):
    from onnx import helper

    from facepriv.models.onnx_torch import UnsupportedOperatorError, onnx_to_torch

    path = _graph(tmp_path, [helper.make_node("Hardmax", ["x"], ["y"])], {}, [1, 4])
    with pytest.raises(UnsupportedOperatorError, match="Hardmax"):
        onnx_to_torch(path)


# ---------------------------------------------------------------------- user ONNX file
def test_onnx_file_model_runs_user_file(aligned):
    path = str(fetch("mobilefacenet_w600k"))
    m = get_model("onnx_file", path=path, mean=127.5, std=[127.5, 127.5, 127.5], batch_size=5)
    assert m.card.embedding_dim == 512 and not m.card.differentiable
    crops = aligned[0][:6]
    ours = m.embed(crops)
    port = get_model("mobilefacenet").embed(crops)
    assert float(np.abs(ours - port).max()) < 1e-4
    bgr = get_model("onnx_file", path=path, channel_order="BGR").embed(crops[:2])
    np.testing.assert_allclose(bgr, get_model("mobilefacenet").embed(crops[:2, :, :, ::-1].copy()), atol=1e-4)


def test_onnx_file_model_errors(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        get_model("onnx_file", path=str(tmp_path / "missing.onnx")).embed(np.zeros((1, 112, 112, 3), np.uint8))
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(InputFileError, match="corrupt.onnx"):
        get_model("onnx_file", path=str(bad)).embed(np.zeros((1, 112, 112, 3), np.uint8))
    with pytest.raises(ParameterError, match="input_size"):
        get_model("onnx_file", path=str(fetch("sface")), input_size=[150, 150]).embed(np.zeros((1, 150, 150, 3), np.uint8))
    with pytest.raises(ParameterError, match="channel_order"):
        get_model("onnx_file", path=str(fetch("sface")), channel_order="GRB")
    with pytest.raises(ParameterError, match="std"):
        get_model("onnx_file", path=str(fetch("sface")), std=[1, 0, 1])
    with pytest.raises(ParameterError, match="crops of shape"):
        get_model("onnx_file", path=str(fetch("sface")), mean=0, std=1).embed(np.zeros((1, 100, 112, 3), np.uint8))


# ---------------------------------------------------------------------- gender classifier
def test_gender_classifier_on_real_faces(facescrub_dir):
    from facepriv.models.gender_classifier import GenderClassifier

    faces, truth = [], []
    for rows in _labels(facescrub_dir).values():
        for r in rows[:8]:
            faces.append(load_rgb(facescrub_dir / r["image"]))
            truth.append(r["gender"])
    labels, p_male = GenderClassifier().predict(faces)  # crops of different sizes
    truth_a = np.array(truth)
    assert set(truth) == {"male", "female"} and p_male.dtype == np.float32
    assert np.all((p_male >= 0) & (p_male <= 1))
    acc = float(np.mean(labels == truth_a))
    assert acc >= 0.85, f"gender accuracy {acc:.3f} on {len(truth)} FaceScrub faces"
    # both genders recognised, not one constant answer
    assert np.mean(labels[truth_a == "male"] == "male") > 0.7 and np.mean(labels[truth_a == "female"] == "female") > 0.7
