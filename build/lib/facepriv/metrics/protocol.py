"""Verification protocols: lists of (fold, sample id 1, sample id 2, genuine) pairs.

Two sources:

* :func:`make_pairs` generates an LFW-style protocol for any labelled set (CelebA has no
  ``pairs.txt``): identities are split into ``n_folds`` disjoint groups (no person appears in two
  folds, as in LFW View 2), and each fold gets up to ``n_genuine`` same-person pairs and
  ``n_impostor`` different-person pairs drawn uniformly without repetition from that fold's
  images. Everything is driven by ``seed``.
* :func:`protocol_from_lfw_pairs` maps LFW ``pairs.txt`` entries
  (:func:`facepriv.datasets.lfw.read_lfw_pairs`) onto the sample ids of an embeddings file.

Protocols can be saved to and read from a CSV file ``fold,id1,id2,genuine`` so that a generated
protocol can be reused exactly.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facepriv.errors import InputFileError, ParameterError
from facepriv.fileio import check_writable, write_text_atomic

log = logging.getLogger(__name__)

_ENUMERATE_LIMIT = 4_000_000  # enumerate candidate pairs up to this many, sample beyond


@dataclass(frozen=True)
class PairsProtocol:
    """Verification pairs with folds (arrays of equal length M)."""

    fold: np.ndarray  # int (M,)
    id1: np.ndarray  # str (M,)
    id2: np.ndarray  # str (M,)
    genuine: np.ndarray  # bool (M,)
    source: str = ""

    def __len__(self) -> int:
        return int(self.fold.size)

    @property
    def n_folds(self) -> int:
        """Number of distinct folds."""
        return int(np.unique(self.fold).size)

    def counts(self) -> dict[str, int]:
        """Numbers of pairs, genuine pairs, impostor pairs and folds."""
        return {
            "pairs": len(self),
            "genuine_pairs": int(self.genuine.sum()),
            "impostor_pairs": int((~self.genuine).sum()),
            "folds": self.n_folds,
        }

    def to_csv(self) -> str:
        """CSV text with header ``fold,id1,id2,genuine`` (genuine as 1/0)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["fold", "id1", "id2", "genuine"])
        for row in zip(self.fold.tolist(), self.id1.tolist(), self.id2.tolist(), self.genuine.tolist()):
            w.writerow([row[0], row[1], row[2], int(row[3])])
        return buf.getvalue()


