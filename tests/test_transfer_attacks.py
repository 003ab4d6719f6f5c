"""Transfer-enhanced sign-gradient attacks (MI / TI / VMI / DI / ensemble / EOT) on small seeded models.

MI-FGSM and TI-FGSM coincide with torchattacks' definitions on a classifier (same eps, alpha,
steps, decay, kernel): the perturbations must agree to float tolerance. torchattacks is a
test-only dependency.
"""

from __future__ import annotations

import pytest
import torch

from facepriv.adversarial import (
    DiverseInput,
    ensemble_loss,
    eot_loss,
    gaussian_kernel,
    input_diversity,
    sign_gradient_attack,
)
from facepriv.errors import ParameterError


def _classifier(seed: int = 0, n_classes: int = 5) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 8 * 8, n_classes)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _unit_images(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(3))


def _ce(model, y):
    return lambda z: torch.nn.functional.cross_entropy(model(z), y, reduction="none")


@pytest.mark.parametrize("decay", [1.0, 0.5])
def test_mi_fgsm_matches_torchattacks(decay):
    torchattacks = pytest.importorskip("torchattacks")
    model, x = _classifier(), _unit_images()
    y = model(x).argmax(1)
    eps, alpha, steps = 8 / 255, 2 / 255, 6
    ref = torchattacks.MIFGSM(model, eps=eps, alpha=alpha, steps=steps, decay=decay)(x, y)
    ours = sign_gradient_attack(x, _ce(model, y), eps=eps, alpha=alpha, iterations=steps, lower=0.0, upper=1.0,
                                momentum=decay).x_adv
    assert torch.allclose(ours - x, ref - x, atol=1e-6), float((ours - ref).abs().max())
    assert float((ours - x).abs().max()) > 0.5 * eps  # it moved


def test_ti_fgsm_matches_torchattacks_without_diversity():
    torchattacks = pytest.importorskip("torchattacks")
    model, x = _classifier(1), _unit_images()
    y = model(x).argmax(1)
    eps, alpha, steps = 8 / 255, 2 / 255, 5
    ref = torchattacks.TIFGSM(model, eps=eps, alpha=alpha, steps=steps, decay=1.0, kernel_name="gaussian",
                              len_kernel=7, nsig=3, diversity_prob=0.0, random_start=False)(x, y)
    ours = sign_gradient_attack(x, _ce(model, y), eps=eps, alpha=alpha, iterations=steps, lower=0.0, upper=1.0,
                                momentum=1.0, ti_kernel=gaussian_kernel(7, 3.0)).x_adv
    assert torch.allclose(ours - x, ref - x, atol=1e-6), float((ours - ref).abs().max())


def test_plain_step_is_unchanged_by_the_new_parameters_at_their_defaults():
    model, x = _classifier(), _unit_images() * 255  # pixels on 0..255
    y = model(x / 255).argmax(1)
    loss = _ce(lambda z: model(z / 255), y)
    a = sign_gradient_attack(x, loss, eps=8)
    b = sign_gradient_attack(x, loss, eps=8, momentum=0.0, ti_kernel=None, vmi_samples=0)
    assert torch.equal(a.x_adv, b.x_adv)


def test_vmi_is_seeded_raises_the_loss_and_stays_in_budget():
    model, x = _classifier(2), _unit_images()
    y = model(x).argmax(1)
    kw = dict(eps=8 / 255, alpha=1 / 255, iterations=10, lower=0.0, upper=1.0, momentum=1.0, vmi_samples=3)
    a = sign_gradient_attack(x, _ce(model, y), seed=5, **kw)
    torch.manual_seed(999)  # the global state does not matter
    b = sign_gradient_attack(x, _ce(model, y), seed=5, **kw)
    c = sign_gradient_attack(x, _ce(model, y), seed=6, **kw)
    assert torch.equal(a.x_adv, b.x_adv) and not torch.equal(a.x_adv, c.x_adv)
    assert bool((a.loss_history[-1] > a.loss_clean).all())
    assert float((a.x_adv - x).abs().max()) <= 8 / 255 + 1e-7
    with pytest.raises(ParameterError, match="seed"):
        sign_gradient_attack(x, _ce(model, y), **kw)


@pytest.mark.parametrize("kwargs, param", [({"momentum": -1}, "momentum"), ({"vmi_samples": -1}, "vmi_samples"),
                                           ({"vmi_beta": 0}, "vmi_beta"), ({"ti_kernel": torch.ones(3)}, "ti_kernel")])
def test_bad_transfer_parameters_are_named(kwargs, param):
    model, x = _classifier(), _unit_images()
    with pytest.raises(ParameterError) as ei:
        sign_gradient_attack(x, _ce(model, model(x).argmax(1)), eps=0.1, upper=1.0, **kwargs)
    assert ei.value.param == param


