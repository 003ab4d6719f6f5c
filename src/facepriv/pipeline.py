"""Photos -> aligned crops -> embeddings, with an on-disk cache of the (slow) detection step.

:func:`align_images` detects and aligns a list of images under a root folder once per recipe and
caches the crops (``cache_dir()/crops/<key>.npz``, key = sha256 of the recipe, the root's absolute
path and every file's relative path, size and mtime), so the reconstruction, de-identification and
experiment code can re-use them. :func:`embed_folder` runs the whole pipeline for one model and
returns an :class:`~facepriv.embeddings.EmbeddingSet` plus the per-file failures.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facepriv.errors import InputFileError, ParameterError

log = logging.getLogger(__name__)

CACHE_VERSION = "1"


@dataclass(frozen=True)
class AlignedCrops:
    """Aligned crops of a list of images.

    Attributes
    ----------
    crops : ndarray of uint8, shape (M, H, W, 3)
    ids : list of str
        Relative paths of the M images that gave a crop, in input order.
    failures : list of (str, str)
        (relative path, reason) of the images without a crop (unreadable, no face, ...).
    recipe : str
        Alignment recipe name.
    """

    crops: np.ndarray
    ids: list[str]
    failures: list[tuple[str, str]] = field(default_factory=list)
    recipe: str = ""

    def __len__(self) -> int:
        return len(self.ids)


class NoFaceError(InputFileError):
    """No image of a dataset gave an aligned face; ``failures`` lists why, per image."""

    def __init__(self, path: object, failures: list[tuple[str, str]]) -> None:
        self.failures = failures
        first = f" (first: {failures[0][0]}: {failures[0][1]})" if failures else ""
        super().__init__(path, f"no face found in any of the {len(failures)} image(s){first}")


@dataclass(frozen=True)
class EmbedStats:
    """Counts and speed of one :func:`embed_folder` run."""

    found: int
    embedded: int
    failed: int
    seconds: float
    from_cache: bool

    @property
    def images_per_s(self) -> float:
        """Input images processed per second (wall clock, detection included)."""
        return self.found / self.seconds if self.seconds > 0 else float("inf")


def _library_versions() -> str:
    # a new dlib/OpenCV may detect differently: part of the cache key
    import cv2
    import dlib

    return f"dlib={dlib.__version__};cv2={cv2.__version__}"


def _tag(recipe: str) -> str:
    return f"facepriv-crops-v{CACHE_VERSION}\0{recipe}\0{_library_versions()}"


def _stamps(root: Path, rel_paths: list[str]) -> dict[str, tuple[int, int] | None]:
    """(size, mtime_ns) of each file, None when it cannot be stat'ed."""
    out: dict[str, tuple[int, int] | None] = {}
    for rel in rel_paths:
        try:
            st = (root / rel).stat()
            out[rel] = (int(st.st_size), int(st.st_mtime_ns))
        except OSError:
            out[rel] = None
    return out


def crops_cache_key(root: str | os.PathLike[str], rel_paths: list[str], recipe: str) -> str:
    """sha256 over recipe, library versions, the root's absolute path and each file's path/size/mtime.

    The order of ``rel_paths`` does not matter (the same images in another order hit the cache).
    """
    r = Path(root).resolve()
    return _key(r, _stamps(r, list(rel_paths)), recipe)


def _key(r: Path, stamps: dict[str, tuple[int, int] | None], recipe: str) -> str:
    h = hashlib.sha256()
    h.update(f"{_tag(recipe)}\0{r}\0".encode())
    for rel in sorted(stamps):
        st = stamps[rel]
        h.update((f"{rel}\0{st[0]}\0{st[1]}\0" if st else f"{rel}\0missing\0").encode())
    return h.hexdigest()


def _cache_file(key: str) -> Path:
    from facepriv.artifacts import cache_dir

    return cache_dir() / "crops" / f"{key}.npz"


