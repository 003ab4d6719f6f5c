"""Contract checks for component authors (the idea of scikit-learn's ``check_estimator``).

Run them on your own protection, attack, model or dataset before plugging it into facepriv; the
facepriv test suite runs them over every built-in component. Each check raises
``AssertionError`` naming the contract that is broken and returns nothing when all hold::

    from facepriv.testing import check_template_protection
    check_template_protection(MyProtection(key=1234), embeddings)   # an EmbeddingSet of real templates

What is checked:

- parameters: constructor arguments are stored as given (``get_params`` returns them),
  ``clone`` rebuilds an equal component, ``describe`` documents every parameter;
- determinism: the same parameters (and seed / key) give bit-identical results;
- shapes and ids: outputs keep the number and order of the inputs and their ids;
- secrets: no value of a ``secret_params`` parameter appears in anything written (records,
  outcomes, ``repr``);
- errors: bad input raises a :class:`~facepriv.errors.FacePrivError` (or ``ValueError``) with a
  message, never an ``AssertionError``, ``IndexError`` or a crash deep inside numpy.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from facepriv.attacks.base import Attack, AttackData, AttackOutcome
from facepriv.base import Component
from facepriv.embeddings import EmbeddingSet
from facepriv.errors import FacePrivError
from facepriv.fileio import to_json
from facepriv.protections.base import TemplateProtection

__all__ = ["check_attack", "check_component", "check_dataset", "check_model", "check_template_protection"]


def _fail(comp: Any, what: str) -> AssertionError:
    return AssertionError(f"{type(comp).__name__}: {what}")


def _secret_values(comp: Component) -> list[str]:
    """Text forms of the secret parameter values (only values long enough not to match by chance)."""
    out = []
    for k in getattr(comp, "secret_params", ()):
        v = getattr(comp, k, None)
        if v is None or isinstance(v, bool):
            continue
        s = str(v)
        if len(s) >= 4:  # "0" or "7" would match any number in a file by chance
            out.append(s)
    return out


def check_component(comp: Component) -> None:
    """Parameter contract of any component: get_params / clone / describe / repr without secrets."""
    from facepriv.registry import param_docs

    cls = type(comp)
    if not isinstance(comp, Component):
        raise _fail(comp, "does not derive from facepriv.base.Component")
    names = cls.param_names()
    params = comp.get_params()
    if list(params) != names:
        raise _fail(comp, f"get_params() keys {list(params)} differ from the constructor parameters {names}")
    clone = comp.clone()
    if type(clone) is not cls or clone.get_params() != params:
        raise _fail(comp, "clone() does not rebuild an equal component (store constructor arguments unchanged)")
    again = cls(**params)
    if again.get_params() != params:
        raise _fail(comp, "constructing from get_params() gives other parameters (no logic in __init__)")
    docs = param_docs(cls)
    undocumented = [n for n in names if not docs.get(n)]
    if undocumented:
        raise _fail(comp, f"parameters without a description in the class docstring's 'Parameters' section: "
                          f"{', '.join(undocumented)} (facepriv describe prints it)")
    if not cls.summary:
        raise _fail(comp, "no one-line 'summary' class attribute (facepriv list prints it)")
    text = repr(comp) + json.dumps(comp.public_params(), default=str)
    for s in _secret_values(comp):
        if s in text:
            raise _fail(comp, "a secret parameter's value appears in repr() or public_params()")


def check_template_protection(protection: TemplateProtection, embeddings: EmbeddingSet) -> None:
    """Contract of a template (or feature) protection on real templates.

    Parameters
    ----------
    protection : TemplateProtection
        A configured instance (with its key, if it has one).
    embeddings : EmbeddingSet
        Unprotected templates of several identities (at least 4 rows); real ones where possible.
    """
    if not isinstance(protection, TemplateProtection):
        raise _fail(protection, "does not derive from facepriv.protections.base.TemplateProtection")
    check_component(protection)
    if protection.kind not in ("template", "feature", "image"):
        raise _fail(protection, f"kind {protection.kind!r} is not template, feature or image")
    if protection.threat_model not in ("keyless", "key_secret"):
        raise _fail(protection, f"threat_model {protection.threat_model!r} is not keyless or key_secret")
    if protection.threat_model == "key_secret" and not protection.secret_params:
        raise _fail(protection, "threat_model is key_secret but secret_params names no key")
    if len(embeddings) < 4:
        raise ValueError("check_template_protection needs at least 4 templates")
    if protection.kind == "image":
        return  # protects photos; its templates are the model's (checked by the attack that runs it)
    a = protection.clone().protect(embeddings)
    b = protection.clone().protect(embeddings)
    if len(a) != len(embeddings) or not np.array_equal(a.ids, embeddings.ids) or not np.array_equal(a.identity, embeddings.identity):
        raise _fail(protection, "protect() does not keep the number, order and ids of the templates")
    if a.embeddings.ndim != 2 or not np.isfinite(a.embeddings).all():
        raise _fail(protection, "protected templates are not a finite 2-d array")
    if not np.array_equal(a.embeddings, b.embeddings):
        raise _fail(protection, "two protections with the same parameters (and key) differ: not deterministic")
    comp = protection.clone().fit(embeddings).comparator()
    x = a.embeddings
    pw = np.asarray(comp.pairwise(x[:3], x))
    pr = np.asarray(comp.paired(x[:3], x[:3]))
    if pw.shape != (3, len(x)) or pr.shape != (3,):
        raise _fail(protection, f"comparator shapes: pairwise {pw.shape} (want {(3, len(x))}), paired {pr.shape} (want (3,))")
    if not np.allclose(np.diag(pw[:, :3]), pr, rtol=1e-5, atol=1e-5):
        raise _fail(protection, "comparator.paired(a, a) differs from the diagonal of pairwise(a, a)")
    rec_text = json.dumps(a.protection if a.protection is not None else {}, default=str)
    for s in _secret_values(protection):
        if s in rec_text:
            raise _fail(protection, "the record written with protected templates holds a secret parameter's value")
    if protection.name != "unprotected" and a.protection is None:
        raise _fail(protection, "protect() does not record the protection in the set (record())")
    try:
        protection.clone().protect(a) if a.protection is not None else None
    except FacePrivError:
        pass
    else:
        if a.protection is not None:
            raise _fail(protection, "protecting already protected templates is not refused")
    try:
        protection.clone().fit(embeddings).transform(np.zeros(embeddings.dim, dtype=np.float32))
    except (FacePrivError, ValueError):
        pass
    except Exception as exc:  # noqa: BLE001 - the contract is about which error
        raise _fail(protection, f"a 1-d input raises {type(exc).__name__}, not a FacePrivError/ValueError") from None
    else:
        raise _fail(protection, "a 1-d input (one template without the batch axis) is accepted")


def check_attack(attack: Attack, data: AttackData) -> AttackOutcome:
    """Contract of an attack on one real cell; returns the outcome of the first run.

    Checks the parameter contract, that ``run`` returns an :class:`AttackOutcome` whose dict is
    JSON, with a headline ``{metric, value, ci_low, ci_high, unit}``; that a second run of a clone
    on the same data gives the identical outcome (even after the global random state changed);
    and that no secret of the protection appears in the outcome.
    """
    import random

    import torch

    if not isinstance(attack, Attack):
        raise _fail(attack, "does not derive from facepriv.attacks.base.Attack")
    check_component(attack)
    why = attack.not_applicable(data.protection, data.has_images)
    if why:
        raise ValueError(f"{type(attack).__name__} does not apply to this data: {why}")
    first = attack.clone().run(data)
    if not isinstance(first, AttackOutcome):
        raise _fail(attack, f"run() returned {type(first).__name__}, not an AttackOutcome")
    d = first.to_dict()
    try:
        text = to_json(d)
    except (TypeError, ValueError) as exc:
        raise _fail(attack, f"the outcome is not JSON-serialisable ({exc})") from None
    h = d["headline"]
    if set(h) != {"metric", "value", "ci_low", "ci_high", "unit"} or not isinstance(h["value"], float):
        raise _fail(attack, f"headline {h!r} is not {{metric, value, ci_low, ci_high, unit}} with a float value")
    # a different global random state must not change the result
    random.seed(12345)
    np.random.seed(12345)  # noqa: NPY002 - disturbing the legacy global state on purpose
    torch.manual_seed(12345)
    second = attack.clone().run(data).to_dict()
    if to_json(second) != text:
        raise _fail(attack, "two runs on the same data differ: the attack depends on global random state "
                            "or on something other than its parameters and data")
    for s in _secret_values(data.protection):
        if s in text:
            raise _fail(attack, "the outcome holds the value of the protection's key")
    return first


def check_model(model: Any, crops: np.ndarray) -> None:
    """Contract of a recognition model on real aligned crops (N, H, W, 3) uint8 of its card's size."""
    from facepriv.models.base import ModelCard, RecognitionModel

    if not isinstance(model, RecognitionModel):
        raise _fail(model, "does not derive from facepriv.models.base.RecognitionModel")
    check_component(model)
    card = getattr(model, "card", None)
    if not isinstance(card, ModelCard):
        raise _fail(model, "has no ModelCard 'card' (input size, dimension, normalisation, alignment)")
    from facepriv.models.alignment import RECIPES

    if card.alignment not in RECIPES:
        raise _fail(model, f"alignment recipe {card.alignment!r} is not one of {', '.join(RECIPES)}")
    e1, e2 = model.embed(crops), model.clone().embed(crops)
    if e1.shape != (len(crops), card.embedding_dim) or not np.isfinite(e1).all():
        raise _fail(model, f"embed() gives {e1.shape}, want ({len(crops)}, {card.embedding_dim}), finite")
    if not np.array_equal(e1, e2):
        raise _fail(model, "two embeddings of the same crops differ")
    if card.differentiable:
        import torch

        net = model.torch_module()
        x = torch.from_numpy(crops[:2]).permute(0, 3, 1, 2).float().div(255).requires_grad_(True)
        net(x).sum().backward()
        if x.grad is None or not torch.isfinite(x.grad).all() or float(x.grad.abs().sum()) == 0.0:
            raise _fail(model, "torch_module() is declared differentiable but gives no pixel gradient")
    try:
        model.embed(crops[:, :-1])
    except (FacePrivError, ValueError):
        pass
    else:
        raise _fail(model, "crops of the wrong size are accepted")


def check_dataset(dataset: Any) -> None:
    """Contract of a dataset: samples are (image, identity, gender) rows whose files exist under root."""
    from pathlib import Path

    from facepriv.datasets.base import Dataset

    if not isinstance(dataset, Dataset):
        raise _fail(dataset, "does not derive from facepriv.datasets.base.Dataset")
    check_component(dataset)
    es = dataset.embedding_set()
    if es is not None:
        if not isinstance(es, EmbeddingSet) or len(es) == 0:
            raise _fail(dataset, "embedding_set() returned no templates")
        return
    rows = dataset.samples()
    if not rows:
        raise _fail(dataset, "samples() is empty")
    root = Path(dataset.root)
    for row in rows[:50]:
        if len(row) != 3 or not all(isinstance(x, str) for x in row):
            raise _fail(dataset, f"sample {row!r} is not (image, identity, gender) strings")
        if Path(row[0]).is_absolute() or ".." in Path(row[0]).parts or not (root / row[0]).is_file():
            raise _fail(dataset, f"sample image {row[0]!r} is not a file relative to root {root}")
    if dataset.samples() != rows:
        raise _fail(dataset, "samples() differs between calls (not deterministic)")
