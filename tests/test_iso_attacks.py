"""The ISO/IEC 30136 / 19795-1 attacks on real CelebA templates (dlib ResNet): contracts and sanity.

Unprotected templates have no key: the "second key" is the same transform, so they must be fully
linkable (Dsys near 1) and not renewable (failure near 100 %). PE-MIU's seed only permutes blocks
that its comparator re-aligns, so it is no more renewable than no protection.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import celeba_rows, dlib_templates

from facepriv import testing
from facepriv.attacks.base import AttackData
from facepriv.attacks.iso30136 import rekeyed
from facepriv.errors import ParameterError
from facepriv.registry import create
from facepriv.splits import split_two

N_IDS = 16
PER_ID = 5
ISO_ATTACKS = ("unlinkability", "renewability", "irreversibility", "identification")


@pytest.fixture(scope="module")
def real(celeba_dir):
    """dlib templates of 80 real photos of 16 people."""
    t = dlib_templates(celeba_dir, celeba_rows(celeba_dir, N_IDS, PER_ID))
    es, model = t["es"], t["model"]
    att, vic = split_two(es.identity, 0.5, seed=3, strata=es.gender)
    return {"es": es, "model": model, "att": att, "vic": vic}


def _data(real, prot, seed: int = 11, work_dir: Path | None = None) -> AttackData:
    return AttackData(clean=real["es"], attacker=real["att"], victim=real["vic"], protection=prot,
                      model=real["model"], seed=seed, work_dir=work_dir)


@pytest.mark.parametrize("name", ISO_ATTACKS)
def test_iso_attacks_keep_the_contract(name, real):
    for prot in (create("protection", "unprotected"), create("protection", "pe_miu", {"block_size": 16, "seed": 98765})):
        out = testing.check_attack(create("attack", name, {}), _data(real, prot))
        assert out.status == "ok"
        assert "98765" not in str(out.to_dict())


def test_unprotected_templates_are_linkable_and_not_renewable(real, tmp_path):
    data = _data(real, create("protection", "unprotected"), work_dir=tmp_path / "cell")
    link = create("attack", "unlinkability", {}).run(data)
    assert link.headline["value"] > 0.85, link.metrics
    assert (tmp_path / "cell" / "unlinkability.png").is_file() and link.images == ["unlinkability.png"]
    ren = create("attack", "renewability", {}).run(data)
    assert ren.headline["value"] == 1.0  # the same photo under the "second key" is the same template
    assert ren.metrics["failure_unprotected_threshold"]["0.001"]["value"] == 1.0


def test_pe_miu_is_not_renewable_and_stays_linkable(real):
    data = _data(real, create("protection", "pe_miu", {"block_size": 16, "seed": 98765}))
    ren = create("attack", "renewability", {}).run(data)
    assert ren.headline["value"] > 0.9 and ren.metrics["cross_key_score_mean"] > 0.99
    link = create("attack", "unlinkability", {}).run(data)
    assert link.headline["value"] > 0.5


def test_identification_unprotected_finds_people(real):
    out = create("attack", "identification", {"ranks": [1, 3], "max_rank": 5}).run(_data(real, create("protection", "unprotected")))
    m = out.metrics
    assert m["n_gallery"] == 8 and m["n_mated_probes"] == len(real["vic"]) - 8
    assert m["n_nonmated_probes"] == len(real["att"])
    assert out.headline["value"] >= 0.8  # dlib ResNet on 8 enrolled CelebA people
    assert out.curves["cmc"]["series"]["CMC"] == sorted(out.curves["cmc"]["series"]["CMC"])
    assert set(m["dir_at_fpir"]) == {"0.01", "0.1"} and m["search"] == "cosine"


def test_second_key_is_fresh_and_seeded():
    prot = create("protection", "pe_miu", {"block_size": 16, "seed": 98765})
    a, b = rekeyed(prot, 11), rekeyed(prot, 11)
    assert a.seed == b.seed != 98765 and a.block_size == 16
    assert rekeyed(prot, 12).seed != a.seed
    # the first key enters the draw: the second key is not a function of the public cell seed alone
    assert rekeyed(create("protection", "pe_miu", {"block_size": 16, "seed": 98766}), 11).seed != a.seed
    assert rekeyed(create("protection", "unprotected", {"seed": 3}), 11).get_params() == {"seed": 3}


def test_irreversibility_without_invert_is_not_applicable(real):
    from facepriv.attacks.iso30136 import Irreversibility
    from facepriv.protections.base import TemplateProtection

    class NoInverse(TemplateProtection):
        """A protection that offers no key-disclosure inversion.

        Parameters
        ----------
        seed : int
            Unused.
        """

        summary = "test double"

        def __init__(self, seed: int = 0) -> None:
            self.seed = seed

        def transform(self, x):
            return np.asarray(x, dtype=np.float32)[:, ::-1].copy()

    assert "invert" in Irreversibility.not_applicable(NoInverse(), False)
    out = Irreversibility().run(_data(real, NoInverse()))
    assert out.status == "not_applicable" and "invert" in out.message


def test_irreversibility_with_an_exact_inverse_succeeds(real):
    """A protection whose inverse is exact (an orthogonal rotation) is fully reversible at every FMR."""
    from facepriv.attacks.iso30136 import Irreversibility
    from facepriv.protections.base import TemplateProtection

    class Rotation(TemplateProtection):
        """Key-seeded orthogonal rotation (test double with an exact inverse).

        Parameters
        ----------
        seed : int
            The key.
        """

        summary = "test double"
        secret_params = ("seed",)
        threat_model = "key_secret"

        def __init__(self, seed: int = 0) -> None:
            self.seed = seed

        def _q(self, d: int) -> np.ndarray:
            return np.linalg.qr(np.random.default_rng(self.seed).normal(size=(d, d)))[0]

        def transform(self, x):
            x = np.asarray(x, dtype=np.float64)
            if x.ndim != 2:
                raise ValueError("2-d please")
            return (x @ self._q(x.shape[1])).astype(np.float32)

        def invert(self, protected, attacker_templates, identity=None):
            return np.asarray(protected, dtype=np.float64) @ self._q(protected.shape[1]).T

    out = testing.check_attack(Irreversibility(), _data(real, Rotation(seed=424242)))
    assert out.headline["value"] == 1.0
    few = Irreversibility(max_templates=7).run(_data(real, Rotation(seed=424242)))
    assert few.metrics["n_victims"] == 7 and few.headline["value"] == 1.0
    assert all(v == 1.0 for v in out.curves["inversion_success_vs_fmr"]["series"]["inversion"])
    assert out.curves["inversion_success_vs_fmr"]["log_x"] is True


@pytest.mark.parametrize(("name", "params", "param"), [
    ("unlinkability", {"omega": 0}, "omega"), ("unlinkability", {"bins": 0}, "bins"),
    ("unlinkability", {"max_pairs": 5}, "max_pairs"), ("renewability", {"max_pairs": -1}, "max_pairs"),
    ("identification", {"ranks": [0]}, "ranks"), ("identification", {"fpir": [1.5]}, "fpir"),
    ("irreversibility", {"points_per_decade": 0}, "points_per_decade"),
    ("irreversibility", {"max_templates": 0}, "max_templates"),
])
def test_bad_parameters_name_the_parameter(name, params, param):
    with pytest.raises(ParameterError) as e:
        create("attack", name, params)
    assert e.value.param == param


@pytest.mark.parametrize(("pname", "params"), [("biohash", {"seed": 424243}), ("polyprotect", {"overlap": 4, "seed": 424244})])
def test_keyed_protections_are_unlinkable_and_renewable(pname, params, real):
    """Cancelable schemes under a fresh key: low Dsys, new templates rejected; the stolen key inverts them."""
    from facepriv.registry import available

    if pname not in available("protection"):
        pytest.skip(f"{pname} is not registered in this checkout")
    out = {a: testing.check_attack(create("attack", a, {}), _data(real, create("protection", pname, params)))
           for a in ("unlinkability", "renewability", "irreversibility", "identification")}
    assert out["unlinkability"].headline["value"] < 0.3, out["unlinkability"].metrics
    assert out["renewability"].headline["value"] < 0.1
    assert out["identification"].headline["value"] > 0.5  # the protected system still identifies
    assert out["irreversibility"].headline["value"] > 0.5  # the key disclosed: templates come back
    assert not any(str(params["seed"]) in str(o.to_dict()) for o in out.values())


def test_per_user_keys_get_the_subject_labels(real):
    """key_scope='user' needs identity= in transform: the ISO attacks pass each row's subject."""
    from facepriv.registry import available

    if "polyprotect" not in available("protection"):
        pytest.skip("polyprotect is not registered in this checkout")
    data = _data(real, create("protection", "polyprotect", {"overlap": 2, "key_scope": "user", "seed": 424245}))
    for name in ("unlinkability", "renewability", "identification"):
        out = create("attack", name, {}).run(data)
        assert out.status == "ok"
    # few mated pairs (~150, 15 bins) bias a small Dsys upwards; the contrast with no protection is what counts
    plain = create("attack", "unlinkability", {}).run(_data(real, create("protection", "unprotected")))
    assert create("attack", "unlinkability", {}).run(data).headline["value"] < plain.headline["value"] - 0.4


