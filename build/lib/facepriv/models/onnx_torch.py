"""Run an ONNX graph as a differentiable ``torch.nn.Module`` whose weights are the ONNX initialisers.

The graph is compiled once into a list of steps (one per ONNX node); ``forward`` runs them in the
file's topological order. Float initialisers become frozen ``nn.Parameter`` objects (so ``.to()``,
``.parameters()`` and autograd work), integer/shape constants become Python values.

Batch size is free even where the exporter traced batch 1 (EdgeFace): with ``free_batch=True`` a
constant ``Reshape`` target whose leading entry is 1 takes the input's leading dimension instead,
and ``Expand`` broadcasts (ONNX semantics) instead of forcing the traced shape.

Only the operators the shipped recognition models need (plus a few common ones) are implemented
(:mod:`facepriv.models.onnx_ops`); any other operator raises :class:`UnsupportedOperatorError`
naming it. ``forward_until`` /
``forward_from`` / :meth:`OnnxGraphModule.split` cut the graph at a node output for client/server
experiments; :meth:`OnnxGraphModule.cut_points` lists the outputs where a single tensor carries all
the information downstream nodes need.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facepriv.errors import InputFileError
from facepriv.models.onnx_ops import SIMPLE as _SIMPLE
from facepriv.models.onnx_ops import OnnxOps


class UnsupportedOperatorError(InputFileError):
    """The ONNX graph uses an operator this converter does not implement."""


def load_onnx(path: str | Path):
    """Load an ONNX model file with clear errors for a missing or corrupt file."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "ONNX model file not found")
    try:
        model = onnx.load(str(p))
    except Exception as exc:  # onnx raises DecodeError and others for garbage bytes
        raise InputFileError(p, f"not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.graph.node:
        raise InputFileError(p, "ONNX model has an empty graph")
    return model


def _attrs(node) -> dict[str, Any]:
    import onnx
    from onnx import numpy_helper

    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, onnx.TensorProto):
            v = numpy_helper.to_array(v)
        elif isinstance(v, bytes):
            v = v.decode()
        out[a.name] = v
    return out


