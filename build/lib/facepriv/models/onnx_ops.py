"""Operator builders of the ONNX -> PyTorch converter (:mod:`facepriv.models.onnx_torch`).

Each ``_op_<OpType>(node, attrs)`` returns a callable of the node's input tensors (constants arrive
as tensors / frozen parameters) that returns its output(s), following the ONNX operator spec of the
graph's opset. Operators that are one torch function live in :data:`SIMPLE`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from facepriv.errors import InputFileError

_INT_MAX = 2**62
# operators that are one torch function of their inputs (ONNX broadcasting == torch broadcasting)
SIMPLE: dict[str, Callable] = {
    "Relu": F.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Erf": torch.erf, "Sqrt": torch.sqrt,
    "Exp": torch.exp, "Neg": torch.neg, "Abs": torch.abs, "Reciprocal": torch.reciprocal,
    "Identity": lambda x: x, "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul,
    # integer Div (shape arithmetic) truncates in ONNX
    "Div": lambda a, b: torch.div(a, b, rounding_mode="trunc") if not (a.is_floating_point() or b.is_floating_point())
    else a / b,
    "MatMul": torch.matmul,
}


def _bcast_shape(x: torch.Tensor, shape: list[int]) -> list[int]:
    """ONNX Expand target: numpy broadcasting of the input shape and the requested shape."""
    return list(torch.broadcast_shapes(tuple(x.shape), tuple(int(s) for s in shape)))


def _to_list(v: Any) -> list[int]:
    if isinstance(v, torch.Tensor):
        return [int(t) for t in v.reshape(-1).tolist()]
    return [int(t) for t in np.asarray(v).reshape(-1).tolist()]


class OnnxOps:
    """Mixin with the operator builders; the graph module provides ``opset``, ``source``,
    ``_static``, ``_batch_fix`` and ``_unsupported``."""

    opset: int
    source: str
    _static: Callable[[str], Any]
    _batch_fix: Callable[[torch.Tensor, list[int]], list[int]]
    _unsupported: Callable[[Any, str], None]

    def _op_Conv(self, node, a):
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            self._unsupported(node, f"Conv with auto_pad={a['auto_pad']}")
        k = len(a.get("kernel_shape", [])) or 2
        if k != 2:
            self._unsupported(node, f"Conv{k}d")
        pads = list(a.get("pads", [0, 0, 0, 0]))
        stride, dil, group = a.get("strides", [1, 1]), a.get("dilations", [1, 1]), a.get("group", 1)
        sym = pads[0] == pads[2] and pads[1] == pads[3]

        def conv(x, w, b=None):
            if not sym:  # ONNX pads are (top, left, bottom, right); F.pad wants (left, right, top, bottom)
                x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
            return F.conv2d(x, w, b, stride, (pads[0], pads[1]) if sym else 0, dil, group)

        return conv

    def _op_BatchNormalization(self, node, a):
        eps = float(a.get("epsilon", 1e-5))
        return lambda x, s, b, m, v: F.batch_norm(x, m, v, s, b, False, 0.0, eps)

    def _op_LayerNormalization(self, node, a):
        axis, eps = int(a.get("axis", -1)), float(a.get("epsilon", 1e-5))

        def ln(x, s, b=None):
            return F.layer_norm(x, tuple(x.shape[axis:]), s, b, eps)

        return ln

    def _op_PRelu(self, node, a):
        def prelu(x, s):
            # per-channel slope (C,), (C,1,1): one fused kernel; otherwise ONNX broadcasting
            if x.dim() >= 2 and s.numel() == x.shape[1] and (s.dim() == 1 and x.dim() == 2 or s.dim() == x.dim() - 1):
                return F.prelu(x, s.reshape(-1))
            return torch.where(x >= 0, x, x * s)

        return prelu

    def _op_LeakyRelu(self, node, a):
        alpha = float(a.get("alpha", 0.01))
        return lambda x: F.leaky_relu(x, alpha)

    def _op_Dropout(self, node, a):  # inference: identity (the optional mask output is not produced)
        return lambda x, *_: x

    def _op_Pow(self, node, a):
        e = self._static(node.input[1])
        if e is not None and e.size == 1:
            p = float(e.reshape(-1)[0])
            if p == 2.0:  # x*x has a cleaner gradient than pow at x == 0
                return lambda x, _e: x * x
            return lambda x, _e: torch.pow(x, p)
        return torch.pow

    def _op_Clip(self, node, a):
        if self.opset < 11:
            lo, hi = a.get("min"), a.get("max")
            return lambda x: torch.clamp(x, lo, hi)
        return lambda x, lo=None, hi=None: torch.clamp(x, lo, hi)

    def _op_Gemm(self, node, a):
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        ta, tb = int(a.get("transA", 0)), int(a.get("transB", 0))

        def gemm(x, w, c=None):
            x = x.t() if ta else x
            if tb and alpha == 1.0 and beta == 1.0:
                return F.linear(x, w, c)
            y = alpha * (x @ (w.t() if tb else w))
            return y if c is None else y + beta * c

        return gemm

    def _op_Flatten(self, node, a):
        axis = int(a.get("axis", 1))
        return lambda x: x.reshape(math.prod(x.shape[:axis]), -1)

    def _op_Reshape(self, node, a):
        allowzero = int(a.get("allowzero", 0))

        def reshape(x, shape):
            s = _to_list(shape)
            if not allowzero:
                s = [x.shape[i] if v == 0 else v for i, v in enumerate(s)]
            return x.reshape(self._batch_fix(x, s))

        return reshape

    def _op_Expand(self, node, a):
        return lambda x, shape: x.expand(_bcast_shape(x, _to_list(shape)))

    def _op_Transpose(self, node, a):
        perm = a.get("perm")
        return lambda x: x.permute(*(perm if perm is not None else range(x.dim() - 1, -1, -1)))

    def _op_Squeeze(self, node, a):
        axes = a.get("axes")

        def squeeze(x, ax=None):
            dims = _to_list(ax) if ax is not None else axes
            return torch.squeeze(x, tuple(dims)) if dims else torch.squeeze(x)

        return squeeze

    def _op_Unsqueeze(self, node, a):
        axes = a.get("axes")

        def unsq(x, ax=None):
            for d in sorted(_to_list(ax) if ax is not None else axes):
                x = x.unsqueeze(d if d >= 0 else d + x.dim() + 1)
            return x

        return unsq

    def _op_Concat(self, node, a):
        axis = int(a["axis"])
        return lambda *xs: torch.cat(xs, dim=axis)

    def _op_Split(self, node, a):
        axis, n_out = int(a.get("axis", 0)), len(node.output)

        def split(x, sizes=None):
            s = _to_list(sizes) if sizes is not None else a.get("split")
            if s is None:
                s = [math.ceil(x.shape[axis] / n_out)] * n_out
            return torch.split(x, list(s), dim=axis)

        return split

    def _op_Slice(self, node, a):
        def slc(x, starts, ends, axes=None, steps=None):
            st, en = _to_list(starts), _to_list(ends)
            ax = _to_list(axes) if axes is not None else list(range(len(st)))
            sp = _to_list(steps) if steps is not None else [1] * len(st)
            idx = [slice(None)] * x.dim()
            for s, e, d, k in zip(st, en, ax, sp, strict=True):
                if k < 1:
                    raise InputFileError(self.source, f"Slice with step {k} is not supported by the converter")
                idx[d] = slice(max(min(s, _INT_MAX), -_INT_MAX), max(min(e, _INT_MAX), -_INT_MAX), k)
            return x[tuple(idx)]

        if self.opset < 10:
            return lambda x: slc(x, a["starts"], a["ends"], a.get("axes"))
        return slc

    def _op_Gather(self, node, a):
        axis = int(a.get("axis", 0))

        def gather(x, idx):
            idx = idx.long()
            out = torch.index_select(x, axis, idx.reshape(-1) % x.shape[axis])
            return out.reshape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :]))

        return gather

    def _op_Shape(self, node, a):
        return lambda x: torch.tensor(list(x.shape), dtype=torch.int64)

    def _op_Cast(self, node, a):
        from onnx import helper

        dt = torch.from_numpy(np.zeros(1, helper.tensor_dtype_to_np_dtype(int(a["to"])))).dtype
        return lambda x: x.to(dt)

    def _reduce(self, node, a, fn):
        keep = bool(a.get("keepdims", 1))

        def red(x, axes=None):
            ax = _to_list(axes) if axes is not None else a.get("axes")
            dims = tuple(ax) if ax else tuple(range(x.dim()))
            return fn(x, dims, keep)

        return red

    def _op_ReduceMean(self, node, a):
        return self._reduce(node, a, lambda x, d, k: x.mean(dim=d, keepdim=k))

    def _op_ReduceSum(self, node, a):
        return self._reduce(node, a, lambda x, d, k: x.sum(dim=d, keepdim=k))

    def _op_ReduceL2(self, node, a):
        return self._reduce(node, a, lambda x, d, k: torch.linalg.vector_norm(x, 2, dim=d, keepdim=k))

    def _op_GlobalAveragePool(self, node, a):
        return lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True)

    def _op_AveragePool(self, node, a):
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if pads[0] != pads[2] or pads[1] != pads[3]:
            self._unsupported(node, "AveragePool with asymmetric pads")
        k, s = a["kernel_shape"], a.get("strides", [1, 1])
        cip, ceil = bool(a.get("count_include_pad", 0)), bool(a.get("ceil_mode", 0))
        return lambda x: F.avg_pool2d(x, k, s, (pads[0], pads[1]), ceil, cip)

    def _op_MaxPool(self, node, a):
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if pads[0] != pads[2] or pads[1] != pads[3] or len(node.output) > 1:
            self._unsupported(node, "MaxPool with asymmetric pads or indices output")
        k, s, ceil = a["kernel_shape"], a.get("strides", [1, 1]), bool(a.get("ceil_mode", 0))
        return lambda x: F.max_pool2d(x, k, s, (pads[0], pads[1]), a.get("dilations", [1, 1]), ceil)

    def _op_Softmax(self, node, a):
        if self.opset >= 13:
            axis = int(a.get("axis", -1))
            return lambda x: torch.softmax(x, dim=axis)
        axis = int(a.get("axis", 1))

        def softmax_legacy(x):  # opset < 13: softmax over the input coerced to 2-D at `axis`
            ax = axis % x.dim()
            return torch.softmax(x.reshape(*x.shape[:ax], -1), dim=-1).reshape(x.shape)

        return softmax_legacy
