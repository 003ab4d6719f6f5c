"""PE-MIU: privacy-enhancing face templates by block permutation (Terhoerst et al. 2020).

A template of dimension D is cut into B = D / ``block_size`` contiguous blocks whose order is
shuffled. Comparison re-aligns the blocks: the B x B matrix of Euclidean distances between the
blocks of the two templates, a minimum-cost one-to-one assignment (Hungarian), then the cosine of
the first template and the re-ordered second one.

Two variants:

* ``moved_blocks=None`` (the 2020 paper): a fresh random permutation per template.
* ``moved_blocks=P`` (the WIFS-2023 variant, K = ``block_size``): one fixed permutation for every
  template that moves exactly P of the B blocks (a random derangement of P randomly chosen blocks).

The ``seed`` decides every permutation; in the fixed variant it is a key (whoever knows it can
undo the permutation), so it is listed in ``secret_params`` and never recorded in outputs.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from facepriv.determinism import machine_threads
from facepriv.embeddings import EmbeddingSet
from facepriv.errors import ParameterError
from facepriv.progress import progress
from facepriv.protections import pe_native
from facepriv.protections.base import Comparator, TemplateProtection
from facepriv.protections.lsa_batch import batched_lsa
from facepriv.registry import register

log = logging.getLogger(__name__)


def check_block_size(dim: int, block_size: int, what: str = "templates") -> int:
    """Number of blocks B = dim / block_size, or a ParameterError when it does not divide."""
    if dim % block_size:
        raise ParameterError(
            f"block_size {block_size} does not divide the dimension {dim} of the {what}; "
            f"choose a divisor of {dim}",
            param="block_size",
        )
    return dim // block_size


def reference_score(r: np.ndarray, p: np.ndarray, block_size: int) -> float:
    """PE-MIU score of one pair, computed the straightforward way (the reference algorithm).

    ``cdist`` block distances, ``scipy.optimize.linear_sum_assignment``, cosine of ``r`` and the
    re-ordered ``p``. Used to test and benchmark :class:`PEMIUComparator`.
    """
    nblk = check_block_size(len(r), block_size)
    rb = np.asarray(r, dtype=np.float64).reshape(nblk, block_size)
    pb = np.asarray(p, dtype=np.float64).reshape(nblk, block_size)
    _, col = linear_sum_assignment(cdist(rb, pb))
    q = pb[col].reshape(-1)
    rr = rb.reshape(-1)
    den = np.linalg.norm(rr) * np.linalg.norm(q)
    return float(rr @ q / den) if den > 0 else 0.0


class PEMIUComparator(Comparator):
    """Block re-alignment (Hungarian on Euclidean block distances) then cosine.

    Parameters
    ----------
    block_size : int
        Size of the blocks the templates were cut into.
    threads : int
        Threads of the compiled and Numba paths; 0 (default) = the CPUs this process may use
        (``OMP_NUM_THREADS`` when set, else the CPU affinity). The scores do not depend on it.
    chunk : int
        Templates of ``a`` per batch (numpy path: bounds memory, chunk * B x len(b) * B doubles;
        compiled path: rows per progress step). 0 = automatic.
    """

    name = "pe_miu"
    per_pair = True  # one assignment problem per pair, solved on its own (compiled and Numba paths)

    def __init__(self, block_size: int = 32, threads: int = 0, chunk: int = 0) -> None:
        self.block_size = int(block_size)
        self.threads = int(threads)
        self.chunk = int(chunk)

    def n_threads(self) -> int:
        """The threads a comparison runs with (``threads``, or the usable CPUs when 0)."""
        return self.threads if self.threads > 0 else machine_threads()

    def _prep(self, x: np.ndarray, what: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ParameterError(f"{what} must be 2-d (N, D), got shape {x.shape}")
        nblk = check_block_size(x.shape[1], self.block_size, what)
        return x.reshape(len(x), nblk, self.block_size)

    def pairwise(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """All-vs-all PE-MIU scores, shape (len(a), len(b)), batched (compiled when possible)."""
        ab = self._prep(a, "first templates")
        bb = self._prep(b, "second templates")
        if ab.shape[1:] != bb.shape[1:]:
            raise ParameterError(f"dimension mismatch: {ab.shape[1] * ab.shape[2]} vs {bb.shape[1] * bb.shape[2]}")
        na, nblk, k = ab.shape
        nb = len(bb)
        out = np.empty((na, nb))
        if na == 0 or nb == 0:
            return out
        if k == 1:
            return _scores_scalar_blocks(ab[:, :, 0], bb[:, :, 0])
        fast = pe_native.active_path()  # logs the path once (compiled C / numba / numpy)
        threads = self.n_threads()
        if fast == "numba":
            from facepriv.protections import pe_numba  # lazy: importing numba costs ~0.5 s

            chunk = self.chunk or max(1, int(2e5 // nb))
            starts = range(0, na, chunk)
            bar = progress(starts, desc="PE-MIU scores", unit="batch") if len(starts) > 4 else starts
            for s in bar:
                out[s : s + chunk] = pe_numba.pemiu_pairwise(ab[s : s + chunk], bb, threads)
            return out
        if fast == "compiled C":
            # the kernel computes the block distances itself; chunks of a only drive the progress bar
            chunk = self.chunk or max(1, int(2e5 // nb))
            starts = range(0, na, chunk)
            bar = progress(starts, desc="PE-MIU scores", unit="batch") if len(starts) > 4 else starts
            counts: dict[str, int] = {}
            prepared = pe_native.prepare(bb)  # once, not per chunk
            for s in bar:
                res = pe_native.pemiu_pairwise(ab[s : s + chunk], prepared, threads, counts)
                if res is None:  # cannot happen once loaded; keeps the type checker honest
                    raise RuntimeError("PE-MIU native comparator unavailable")
                out[s : s + chunk] = res[0]
            log.debug("PE-MIU: %d of %d pairs had tied assignments (SciPy-order solver); %s",
                      counts.get("scipy_order", 0), na * nb, counts)
            return out
        bflat = bb.reshape(nb * nblk, k)
        sqb = np.einsum("ij,ij->i", bflat, bflat)
        normb = np.sqrt(sqb.reshape(nb, nblk).sum(1))
        # memory per batch ~ chunk * nblk * nb * nblk doubles; aim at ~64 MB
        chunk = self.chunk or max(1, int(8e6 // max(1, nblk * nb * nblk)))
        starts = range(0, na, chunk)
        bar = progress(starts, desc="PE-MIU scores", unit="batch") if len(starts) > 4 else starts
        for s in bar:
            aflat = ab[s : s + chunk].reshape(-1, k)
            g = aflat @ bflat.T
            sqa = np.einsum("ij,ij->i", aflat, aflat)
            norma = np.sqrt(sqa.reshape(-1, nblk).sum(1))
            out[s : s + chunk] = _scores_numpy(g, sqa, sqb, norma, normb, nblk)
        return out

    def paired(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Row-wise PE-MIU scores a[i] vs b[i], shape (N,)."""
        ab = self._prep(a, "first templates")
        bb = self._prep(b, "second templates")
        if ab.shape != bb.shape:
            raise ParameterError(f"paired comparison needs equal shapes, got {a.shape} and {b.shape}")
        if self.block_size == 1:
            return np.array([_scalar_block_score(x[:, 0], y[:, 0]) for x, y in zip(ab, bb)])
        g = np.einsum("nik,njk->nij", ab, bb)
        sqa = np.einsum("nik,nik->ni", ab, ab)
        sqb = np.einsum("njk,njk->nj", bb, bb)
        cost = np.sqrt(np.maximum(sqa[:, :, None] + sqb[:, None, :] - 2.0 * g, 0.0))
        col = pe_native.lsa_batch(cost)
        if col is None:
            if pe_native.active_path() == "numba":
                from facepriv.protections import pe_numba

                col = pe_numba.lsa_batch(cost)
            else:
                col = assign(cost)
        s = np.take_along_axis(g, col[:, :, None], axis=2)[:, :, 0].sum(1)
        den = np.sqrt(sqa.sum(1)) * np.sqrt(sqb.sum(1))
        return np.divide(s, den, out=np.zeros_like(s), where=den > 0)


