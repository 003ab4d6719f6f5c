"""Keys of cancelable template protections: per-system or per-user, derived from one secret seed.

A keyed protection (BioHashing, PolyProtect) takes one secret integer, its ``seed``. With
``key_scope="system"`` that seed is the key of every template. With ``key_scope="user"`` each
subject gets its own key, derived from the secret seed and the subject's label by a keyed hash
(BLAKE2b with the seed as the MAC key): knowing a label (public) gives nothing without the seed,
and knowing one user's key gives nothing about another's.

Per-user keys need the subject label of every template: :meth:`KeyedProtection.protect` takes it
from the :class:`~facepriv.embeddings.EmbeddingSet`; ``transform(x, identity=...)`` takes it as an
argument and raises :class:`~facepriv.errors.ParameterError` when it is missing.

**Key files** (``facepriv protect --key-file/--key-out``): a JSON object mapping each secret
parameter to its value, ``{"seed": 123...}``; new keys are 128-bit integers from the OS's entropy
(:mod:`secrets`), written with mode 0600. Errors about a key file never quote its content.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from facepriv.embeddings import EmbeddingSet
from facepriv.errors import InputFileError, ParameterError
from facepriv.protections.base import TemplateProtection

__all__ = ["KEY_SCOPES", "KeyedProtection", "check_seed", "derive_seed", "draw_key", "key_groups", "read_key_file",
           "small_blas", "write_key_file"]

log = logging.getLogger(__name__)

#: allowed values of ``key_scope``
KEY_SCOPES = ("system", "user")


def check_seed(value: Any, owner: str, param: str = "seed") -> int:
    """The seed as an int, or a ParameterError that never repeats the (secret) value."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ParameterError(f"{owner}: {param} must be an integer (the secret key)", param=param)
    if value < 0 or int(value).bit_length() > 512:
        raise ParameterError(f"{owner}: {param} must be an integer in [0, 2**512)", param=param)
    return int(value)


def draw_key(names: tuple[str, ...] | list[str]) -> dict[str, int]:
    """A new key: a 128-bit integer from the OS's entropy for each secret parameter."""
    return {n: secrets.randbits(128) for n in names}


