"""Template and image protections. Importing this package registers every protection."""

from facepriv.protections import base as _base  # noqa: F401  (registers "unprotected")

for _mod in ("pe_miu", "feature_noise", "advface"):
    try:
        __import__(f"facepriv.protections.{_mod}")
    except ModuleNotFoundError as _exc:  # a protection module not written yet
        if _exc.name != f"facepriv.protections.{_mod}":
            raise