def test_key_pairs_draw_distinct_second_keys():
    prot = create("protection", "polyprotect", {"overlap": 4, "seed": 424246})
    assert rekeyed(prot, 11, 0).seed == rekeyed(prot, 11).seed  # pair 0 = the historical second key
    seeds = {rekeyed(prot, 11, j).seed for j in range(5)}
    assert len(seeds) == 5 and 424246 not in seeds


def test_key_pairs_are_averaged_and_spread_reported(real):
    from facepriv.registry import available

    if "polyprotect" not in available("protection"):
        pytest.skip("polyprotect is not registered in this checkout")
    data = _data(real, create("protection", "polyprotect", {"overlap": 4, "seed": 424247}))
    link = create("attack", "unlinkability", {"key_pairs": 3}).run(data)
    m = link.metrics
    assert m["key_pairs"] == 3 and len(m["dsys_per_pair"]) == 3
    assert link.headline["value"] == pytest.approx(np.mean(m["dsys_per_pair"]))
    assert m["dsys_min"] <= link.headline["value"] <= m["dsys_max"]
    ren = create("attack", "renewability", {"key_pairs": 3}).run(data)
    per = ren.metrics["failure_own_threshold_per_key_pair"]["0.01"]
    assert len(per["failure_per_pair"]) == 3 and ren.metrics["n_photos"] == len(real["vic"])
    assert ren.headline["value"] == pytest.approx(per["failure_mean"])  # pooled photos = mean over pairs
    assert "424247" not in str(link.to_dict()) + str(ren.to_dict())
    # no secret parameters: one "pair", whatever key_pairs says
    plain = create("attack", "unlinkability", {"key_pairs": 4}).run(_data(real, create("protection", "unprotected")))
    assert plain.metrics["key_pairs"] == 1