def test_gaussian_kernel_is_normalised_symmetric_and_checked():
    k = gaussian_kernel(7, 3.0)
    assert k.shape == (7, 7) and abs(float(k.sum()) - 1) < 1e-6 and torch.equal(k, k.T)
    assert float(k[3, 3]) == float(k.max())
    for bad in (4, 0, -3):
        with pytest.raises(ParameterError, match="ti_kernel"):
            gaussian_kernel(bad)


def test_input_diversity_keeps_shape_is_seeded_and_identity_at_prob_zero():
    x = torch.rand(3, 3, 20, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(DiverseInput([1, 2, 3], prob=0.0)(x), x)
    a, b = DiverseInput([1, 2, 3], prob=1.0)(x), DiverseInput([1, 2, 3], prob=1.0)(x)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    # every transformed sample has a zero border somewhere (shrunk, then padded)
    assert all(bool((a[i] == 0).any()) for i in range(3))
    one = input_diversity(x[1:2], [torch.Generator().manual_seed(2)], 1.0)
    assert torch.equal(one, a[1:2])  # per-sample streams: independent of the batch
    with pytest.raises(ParameterError, match="diversity_prob"):
        DiverseInput([1], prob=1.5)
    with pytest.raises(ParameterError, match="resize_rate"):
        DiverseInput([1], prob=0.5, resize_rate=1.0)


def test_ensemble_and_eot_losses_are_means():
    m1, m2, x = _classifier(0), _classifier(1), _unit_images()
    y = m1(x).argmax(1)
    l1, l2 = _ce(m1, y), _ce(m2, y)
    assert torch.allclose(ensemble_loss([l1, l2])(x), (l1(x) + l2(x)) / 2)
    w = torch.tensor([[1, 1, 0, 1], [1, 0, 1, 1]])
    got = ensemble_loss([l1, l2], w)(x)
    assert torch.allclose(got[1], l1(x)[1]) and torch.allclose(got[2], l2(x)[2])
    with pytest.raises(ParameterError, match="sources"):
        ensemble_loss([l1, l2], torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1]]))
    flip = [lambda z: z, lambda z: z.flip(-1)]
    assert torch.allclose(eot_loss(l1, flip)(x), (l1(x) + l1(x.flip(-1))) / 2)
    # an ensemble attack raises the loss of both members
    res = sign_gradient_attack(x, ensemble_loss([l1, l2]), eps=16 / 255, alpha=2 / 255, upper=1.0, momentum=1.0)
    assert bool((l1(res.x_adv) > l1(x)).all()) and bool((l2(res.x_adv) > l2(x)).all())


def _pipe(seed: int, classes: list[str], matrices: dict | None = None):
    import numpy as np

    from facepriv.protections.image import SourcePipeline

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, stride=4), torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 8)).eval()
    head = torch.nn.Linear(8, 3).eval()
    for p in [*net.parameters(), *head.parameters()]:
        p.requires_grad_(False)
    return SourcePipeline(net=net, head=head, crop_hw=(16, 16), templates=np.eye(3, 8, dtype=np.float32),
                          name=f"m{seed}", classes=classes, matrices=matrices or {})


def test_cloak_loss_maps_classes_between_ensemble_members_and_skips_a_missed_face():
    import numpy as np

    from facepriv.attacks.deid.cloak import cloak_photos
    from facepriv.attacks.deid.transfer_cloak import cloak_loss
    from facepriv.registry import create

    mat = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])  # photo (32 px) -> crop (16 px)
    src = _pipe(0, ["x", "y", "z"])
    member = _pipe(1, ["y", "x", "z"], {"p0": mat})  # other class order; no face found in p1
    src.members = [member]
    photos = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    x = torch.from_numpy(photos).permute(0, 3, 1, 2).float()
    mats, labels = np.stack([mat, mat]), np.array([0, 2])  # p0 is "x", p1 is "z"
    loss, maximize, _ = cloak_loss(src, mats, (32, 32), labels, ["p0", "p1"], "bim", [1, 2], None, x)
    ce = torch.nn.functional.cross_entropy
    own = ce(src.photo_model(mats, (32, 32))(x), torch.tensor([0, 2]), reduction="none")
    other = ce(member.photo_model(mats, (32, 32))(x), torch.tensor([1, 2]), reduction="none")  # "x" is class 1 there
    got = loss(x)
    assert maximize and torch.allclose(got[0], (own[0] + other[0]) / 2) and torch.allclose(got[1], own[1])
    for method in ("bim", "illc", "push"):
        prot = create("protection", f"{method}_cloak", {"eps": [6], "momentum": 1.0, "diversity_prob": 0.5,
                                                        "ti_kernel": 3, "vmi_samples": 1, "eot": ["blur:1"]})
        c = cloak_photos(photos, mats, labels, source=src, method=method, eps=6, ids=["p0", "p1"],
                         seeds=prot.photo_seeds(["p0", "p1"], 6), transfer=prot)
        d = np.abs(c.photos.astype(int) - photos.astype(int))
        assert c.photos.dtype == np.uint8 and int(d.max()) <= 6 and int((d > 0).sum()) > 0, method