def read_key_file(path: str | os.PathLike[str], names: tuple[str, ...] | list[str]) -> dict[str, int]:
    """The key in a key file: JSON {name: non-negative int} holding exactly the secret parameters ``names``.

    Raises
    ------
    InputFileError
        Missing or unreadable file, not a JSON object, other names, values that are not integers
        (the message never repeats the file's content).
    """
    p = Path(path)
    try:
        if p.stat().st_size > 65536:
            raise InputFileError(p, "is too large for a key file (a key file is a small JSON object)")
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputFileError(p, "key file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(p, f"cannot read the key file ({type(exc).__name__})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise InputFileError(p, 'not a key file: expected a JSON object such as {"seed": 123}') from None
    want = sorted(names)
    if not isinstance(data, dict) or sorted(data) != want:
        have = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise InputFileError(p, f"a key file for this protection holds exactly {want}, found {have}")
    for k, v in data.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v.bit_length() > 512:
            raise InputFileError(p, f"key {k!r} must be a non-negative integer below 2**512")
    if os.name == "posix" and p.stat().st_mode & 0o077:
        log.warning("%s: key file is readable by other users (chmod 600 it)", p)
    return {k: int(v) for k, v in data.items()}


def write_key_file(path: str | os.PathLike[str], key: dict[str, int], overwrite: bool = False) -> Path:
    """Write ``key`` as JSON, atomically and readable by the owner only (mode 0600)."""
    from facepriv.fileio import atomic_path, check_writable

    p = check_writable(path, overwrite)
    with atomic_path(p) as tmp:
        os.chmod(tmp, 0o600)  # before the secret is in it
        tmp.write_text(json.dumps(key) + "\n", encoding="utf-8")
    return p


def small_blas() -> contextlib.AbstractContextManager:
    """One BLAS thread for the many small matrix operations of per-key loops.

    Multi-threaded BLAS on 128 x 128 problems is ~30x slower on a loaded machine (threads
    contend); :mod:`threadpoolctl` (a scikit-learn dependency) limits it when present.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def derive_seed(seed: int, label: str, purpose: str) -> int:
    """A user's key: BLAKE2b-128 of ``label`` keyed with ``seed``, personalised with ``purpose``.

    ``purpose`` (the protection's name) separates the keys two protections derive from one seed.
    """
    key = int(seed).to_bytes(64, "little")  # BLAKE2b takes keys up to 64 bytes
    h = hashlib.blake2b(str(label).encode("utf-8"), digest_size=16, key=key, person=purpose.encode()[:16])
    return int.from_bytes(h.digest(), "little")


def key_groups(seed: int, scope: str, n: int, identity: np.ndarray | None, purpose: str,
               ) -> Iterator[tuple[int, np.ndarray]]:
    """(key seed, row indices) for every group of rows that shares a key.

    ``scope="system"``: one group, all rows, the seed itself. ``scope="user"``: one group per
    distinct label of ``identity`` (required, length ``n``), key = :func:`derive_seed`.
    """
    if scope == "system":
        yield int(seed), np.arange(n)
        return
    if identity is None:
        raise ParameterError(f"{purpose}: key_scope='user' derives each subject's key from its label; "
                             "pass identity= (one label per template), or use key_scope='system'",
                             param="key_scope")
    ident = np.asarray(identity).astype(str)
    if ident.shape != (n,):
        raise ParameterError(f"{purpose}: identity has shape {ident.shape}, expected ({n},) (one label per template)")
    labels, inverse = np.unique(ident, return_inverse=True)
    for g, label in enumerate(labels):
        yield derive_seed(seed, str(label), purpose), np.flatnonzero(inverse == g)


class KeyedProtection(TemplateProtection):
    """Base of the cancelable protections: secret ``seed``, ``key_scope``, identity-aware protect.

    Subclasses implement ``_transform_group(x, key_seed)`` (templates sharing one key) and call
    :meth:`_apply` from ``transform``.
    """

    secret_params: ClassVar[tuple[str, ...]] = ("seed",)
    threat_model: ClassVar[str] = "key_secret"
    #: the CLI asks for a key file (or draws a key) instead of using the default seed
    key_required: ClassVar[bool] = True

    def _validate_key(self) -> None:
        check_seed(getattr(self, "seed", None), self.name)
        if getattr(self, "key_scope", None) not in KEY_SCOPES:
            raise ParameterError(f"{self.name}: key_scope must be one of {', '.join(KEY_SCOPES)}, "
                                 f"got {getattr(self, 'key_scope', None)!r}", param="key_scope")

    def fit(self, es: EmbeddingSet | None = None) -> KeyedProtection:
        """Nothing to learn: checks the parameters (and the dimension of ``es``)."""
        self.validate_params()
        if es is not None:
            self.check_input_dim(es.dim)
        return self

    def _matrix(self, x: Any, what: str = "templates") -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ParameterError(f"{self.name}: {what} must be 2-d (N, D), got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ParameterError(f"{self.name}: {what} hold NaN or inf")
        return x

    def _groups(self, n: int, identity: np.ndarray | None) -> Iterator[tuple[int, np.ndarray]]:
        return key_groups(int(self.seed), str(self.key_scope), n, identity, self.name)

    def transform(self, x: np.ndarray, identity: np.ndarray | None = None) -> np.ndarray:  # type: ignore[override]
        """Protect templates (N, D); ``identity`` (N,) is required when ``key_scope='user'``."""
        raise NotImplementedError

    def protect(self, es: EmbeddingSet) -> EmbeddingSet:
        """Protect a set: per-user keys come from its ``identity`` column."""
        if es.protection is not None:
            raise ParameterError(
                f"these embeddings are already protected with {es.protection.get('name')!r}; protect unprotected templates"
            )
        self.fit(es)
        return es.with_embeddings(self.transform(es.embeddings, identity=es.identity), self.record())