def _load_cache(path: Path, rel_paths: list[str], recipe: str) -> AlignedCrops | None:
    """The cached crops, or None when the file is absent or does not match (then it is recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            crops, ids = z["crops"], [str(s) for s in z["ids"]]
            fpaths, freasons = [str(s) for s in z["fail_paths"]], [str(s) for s in z["fail_reasons"]]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        log.warning("ignoring unreadable crops cache %s (%s)", path, exc)
        return None
    if crops.dtype != np.uint8 or crops.ndim != 4 or len(crops) != len(ids) or sorted(ids + fpaths) != sorted(rel_paths):
        log.warning("ignoring crops cache %s: it does not match the requested images", path)
        return None
    # back to the caller's order
    pos = {p: i for i, p in enumerate(rel_paths)}
    order = sorted(range(len(ids)), key=lambda i: pos[ids[i]])
    if order != list(range(len(ids))):
        crops, ids = crops[order], [ids[i] for i in order]
    fails = sorted(zip(fpaths, freasons, strict=True), key=lambda f: pos[f[0]])
    return AlignedCrops(crops, ids, fails, recipe)


def _reuse_cached(
    r: Path, stamps: dict[str, tuple[int, int] | None], recipe: str, shape: tuple[int, int]
) -> dict[str, np.ndarray | str]:
    """Crops (or failure reasons) of requested images found in other cache files of the same root.

    A subset, superset or overlapping list of an earlier run is served without re-detection; an
    entry is used only when the file's size and mtime still match the ones recorded.
    """
    want = {rel for rel, st in stamps.items() if st is not None}
    found: dict[str, np.ndarray | str] = {}
    folder = _cache_file("x").parent
    if not folder.is_dir():
        return found
    tag, root_s = _tag(recipe), str(r)
    files = sorted(folder.glob("*.npz"), key=lambda f: f.stat().st_mtime, reverse=True)
    for f in files:
        if len(found) == len(want):
            break
        try:
            with np.load(f, allow_pickle=False) as z:
                if "root" not in z.files or str(z["root"]) != root_s or str(z["tag"]) != tag:
                    continue
                names = [str(x) for x in z["ids"]] + [str(x) for x in z["fail_paths"]]
                st = z["stamps"]
                use = [
                    i for i, n in enumerate(names)
                    if n in want and n not in found and stamps[n] == (int(st[i, 0]), int(st[i, 1]))
                ]
                if not use:
                    continue
                n_ok = len(z["ids"])
                crops = z["crops"] if any(i < n_ok for i in use) else None
                reasons = [str(x) for x in z["fail_reasons"]]
        except (OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile, EOFError):
            continue
        if crops is not None and crops.shape[1:] != (*shape, 3):
            continue
        for i in use:
            found[names[i]] = crops[i] if i < n_ok else reasons[i - n_ok]
    return found


def _save_cache(path: Path, ac: AlignedCrops, r: Path, stamps: dict[str, tuple[int, int] | None]) -> None:
    from facepriv.fileio import atomic_path

    names = ac.ids + [f[0] for f in ac.failures]
    st = np.array([stamps.get(n) or (-1, -1) for n in names], dtype=np.int64).reshape(-1, 2)
    try:
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(
                tmp,
                crops=ac.crops,
                ids=np.array(ac.ids, dtype=str),
                fail_paths=np.array([f[0] for f in ac.failures], dtype=str),
                fail_reasons=np.array([f[1] for f in ac.failures], dtype=str),
                root=np.array(str(r)),
                tag=np.array(_tag(ac.recipe)),
                stamps=st,
            )
    except OSError as exc:  # a full or read-only cache must not fail the run
        log.warning("could not write crops cache %s (%s)", path, exc)


def align_images(
    root: str | os.PathLike[str], rel_paths: list[str], recipe: str, cache: bool = True
) -> AlignedCrops:
    """Detect and align the largest face of each image; unreadable or faceless images become failures.

    Parameters
    ----------
    root : path-like
        Folder the paths are relative to.
    rel_paths : list of str
        Images to align (POSIX paths relative to ``root``).
    recipe : str
        Alignment recipe (``"dlib_chip150"`` or ``"arcface112"``).
    cache : bool
        Read/write the crops cache in ``facepriv.artifacts.cache_dir()/crops``.

    Returns
    -------
    AlignedCrops
        Crops in input order; a bad file is a failure with its reason, never an exception.

    Raises
    ------
    InputFileError
        A path leads outside ``root`` (``..``, absolute, or a symbolic link): refused before any
        file is opened.
    """
    from facepriv.images import load_rgb, path_under
    from facepriv.models.alignment import get_aligner
    from facepriv.progress import progress

    rel_paths = list(rel_paths)
    if len(set(rel_paths)) != len(rel_paths):
        raise ParameterError("align_images: the image list has duplicates")
    r = Path(root)
    for rel in rel_paths:
        path_under(r, rel)
    aligner = get_aligner(recipe)
    h, w = aligner.output_size
    cpath, reuse, stamps = None, {}, {}
    if cache:
        rabs = r.resolve()
        stamps = _stamps(rabs, rel_paths)
        cpath = _cache_file(_key(rabs, stamps, recipe))
        hit = _load_cache(cpath, rel_paths, recipe)
        if hit is not None:
            log.info("aligned crops of %d images loaded from cache %s", len(rel_paths), cpath)
            return hit
        reuse = _reuse_cached(rabs, stamps, recipe, (h, w))
        if reuse:
            log.info("%d of %d images found in earlier crops caches", len(reuse), len(rel_paths))
    crops = np.empty((len(rel_paths), h, w, 3), dtype=np.uint8)
    ids: list[str] = []
    failures: list[tuple[str, str]] = []
    todo = sum(1 for rel in rel_paths if rel not in reuse)
    bar = progress(total=todo, desc=f"detect+align ({recipe})", unit="img")
    for rel in rel_paths:
        if rel in reuse:
            got = reuse[rel]
            if isinstance(got, str):
                failures.append((rel, got))
            else:
                crops[len(ids)] = got
                ids.append(rel)
            continue
        bar.update(1)
        try:
            res = aligner.align(load_rgb(r / rel))
        except InputFileError as exc:
            failures.append((rel, exc.problem))
            continue
        except (RuntimeError, ValueError, MemoryError) as exc:  # a detector choking on one odd file
            failures.append((rel, f"alignment failed ({type(exc).__name__}: {exc})"))
            continue
        if res.crop is None:
            failures.append((rel, res.reason))
            continue
        crops[len(ids)] = res.crop
        ids.append(rel)
    kept = crops if len(ids) == len(crops) else crops[: len(ids)].copy()
    out = AlignedCrops(kept, ids, failures, recipe)
    if failures:
        log.info("%d of %d image(s) gave no aligned face", len(failures), len(rel_paths))
    bar.close()
    if cpath is not None:
        _save_cache(cpath, out, r.resolve(), stamps)
    return out


def embed_folder(
    root: str | os.PathLike[str],
    model_name_or_model,
    labels_csv: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    cache: bool = True,
    device: str = "cpu",
):
    """Detect, align and embed the images of a dataset folder.

    Parameters
    ----------
    root : path-like
        Dataset root.
    model_name_or_model : str or RecognitionModel
        Registered model name (``facepriv.models.zoo.get_model``) or a model instance; its
        ``card.alignment`` picks the alignment recipe.
    labels_csv : path-like, optional
        ``image,identity,gender`` CSV (+ extra columns, kept as attributes). Without it every
        image under ``root`` is embedded and identity is its first folder (LFW layout).
    batch_size : int
        Crops per forward pass.
    cache : bool
        Use the crops cache.
    device : str
        Resolved torch device of the embedding (:func:`facepriv.device.resolve_device`);
        detection and alignment run on the CPU.

    Returns
    -------
    (EmbeddingSet, list of (str, str), EmbedStats)
        Embeddings of the images that gave a face, the failures (path, reason), counts/speed.

    Raises
    ------
    InputFileError
        Root not a folder, no images, bad labels CSV (missing files listed); :class:`NoFaceError`
        (a subclass) when no image gave a face.
    ParameterError
        Unknown model, bad batch size.
    """
    from facepriv.datasets.folder import dataset_labels
    from facepriv.embeddings import EmbeddingSet
    from facepriv.models.base import embed_on
    from facepriv.models.zoo import get_model
    from facepriv.progress import progress

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(f"batch_size must be a positive integer, got {batch_size!r}")
    t0 = time.perf_counter()
    model = get_model(model_name_or_model) if isinstance(model_name_or_model, str) else model_name_or_model
    recipe = model.card.alignment
    labels = dataset_labels(root, labels_csv)
    from facepriv.models.alignment import get_aligner

    if get_aligner(recipe).output_size != tuple(model.card.input_size):
        raise ParameterError(
            f"model {model.name}: input size {model.card.input_size} differs from the {recipe} crop size"
        )
    cpath = _cache_file(crops_cache_key(root, labels.images, recipe)) if cache else None
    from_cache = cpath is not None and cpath.is_file()
    ac = align_images(root, labels.images, recipe, cache=cache)
    if not len(ac):
        raise NoFaceError(root, list(ac.failures))
    emb = np.empty((len(ac), model.card.embedding_dim), dtype=np.float32)
    for i in progress(range(0, len(ac), batch_size), desc=f"embed ({model.name})", unit="batch"):
        emb[i : i + batch_size] = embed_on(model, ac.crops[i : i + batch_size], device)
    row = labels.index()
    keep = [row[i] for i in ac.ids]
    attrs = {k: np.array([v[j] for j in keep], dtype=str) for k, v in labels.attributes.items()}
    es = EmbeddingSet(
        emb,
        np.array(ac.ids, dtype=str),
        np.array([labels.identity[j] for j in keep], dtype=str),
        attrs,
        model.name,
        None,
    )
    stats = EmbedStats(len(labels), len(ac), len(ac.failures), time.perf_counter() - t0, from_cache)
    return es, list(ac.failures), stats