def assign(cost: np.ndarray, lockstep: bool = False) -> np.ndarray:
    """SciPy's assignment of each (B, B) cost matrix, batched in numpy.

    Shortcut first: where each row's minimum is clearly (relative margin 1e-9) below the rest of
    its row and the minima fall in distinct columns, that assignment is the unique optimum. The
    other problems are solved with ``linear_sum_assignment`` one by one (faster than the lockstep
    :func:`~facepriv.protections.lsa_batch.batched_lsa` when many problems need long searches),
    or with ``lockstep=True`` by :func:`batched_lsa`.
    """
    n, b, _ = cost.shape
    col = np.argmin(cost, axis=2)
    best = np.take_along_axis(cost, col[:, :, None], axis=2)
    margin = 1e-9 * np.abs(best)
    near = (cost - best <= margin).sum(axis=2) > 1
    srt = np.sort(col, axis=1)
    distinct = (srt[:, 1:] != srt[:, :-1]).all(axis=1) if b > 1 else np.ones(n, dtype=bool)
    hard = np.flatnonzero(near.any(axis=1) | ~distinct)
    if hard.size and lockstep:
        col[hard] = batched_lsa(cost[hard])
    elif hard.size:
        col[hard] = np.stack([linear_sum_assignment(cost[i])[1] for i in hard])
    return col


