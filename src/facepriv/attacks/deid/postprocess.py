"""What happens to a published photo: JPEG re-compression, downscaling, blur.

One spec language for both uses:

* **evaluation** (:func:`postprocess_run`): every stored cloak of a run is read back, processed
  with the real operation (OpenCV JPEG encode/decode at quality Q, ``INTER_AREA`` downscale by a
  factor, Gaussian blur with sigma S) and written **losslessly (PNG) into a separate folder**
  that is itself a run folder (``run.json``, ``split.csv``, ``cloaks/eps<E>/``), so the usual
  evaluation identifies it; the run's own cloaks are never touched;
* **expectation over transformation** while optimising (:func:`differentiable`): the same
  operations as differentiable torch functions on 0..255 photos (kornia's differentiable JPEG,
  anti-aliased bilinear down- and up-scaling, kornia's Gaussian blur).

Specs: ``jpeg:Q`` (Q integer 1..100), ``resize:F`` (0 < F < 1), ``blur:S`` (0 < S <= 10 pixels).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facepriv.errors import FacePrivError, OutputExistsError, ParameterError

#: the post-processings every cloak is evaluated under in the adaptive configuration
DEFAULT_POSTPROCESS = ("jpeg:95", "jpeg:75", "jpeg:50", "resize:0.5", "blur:1.5")
KINDS = ("jpeg", "resize", "blur")


@dataclass(frozen=True)
class PostProcess:
    """One parsed post-processing: ``kind`` (jpeg / resize / blur) and its value."""

    kind: str
    value: float

    @property
    def label(self) -> str:
        """File-safe name, e.g. ``jpeg75``, ``resize0.5``, ``blur1.5``."""
        return f"{self.kind}{self.value:g}"


def parse_postprocess(spec: str, param: str = "postprocess") -> PostProcess:
    """Parse ``kind:value``; ParameterError naming ``param`` for an unknown kind or a bad value."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ParameterError(f"{param}: give transforms as kind:value ({', '.join(k + ':...' for k in KINDS)}), "
                             f"got {spec!r}", param=param)
    kind, _, raw = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise ParameterError(f"{param}: unknown transform {kind!r} in {spec!r}; choose from {', '.join(KINDS)}",
                             param=param)
    try:
        v = float(raw)
    except ValueError:
        raise ParameterError(f"{param}: {spec!r}: {raw!r} is not a number", param=param) from None
    if kind == "jpeg" and not (v == int(v) and 1 <= v <= 100):
        raise ParameterError(f"{param}: {spec!r}: JPEG quality must be an integer in 1..100", param=param)
    if kind == "resize" and not 0 < v < 1:
        raise ParameterError(f"{param}: {spec!r}: the downscale factor must be in (0, 1)", param=param)
    if kind == "blur" and not (math.isfinite(v) and 0 < v <= 10):
        raise ParameterError(f"{param}: {spec!r}: the blur sigma must be in (0, 10] pixels", param=param)
    return PostProcess(kind, v)


def parse_list(specs: Sequence[str] | None, param: str) -> list[PostProcess]:
    """Parse a list of specs (None = empty); refuses a string, an empty list and repeats."""
    if specs is None:
        return []
    if isinstance(specs, str) or not isinstance(specs, Sequence) or not specs:
        raise ParameterError(f"{param}: give a list of one or more transforms (kind:value), or none at all, got "
                             f"{specs!r}", param=param)
    out = [parse_postprocess(s, param) for s in specs]
    if len({p.label for p in out}) != len(out):
        raise ParameterError(f"{param}: transforms repeat ({', '.join(p.label for p in out)})", param=param)
    return out


def _blur_size(sigma: float) -> int:
    return 2 * int(math.ceil(3 * sigma)) + 1


