"""Gallery/probe protocol and the protection success rate PSR@k (Ghafourian et al. 2023, Eq. 6).

Per identity, a seeded random split puts ``probes_per_identity`` images in the probe set (these
get cloaked) and the rest in the gallery (it trains the closed-set identification heads). The
split is written to the run folder so every evaluation uses the same one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from facepriv.errors import ParameterError

#: top-k values of the paper's figures (and 10, 50 from its text)
PAPER_KS = (1, 5, 10, 25, 50)


@dataclass(frozen=True)
class Split:
    """A gallery/probe split.

    Attributes
    ----------
    gallery, probes : list of (image, identity)
    dropped : dict identity -> number of images
        Identities left out by ``min_images`` / ``max_identities`` (recorded, not an error).
    """

    gallery: list[tuple[str, str]]
    probes: list[tuple[str, str]]
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def identities(self) -> list[str]:
        """Sorted identities of the gallery (the heads' classes)."""
        return sorted({i for _, i in self.gallery})


def split_gallery_probes(
    images: list[str],
    identity: list[str],
    *,
    probes_per_identity: int = 2,
    min_gallery: int = 3,
    seed: int = 0,
    min_images: int | None = None,
    max_identities: int | None = None,
    max_probes: int | None = None,
    max_gallery: int | None = None,
) -> Split:
    """Seeded per-identity split of labelled images into gallery and probes.

    Parameters
    ----------
    images, identity : list of str
        The labels (same length).
    probes_per_identity : int
        Images per identity that get cloaked.
    min_gallery : int
        Fewest gallery images an identity may have.
    seed : int
        Seeds the split (and the choice of identities when ``max_identities`` is given).
    min_images : int, optional
        Leave out identities with fewer images (recorded in ``dropped``). Without it, an identity
        with fewer than ``probes_per_identity + min_gallery`` images is an error.
    max_identities : int, optional
        Keep a seeded random subset of this many identities.
    max_probes : int, optional
        Cap on the total number of probes, taken round-robin over identities so as many
        identities as possible keep a probe; probes over the cap are not used at all (the
        gallery is unchanged).

    max_gallery : int, optional
        Cap on the gallery images per identity (seeded choice; speed on large identities).

    Raises
    ------
    ParameterError
        Bad counts, or identities with too few images for a gallery (listed).
    """
    if probes_per_identity < 1:
        raise ParameterError(f"probes per identity must be >= 1, got {probes_per_identity}")
    if min_gallery < 1:
        raise ParameterError(f"min gallery must be >= 1, got {min_gallery}")
    if max_gallery is not None and max_gallery < min_gallery:
        raise ParameterError(f"max gallery per identity ({max_gallery}) is below min gallery ({min_gallery})")
    if max_probes is not None and max_probes < 1:
        raise ParameterError(f"max images must be >= 1, got {max_probes}")
    by_id: dict[str, list[str]] = defaultdict(list)
    for im, ident in zip(images, identity, strict=True):
        by_id[ident].append(im)
    dropped: dict[str, int] = {}
    if min_images is not None:
        for ident in sorted(by_id):
            if len(by_id[ident]) < min_images:
                dropped[ident] = len(by_id.pop(ident))
    need = probes_per_identity + min_gallery
    small = sorted((i, len(v)) for i, v in by_id.items() if len(v) < need)
    if small:
        shown = ", ".join(f"{i} ({n})" for i, n in small[:10]) + (f" and {len(small) - 10} more" if len(small) > 10 else "")
        raise ParameterError(
            f"{len(small)} identit{'y has' if len(small) == 1 else 'ies have'} fewer than {need} images "
            f"({probes_per_identity} probe(s) + a gallery of at least {min_gallery}): {shown}; "
            "pass --min-images to leave such identities out, or lower --probes-per-identity / --min-gallery"
        )
    rng = np.random.default_rng(int(seed))
    ids = sorted(by_id)
    if max_identities is not None:
        if max_identities < 2:
            raise ParameterError(f"max identities must be >= 2, got {max_identities}")
        if max_identities < len(ids):
            keep = set(rng.choice(len(ids), size=max_identities, replace=False).tolist())
            for j, ident in enumerate(ids):
                if j not in keep:
                    dropped[ident] = len(by_id[ident])
            ids = [ident for j, ident in enumerate(ids) if j in keep]
    if len(ids) < 2:
        raise ParameterError(f"need at least 2 identities with enough images, found {len(ids)}")
    gallery: list[tuple[str, str]] = []
    probes: list[tuple[str, str]] = []
    for ident in ids:
        ims = sorted(by_id[ident])
        order = rng.permutation(len(ims))
        probes += [(ims[j], ident) for j in sorted(order[:probes_per_identity])]
        gallery += [(ims[j], ident) for j in sorted(order[probes_per_identity:][:max_gallery])]
    if max_probes is not None and len(probes) > max_probes:
        # interleave identities so a cap keeps as many identities as possible
        per = defaultdict(list)
        for p in probes:
            per[p[1]].append(p)
        rounds = [per[i][r] for r in range(probes_per_identity) for i in ids if r < len(per[i])]
        probes = sorted(rounds[:max_probes], key=lambda p: (p[1], p[0]))
    return Split(gallery, probes, dropped)


def psr_at_k(ranks: np.ndarray, ks=PAPER_KS) -> dict[int, float]:
    """Protection success rate ``PSR@k = 100 - 100/N * #(rank of the true identity <= k)``.

    Parameters
    ----------
    ranks : array of float (N,)
        1-based rank of the true identity per probe; ``inf`` (or NaN) for a probe whose face was
        not detected (it cannot be identified, so it counts as protected).
    ks : iterable of int

    Returns
    -------
    dict k -> PSR in percent (NaN when N = 0).
    """
    r = np.asarray(ranks, dtype=np.float64)
    n = len(r)
    r = np.where(np.isnan(r), np.inf, r)
    out = {}
    for k in ks:
        if int(k) < 1:
            raise ParameterError(f"top-k must be >= 1, got {k}")
        out[int(k)] = float("nan") if n == 0 else 100.0 - 100.0 / n * float((r <= k).sum())
    return out