def write_protocol_csv(protocol: PairsProtocol, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write a protocol as CSV atomically (refuses to overwrite unless asked)."""
    p = check_writable(path, overwrite)
    write_text_atomic(p, protocol.to_csv())
    return p


def read_protocol_csv(path: str | os.PathLike[str]) -> PairsProtocol:
    """Read a ``fold,id1,id2,genuine`` CSV written by :func:`write_protocol_csv`."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "no such file")
    try:
        rows = list(csv.reader(p.read_text(encoding="utf-8-sig").splitlines()))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputFileError(p, f"not a readable CSV file ({exc})") from None
    if not rows or [c.strip() for c in rows[0]] != ["fold", "id1", "id2", "genuine"]:
        raise InputFileError(p, "a protocol CSV must start with the header 'fold,id1,id2,genuine'")
    fold, id1, id2, gen = [], [], [], []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 4 or row[3].strip() not in ("0", "1"):
            raise InputFileError(p, f"line {lineno}: expected 'fold,id1,id2,genuine' with genuine 0 or 1, got {row}")
        try:
            fold.append(int(row[0]))
        except ValueError:
            raise InputFileError(p, f"line {lineno}: fold {row[0]!r} is not an integer") from None
        id1.append(row[1])
        id2.append(row[2])
        gen.append(row[3].strip() == "1")
    if not fold:
        raise InputFileError(p, "the protocol holds no pairs")
    return PairsProtocol(np.array(fold), np.array(id1), np.array(id2), np.array(gen, dtype=bool), str(p))


# ------------------------------------------------------------------------------------- generator
def _assign_folds(codes: np.ndarray, n_ids: int, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold of each identity, identity-disjoint and balanced.

    Identities are shuffled, then those with >= 2 images (the only source of genuine pairs) are
    placed before singletons, larger first; each goes to the fold with the fewest identities,
    ties broken by the fewest images. Every fold thus gets floor or ceil of n_ids / n_folds
    identities and at least one with >= 2 images when there are n_folds of those.
    """
    sizes = np.bincount(codes, minlength=n_ids)
    order = rng.permutation(n_ids)
    order = order[np.lexsort((-sizes[order], sizes[order] < 2))]
    n_in = np.zeros(n_folds, dtype=np.int64)
    load = np.zeros(n_folds, dtype=np.int64)
    fold_of = np.empty(n_ids, dtype=np.int64)
    for ident in order:
        f = int(np.lexsort((load, n_in))[0])
        fold_of[ident] = f
        n_in[f] += 1
        load[f] += sizes[ident]
    return fold_of


def _sample_unique(rng: np.random.Generator, want: int, draw: Any) -> np.ndarray:
    """Draw (a, b) pairs with ``draw(m)`` until ``want`` distinct ones (a < b) are found."""
    seen: dict[tuple[int, int], None] = {}
    while len(seen) < want:
        for a, b in draw(max(64, 2 * (want - len(seen)))):
            seen.setdefault((int(a), int(b)), None)
            if len(seen) == want:
                break
    return np.array(list(seen), dtype=np.int64).reshape(-1, 2)


def _fold_pairs(
    codes: np.ndarray, want_gen: int, want_imp: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor index pairs (into this fold's samples), each (k, 2)."""
    n = codes.size
    members = [np.flatnonzero(codes == c) for c in np.unique(codes)]
    sizes = np.array([m.size for m in members], dtype=np.int64)
    n_gen_all = int((sizes * (sizes - 1) // 2).sum())
    n_imp_all = n * (n - 1) // 2 - n_gen_all
    k_gen, k_imp = min(want_gen, n_gen_all), min(want_imp, n_imp_all)

    if n_gen_all <= _ENUMERATE_LIMIT:
        cand = [np.stack([m[i], m[j]], axis=1) for m in members for i, j in [np.triu_indices(m.size, 1)]]
        gen_all = np.concatenate(cand) if cand else np.empty((0, 2), dtype=np.int64)
        gen = gen_all[np.sort(rng.choice(gen_all.shape[0], size=k_gen, replace=False))]
    else:
        weights = (sizes * (sizes - 1) / 2) / n_gen_all

        def draw_gen(m: int) -> np.ndarray:
            who = rng.choice(len(members), size=m, p=weights)
            out = []
            for w in who:
                a, b = rng.choice(members[w], size=2, replace=False)
                out.append((min(a, b), max(a, b)))
            return np.array(out)

        gen = _sample_unique(rng, k_gen, draw_gen)

    if n * (n - 1) // 2 <= _ENUMERATE_LIMIT:
        i, j = np.triu_indices(n, 1)
        keep = codes[i] != codes[j]
        imp_all = np.stack([i[keep], j[keep]], axis=1)
        imp = imp_all[np.sort(rng.choice(imp_all.shape[0], size=k_imp, replace=False))]
    else:

        def draw_imp(m: int) -> np.ndarray:
            ab = np.sort(rng.integers(0, n, size=(m, 2)), axis=1)
            return ab[codes[ab[:, 0]] != codes[ab[:, 1]]]

        imp = _sample_unique(rng, k_imp, draw_imp)
    return gen, imp


def make_pairs(
    ids: Sequence[str] | np.ndarray,
    identity: Sequence[str] | np.ndarray,
    n_folds: int = 10,
    pairs_per_fold: tuple[int, int] = (300, 300),
    seed: int = 0,
) -> PairsProtocol:
    """Generate an identity-disjoint, LFW-style pairs protocol.

    Parameters
    ----------
    ids : sequence of str (N,)
        Unique sample ids.
    identity : sequence of str (N,)
    n_folds : int
        Number of folds; identities are split into this many disjoint groups.
    pairs_per_fold : (int, int)
        Wanted genuine and impostor pairs per fold. A fold with fewer possible pairs gets all of
        them (a warning is logged; :meth:`PairsProtocol.counts` reports the real numbers).
    seed : int
        Seed of every random choice; the same inputs and seed give the same protocol.

    Raises
    ------
    ParameterError
        Duplicate ids, bad sizes, or too few identities/images to give every fold at least one
        genuine and one impostor pair.
    """
    ids_a = np.asarray(ids).astype(str)
    ident = np.asarray(identity).astype(str)
    if ids_a.shape != ident.shape or ids_a.ndim != 1:
        raise ParameterError(f"ids and identity must be 1-d of equal length, got {ids_a.shape} and {ident.shape}")
    if np.unique(ids_a).size != ids_a.size:
        raise ParameterError("sample ids must be unique to build a pairs protocol")
    n_gen, n_imp = (int(x) for x in pairs_per_fold)
    if n_folds < 2 or n_gen < 1 or n_imp < 1:
        raise ParameterError(f"need n_folds >= 2 and >= 1 genuine and impostor pair per fold, got {n_folds}, {pairs_per_fold}")
    names, codes = np.unique(ident, return_inverse=True)
    codes = codes.ravel()
    sizes = np.bincount(codes)
    if names.size < 2 * n_folds or int((sizes >= 2).sum()) < n_folds:
        raise ParameterError(
            f"{n_folds} identity-disjoint folds need at least {2 * n_folds} identities, {n_folds} of them with "
            f">= 2 images; this set has {names.size} identities, {int((sizes >= 2).sum())} with >= 2 images "
            "(use fewer folds)"
        )
    rng = np.random.default_rng(seed)
    fold_of = _assign_folds(codes, names.size, n_folds, rng)
    folds, a_all, b_all, gen_all = [], [], [], []
    short: list[str] = []
    for f in range(n_folds):
        idx = np.flatnonzero(fold_of[codes] == f)
        if np.unique(codes[idx]).size < 2:
            raise ParameterError(f"fold {f} has fewer than 2 identities; use fewer folds")
        gen, imp = _fold_pairs(codes[idx], n_gen, n_imp, rng)
        if gen.shape[0] < n_gen or imp.shape[0] < n_imp:
            short.append(f"{f}: {gen.shape[0]}/{imp.shape[0]}")
        for pairs, is_gen in ((gen, True), (imp, False)):
            folds.append(np.full(pairs.shape[0], f))
            a_all.append(ids_a[idx[pairs[:, 0]]])
            b_all.append(ids_a[idx[pairs[:, 1]]])
            gen_all.append(np.full(pairs.shape[0], is_gen))
    if short:
        log.warning(
            "%d of %d folds have fewer possible pairs than the %d genuine / %d impostor wanted; they take "
            "all they have (fold: genuine/impostor) %s", len(short), n_folds, n_gen, n_imp, ", ".join(short),
        )
    return PairsProtocol(
        np.concatenate(folds),
        np.concatenate(a_all),
        np.concatenate(b_all),
        np.concatenate(gen_all).astype(bool),
        f"generated: {n_folds} identity-disjoint folds, {n_gen}+{n_imp} pairs per fold, seed {seed}",
    )


# ------------------------------------------------------------------------------------------- LFW
def _norm_path(s: str) -> str:
    s = s.replace("\\", "/")
    while s.startswith("./"):
        s = s[2:]
    return s


def protocol_from_lfw_pairs(
    pairs: Sequence[Any],
    ids: Sequence[str] | np.ndarray,
    source: str = "pairs",
    drop_missing: bool = False,
) -> PairsProtocol:
    """Map LFW pairs (objects with ``fold, path1, path2, genuine``) to sample ids of a file.

    An id matches a pair path when the two are equal after normalising separators; otherwise,
    when image file names are unique in ``ids``, by file name (so ids with a root prefix, e.g.
    ``lfw/Name/Name_0001.jpg``, still match).

    Raises
    ------
    ParameterError
        When pairs reference images absent from ``ids`` (the message gives how many pairs and
        images) and ``drop_missing`` is false, or when no pair is left.
    """
    id_list = [str(s) for s in np.asarray(ids).astype(str)]
    exact = {_norm_path(s): s for s in id_list}
    names = [_norm_path(s).rpartition("/")[2] for s in id_list]
    by_name = dict(zip(names, id_list)) if len(set(names)) == len(names) else {}

    def look(path: str) -> str | None:
        q = _norm_path(str(path))
        return exact.get(q) or by_name.get(q.rpartition("/")[2])

    fold, id1, id2, gen = [], [], [], []
    missing_imgs: set[str] = set()
    n_missing = 0
    for pr in pairs:
        a, b = look(pr.path1), look(pr.path2)
        if a is None or b is None:
            n_missing += 1
            missing_imgs.update(str(x) for x, y in ((pr.path1, a), (pr.path2, b)) if y is None)
            continue
        fold.append(int(pr.fold))
        id1.append(a)
        id2.append(b)
        gen.append(bool(pr.genuine))
    if n_missing:
        msg = (
            f"{n_missing} of {len(pairs)} pairs of {source} reference {len(missing_imgs)} image(s) that are not "
            f"in the embeddings file (e.g. {sorted(missing_imgs)[:3]})"
        )
        if not drop_missing:
            raise ParameterError(msg + "; embed those images or pass --drop-missing to leave those pairs out")
        log.warning("%s; leaving those pairs out", msg)
    if not fold:
        raise ParameterError(f"no pair of {source} can be scored with this embeddings file")
    return PairsProtocol(np.array(fold), np.array(id1), np.array(id2), np.array(gen, dtype=bool), source)
