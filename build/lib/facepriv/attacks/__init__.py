"""Attacks on protections. Importing this package registers every attack."""

for _mod in ("soft_biometric", "classifiers", "reconstruction", "deid"):
    try:
        __import__(f"facepriv.attacks.{_mod}")
    except ModuleNotFoundError as _exc:  # an attack module not written yet
        if _exc.name != f"facepriv.attacks.{_mod}":
            raise