def apply(photo: np.ndarray, pp: PostProcess) -> np.ndarray:
    """The real operation on a uint8 RGB photo (H, W, 3)."""
    import cv2

    if pp.kind == "jpeg":
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(pp.value)])
        if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
            raise FacePrivError("JPEG encoding failed")
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    if pp.kind == "resize":
        h, w = photo.shape[:2]
        return cv2.resize(photo, (max(1, round(w * pp.value)), max(1, round(h * pp.value))), interpolation=cv2.INTER_AREA)
    k = _blur_size(pp.value)
    return cv2.GaussianBlur(photo, (k, k), pp.value, borderType=cv2.BORDER_REFLECT_101)


def differentiable(pp: PostProcess) -> Callable:
    """Differentiable version on 0..255 float photos (N, 3, H, W); output has the input's size."""
    import torch

    if pp.kind == "jpeg":
        from kornia.enhance import jpeg_codec_differentiable

        def jpeg(x: torch.Tensor) -> torch.Tensor:
            q = torch.full((x.shape[0],), float(pp.value), dtype=x.dtype, device=x.device)
            return jpeg_codec_differentiable(x / 255.0, q) * 255.0

        return jpeg
    if pp.kind == "resize":
        def resize(x: torch.Tensor) -> torch.Tensor:
            h, w = x.shape[-2:]
            small = torch.nn.functional.interpolate(x, size=(max(1, round(h * pp.value)), max(1, round(w * pp.value))),
                                                    mode="bilinear", align_corners=False, antialias=True)
            return torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)

        return resize
    from kornia.filters import gaussian_blur2d

    k = _blur_size(pp.value)
    return lambda x: gaussian_blur2d(x, (k, k), (pp.value, pp.value), border_type="reflect")


def postprocess_run(run, pp: PostProcess, out: Path, overwrite: bool = False):
    """Write post-processed copies of every stored photo of ``run`` into the run folder ``out``.

    ``out`` must lie outside ``run.dir`` (the cloaks are never written over); an existing
    ``out`` holding a run is refused unless ``overwrite``. Returns the new
    :class:`~facepriv.attacks.deid.run.CloakRun` (PNG storage, ``postprocess`` in its record).
    """
    import csv
    import io

    from facepriv.attacks.deid.run import CloakRun
    from facepriv.fileio import write_json_atomic, write_text_atomic
    from facepriv.images import load_rgb, save_rgb
    from facepriv.protections.image import stored_name

    out, src = Path(out).resolve(), Path(run.dir).resolve()
    if out == src or src in out.parents:
        raise ParameterError(f"out: {out} lies inside the run folder {src}; post-processed copies go to a separate "
                             "folder (never over a cloak)", param="out")
    if (out / "run.json").exists():
        if not overwrite:
            raise OutputExistsError(out / "run.json")
        shutil.rmtree(out / "cloaks", ignore_errors=True)
    rec = run.record
    cfg = rec["config"]
    probes = [im for im, _, role in run.rows if role == "probe"]
    keys = ["0"] + [f"{float(e):g}" for e in cfg["eps"]]
    for key in keys:
        for im in probes:
            photo = load_rgb(src / "cloaks" / f"eps{key}" / stored_name(im, cfg["jpeg_quality"]))
            save_rgb(apply(np.asarray(photo), pp), out / "cloaks" / f"eps{key}" / stored_name(im, None))
    new = {**rec, "config": {**cfg, "jpeg_quality": None}, "storage": f"{rec['storage']} then {pp.label} (png)",
           "postprocess": {"spec": f"{pp.kind}:{pp.value:g}", "label": pp.label, "of_run": str(src)}}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "identity", "role"])
    w.writerows(run.rows)
    write_text_atomic(out / "split.csv", buf.getvalue())
    write_json_atomic(out / "run.json", new)
    return CloakRun(out, new, list(run.rows))


__all__ = ["DEFAULT_POSTPROCESS", "PostProcess", "apply", "differentiable", "parse_list", "parse_postprocess",
           "postprocess_run"]
