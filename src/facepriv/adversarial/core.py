"""One L-inf projected sign-gradient attack core (BIM / ILLC / PGD) over tensors and loss functions.

The same function drives the photo cloaks of :mod:`facepriv.attacks.deid` (pixels in 0..255,
cross-entropy of a closed-set head, or cosine similarity to an enrolled template) and can drive
feature-level protections (AdvFace-style PGD on feature maps): it knows nothing about images,
only a tensor ``x``, a per-sample loss function and a box ``[lower, upper]``.

Update rule (Kurakin et al. 2017, Eq. (4)/(5) of Ghafourian et al. 2023)::

    x_{i+1} = clip_[lower, upper]( clip_eps-ball(x)( x_i + s * alpha * sign(grad_x loss(x_i)) ) )

with ``s = +1`` when the loss is ascended (untargeted BIM: cross-entropy of the true class) and
``s = -1`` when it is descended (targeted ILLC: cross-entropy of the least-likely class).

Random start (PGD-style, Madry et al. 2018): with ``random_start=True`` the first iterate is the
clean input plus uniform noise in ``[-eps, eps]`` (clipped to the box), drawn from an explicit
``torch.Generator`` seeded by ``seed`` -- never from the global random state. The embedding push
needs it: when the enrolled template is the photo's own embedding, the clean photo is the maximum
of the cosine similarity, where the gradient is zero and a sign step goes nowhere. BIM and ILLC
start at the clean input, as in the paper.

Devices: the attack runs where ``x`` and the loss's networks are (CPU or CUDA); every random draw
(random start, VMI neighbours) is made on the CPU generators in float64 and then moved to ``x``'s
device, so a seed gives the same noise on any device and CPU results are unchanged.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from facepriv.errors import ParameterError

#: Perturbation budgets used by Ghafourian et al. (pixel units on 0..255).
PAPER_EPS = (4, 8, 16, 32, 64, 128)

LossFn = Callable[[torch.Tensor], torch.Tensor]


def kurakin_iterations(eps: float, alpha: float = 1.0) -> int:
    """Number of iterations ``min(eps + 4, 1.25 * eps)`` (eps in units of ``alpha``), at least 1.

    Kurakin et al. state the rule with alpha = 1 pixel; for another step size the budget is
    expressed in steps (``eps / alpha``) so the attack can still reach the ball's surface.
    """
    e = float(eps) / float(alpha)
    return max(1, int(math.ceil(min(e + 4.0, 1.25 * e) - 1e-9)))


@dataclass(frozen=True)
class AttackResult:
    """Outcome of :func:`sign_gradient_attack`.

    Attributes
    ----------
    x_adv : torch.Tensor
        Adversarial tensor, same shape/dtype as the input, inside the eps-ball and the box.
    loss_history : torch.Tensor
        (iterations + 1, N) per-sample loss before each step and after the last one.
    loss_clean : torch.Tensor
        (N,) per-sample loss of the clean input (``loss_history[0]`` without a random start).
    """

    x_adv: torch.Tensor
    loss_history: torch.Tensor
    loss_clean: torch.Tensor


def _check(eps: float, alpha: float, iterations: int, lower: float, upper: float) -> None:
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ParameterError(f"eps: must be a positive number, got {eps!r}", param="eps")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ParameterError(f"alpha: the step size must be a positive number, got {alpha!r}", param="alpha")
    if not (isinstance(iterations, int) and iterations >= 1):
        raise ParameterError(f"iterations: must be an integer >= 1, got {iterations!r}", param="iterations")
    if not lower < upper:
        raise ParameterError(f"value range must satisfy lower < upper, got [{lower}, {upper}]")


def _generators(seed: int | Sequence[int] | None, n: int, stream: int = 0) -> list[torch.Generator]:
    """One generator for the batch (an int seed) or one per sample (a sequence of N seeds).

    ``stream`` > 0 derives independent streams from the same seeds (the VMI neighbours must not
    repeat the random start's draws).
    """
    if seed is None:
        raise ParameterError("seed: a random start or VMI needs a seed (an int, or one int per sample)", param="seed")
    single = isinstance(seed, numbers.Integral)
    seeds = [int(seed)] if single else [int(s) for s in seed]  # type: ignore[union-attr]
    if not single and len(seeds) != n:
        raise ParameterError(f"seed: give one seed per sample ({n}), got {len(seeds)}", param="seed")
    if any(s < 0 for s in seeds):
        raise ParameterError(f"seed: must be >= 0, got {min(seeds)}", param="seed")
    if stream:
        import numpy as np

        seeds = [int(np.random.SeedSequence([s, stream]).generate_state(1, np.uint64)[0] >> 1) for s in seeds]
    return [torch.Generator().manual_seed(s) for s in seeds]


def random_start_point(
    x: torch.Tensor, eps: float, seed: int | Sequence[int], lower: float, upper: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``clip_[lower, upper](x + U(-eps, eps))``: a seeded uniform point of the eps-ball inside the box.

    ``seed`` is one int (one stream for the batch) or one int per sample (each sample's start
    then depends only on its own seed, whatever batch it is in).
    """
    u = _uniform(x.shape, _generators(seed, x.shape[0]))
    delta = ((2.0 * u - 1.0) * float(eps)).to(device=x.device, dtype=x.dtype)  # drawn on the CPU: same on any device
    if mask is not None:
        delta = delta * mask
    return torch.clamp(x + delta, min=lower, max=upper)


def sign_gradient_attack(
    x: torch.Tensor,
    loss_fn: LossFn,
    *,
    eps: float,
    alpha: float = 1.0,
    iterations: int | None = None,
    maximize: bool = True,
    lower: float = 0.0,
    upper: float = 255.0,
    mask: torch.Tensor | None = None,
    random_start: bool = False,
    seed: int | Sequence[int] | None = None,
    momentum: float = 0.0,
    ti_kernel: torch.Tensor | None = None,
    vmi_samples: int = 0,
    vmi_beta: float = 1.5,
) -> AttackResult:
    """L-inf projected sign-gradient attack, batched over the first dimension.

    The transfer-enhanced variants are parameters of this one loop (see
    :mod:`facepriv.adversarial.transfer` for the loss-side ones: input diversity, expectation over
    transformation, ensembles). With ``momentum = 0``, no ``ti_kernel`` and ``vmi_samples = 0``
    the step is the plain ``sign(grad)`` of BIM/ILLC.

    Parameters
    ----------
    x : torch.Tensor
        Clean input (N, ...), values in ``[lower, upper]``. Not modified.
    loss_fn : callable
        Maps a tensor shaped like ``x`` to a per-sample loss (N,). Samples must be independent
        (no batch statistics) so the batch gradient equals the per-sample gradients.
    eps : float
        L-inf budget: ``|x_adv - x| <= eps`` everywhere, exactly (same units as ``x``).
    alpha : float
        Step size per iteration.
    iterations : int, optional
        Number of steps; default :func:`kurakin_iterations` ``(eps, alpha)``.
    maximize : bool
        True ascends the loss (untargeted: move away from the true class / template); False
        descends it (targeted: move towards a chosen class).
    lower, upper : float
        Valid value range (0..255 pixels by default, as the paper).
    mask : torch.Tensor, optional
        Broadcastable 0/1 tensor: only where it is 1 may values change (e.g. the face region).
    random_start : bool
        Start from a seeded uniform point of the eps-ball (clipped to the box) instead of ``x``.
    seed : int or sequence of int, optional
        Seed of the random start and of the VMI neighbours (required with either): one int, or
        one int per sample.
    momentum : float
        MI-FGSM decay ``mu`` (Dong et al. 2018): ``g = mu * g + grad / mean|grad|`` (per-sample
        L1 normalisation, as torchattacks) and the step is ``sign(g)``. 0 = no momentum.
    ti_kernel : torch.Tensor, optional
        (k, k) kernel (e.g. :func:`~facepriv.adversarial.transfer.gaussian_kernel`): TI-FGSM
        (Dong et al. 2019) convolves the gradient with it, per channel, before anything else.
        Needs ``x`` shaped (N, C, H, W).
    vmi_samples : int
        VMI-FGSM (Wang & He 2021): number of neighbours ``x + U(-beta eps, beta eps)`` whose mean
        gradient minus the current one (the variance term ``v``) is added to the next gradient
        before normalisation. 0 = off. Implies the momentum update (with ``momentum`` as decay).
    vmi_beta : float
        Radius of the VMI neighbourhood in units of ``eps``.

    Returns
    -------
    AttackResult
    """
    _check(eps, alpha, 1 if iterations is None else iterations, lower, upper)
    _check_transfer(momentum, ti_kernel, vmi_samples, vmi_beta, x)
    if iterations is None:
        iterations = kurakin_iterations(eps, alpha)
    if not torch.is_floating_point(x):
        raise ParameterError(f"x must be a floating-point tensor, got {x.dtype}")
    x0 = x.detach()
    if bool((x0 < lower).any()) or bool((x0 > upper).any()):
        raise ParameterError(f"x has values outside the valid range [{lower}, {upper}]")
    lo = torch.clamp(x0 - eps, min=lower)
    hi = torch.clamp(x0 + eps, max=upper)
    sign = 1.0 if maximize else -1.0
    x_adv = random_start_point(x0, eps, seed, lower, upper, mask) if random_start else x0.clone()
    # VMI draws its neighbours from its own streams (after the random start's, never the global RNG)
    gens = _generators(seed, x0.shape[0], stream=1) if vmi_samples else []
    accumulate = momentum > 0 or vmi_samples > 0
    g = torch.zeros_like(x0)
    v = torch.zeros_like(x0)
    history = []
    for _ in range(iterations):
        loss, grad = _loss_and_grad(loss_fn, x_adv, x0.shape[0], ti_kernel)
        history.append(loss)
        if accumulate:
            cur = grad + v
            g = cur / _l1_mean(cur) + momentum * g
            if vmi_samples:
                v = _neighbour_mean_grad(loss_fn, x_adv, gens, vmi_samples, vmi_beta * eps, ti_kernel) - grad
            step = g.sign()
        else:
            step = grad.sign()
        if mask is not None:
            step = step * mask
        with torch.no_grad():
            x_adv = torch.minimum(torch.maximum(x_adv.detach() + sign * alpha * step, lo), hi)
    with torch.no_grad():
        history.append(loss_fn(x_adv).detach())
        clean = loss_fn(x0).detach() if random_start else history[0]
    return AttackResult(x_adv=x_adv.detach(), loss_history=torch.stack(history), loss_clean=clean)


def _loss_and_grad(loss_fn: LossFn, x: torch.Tensor, n: int, ti_kernel: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample loss and the gradient of its sum at ``x`` (TI-smoothed when a kernel is given)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(x)
        if loss.ndim != 1 or loss.shape[0] != n:
            raise ValueError(f"loss_fn must return a per-sample loss of shape ({n},), got {tuple(loss.shape)}")
        (grad,) = torch.autograd.grad(loss.sum(), x)
    if ti_kernel is not None:
        from facepriv.adversarial.transfer import smooth_gradient

        grad = smooth_gradient(grad, ti_kernel)
    return loss.detach(), grad


def _l1_mean(t: torch.Tensor) -> torch.Tensor:
    """Per-sample mean absolute value (broadcastable); a zero gradient stays zero instead of NaN."""
    m = torch.mean(torch.abs(t), dim=tuple(range(1, t.ndim)), keepdim=True)
    return torch.where(m > 0, m, torch.ones_like(m))


def _neighbour_mean_grad(loss_fn: LossFn, x: torch.Tensor, gens: list[torch.Generator], samples: int, radius: float,
                         ti_kernel: torch.Tensor | None) -> torch.Tensor:
    """Mean gradient at ``samples`` uniform neighbours ``x + U(-radius, radius)`` (VMI's variance term)."""
    total = torch.zeros_like(x)
    for _ in range(samples):
        u = _uniform(x.shape, gens)
        nb = x.detach() + ((2.0 * u - 1.0) * float(radius)).to(device=x.device, dtype=x.dtype)
        total = total + _loss_and_grad(loss_fn, nb, x.shape[0], ti_kernel)[1]
    return total / samples


def _uniform(shape: torch.Size, gens: list[torch.Generator]) -> torch.Tensor:
    """U(0, 1) in float64: one stream for the batch, or one per sample."""
    if len(gens) == 1:
        return torch.rand(shape, generator=gens[0], dtype=torch.float64)
    return torch.stack([torch.rand(shape[1:], generator=g, dtype=torch.float64) for g in gens])


def _check_transfer(momentum: float, ti_kernel: torch.Tensor | None, vmi_samples: int, vmi_beta: float,
                    x: torch.Tensor) -> None:
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not math.isfinite(momentum) or momentum < 0:
        raise ParameterError(f"momentum: must be a number >= 0, got {momentum!r}", param="momentum")
    if isinstance(vmi_samples, bool) or not isinstance(vmi_samples, numbers.Integral) or vmi_samples < 0:
        raise ParameterError(f"vmi_samples: must be an integer >= 0, got {vmi_samples!r}", param="vmi_samples")
    if isinstance(vmi_beta, bool) or not isinstance(vmi_beta, numbers.Real) or not math.isfinite(vmi_beta) or vmi_beta <= 0:
        raise ParameterError(f"vmi_beta: must be a number > 0, got {vmi_beta!r}", param="vmi_beta")
    if ti_kernel is not None and (ti_kernel.ndim != 2 or x.ndim != 4):
        raise ParameterError("ti_kernel: a 2-D kernel, for inputs shaped (N, C, H, W)", param="ti_kernel")


# --- losses ---------------------------------------------------------------------------------------


def cross_entropy_loss(classifier: Callable[[torch.Tensor], torch.Tensor], labels: torch.Tensor) -> LossFn:
    """Per-sample cross-entropy ``J(x, y)`` of ``classifier(x)`` logits against ``labels``."""

    def loss(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(classifier(x), labels, reduction="none")

    return loss


def cosine_similarity_loss(embedder: Callable[[torch.Tensor], torch.Tensor], templates: torch.Tensor) -> LossFn:
    """Per-sample cosine similarity between ``embedder(x)`` and enrolled ``templates`` (N, D)."""
    t = torch.nn.functional.normalize(templates.detach(), dim=1)

    def loss(x: torch.Tensor) -> torch.Tensor:
        return (torch.nn.functional.normalize(embedder(x), dim=1) * t).sum(dim=1)

    return loss


# --- the paper's two methods and the open-set variant ---------------------------------------------


def bim(classifier, x, true_labels, *, eps, alpha=1.0, iterations=None, lower=0.0, upper=255.0, mask=None) -> AttackResult:
    """Basic Iterative Method: untargeted, ascend the cross-entropy of the true identity."""
    return sign_gradient_attack(
        x, cross_entropy_loss(classifier, true_labels), eps=eps, alpha=alpha, iterations=iterations,
        maximize=True, lower=lower, upper=upper, mask=mask,
    )


def least_likely_labels(classifier, x: torch.Tensor) -> torch.Tensor:
    """Class with the lowest logit for each clean sample (the ILLC target)."""
    with torch.no_grad():
        return classifier(x).argmin(dim=1)


def illc(classifier, x, target_labels=None, *, eps, alpha=1.0, iterations=None, lower=0.0, upper=255.0, mask=None) -> AttackResult:
    """Iterative Least-Likely Class: targeted, descend the cross-entropy of the least-likely class.

    ``target_labels`` defaults to :func:`least_likely_labels` of the clean input.
    """
    if target_labels is None:
        target_labels = least_likely_labels(classifier, x)
    return sign_gradient_attack(
        x, cross_entropy_loss(classifier, target_labels), eps=eps, alpha=alpha, iterations=iterations,
        maximize=False, lower=lower, upper=upper, mask=mask,
    )


def embedding_push(embedder, x, templates, *, eps, alpha=1.0, iterations=None, lower=0.0, upper=255.0, mask=None,
                   seed: int | Sequence[int] = 0, random_start: bool = True) -> AttackResult:
    """Open-set variant: minimise the cosine similarity of ``embedder(x)`` to the enrolled templates.

    Starts from a seeded random point of the eps-ball (``seed``: one int, or one per sample): when
    a template is the input's own embedding, the clean input maximises the cosine similarity and
    its gradient is zero, so a descent started there would not move.
    """
    return sign_gradient_attack(
        x, cosine_similarity_loss(embedder, templates), eps=eps, alpha=alpha, iterations=iterations,
        maximize=False, lower=lower, upper=upper, mask=mask, random_start=random_start, seed=seed,
    )
