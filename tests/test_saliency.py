"""Integrated gradients (completeness) and the registered ``saliency`` attack on real faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import celeba_rows, dlib_templates

from facepriv import testing
from facepriv.attacks.base import AttackData
from facepriv.errors import ParameterError
from facepriv.metrics.saliency import integrated_gradients, map_agreement, pixel_map, resize_map
from facepriv.registry import create
from facepriv.splits import split_two


# ----------------------------------------------------------------------------------- maths
def test_completeness_is_exact_for_a_quadratic_score():
    """For f(x) = sum(w x^2) + v.x the gradient is linear along the path, so the trapezoid rule is exact:
    completeness holds to float64 rounding with any number of steps."""
    gen = torch.Generator().manual_seed(0)
    w, v = torch.rand(3, 5, 5, generator=gen, dtype=torch.float64), torch.randn(3, 5, 5, generator=gen, dtype=torch.float64)

    def f(x):
        return (w * x**2).flatten(1).sum(1) + (v * x).flatten(1).sum(1)

    x = torch.rand(3, 5, 5, generator=gen, dtype=torch.float64)
    b = torch.rand(3, 5, 5, generator=gen, dtype=torch.float64)
    for steps in (1, 3, 10):
        r = integrated_gradients(f, x, b, steps=steps, batch=4)
        assert abs(r.gap) < 1e-10
        assert r.f_input == pytest.approx(float(f(x[None])[0]))
        assert r.f_baseline == pytest.approx(float(f(b[None])[0]))
    # linear f: the attributions are exactly v * (x - b)
    r = integrated_gradients(lambda z: (v * z).flatten(1).sum(1), x, b, steps=2)
    np.testing.assert_allclose(r.attributions, (v * (x - b)).numpy(), rtol=1e-12)


def test_completeness_gap_shrinks_with_steps_for_a_curved_score():
    """For a non-polynomial score the trapezoid error falls as 1/steps^2."""
    x = torch.linspace(0.1, 1.2, 12, dtype=torch.float64).view(3, 2, 2)

    def f(z):
        return torch.tanh(3 * z).flatten(1).sum(1)

    gaps = [abs(integrated_gradients(f, x, torch.zeros_like(x), steps=s).gap) for s in (4, 16, 64)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < gaps[1] / 10


def test_map_helpers():
    a = np.zeros((3, 4, 4))
    a[0, 1, 1], a[2, 1, 1] = -2.0, 1.0
    m = pixel_map(a)
    assert m[1, 1] == 3.0 and m.sum() == 3.0
    assert map_agreement(m, 2 * m) == pytest.approx(1.0)
    assert map_agreement(m, np.roll(m, 2, axis=0)) == 0.0
    assert resize_map(np.ones((8, 8)), 4).shape == (4, 4)
    with pytest.raises(ValueError, match="shape"):
        integrated_gradients(lambda z: z.sum((1, 2, 3)), torch.zeros(1, 2, 2), torch.zeros(1, 3, 3))


# ----------------------------------------------------------------------------------- real faces
@pytest.fixture(scope="module")
def real(celeba_dir):
    return dlib_templates(celeba_dir, celeba_rows(celeba_dir))


def test_completeness_on_a_real_face_through_the_recognition_network(real):
    """Identity score of a real CelebA face (cosine to its own template through dlib's network), blurred
    baseline: the attributions add up to f(x) - f(baseline) within 5 % with 32 steps (measured gap ~1 %)."""
    from facepriv.attacks.saliency import _baseline

    net = real["model"].torch_module()
    x = torch.from_numpy(real["crops"][0]).permute(2, 0, 1).float() / 255.0
    t = torch.nn.functional.normalize(torch.from_numpy(real["es"].embeddings[0]).float(), dim=0)

    def f(z):
        return torch.nn.functional.normalize(net(z), dim=1) @ t

    r = integrated_gradients(f, x, _baseline(x, "blur"), steps=32)
    assert r.f_input == pytest.approx(1.0, abs=1e-4)
    assert r.f_input - r.f_baseline > 0.01  # a non-trivial path
    assert abs(r.gap) <= 0.05 * abs(r.f_input - r.f_baseline)


# one face, a 2-step path, a decoder trained one epoch on 16 photos without the identity term: the
# contract and the figure, not the numbers (docs/saliency.md has measured ones)
FAST = {"samples": 1, "steps": 2, "epochs": 1, "max_train": 16, "w_id": 0.0, "seed": 3}


@pytest.mark.slow
def test_saliency_attack_keeps_the_contract_and_draws_the_figure(real, tmp_path):
    es = real["es"]
    att, vic = split_two(es.identity, 0.5, seed=3, strata=es.gender)
    data = AttackData(clean=es, attacker=att, victim=vic, protection=create("protection", "unprotected"),
                      model=real["model"], image_root=real["root"], seed=11, work_dir=tmp_path)
    out = testing.check_attack(create("attack", "saliency", FAST), data)
    assert out.headline["unit"] == "cosine" and -1.0 <= out.headline["value"] <= 1.0
    assert out.headline["ci_low"] <= out.headline["value"] <= out.headline["ci_high"]
    (row,) = out.tables["saliency per face"]["rows"]
    assert row[3] is not None and 0.0 <= row[3] <= 1.0  # the gender head ran: P(male) of the original
    assert out.images == ["saliency.png"]
    from PIL import Image

    img = Image.open(tmp_path / "saliency.png")
    assert img.size[0] > 6 * 100 and img.size[1] > 100  # 6 columns of 112 px cells, one face


@pytest.mark.parametrize("params,param", [
    ({"samples": 0}, "samples"), ({"steps": 0}, "steps"), ({"baseline": "white"}, "baseline"),
    ({"max_train": 1}, "max_train"), ({"size": 100}, "size"), ({"epochs": 0}, "epochs"), ({"seed": -2}, "seed"),
])
def test_bad_parameters_name_the_parameter(params, param):
    with pytest.raises(ParameterError) as exc:
        create("attack", "saliency", params).validate_params()
    assert exc.value.param == param
