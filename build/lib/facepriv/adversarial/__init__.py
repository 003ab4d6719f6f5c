"""Shared adversarial machinery: one L-inf projected sign-gradient core (BIM / ILLC / PGD)."""

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

__all__ = [
    "PAPER_EPS",
    "AttackResult",
    "bim",
    "cosine_similarity_loss",
    "cross_entropy_loss",
    "embedding_push",
    "illc",
    "kurakin_iterations",
    "least_likely_labels",
    "sign_gradient_attack",
]
