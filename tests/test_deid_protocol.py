"""The gallery/probe split, heads (I/O, keys), the alignment warp and the built-in cloaks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facepriv.attacks.deid.heads import head_key, load_head, save_head, train_head
from facepriv.attacks.deid.protocol import check_split_params, split_gallery_probes
from facepriv.errors import InputFileError, ParameterError


def test_deid_uses_the_one_psr():
    import facepriv.attacks.deid.evaluate as ev
    import facepriv.attacks.deid.run as run
    from facepriv.metrics import privacy

    assert ev.psr_at_k is privacy.psr_at_k and run.psr_at_k is privacy.psr_at_k
    assert ev.rank_of_true_identity is privacy.rank_of_true_identity
    assert not hasattr(__import__("facepriv.attacks.deid.protocol", fromlist=["x"]), "psr_at_k")


def _labels(counts):
    ims, ids = [], []
    for ident, n in counts.items():
        for j in range(n):
            ims.append(f"{ident}/{j:03d}.jpg")
            ids.append(ident)
    return ims, ids


def test_split_is_seeded_disjoint_and_complete():
    ims, ids = _labels({"a": 7, "b": 6, "c": 9})
    s1 = split_gallery_probes(ims, ids, probes_per_identity=2, min_gallery=3, seed=3)
    s2 = split_gallery_probes(ims, ids, probes_per_identity=2, min_gallery=3, seed=3)
    s3 = split_gallery_probes(ims, ids, probes_per_identity=2, min_gallery=3, seed=4)
    assert s1 == s2 and s1.probes != s3.probes
    assert len(s1.probes) == 6 and len(s1.gallery) == 16
    assert not {p for p, _ in s1.probes} & {g for g, _ in s1.gallery}
    assert s1.identities == ["a", "b", "c"]
    capped = split_gallery_probes(ims, ids, probes_per_identity=2, min_gallery=3, seed=3, max_probes=4, max_gallery=3)
    assert len(capped.probes) == 4 and {i for _, i in capped.probes} == {"a", "b", "c"}
    assert len(capped.gallery) == 9


def test_split_errors_name_the_small_identities():
    ims, ids = _labels({"a": 7, "tiny": 3, "b": 6})
    with pytest.raises(ParameterError, match=r"tiny \(3\)"):
        split_gallery_probes(ims, ids, probes_per_identity=2, min_gallery=3)
    s = split_gallery_probes(ims, ids, probes_per_identity=2, min_gallery=3, min_images=5)
    assert s.dropped == {"tiny": 3}
    with pytest.raises(ParameterError, match="at least 2 identities"):
        split_gallery_probes(*_labels({"a": 9}), probes_per_identity=2, min_gallery=3)


@pytest.mark.parametrize("kw, param", [({"seed": -1}, "seed"), ({"probes_per_identity": 0}, "probes_per_identity"),
                                       ({"min_gallery": 2.5}, "min_gallery"), ({"max_identities": 1}, "max_identities"),
                                       ({"max_gallery": 2}, "max_gallery"), ({"max_images": True}, "max_images")])
def test_split_parameters_are_checked_by_name(kw, param):
    base = {"probes_per_identity": 2, "min_gallery": 3, "min_images": None, "max_identities": None,
            "max_images": None, "max_gallery": None, "seed": 0}
    with pytest.raises(ParameterError) as ei:
        check_split_params(**{**base, **kw})
    assert ei.value.param == param and str(ei.value).startswith(f"{param}: ") and "--" not in str(ei.value)


def test_head_trains_saves_and_reloads(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    emb = np.repeat(centres, 10, axis=0) + 0.3 * rng.normal(size=(40, 16))
    ident = np.repeat(np.array(["w", "x", "y", "z"]), 10)
    head, info = train_head(emb, ident, model="toy", seed=1)
    assert info.classes == ["w", "x", "y", "z"] and info.train_accuracy == 1.0
    head2, info2 = train_head(emb, ident, model="toy", seed=1)
    assert torch.equal(head.linear.weight, head2.linear.weight)  # seeded, deterministic
    # the key covers everything the head depends on
    assert info.key == info2.key == head_key(emb, ident, model="toy", seed=1)
    others = {head_key(emb, ident, model="toy", seed=2), head_key(emb, ident, model="other", seed=1),
              head_key(emb[::-1], ident, model="toy", seed=1), head_key(emb, ident[::-1], model="toy", seed=1),
              head_key(emb, ident, model="toy", seed=1, epochs=10)}
    assert len(others) == 5 and info.key not in others
    save_head(head, info, tmp_path / "h")
    back, binfo = load_head(tmp_path / "h")
    assert binfo == info
    x = torch.from_numpy(emb.astype(np.float32))
    assert torch.allclose(back(x), head(x))
    (tmp_path / "h.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputFileError, match="h.pt"):
        load_head(tmp_path / "h")
    with pytest.raises(InputFileError, match="missing"):
        load_head(tmp_path / "nothing")


@pytest.mark.parametrize("recipe", ["dlib_chip150", "arcface112"])
def test_differentiable_warp_reproduces_the_aligner_crop(facescrub_dir, recipe):
    from facepriv.attacks.deid.cloak import PhotoClassifier, affine_grid_from_matrix, working_resolution
    from facepriv.images import load_rgb
    from facepriv.models.alignment import get_aligner

    img = working_resolution(load_rgb(facescrub_dir / "Steve_Carell" / sorted((facescrub_dir / "Steve_Carell").iterdir())[0].name), 250)
    al = get_aligner(recipe)
    res = al.align(img)
    assert res.ok
    grid = affine_grid_from_matrix(torch.as_tensor(al.crop_matrix(res.landmarks)[None]), img.shape[:2], al.output_size)
    x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float().requires_grad_(True)
    crop = PhotoClassifier(torch.nn.Identity(), grid, None).crops(x)
    mad = float((crop[0].permute(1, 2, 0).detach() * 255 - torch.from_numpy(res.crop).float()).abs().mean())
    assert mad < 3.0, mad  # same geometry; dlib's chip differs only by its own interpolation
    crop.sum().backward()
    assert float(x.grad.abs().sum()) > 0  # gradients reach the photo's pixels


@pytest.mark.parametrize("method", ["push", "illc"])
def test_cloak_photos_on_a_real_face(facescrub_dir, method):
    import cv2

    from facepriv.attacks.deid.cloak import cloak_photos
    from facepriv.attacks.deid.heads import IdentityHead
    from facepriv.images import load_rgb
    from facepriv.models.alignment import get_aligner
    from facepriv.models.zoo import get_model
    from facepriv.protections.image import SourcePipeline

    people = ["Steve_Carell", "Fran_Drescher"]
    # same size so they form one batch
    photos = [cv2.resize(load_rgb(sorted((facescrub_dir / p).iterdir())[1]), (160, 160), interpolation=cv2.INTER_AREA)
              for p in people]
    model = get_model("dlib_resnet")
    al = get_aligner("dlib_chip150")
    res = [al.align(p) for p in photos]
    assert all(r.ok for r in res)
    emb = model.embed(np.stack([r.crop for r in res]))
    head = IdentityHead(emb.shape[1], 2)
    with torch.no_grad():  # a head that knows the two faces: class c = its embedding direction
        head.linear.weight.copy_(torch.nn.functional.normalize(torch.from_numpy(emb), dim=1) * 20)
        head.linear.bias.zero_()
    mats = np.stack([al.crop_matrix(r.landmarks) for r in res])
    src = SourcePipeline(net=model.torch_module(), head=head, crop_hw=(150, 150), templates=emb)
    out = cloak_photos(np.stack(photos), mats, np.array([0, 1]), source=src, method=method, eps=4, seeds=[5, 6])
    d = np.abs(out.photos.astype(int) - np.stack(photos).astype(int))
    assert d.max() == 4
    if method == "push":  # cosine to the enrolled template went down; the random start is seeded
        assert bool((out.loss_after < out.loss_before).all()), (out.loss_before, out.loss_after)
        again = cloak_photos(np.stack(photos), mats, np.array([0, 1]), source=src, method=method, eps=4, seeds=[5, 6])
        assert np.array_equal(again.photos, out.photos)
    else:  # ILLC: the target is the other identity; its logit rose
        assert out.targets.tolist() == [1, 0]
        clf = src.photo_model(mats, photos[0].shape[:2])
        with torch.no_grad():
            clean = clf(torch.from_numpy(np.stack(photos)).permute(0, 3, 1, 2).float()).numpy()
            adv = clf(torch.from_numpy(out.photos).permute(0, 3, 1, 2).float()).numpy()
        assert bool((adv[[0, 1], [1, 0]] > clean[[0, 1], [1, 0]]).all())
