"""facepriv.datasets."""