class OnnxGraphModule(OnnxOps, nn.Module):
    """A frozen, differentiable PyTorch twin of a single-input ONNX graph.

    Parameters
    ----------
    model : onnx.ModelProto
        The loaded graph (see :func:`load_onnx`).
    source : str
        File name used in error messages.
    free_batch : bool
        Let a graph exported with batch 1 run any batch size (see module docstring).
    """

    def __init__(self, model, source: str = "<onnx>", free_batch: bool = True, fold_bn: bool = True) -> None:
        super().__init__()
        from onnx import numpy_helper

        g = model.graph
        self.source = source
        self.free_batch = free_batch
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        init_names = {i.name for i in g.initializer}
        inputs = [i.name for i in g.input if i.name not in init_names]
        if len(inputs) != 1:
            raise InputFileError(source, f"the graph has {len(inputs)} inputs; exactly one image input is supported")
        self.input_name = inputs[0]
        self.output_name = g.output[0].name
        # every initialiser / Constant output, as numpy (float ones become Parameters below)
        self._const: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        nodes = list(g.node)
        for node in nodes:
            if node.domain not in ("", "ai.onnx"):
                self._unsupported(node, f"{node.domain}.{node.op_type}")
            if node.op_type == "Constant":
                if "value" not in _attrs(node):
                    self._unsupported(node, "Constant (only the 'value' form is supported)")
                self._const[node.output[0]] = np.asarray(_attrs(node)["value"])
        folded = self._fold_batchnorm(nodes) if fold_bn else {}
        # steps: (node name, op, runner, input names, output names)
        self._steps: list[tuple[str, str, Callable, list[str], list[str]]] = []
        for node in nodes:
            if node.op_type == "Constant" or id(node) in folded and folded[id(node)] is None:
                continue
            builder = getattr(self, f"_op_{node.op_type}", None)
            if builder is None and node.op_type not in _SIMPLE:
                self._unsupported(node, node.op_type)
            fn = builder(node, _attrs(node)) if builder else _SIMPLE[node.op_type]
            ins, outs = folded.get(id(node)) or (list(node.input), list(node.output))
            self._steps.append((node.name, node.op_type, fn, ins, outs))
        self._producer = {o: i for i, s in enumerate(self._steps) for o in s[4]}
        if self.output_name not in self._producer:
            raise InputFileError(source, f"graph output {self.output_name!r} is not produced by any node")
        self.weights = nn.ParameterDict()
        self._pkey: dict[str, str] = {}  # ONNX value name -> ParameterDict key
        used = {n for st in self._steps for n in st[3]}
        for name, arr in self._const.items():
            if name in used and arr.dtype.kind == "f":
                key = re.sub(r"\W", "_", name).strip("_") or "w"
                while key in self.weights:
                    key += "_"
                self.weights[key] = nn.Parameter(torch.from_numpy(np.array(arr, np.float32)), requires_grad=False)
                self._pkey[name] = key
        self.requires_grad_(False)
        self.eval()

    def _fold_batchnorm(self, nodes) -> dict[int, tuple[list[str], list[str]] | None]:
        """Fold inference BatchNormalization into the Conv feeding it (one pass less over memory).

        Returns {id(conv): (new inputs, new outputs), id(bn): None (dropped)}. Only when the conv
        output feeds that BN alone and all weights are constants; numerics change by ~1e-7 relative.
        """
        consumers: dict[str, list] = {}
        for n in nodes:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        producer = {o: n for n in nodes for o in n.output}
        out: dict[int, tuple[list[str], list[str]] | None] = {}
        for bn in nodes:
            if bn.op_type != "BatchNormalization" or len(bn.output) != 1:
                continue
            conv = producer.get(bn.input[0])
            if conv is None or conv.op_type != "Conv" or len(consumers.get(conv.output[0], [])) != 1:
                continue
            if conv.output[0] == self.output_name or not all(n in self._const for n in list(bn.input[1:]) + list(conv.input[1:])):
                continue
            gamma, beta, mean, var = (self._const[n].astype(np.float64) for n in bn.input[1:5])
            w = self._const[conv.input[1]].astype(np.float64)
            b = self._const[conv.input[2]].astype(np.float64) if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[0])
            k = gamma / np.sqrt(var + float(_attrs(bn).get("epsilon", 1e-5)))
            wname, bname = f"{conv.name}/bnfold/w", f"{conv.name}/bnfold/b"
            self._const[wname] = (w * k.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32)
            self._const[bname] = ((b - mean) * k + beta).astype(np.float32)
            out[id(conv)] = ([conv.input[0], wname, bname], [bn.output[0]])
            out[id(bn)] = None
        return out

    def _unsupported(self, node, op: str) -> None:
        raise UnsupportedOperatorError(
            self.source,
            f"unsupported ONNX operator {op!r} (node {node.name!r}); the PyTorch converter implements: "
            + ", ".join(sorted([n[4:] for n in dir(self) if n.startswith("_op_")] + list(_SIMPLE))),
        )

    # ----------------------------------------------------------------------------- running
    def _value(self, name: str, env: dict[str, torch.Tensor]):
        if name == "":
            return None
        if name in env:
            return env[name]
        if name in self._pkey:
            return self.weights[self._pkey[name]]
        if name in self._const:
            return torch.from_numpy(np.array(self._const[name]))
        raise KeyError(f"{self.source}: value {name!r} is not available at this point of the graph")

    def _run(self, env: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
        for _name, _op, fn, ins, outs in self._steps[start:stop]:
            res = fn(*[self._value(i, env) for i in ins])
            if isinstance(res, (tuple, list)):
                for o, r in zip(outs, res, strict=False):  # Dropout's optional mask is never produced
                    env[o] = r
            else:
                env[outs[0]] = res
        return env

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the whole graph: the ONNX input tensor -> the first ONNX output."""
        return self._run({self.input_name: x}, 0, len(self._steps))[self.output_name]

    def _index(self, name: str) -> int:
        if name not in self._producer:
            raise KeyError(f"{self.source}: no node produces {name!r}; see cut_points()")
        return self._producer[name]

    def forward_until(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """Run the graph up to (and including) the node producing ``name``; return that value."""
        return self._run({self.input_name: x}, 0, self._index(name) + 1)[name]

    def forward_from(self, h: torch.Tensor, name: str) -> torch.Tensor:
        """Run the rest of the graph from the value ``name`` (must be one of :meth:`cut_points`)."""
        if name not in self.cut_points():
            raise KeyError(f"{self.source}: {name!r} is not a valid cut point (later nodes need other values)")
        return self._run({name: h}, self._index(name) + 1, len(self._steps))[self.output_name]

    def cut_points(self) -> list[str]:
        """Node outputs after which the graph depends on that single tensor only (in graph order)."""
        if hasattr(self, "_cuts"):
            return self._cuts
        static = set(self._const) | {""}
        last_use: dict[str, int] = {}
        for i, (_, _, _, ins, _) in enumerate(self._steps):
            for n in ins:
                if n not in static:
                    last_use[n] = i
        cuts = []
        for i, (_, _, _, _, outs) in enumerate(self._steps[:-1]):
            # values produced at or before step i (or the input) still needed after step i
            live = {n for n, j in last_use.items() if j > i and (n == self.input_name or self._producer.get(n, -1) <= i)}
            if len(outs) == 1 and live == {outs[0]}:
                cuts.append(outs[0])
        self._cuts = cuts
        return cuts

    def split(self, name: str) -> tuple[nn.Module, nn.Module]:
        """``(head, tail)`` modules with ``tail(head(x)) == self(x)``, cut at the value ``name``."""
        if name not in self.cut_points():
            raise KeyError(f"{self.source}: {name!r} is not a valid cut point; see cut_points()")
        return _Head(self, name), _Tail(self, name)

    # ----------------------------------------------------------------------------- helpers
    def _static(self, name: str):
        """Numpy value of a constant input (initialiser / Constant), or None if computed at run time."""
        return self._const.get(name) if name else None

    def _batch_fix(self, x: torch.Tensor, shape: list[int]) -> list[int]:
        if self.free_batch and shape and shape[0] == 1 and x.dim() > 0:
            return [x.shape[0], *shape[1:]]
        return shape

class _Head(nn.Module):
    """Input -> the cut value (client side of a split)."""

    def __init__(self, graph: OnnxGraphModule, cut: str) -> None:
        super().__init__()
        self.graph, self.cut = graph, cut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph.forward_until(x, self.cut)


class _Tail(nn.Module):
    """Cut value -> output (server side of a split)."""

    def __init__(self, graph: OnnxGraphModule, cut: str) -> None:
        super().__init__()
        self.graph, self.cut = graph, cut

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.graph.forward_from(h, self.cut)


def onnx_to_torch(path: str | Path, free_batch: bool = True) -> OnnxGraphModule:
    """Convert an ONNX file to a frozen :class:`OnnxGraphModule` (clear errors for bad files/ops)."""
    return OnnxGraphModule(load_onnx(path), source=str(path), free_batch=free_batch)
