"""Gallery/probe protocol of the photo de-identification attack (Ghafourian et al. 2023).

Per identity, a seeded random split puts ``probes_per_identity`` images in the probe set (these
get cloaked) and the rest in the gallery (it trains the closed-set identification heads). The
split is written to the run folder so every evaluation uses the same one. It splits *within*
each identity (a person is in both gallery and probes: closed-set identification), so it is not
an identity-disjoint split of :mod:`facepriv.splits`. PSR@k is
:func:`facepriv.metrics.privacy.psr_at_k` (0-based ranks).
"""

from __future__ import annotations

import numbers
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

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


def check_split_params(*, probes_per_identity: Any, min_gallery: Any, min_images: Any, max_identities: Any,
                       max_images: Any, max_gallery: Any, seed: Any) -> None:
    """ParameterError naming the parameter for a split setting of the wrong type or range."""
    for name, v, low, optional in (("probes_per_identity", probes_per_identity, 1, False),
                                   ("min_gallery", min_gallery, 1, False), ("min_images", min_images, 1, True),
                                   ("max_identities", max_identities, 2, True), ("max_images", max_images, 1, True),
                                   ("max_gallery", max_gallery, 1, True), ("seed", seed, 0, False)):
        if v is None and optional:
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
            raise ParameterError(f"{name}: must be an integer >= {low}{' (or None)' if optional else ''}, got {v!r}",
                                 param=name)
    if seed > 2**32 - 1:  # scikit-learn's random_state (the heads) needs < 2**32
        raise ParameterError(f"seed: must be at most {2**32 - 1}, got {seed}", param="seed")
    if max_gallery is not None and max_gallery < min_gallery:
        raise ParameterError(f"max_gallery: {max_gallery} is below min_gallery ({min_gallery})", param="max_gallery")


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
        raise ParameterError(f"probes_per_identity: must be >= 1, got {probes_per_identity}", param="probes_per_identity")
    if min_gallery < 1:
        raise ParameterError(f"min_gallery: must be >= 1, got {min_gallery}", param="min_gallery")
    if seed > 2**32 - 1:  # scikit-learn's random_state (the heads) needs < 2**32
        raise ParameterError(f"seed: must be at most {2**32 - 1}, got {seed}", param="seed")
    if max_gallery is not None and max_gallery < min_gallery:
        raise ParameterError(f"max_gallery: {max_gallery} is below min_gallery ({min_gallery})", param="max_gallery")
    if max_probes is not None and max_probes < 1:
        raise ParameterError(f"max_images: must be >= 1, got {max_probes}", param="max_images")
    if seed < 0:
        raise ParameterError(f"seed: must be >= 0, got {seed}", param="seed")
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
            "set min_images to leave such identities out, or lower probes_per_identity / min_gallery",
            param="min_images",
        )
    rng = np.random.default_rng(int(seed))
    ids = sorted(by_id)
    if max_identities is not None:
        if max_identities < 2:
            raise ParameterError(f"max_identities: must be >= 2, got {max_identities}", param="max_identities")
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
