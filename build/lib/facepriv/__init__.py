"""facepriv: measure how well face privacy protections survive real attacks.

Protections x attacks x metrics on pretrained face recognition models, run from one config.
"""

__version__ = "0.1.0"
