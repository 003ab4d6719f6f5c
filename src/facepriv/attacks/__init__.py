"""Attacks on protections. Importing this package registers every built-in attack."""

from facepriv.advface import adaptive_attack as _advface_adaptive  # noqa: F401
from facepriv.advface import attack as _advface_attack  # noqa: F401
from facepriv.attacks import classifiers as _classifiers  # noqa: F401
from facepriv.attacks import identification as _identification  # noqa: F401
from facepriv.attacks import iso30136 as _iso30136  # noqa: F401
from facepriv.attacks import iso30136_image as _iso30136_image  # noqa: F401
from facepriv.attacks import saliency as _saliency  # noqa: F401
from facepriv.attacks import soft_biometric as _soft_biometric  # noqa: F401
from facepriv.attacks.deid import attack as _deid_attack  # noqa: F401
from facepriv.attacks.deid import invaders as _deid_invaders  # noqa: F401
from facepriv.attacks.reconstruction import attack as _reconstruction_attack  # noqa: F401
from facepriv.attacks.score_only import attack as _score_only_attack  # noqa: F401
