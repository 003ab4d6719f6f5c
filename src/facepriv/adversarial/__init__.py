"""facepriv.adversarial."""
