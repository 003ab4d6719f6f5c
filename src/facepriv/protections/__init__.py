"""Template, feature and image protections. Importing this package registers every built-in one."""

from facepriv.advface import protect as _advface  # noqa: F401  (advface, random_noise, laplace_dp)
from facepriv.protections import base as _base  # noqa: F401  (unprotected)
from facepriv.protections import biohashing as _biohashing  # noqa: F401
from facepriv.protections import cloaks as _cloaks  # noqa: F401  (photo cloaks)
from facepriv.protections import ive as _ive  # noqa: F401
from facepriv.protections import pe_miu as _pe_miu  # noqa: F401
from facepriv.protections import polyprotect as _polyprotect  # noqa: F401
