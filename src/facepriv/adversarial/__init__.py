"""Shared adversarial machinery: one L-inf projected sign-gradient core (BIM / ILLC / PGD, MI / TI / VMI)
and the loss-side transfer pieces (DI, EOT, ensembles)."""

from facepriv.adversarial.core import (
    PAPER_EPS,
    AttackResult,
    bim,
    cosine_similarity_loss,
    cross_entropy_loss,
    embedding_push,
    illc,
    kurakin_iterations,
    least_likely_labels,
    sign_gradient_attack,
)
from facepriv.adversarial.transfer import (
    DiverseInput,
    ensemble_loss,
    eot_loss,
    gaussian_kernel,
    input_diversity,
    smooth_gradient,
)

__all__ = [
    "PAPER_EPS",
    "AttackResult",
    "DiverseInput",
    "bim",
    "cosine_similarity_loss",
    "cross_entropy_loss",
    "embedding_push",
    "ensemble_loss",
    "eot_loss",
    "gaussian_kernel",
    "illc",
    "input_diversity",
    "kurakin_iterations",
    "least_likely_labels",
    "sign_gradient_attack",
    "smooth_gradient",
]
