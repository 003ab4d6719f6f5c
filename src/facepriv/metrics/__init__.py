"""facepriv.metrics."""