@pytest.mark.parametrize("name", ["unlinkability", "renewability"])
@pytest.mark.parametrize("bad", [0, 1.5, True, 1000])
def test_bad_key_pairs_are_refused(name, bad):
    with pytest.raises(ParameterError) as e:
        create("attack", name, {"key_pairs": bad})
    assert e.value.param == "key_pairs"


@pytest.mark.parametrize("overlap", [0, 4])
def test_batched_polyprotect_solve_is_no_worse_than_per_template_lm(overlap, real):
    """On real dlib templates the batched solver reaches the per-template MINPACK LM optimum (or lower)."""
    from scipy.optimize import least_squares

    from facepriv.protections.polyprotect import REG, PolyProtect, polyprotect_key

    es = real["es"]
    vic, att = es.embeddings[real["vic"]][:12].astype(np.float64), es.embeddings[real["att"]].astype(np.float64)
    pp = PolyProtect(m=5, overlap=overlap, seed=424248)
    p = pp.transform(vic).astype(np.float64)
    est = pp.invert(p, att).astype(np.float64)
    mu = att.mean(0)
    idx = pp.windows(vic.shape[1])
    c, e = polyprotect_key(424248, 5)
    pad = int(idx.max()) + 1 - vic.shape[1]

    def resid(v, target):
        vp = np.concatenate([v, np.zeros(pad)])
        return np.concatenate([(c * vp[idx] ** e).sum(1) - target, REG * (v - mu)])

    for r in range(len(p)):
        ref = least_squares(resid, mu, args=(p[r],), method="lm", xtol=1e-10, ftol=1e-10).x
        cost_ref, cost_new = (resid(ref, p[r]) ** 2).sum(), (resid(est[r], p[r]) ** 2).sum()
        # float32 output: allow a small absolute slack on top of the optimum
        assert cost_new <= 1.05 * cost_ref + 1e-9, (r, cost_new, cost_ref)
    cos = (est * vic).sum(1) / np.linalg.norm(est, axis=1) / np.linalg.norm(vic, axis=1)
    assert np.median(cos) > 0.85
