"""Face detection + alignment recipes: a photo in, the aligned crop a recognition model expects out.

Two recipes, named by :attr:`facepriv.models.base.ModelCard.alignment`:

``dlib_chip150``
    dlib's HOG frontal-face detector (upsample 0, then 1 for small faces), dlib's 5-point landmark
    model and ``dlib.get_face_chip(size=150, padding=0.25)``: exactly the chips dlib's own face
    recognition ResNet was trained and evaluated on.
``arcface112``
    OpenCV's YuNet detector (``cv2.FaceDetectorYN``) with its 5 landmarks and a least-squares
    similarity transform (Umeyama) onto the standard ArcFace 112x112 template, warped with
    ``cv2.warpAffine``: the crops of SFace, MobileFaceNet (InsightFace) and EdgeFace.

Both pick the largest face. A photo without a usable face gives ``AlignResult(crop=None,
reason=...)``, never an exception. Aligners load their model files once: create them with
:func:`get_aligner`, which caches one instance per recipe, and reuse them.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from facepriv.errors import ParameterError

# ArcFace / InsightFace 5-point template for 112x112 crops (eye centres, nose tip, mouth corners;
# image-left first), as used by insightface.utils.face_align.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
# Detection runs on a copy whose longer side is at most this (speed on huge photos; faces that
# small relative to the photo are too small to recognise anyway).
DETECT_MAX_SIDE = 1024
MIN_IMAGE_SIDE = 32
# dlib's second, upsampled HOG pass only for photos up to this size.
UPSAMPLE_MAX_SIDE = 800


@dataclass(frozen=True)
class AlignResult:
    """Outcome of aligning one photo.

    Attributes
    ----------
    crop : ndarray of uint8, shape (H, W, 3), or None
        The aligned RGB crop; None when no usable face was found.
    reason : str
        ``"ok"`` or why there is no crop ("no face detected", "image too small", ...).
    box : (x0, y0, x1, y1) or None
        Detected face box in the photo's pixel coordinates.
    landmarks : ndarray of float64, shape (5, 2), or None
        The detector's 5 landmarks (x, y) in the photo's pixel coordinates (dlib: eye corners and
        nose; YuNet: eye centres, nose tip, mouth corners).
    """

    crop: np.ndarray | None
    reason: str
    box: tuple[float, float, float, float] | None = None
    landmarks: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        """Whether a crop was produced."""
        return self.crop is not None


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) mapping src to dst.

    Umeyama (1991), without reflection. Returns the 2x3 matrix ``M`` with ``dst ~ M @ [x, y, 1]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # forbid a mirror image
        fix[1, 1] = -1
    rot = u @ fix @ vt
    var_s = (s0**2).sum() / len(src)
    scale = float((sig * np.diag(fix)).sum() / var_s) if var_s > 0 else 1.0
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def _check_image(image: np.ndarray) -> str | None:
    """Reason the image cannot be aligned at all, or None."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        return f"image too small ({w}x{h}, need at least {MIN_IMAGE_SIDE} px a side)"
    return None


def _detection_scale(image: np.ndarray) -> tuple[np.ndarray, float]:
    """A copy of at most DETECT_MAX_SIDE px a side for detection, and the factor back to the original."""
    import cv2

    h, w = image.shape[:2]
    side = max(h, w)
    if side <= DETECT_MAX_SIDE:
        return image, 1.0
    f = DETECT_MAX_SIDE / side
    small = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return small, 1.0 / f


class Aligner:
    """Base class: detect the largest face and return its aligned crop.

    Attributes
    ----------
    name : str
        Recipe name.
    output_size : (int, int)
        (height, width) of the crops.
    """

    name: ClassVar[str] = ""
    output_size: ClassVar[tuple[int, int]] = (0, 0)

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def align(self, image: np.ndarray) -> AlignResult:
        """Align the largest face of a uint8 RGB image (H, W, 3)."""
        why = _check_image(image)
        if why:
            return AlignResult(None, why)
        with self._lock:  # detectors keep per-call state (input size); one call at a time
            return self._align(np.ascontiguousarray(image))

    def crop_matrix(self, landmarks: np.ndarray) -> np.ndarray:
        """The 2x3 affine matrix mapping photo coordinates to crop coordinates for these landmarks."""
        raise NotImplementedError

    def _align(self, image: np.ndarray) -> AlignResult:
        raise NotImplementedError


