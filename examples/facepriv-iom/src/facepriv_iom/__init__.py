"""Index-of-Max hashing for facepriv (an example of a protection plugin)."""

from facepriv_iom.protection import IoMComparator, IoMHashing

__all__ = ["IoMComparator", "IoMHashing"]
