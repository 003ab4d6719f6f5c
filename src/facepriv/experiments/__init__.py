"""facepriv.experiments."""
