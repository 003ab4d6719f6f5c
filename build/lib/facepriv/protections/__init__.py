"""Template and image protections. Importing this package registers every protection."""

from facepriv.protections import base as _base  # noqa: F401  (registers "unprotected")

for _mod in ("facepriv.protections.pe_miu", "facepriv.advface.protect"):
    try:
        __import__(_mod)
    except ModuleNotFoundError as _exc:  # a protection module not written yet
        if _exc.name != _mod:
            raise