def _scalar_block_score(x: np.ndarray, y: np.ndarray) -> float:
    """PE-MIU score of one pair for block size 1 (every dimension a block).

    With scalar blocks the assignment has many exactly tied optima, so the costs must be the
    reference's to the last bit for SciPy to pick the same one: |x_i - y_j| equals
    ``cdist``'s sqrt((x_i - y_j)^2) exactly (IEEE sqrt of a square), unlike the Gram-matrix form
    sqrt(x^2 + y^2 - 2xy) of the batched paths.
    """
    col = linear_sum_assignment(np.abs(x[:, None] - y[None, :]))[1]
    den = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y[col] / den) if den > 0 else 0.0


def _scores_scalar_blocks(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All-vs-all PE-MIU scores for block size 1, shape (len(a), len(b)); exact, one pair at a time."""
    out = np.empty((len(a), len(b)))
    rows = progress(range(len(a)), desc="PE-MIU scores (block size 1)", unit="row") if len(a) * len(b) > 2000 else range(len(a))
    for i in rows:
        out[i] = [_scalar_block_score(a[i], y) for y in b]
    return out


def _scores_numpy(g, sqa, sqb, norma, normb, nblk):
    """Numpy fallback of the compiled kernel (same maths, slower)."""
    ca, cb = len(norma), len(normb)
    g4 = g.reshape(ca, nblk, cb, nblk).transpose(0, 2, 1, 3)  # (ca, cb, i, j)
    d2 = sqa.reshape(ca, 1, nblk, 1) + sqb.reshape(1, cb, 1, nblk) - 2.0 * g4
    cost = np.sqrt(np.maximum(d2, 0.0)).reshape(ca * cb, nblk, nblk)
    col = assign(cost)
    gg = np.ascontiguousarray(g4).reshape(ca * cb, nblk, nblk)
    s = np.take_along_axis(gg, col[:, :, None], axis=2)[:, :, 0].sum(1).reshape(ca, cb)
    den = norma[:, None] * normb[None, :]
    return np.divide(s, den, out=np.zeros_like(s), where=den > 0)


@register("protection", "pe_miu")
class PEMIU(TemplateProtection):
    """PE-MIU block permutation.

    Parameters
    ----------
    block_size : int
        Block size (K); must divide the template dimension.
    moved_blocks : int or None
        None: a fresh random block permutation per template (PE-MIU 2020). P >= 2: one fixed
        permutation for all templates that moves exactly P blocks (WIFS 2023 variant).
    seed : int
        Seeds ``numpy.random.default_rng``; a secret (it decides the permutations).
    """

    summary = "PE-MIU: random permutation of template blocks; Hungarian block re-alignment + cosine."
    reference = (
        "Terhoerst et al., PE-MIU: a training-free privacy-enhancing face recognition approach based on "
        "minimum information units, IEEE Access 2020; fixed-permutation variant as in WIFS 2023"
    )
    secret_params = ("seed",)
    threat_model = "key_secret"

    def __init__(self, block_size: int = 32, moved_blocks: int | None = None, seed: int = 0) -> None:
        self.block_size = block_size
        self.moved_blocks = moved_blocks
        self.seed = seed

    def validate_params(self) -> None:
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, (int, np.integer)) or self.block_size < 1:
            raise ParameterError(f"pe_miu: block_size must be a positive integer, got {self.block_size!r}",
                                 param="block_size")
        if self.moved_blocks is not None:
            if isinstance(self.moved_blocks, bool) or not isinstance(self.moved_blocks, (int, np.integer)):
                raise ParameterError(f"pe_miu: moved_blocks must be an integer or None, got {self.moved_blocks!r}",
                                     param="moved_blocks")
            if self.moved_blocks < 0 or self.moved_blocks == 1:
                raise ParameterError(
                    f"pe_miu: moved_blocks must be 0 or >= 2 (one block cannot move alone), got {self.moved_blocks}",
                    param="moved_blocks",
                )
        # The seed is the permutation key: the messages never repeat its value.
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool):
            raise ParameterError("pe_miu: seed must be an integer", param="seed")
        if self.seed < 0:
            raise ParameterError("pe_miu: seed must be a non-negative integer", param="seed")

    def check_input_dim(self, dim: int) -> None:
        """Block size must divide ``dim`` and ``moved_blocks`` fit in the blocks."""
        self.validate_params()
        self._check_moved(check_block_size(dim, self.block_size, "templates"))

    def fit(self, es: EmbeddingSet | None = None) -> PEMIU:
        self.validate_params()
        if es is not None:
            nblk = check_block_size(es.dim, self.block_size, "embeddings")
            self._check_moved(nblk)
        return self

    def _check_moved(self, nblk: int) -> None:
        if self.moved_blocks is not None and self.moved_blocks > nblk:
            raise ParameterError(f"pe_miu: moved_blocks {self.moved_blocks} exceeds the number of blocks {nblk}")

    def fixed_permutation(self, nblk: int) -> np.ndarray:
        """The key permutation of the fixed variant: exactly ``moved_blocks`` blocks move."""
        rng = np.random.default_rng(self.seed)
        perm = np.arange(nblk)
        p = int(self.moved_blocks or 0)
        if p == 0:
            return perm
        chosen = rng.choice(nblk, size=p, replace=False)
        while True:  # rejection sampling of a derangement of the chosen blocks (~1/e accepted)
            shuffled = rng.permutation(chosen)
            if not np.any(shuffled == chosen):
                break
        perm[chosen] = shuffled
        return perm

    def permutations(self, n: int, dim: int) -> np.ndarray:
        """Block order of each of ``n`` protected templates, shape (n, B): out block i = in block perm[i]."""
        self.validate_params()
        nblk = check_block_size(dim, self.block_size, "templates")
        self._check_moved(nblk)
        if self.moved_blocks is not None:
            return np.tile(self.fixed_permutation(nblk), (n, 1))
        rng = np.random.default_rng(self.seed)
        return rng.permuted(np.tile(np.arange(nblk), (n, 1)), axis=1)

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ParameterError(f"pe_miu: templates must be 2-d (N, D), got shape {x.shape}")
        n, dim = x.shape
        perms = self.permutations(n, dim)
        blocks = x.reshape(n, -1, self.block_size)
        return np.take_along_axis(blocks, perms[:, :, None], axis=1).reshape(n, dim)

    def comparator(self) -> PEMIUComparator:
        return PEMIUComparator(block_size=int(self.block_size))

    def invert(self, protected: np.ndarray, attacker_templates: np.ndarray,
               identity: np.ndarray | None = None) -> np.ndarray:
        """Estimate unprotected templates (N, D) from protected ones, the parameters disclosed.

        Fixed-permutation variant (``moved_blocks`` set): the seed is the key, so the permutation
        is undone exactly. PE-MIU 2020: the per-template permutations are random and not kept, so
        each protected template's blocks are re-aligned against the attacker's mean template the
        way the comparator aligns two templates (Euclidean block distances, minimum-cost
        one-to-one assignment). ``identity`` is not used (no per-user key).
        """
        p = np.asarray(protected, dtype=np.float64)
        att = np.asarray(attacker_templates, dtype=np.float64)
        if p.ndim != 2 or att.ndim != 2 or len(att) == 0:
            raise ParameterError(f"pe_miu: protected and attacker templates must be 2-d and non-empty, got shapes "
                                 f"{p.shape} and {att.shape}")
        if p.shape[1] != att.shape[1]:
            raise ParameterError(f"pe_miu: protected templates are {p.shape[1]}-d, attacker templates {att.shape[1]}-d")
        self.validate_params()
        nblk = check_block_size(p.shape[1], self.block_size, "protected templates")
        self._check_moved(nblk)
        pb = p.reshape(len(p), nblk, self.block_size)
        if self.moved_blocks is not None:
            undo = np.argsort(self.fixed_permutation(nblk))
            return pb[:, undo].reshape(p.shape).astype(np.float32)
        mu = att.mean(axis=0).reshape(nblk, self.block_size)
        # cost[n, i, j] = || mean block i - protected block j ||, from Gram terms (bounded memory)
        d2 = (mu * mu).sum(1)[None, :, None] + np.einsum("njk,njk->nj", pb, pb)[:, None, :] \
            - 2.0 * np.einsum("ik,njk->nij", mu, pb)
        cost = np.sqrt(np.maximum(d2, 0.0))
        col = pe_native.lsa_batch(cost)
        if col is None:
            col = assign(cost)
        return np.take_along_axis(pb, col[:, :, None], axis=1).reshape(p.shape).astype(np.float32)


def realignment_rate(a: np.ndarray, b: np.ndarray, block_size: int, seeds: tuple[int, int] = (1, 2)) -> float:
    """Share of pairs (a_i, b_j) for which PE-MIU's re-alignment recovers the true block order.

    A diagnostic of how much PE-MIU hides: ``a`` and ``b`` are unprotected templates, protected
    here with per-template permutations from ``seeds``; where the assignment undoes the relative
    permutation, the PE-MIU score equals the cosine of the unprotected templates.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    nblk = check_block_size(a.shape[1], block_size)
    pa = PEMIU(block_size, seed=seeds[0]).permutations(len(a), a.shape[1])
    pb = PEMIU(block_size, seed=seeds[1]).permutations(len(b), b.shape[1])
    ab = np.take_along_axis(a.reshape(len(a), nblk, block_size), pa[:, :, None], axis=1)
    bb = np.take_along_axis(b.reshape(len(b), nblk, block_size), pb[:, :, None], axis=1)
    pos_in_b = np.argsort(pb, axis=1)  # where original block o sits in each protected b
    hits = 0
    for i in range(len(a)):
        d = np.sqrt(np.maximum(((ab[i][None, :, None, :] - bb[:, None, :, :]) ** 2).sum(-1), 0.0))
        col = pe_native.lsa_batch(d)
        if col is None:
            col = assign(d)
        hits += int(np.all(col == pos_in_b[:, pa[i]], axis=1).sum())
    return hits / (len(a) * len(b))
