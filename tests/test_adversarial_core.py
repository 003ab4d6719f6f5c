"""The shared L-inf sign-gradient attack core on a small seeded model (maths only, no data)."""

from __future__ import annotations

import pytest
import torch

from facepriv.adversarial import (
    AttackResult,
    bim,
    embedding_push,
    illc,
    kurakin_iterations,
    least_likely_labels,
    sign_gradient_attack,
)
from facepriv.errors import ParameterError


def _model(n_classes: int = 5) -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, n_classes)
    )

    class Scaled(torch.nn.Module):  # works on 0..255 pixels like the cloaks
        def forward(self, x):
            return net(x / 255.0 - 0.5) * 5

    m = Scaled().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return m


def _images(n: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (n, 3, 8, 8), generator=g).float()
    x[0, :, :2] = 0.0  # pixels at the range limits must stay inside it
    x[1, :, :2] = 255.0
    return x


def _ce(model, x, y):
    return torch.nn.functional.cross_entropy(model(x), y, reduction="none")


def test_kurakin_iterations_match_the_paper():
    assert [kurakin_iterations(e) for e in (4, 8, 16, 32, 64, 128)] == [5, 10, 20, 36, 68, 132]
    assert kurakin_iterations(1) == 2  # min(5, 1.25) -> ceil 1.25
    assert kurakin_iterations(8, alpha=2) == 5  # budget counted in steps


@pytest.mark.parametrize("eps", [4, 16])
def test_bim_raises_true_class_loss_and_respects_budget_and_range(eps):
    model, x = _model(), _images()
    y = model(x).argmax(1)
    res = bim(model, x, y, eps=eps)
    before, after = _ce(model, x, y), _ce(model, res.x_adv, y)
    assert bool((after > before).all()), (before, after)
    d = (res.x_adv - x).abs()
    assert float(d.max()) <= eps  # exact: no tolerance
    assert float(d.max()) == eps  # iterations suffice to reach the surface of the ball
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 255.0
    assert torch.equal(res.x_adv, res.x_adv.round())  # integer steps from integer pixels
    assert res.loss_history.shape == (kurakin_iterations(eps) + 1, len(x))


def test_illc_raises_least_likely_probability():
    model, x = _model(), _images()
    t = least_likely_labels(model, x)
    assert torch.equal(t, model(x).argmin(1))
    res = illc(model, x, eps=16)
    p0 = model(x).softmax(1).gather(1, t[:, None]).squeeze(1)
    p1 = model(res.x_adv).softmax(1).gather(1, t[:, None]).squeeze(1)
    assert bool((p1 > p0).all()), (p0, p1)
    assert float((res.x_adv - x).abs().max()) <= 16


def test_maximize_flag_is_the_only_difference_between_ascend_and_descend():
    model, x = _model(), _images()
    y = model(x).argmax(1)
    up = sign_gradient_attack(x, lambda z: _ce(model, z, y), eps=8, maximize=True)
    down = sign_gradient_attack(x, lambda z: _ce(model, z, y), eps=8, maximize=False)
    assert bool((_ce(model, up.x_adv, y) > _ce(model, down.x_adv, y)).all())


def test_mask_freezes_pixels_and_input_is_untouched():
    model, x = _model(), _images()
    keep = x.clone()
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    res = bim(model, x, model(x).argmax(1), eps=8, mask=mask)
    assert torch.equal(x, keep)
    assert torch.equal(res.x_adv * (1 - mask), x * (1 - mask))
    assert float((res.x_adv - x).abs().max()) > 0


def _two_pattern_embedder() -> torch.nn.Module:
    """emb(x) = (sum of the left half, sum of the right half): a 2-D embedding of disjoint pixel sets."""

    class TwoSums(torch.nn.Module):
        def forward(self, x):
            return torch.stack([x[..., :4].sum((1, 2, 3)), x[..., 4:].sum((1, 2, 3))], dim=1)

    return TwoSums().eval()


