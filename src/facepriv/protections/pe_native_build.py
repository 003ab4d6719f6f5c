"""Building and caching the compiled PE-MIU library (``pemiu_native/pemiu.c``) with the system C compiler.

:func:`build_or_reuse` compiles ``pemiu_native/pemiu.c`` (one translation unit that includes the
kernels' ``.h`` files beside it) into the cache folder (``$FACEPRIV_CACHE/native``, default
``~/.cache/facepriv/native``) and returns the library's path. The file name is a hash of every
source part, the compiler, the flag sets and the CPU (model and feature flags): an edited kernel is
built under a new name (running processes keep their library), and a cache folder shared between
machines never hands out a library built for another CPU. On a CPU it can identify it builds with
``-march=native`` (the AVX-512 kernel where the CPU has it); then without; each with and without
OpenMP. No ``-ffast-math``. Loading and checking the library is :mod:`facepriv.protections.pe_native`'s.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

C_SOURCE_DIR = Path(__file__).with_name("pemiu_native")
C_SOURCE_FILE = C_SOURCE_DIR / "pemiu.c"  # includes the other files of C_SOURCE_DIR

_BASE_FLAGS = ["-O2", "-fno-math-errno", "-shared", "-fPIC"]  # -O3 measured no faster, slower with AVX2


def _cache_dir() -> Path:
    return Path(os.environ.get("FACEPRIV_CACHE", Path.home() / ".cache" / "facepriv")) / "native"


def _cpu_signature() -> str:
    """Model and feature flags of this CPU from /proc/cpuinfo; empty when unavailable."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    keep = [ln.strip() for ln in text.splitlines() if ln.split(":")[0].strip() in ("model name", "flags", "Features")]
    return "\n".join(sorted(set(keep)))


def _flag_sets(cpu: str) -> list[list[str]]:
    """Compiler flags to try in order: native code only when the CPU is identified (it is part of
    the cache key, so a library built here is never loaded on a different CPU)."""
    native = [["-march=native"]] if cpu else []
    return [[*_BASE_FLAGS, *arch, *omp] for arch in [*native, []] for omp in (["-fopenmp"], [])]


def _build(out: Path, cc: str, flag_sets: list[list[str]]) -> bool:
    out.parent.mkdir(parents=True, exist_ok=True)
    err = ""
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        so = Path(tmp) / out.name
        for flags in flag_sets:
            cmd = [cc, *flags, "-o", str(so), str(C_SOURCE_FILE), "-lm"]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode == 0:
                log.debug("built the PE-MIU native comparator: %s", " ".join(cmd))
                out.with_suffix(".flags").write_text(" ".join(flags), encoding="utf-8")
                os.replace(so, out)  # atomic: a concurrent process sees the old name or the whole file
                return True
            err = res.stderr.strip()
    log.warning("building the PE-MIU native comparator failed (%s); using the numpy path", err[:300])
    return False


def build_or_reuse() -> tuple[Path, str] | None:
    """The compiled library for this CPU and source, built now unless cached.

    Returns
    -------
    (Path, str) or None
        The shared library's path and how it was built (compiler name and flags, for logs); None
        (after a log line saying why) when there is no C compiler, the source is missing or every
        build failed.
    """
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        log.info("no C compiler found; PE-MIU comparator uses the numpy path")
        return None
    try:
        if not C_SOURCE_FILE.is_file():
            raise OSError(f"{C_SOURCE_FILE} not found")
        # every part of the kernel goes into the cache key
        source = "\0".join(
            f"{part.name}\0{part.read_text(encoding='utf-8')}"
            for part in sorted([*C_SOURCE_DIR.glob("*.c"), *C_SOURCE_DIR.glob("*.h")])
        )
    except OSError as exc:
        log.warning("the PE-MIU kernel source is missing (%s); using the numpy path", exc)
        return None
    cpu = _cpu_signature()
    flag_sets = _flag_sets(cpu)
    ident = "\0".join([source, cc, repr(flag_sets), platform.machine(), cpu])
    key = hashlib.sha256(ident.encode()).hexdigest()[:16]
    path = _cache_dir() / f"pemiu_lsa_{key}.so"
    try:
        if not path.is_file() and not _build(path, cc, flag_sets):
            return None
    except OSError as exc:
        log.warning("building the PE-MIU native comparator failed (%s); using the numpy path", exc)
        return None
    flags_file = path.with_suffix(".flags")
    try:
        built_with = f"{Path(cc).name} {flags_file.read_text(encoding='utf-8')}"
    except OSError:
        built_with = cc
    return path, built_with
