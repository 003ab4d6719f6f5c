"""Face recognition backbones, detection and alignment, and the model zoo."""