def test_embedding_push_lowers_cosine_similarity_on_unit_range():
    # By construction: the embedding is 2-D, the gradient of the cosine is perpendicular to it, so
    # from a random start on one side of the template every sign step rotates the same way until
    # each half sits on the eps-box bound: the end point is a corner with a known cosine, far from
    # 1 (no outcome rests on rounding). Started at the clean point the gradient would be zero.
    emb, eps = _two_pattern_embedder(), 0.2
    x = 0.3 + 0.4 * torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))  # box [0, 1] never binds
    templates = emb(x).detach()
    res = embedding_push(emb, x, templates, eps=eps, alpha=0.01, iterations=2 * int(eps / 0.01) + 2,
                         lower=0.0, upper=1.0, seed=[1, 2, 3, 4])
    n = 3 * 8 * 4  # pixels per half
    p, q = templates[:, 0], templates[:, 1]
    corners = [torch.stack([p - n * eps, q + n * eps], 1), torch.stack([p + n * eps, q - n * eps], 1)]
    at_corner = torch.stack([torch.nn.functional.cosine_similarity(c, templates) for c in corners])  # (2, N)
    cos = torch.nn.functional.cosine_similarity(emb(res.x_adv), templates)
    assert float(at_corner.max()) < 0.95  # both corners are far from the template
    # the push ends at one of the two corners (which one: the side of its random start)
    assert bool(((cos - at_corner).abs().min(0).values < 1e-4).all()), (cos, at_corner)
    assert float((res.x_adv - x).abs().max()) <= eps + 1e-6
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    # the clean input is the cosine maximum (loss 1, zero gradient); the reported clean loss says so
    assert torch.allclose(res.loss_clean, torch.ones(4))


def _push(seed, x=None):
    torch.manual_seed(0)
    emb = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16)).eval()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(5)) if x is None else x
    return embedding_push(emb, x, emb(x).detach(), eps=0.05, alpha=0.01, lower=0.0, upper=1.0, seed=seed)


def test_random_start_is_seeded_and_independent_of_global_state():
    a = _push(3)
    torch.manual_seed(12345)  # global state must not matter
    torch.rand(100)
    assert torch.equal(a.x_adv, _push(3).x_adv)
    assert not torch.equal(a.x_adv, _push(4).x_adv)
    # one seed per sample: a sample's start does not depend on the rest of its batch
    per = _push([7, 8, 9, 10])
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    alone = _push([9], x[2:3])
    assert torch.equal(per.x_adv[2:3], alone.x_adv)


def test_random_start_point_stays_in_ball_and_box():
    from facepriv.adversarial.core import random_start_point

    x = _images()
    s = random_start_point(x, 8.0, 1, 0.0, 255.0)
    assert float((s - x).abs().max()) <= 8.0 and float(s.min()) >= 0 and float(s.max()) <= 255
    assert float((s - x).abs().mean()) > 2.0  # really random, not the clean point
    with pytest.raises(ParameterError, match="seed"):
        random_start_point(x, 8.0, [1, 2], 0.0, 255.0)
    with pytest.raises(ParameterError, match="seed"):
        sign_gradient_attack(x, lambda z: z.sum((1, 2, 3)), eps=4, random_start=True)


def test_bim_and_illc_have_no_random_start():
    model, x = _model(), _images()
    y = model(x).argmax(1)
    res = bim(model, x, y, eps=4)
    assert isinstance(res, AttackResult) and torch.equal(res.loss_clean, res.loss_history[0])
    assert torch.equal(res.loss_clean, _ce(model, x, y))
    ref = sign_gradient_attack(x, lambda z: _ce(model, z, y), eps=4, maximize=True)
    assert torch.equal(res.x_adv, ref.x_adv)  # deterministic, no random start


@pytest.mark.parametrize("kwargs", [{"eps": 0}, {"eps": -4}, {"eps": float("nan")}, {"eps": 4, "alpha": 0},
                                    {"eps": 4, "iterations": 0}, {"eps": 4, "lower": 1, "upper": 1}])
def test_bad_parameters_raise_parameter_error(kwargs):
    model, x = _model(), _images()
    with pytest.raises(ParameterError):
        sign_gradient_attack(x, lambda z: _ce(model, z, model(x).argmax(1)), **kwargs)


def test_out_of_range_input_and_bad_loss_shape_are_refused():
    model, x = _model(), _images()
    with pytest.raises(ParameterError, match="outside"):
        sign_gradient_attack(x + 300, lambda z: model(z).sum(1), eps=4)
    with pytest.raises(ValueError, match="per-sample"):
        sign_gradient_attack(x, lambda z: model(z).sum(), eps=4)