class DlibChipAligner(Aligner):
    """dlib HOG detector + 5-point landmarks + ``get_face_chip(size=150, padding=0.25)``."""

    name = "dlib_chip150"
    output_size = (150, 150)
    size = 150
    padding = 0.25

    def __init__(self) -> None:
        super().__init__()
        import dlib

        from facepriv.artifacts import fetch

        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(fetch("dlib_landmarks5")))

    def _detect(self, image: np.ndarray):
        # upsample 0 first (fast); once more for faces under ~80 px, which HOG misses at scale 1
        for upsample in (0, 1):
            rects = self._detector(image, upsample)
            if len(rects):
                return rects
            if max(image.shape[:2]) > UPSAMPLE_MAX_SIDE:
                break  # upsampling a big photo costs much and would only find tiny faces
        return []

    def _align(self, image: np.ndarray) -> AlignResult:
        dlib = self._dlib
        small, back = _detection_scale(image)
        rects = self._detect(small)
        if not len(rects):
            return AlignResult(None, "no face detected")
        r = max(rects, key=lambda r: r.width() * r.height())
        rect = dlib.rectangle(
            round(r.left() * back), round(r.top() * back), round(r.right() * back), round(r.bottom() * back)
        )
        shape = self._predictor(image, rect)
        lm = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        chip = self._dlib.get_face_chip(image, shape, size=self.size, padding=self.padding)
        box = (float(rect.left()), float(rect.top()), float(rect.right()), float(rect.bottom()))
        return AlignResult(np.ascontiguousarray(chip, dtype=np.uint8), "ok", box, lm)

    def crop_matrix(self, landmarks: np.ndarray) -> np.ndarray:
        """Photo -> chip affine matrix of dlib's chip for these 5 landmarks (as dlib extracts it)."""
        dlib = self._dlib
        parts = dlib.points([dlib.point(round(x), round(y)) for x, y in np.asarray(landmarks)])
        xs, ys = np.asarray(landmarks)[:, 0], np.asarray(landmarks)[:, 1]
        rect = dlib.rectangle(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        det = dlib.full_object_detection(rect, parts)
        cd = dlib.get_face_chip_details(det, self.size, self.padding)
        # dlib maps the rect's corners, rotated by ``angle`` about its centre, onto the chip corners
        r = cd.rect
        c = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
        corners = np.array([[r.left(), r.top()], [r.right(), r.top()], [r.right(), r.bottom()], [r.left(), r.bottom()]])
        ca, sa = math.cos(cd.angle), math.sin(cd.angle)
        rot = np.array([[ca, -sa], [sa, ca]])
        src = (corners - c) @ rot.T + c
        dst = np.array([[0, 0], [cd.cols - 1, 0], [cd.cols - 1, cd.rows - 1], [0, cd.rows - 1]], dtype=np.float64)
        return umeyama_similarity(src, dst)


class ArcFaceAligner(Aligner):
    """YuNet detector + 5 landmarks + similarity transform onto the ArcFace 112x112 template."""

    name = "arcface112"
    output_size = (112, 112)
    score_threshold = 0.6
    nms_threshold = 0.3

    def __init__(self) -> None:
        super().__init__()
        import cv2

        from facepriv.artifacts import fetch

        self._cv2 = cv2
        self._detector = cv2.FaceDetectorYN.create(
            str(fetch("yunet")), "", (320, 320), self.score_threshold, self.nms_threshold, 5000
        )

    def _align(self, image: np.ndarray) -> AlignResult:
        cv2 = self._cv2
        small, back = _detection_scale(image)
        h, w = small.shape[:2]
        self._detector.setInputSize((w, h))
        _, faces = self._detector.detect(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
        if faces is None or len(faces) == 0:
            return AlignResult(None, "no face detected")
        f = max(faces, key=lambda r: float(r[2] * r[3])).astype(np.float64)
        x, y, bw, bh = f[:4] * back
        lm = f[4:14].reshape(5, 2) * back
        m = self.crop_matrix(lm)
        oh, ow = self.output_size
        crop = cv2.warpAffine(image, m, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return AlignResult(np.ascontiguousarray(crop), "ok", (x, y, x + bw, y + bh), lm)

    def crop_matrix(self, landmarks: np.ndarray) -> np.ndarray:
        """Least-squares similarity from the 5 landmarks to the ArcFace template."""
        return umeyama_similarity(landmarks, ARCFACE_TEMPLATE)


RECIPES: dict[str, type[Aligner]] = {DlibChipAligner.name: DlibChipAligner, ArcFaceAligner.name: ArcFaceAligner}
_INSTANCES: dict[str, Aligner] = {}
_INSTANCES_LOCK = threading.Lock()


def get_aligner(recipe: str) -> Aligner:
    """The shared aligner of a recipe (created once; model loading is slow).

    Raises
    ------
    ParameterError
        Unknown recipe name.
    """
    if recipe not in RECIPES:
        raise ParameterError(f"unknown alignment recipe {recipe!r}; available: {', '.join(RECIPES)}")
    with _INSTANCES_LOCK:
        if recipe not in _INSTANCES:
            _INSTANCES[recipe] = RECIPES[recipe]()
        return _INSTANCES[recipe]
