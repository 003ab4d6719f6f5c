"""Reader of dlib's serialised face recognition network (``dlib_face_recognition_resnet_model_v1.dat``).

No dlib needed. The file is dlib's ``serialize(anet_type)`` output, where ``anet_type`` is the
network of dlib's ``dnn_face_recognition_ex.cpp`` (a 29-conv ResNet with BN folded into affine
layers). Format facts, learned from dlib's ``serialize.h``, ``dnn/core.h``, ``dnn/layers.h``,
``dnn/input.h`` and ``dnn/tensor.h``:

* integers: a control byte (bit 7 = negative, low 4 bits = number of bytes) followed by the
  absolute value, little endian; 0 is ``01 00``;
* ``float``/``double`` scalars: mantissa (int64) then exponent (int16), value = m * 2**e;
* strings: length (integer) then the bytes; ``bool``: the ASCII byte ``'1'`` or ``'0'``;
* tensors (version 2): n, k, nr, nc (integers) then n*k*nr*nc raw little-endian float32;
  alias tensors (version 1): n, k, nr, nc only;
* a layer wrapper writes its version, then its whole sub-network, then its own details, so the
  file holds the outermost wrapper versions first, then the input layer, then the layer details
  from the input upwards (each ``add_layer`` followed by 3 bools and 3 (empty) tensors).

The reader walks the known architecture (:func:`architecture`) and checks every version,
layer name, shape and hyper-parameter on the way; anything unexpected raises
:class:`~facepriv.errors.InputFileError` naming the file, the byte offset and the problem.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facepriv.errors import InputFileError

#: parameters of dlib_face_recognition_resnet_model_v1 (conv + affine + fc)
EXPECTED_PARAMS = 5_614_592

# Residual levels from the input upwards: (channels, number of blocks, first block down-samples).
# dlib names them alevel4 .. alevel0; we call them stage1 .. stage5.
STAGES: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False),
    (64, 4, True),
    (128, 3, True),
    (256, 3, True),
    (256, 1, True),
)


def architecture() -> list[tuple]:
    """The layers of dlib's ``anet_type`` from the loss downwards to the input (serialisation order).

    Entries: ``("fc", n_out)``, ``("avg_pool", size, stride)`` (size 0 = whole map),
    ``("max_pool", size, stride)``, ``("add_prev", tag)``, ``("relu",)``, ``("affine",)``,
    ``("con", n_filters, size, stride)``, ``("tag", id)``, ``("skip", id)``.
    """
    below: list[tuple] = [("max_pool", 3, 2), ("relu",), ("affine",), ("con", 32, 7, 2)]
    for ch, nblocks, down in STAGES:
        for b in range(nblocks):
            stride = 2 if (down and b == 0) else 1
            # block<N, affine, stride> = affine<con<N,3,3,1,1,relu<affine<con<N,3,3,s,s,...>>>>>
            block = [("affine",), ("con", ch, 3, 1), ("relu",), ("affine",), ("con", ch, 3, stride)]
            if stride == 1:  # ares = relu<add_prev1<block<tag1<...>>>>
                layers = [("relu",), ("add_prev", 1), *block, ("tag", 1)]
            else:  # ares_down = relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<tag1<...>>>>>>>
                layers = [("relu",), ("add_prev", 2), ("avg_pool", 2, 2), ("skip", 1), ("tag", 2), *block,
                          ("tag", 1)]
            below = layers + below
    return [("fc", 128), ("avg_pool", 0, 1), *below]


@dataclass(frozen=True)
class ConvWeights:
    """One ``con_`` layer: weight (out, in, kh, kw) float32 (cross-correlation, like torch), bias (out,)."""

    weight: np.ndarray
    bias: np.ndarray
    stride: int
    padding: int


@dataclass(frozen=True)
class AffineWeights:
    """One ``affine_`` layer (batch norm folded by dlib): y = x * gamma + beta per channel."""

    gamma: np.ndarray
    beta: np.ndarray


@dataclass(frozen=True)
class DlibNetWeights:
    """Everything the PyTorch port needs from the .dat file.

    Attributes
    ----------
    input_mean : np.ndarray
        (3,) float32, per-channel R, G, B mean subtracted from 0..255 pixels before ``/ 256``.
    input_size : (int, int)
    convs, affines : list
        In forward order (from the input upwards); ``affines[i]`` follows ``convs[i]``.
    fc : np.ndarray
        (256, 128) float32 as dlib stores it: descriptor = features @ fc.
    loss_margin, loss_distance_threshold : float
        ``loss_metric_`` settings (0.04 and 0.6 for the released model).
    """

    input_mean: np.ndarray
    input_size: tuple[int, int]
    convs: list[ConvWeights]
    affines: list[AffineWeights]
    fc: np.ndarray
    loss_margin: float
    loss_distance_threshold: float

    @property
    def num_params(self) -> int:
        """Number of learned parameters (dlib's count: conv weights+biases, affine gamma+beta, fc)."""
        n = sum(c.weight.size + c.bias.size for c in self.convs)
        n += sum(a.gamma.size + a.beta.size for a in self.affines)
        return n + self.fc.size


class _Stream:
    """A cursor over the file's bytes whose every read is bounds-checked."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def fail(self, problem: str) -> InputFileError:
        return InputFileError(self.path, f"not a valid dlib face recognition network file: {problem} "
                                         f"(at byte {self.pos} of {len(self.data)})")

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"file ends inside {what} (truncated?)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def integer(self, what: str) -> int:
        ctrl = self.take(1, what)[0]
        size = ctrl & 0x0F
        if size == 0 or size > 8 or ctrl & 0x70:
            raise self.fail(f"bad integer control byte 0x{ctrl:02x} in {what}")
        val = int.from_bytes(self.take(size, what), "little")
        return -val if ctrl & 0x80 else val

    def expect_int(self, value: int, what: str) -> None:
        at = self.pos
        got = self.integer(what)
        if got != value:
            self.pos = at
            raise self.fail(f"expected {what} = {value}, found {got}")

    def real(self, what: str) -> float:
        mantissa = self.integer(what)
        exponent = self.integer(what)
        try:
            val = math.ldexp(float(mantissa), exponent)
        except OverflowError:
            raise self.fail(f"{what} is out of range") from None
        return val

    def string(self, what: str, max_len: int = 256) -> str:
        n = self.integer(what)
        if not 0 <= n <= max_len:
            raise self.fail(f"implausible string length {n} in {what}")
        return self.take(n, what).decode("latin-1")

    def expect_string(self, value: str, what: str) -> None:
        at = self.pos
        got = self.string(what)
        if got != value:
            self.pos = at
            raise self.fail(f"expected {what} {value!r}, found {got!r}")

    def boolean(self, what: str) -> bool:
        b = self.take(1, what)
        if b not in (b"0", b"1"):
            raise self.fail(f"bad bool byte {b!r} in {what}")
        return b == b"1"

    def tensor(self, what: str) -> np.ndarray:
        self.expect_int(2, f"tensor version of {what}")
        shape = tuple(self.integer(f"tensor shape of {what}") for _ in range(4))
        if any(s < 0 for s in shape):
            raise self.fail(f"negative tensor shape {shape} in {what}")
        count = math.prod(shape)
        raw = self.take(4 * count, f"tensor data of {what} (shape {shape})")
        arr = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)
        if not np.isfinite(arr).all():
            raise self.fail(f"non-finite values in {what}")
        return arr

    def alias_tensor(self, what: str) -> tuple[int, int, int, int]:
        self.expect_int(1, f"alias tensor version of {what}")
        return tuple(self.integer(f"alias tensor shape of {what}") for _ in range(4))  # type: ignore[return-value]


def _layer_trailer(s: _Stream, what: str, input_layer: bool = False) -> None:
    """Skip the state ``add_layer`` writes after a layer's details (flags and cached tensors)."""
    for flag in ("setup_called", "gradient_input_is_stale", "get_output_disabled"):
        s.boolean(f"{flag} flag of {what}")
    for name in ("x_grad", "cached_output", "grad_final" if input_layer else "params_grad"):
        s.tensor(f"{name} of {what}")


def _read_con(s: _Stream, spec: tuple, in_ch: int, what: str) -> ConvWeights:
    _, n_out, size, stride = spec
    s.expect_string("con_4", f"layer name of {what}")
    params = s.tensor(f"params of {what}").ravel()
    s.expect_int(n_out, f"num_filters of {what}")
    s.expect_int(size, f"nr of {what}")
    s.expect_int(size, f"nc of {what}")
    s.expect_int(stride, f"stride_y of {what}")
    s.expect_int(stride, f"stride_x of {what}")
    pad = 0 if stride != 1 else size // 2  # dlib's default padding for con_
    s.expect_int(pad, f"padding_y of {what}")
    s.expect_int(pad, f"padding_x of {what}")
    filt = s.alias_tensor(f"filters of {what}")
    bias = s.alias_tensor(f"biases of {what}")
    if filt != (n_out, in_ch, size, size) or bias != (1, n_out, 1, 1):
        raise s.fail(f"{what}: filter shape {filt} / bias shape {bias} do not match a {size}x{size} "
                     f"conv from {in_ch} to {n_out} channels")
    nw = n_out * in_ch * size * size
    if params.size != nw + n_out:
        raise s.fail(f"{what}: {params.size} parameters, expected {nw + n_out}")
    for m in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
        s.real(f"{m} multiplier of {what}")
    return ConvWeights(params[:nw].reshape(n_out, in_ch, size, size).copy(), params[nw:].copy(), stride, pad)


def _read_affine(s: _Stream, ch: int, what: str) -> AffineWeights:
    s.expect_string("affine_", f"layer name of {what}")
    params = s.tensor(f"params of {what}").ravel()
    g = s.alias_tensor(f"gamma of {what}")
    b = s.alias_tensor(f"beta of {what}")
    if params.size != 2 * ch or g != (1, ch, 1, 1) or b != (1, ch, 1, 1):
        raise s.fail(f"{what}: expected {ch} channels, found params {params.size}, gamma {g}, beta {b}")
    s.expect_int(0, f"mode of {what} (0 = per-channel CONV_MODE)")
    return AffineWeights(params[:ch].copy(), params[ch:].copy())


def _read_pool(s: _Stream, spec: tuple, what: str) -> None:
    kind, size, stride = spec
    s.expect_string(f"{kind}_2", f"layer name of {what}")
    for field, val in (("nr", size), ("nc", size), ("stride_y", stride), ("stride_x", stride),
                       ("padding_y", 0), ("padding_x", 0)):
        s.expect_int(val, f"{field} of {what}")


def _parse(s: _Stream) -> DlibNetWeights:
    arch = architecture()
    s.expect_int(1, "add_loss_layer version")
    s.expect_string("loss_metric_2", "loss layer name")
    margin = s.real("loss margin")
    thresh = s.real("loss distance threshold")
    # Wrapper versions, outermost first: 2 for add_layer, 1 for tag/skip, 3 (or 2) for the layer on the input.
    input_version = 3
    for i, spec in enumerate(arch):
        what = f"wrapper version of layer {i} ({spec[0]})"
        if spec[0] in ("tag", "skip"):
            s.expect_int(1, what)
        elif i == len(arch) - 1:
            at = s.pos
            input_version = s.integer(what)
            if input_version not in (2, 3):
                s.pos = at
                raise s.fail(f"unsupported {what}: {input_version}")
        else:
            s.expect_int(2, what)
    s.expect_string("input_rgb_image_sized", "input layer name")
    mean = np.array([s.real(f"input mean of {c}") for c in ("red", "green", "blue")], dtype=np.float32)
    nr, nc = s.integer("input rows"), s.integer("input columns")
    if (nr, nc) != (150, 150):
        raise s.fail(f"input size {nr}x{nc}, expected 150x150")

    convs: list[ConvWeights] = []
    affines: list[AffineWeights] = []
    fc = None
    ch = 3
    for depth, spec in enumerate(reversed(arch)):
        kind = spec[0]
        what = f"layer {len(arch) - 1 - depth} ({kind})"
        if kind in ("tag", "skip"):
            continue  # they have no details of their own
        if kind == "con":
            convs.append(_read_con(s, spec, ch, f"conv {len(convs) + 1}"))
            ch = spec[1]
        elif kind == "affine":
            affines.append(_read_affine(s, ch, f"affine {len(affines) + 1}"))
        elif kind in ("relu", "add_prev"):
            s.expect_string(f"{kind}_", f"layer name of {what}")
        elif kind in ("avg_pool", "max_pool"):
            _read_pool(s, spec, what)
        elif kind == "fc":
            fc = _read_fc(s, spec[1], ch)
        _layer_trailer(s, what, input_layer=depth == 0)
        if depth == 0 and input_version == 3:
            s.expect_int(1, "sample expansion factor of the first layer")
    if s.pos != len(s.data):
        raise s.fail(f"{len(s.data) - s.pos} unexpected bytes after the network")
    if fc is None:  # cannot happen: the architecture has an fc layer
        raise s.fail("no fc layer")
    return DlibNetWeights(mean, (nr, nc), convs, affines, fc, margin, thresh)


def _read_fc(s: _Stream, n_out: int, n_in: int) -> np.ndarray:
    what = "fc layer"
    s.expect_string("fc_2", f"layer name of {what}")
    s.expect_int(n_out, f"num_outputs of {what}")
    s.expect_int(n_in, f"num_inputs of {what}")
    params = s.tensor(f"params of {what}")
    w = s.alias_tensor(f"weights of {what}")
    s.alias_tensor(f"biases of {what}")  # unused: fc_no_bias
    s.expect_int(1, f"bias mode of {what} (1 = no bias)")
    if params.size != n_in * n_out or w != (n_in, n_out, 1, 1):
        raise s.fail(f"{what}: weights {w} / {params.size} values, expected ({n_in}, {n_out})")
    for m in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
        s.real(f"{m} multiplier of {what}")
    return params.reshape(n_in, n_out).copy()


def read_dlib_resnet(path: str | Path) -> DlibNetWeights:
    """Read and validate ``dlib_face_recognition_resnet_model_v1.dat``.

    Raises
    ------
    InputFileError
        The file is missing, truncated, not this network, or its parameter count is not 5,614,592.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFileError(path, f"cannot read the dlib network file: {exc.strerror or exc}") from None
    s = _Stream(data, path)
    net = _parse(s)
    if len(net.convs) != 29 or len(net.affines) != 29:
        raise InputFileError(path, f"expected 29 conv and 29 affine layers, found {len(net.convs)} and {len(net.affines)}")
    if net.num_params != EXPECTED_PARAMS:
        raise InputFileError(path, f"network has {net.num_params:,} parameters, expected {EXPECTED_PARAMS:,}")
    return net


@functools.lru_cache(maxsize=4)
def load_cached(path: str) -> DlibNetWeights:
    """:func:`read_dlib_resnet` memoised per process (the file is 22 MB; read it once)."""
    return read_dlib_resnet(path)
