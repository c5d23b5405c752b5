"""Attack sets are checked when they are loaded: names, parameter types and ranges (issue 10, items 1, 4, 6)."""

from __future__ import annotations

import inspect

import pytest

from neardup.data.attacks import ATTACKS, AttackSpec, Param, check_params, expand_config, register_attack
from neardup.data.generate import load_attack_config
from neardup.errors import UsageError


def test_every_registered_parameter_is_declared_with_a_range():
    for name, d in ATTACKS.items():
        sig = list(inspect.signature(d.fn).parameters)[2:]
        assert set(sig) == set(d.params), name
        for pname, p in d.params.items():
            assert isinstance(p, Param), (name, pname)
            if p.kind is not bool:
                assert p.lo is not None and p.hi is not None and p.lo <= p.hi, (name, pname)


def test_registering_an_undeclared_parameter_is_a_programming_error():
    with pytest.raises(ValueError, match="declared parameters"):
        @register_attack("test_undeclared_attack")
        def _f(img, rng, strength: float):  # pragma: no cover - never registered
            return img
    assert "test_undeclared_attack" not in ATTACKS


@pytest.mark.parametrize("entries, message", [
    ([{"attack": "scale", "params": {"ratio": 200}}],
     "attack 'scale' parameter 'ratio' = 200 is outside its range [0.01, 2]"),
    ([{"attack": "scale", "params": {"ratio": [0.5, 200]}}], "'ratio' = 200 is outside its range [0.01, 2]"),
    ([{"attack": "scale", "params": {"ratio": 0}}], "'ratio' = 0 is outside its range"),
    ([{"attack": "scale", "params": {"ratio": float("nan")}}], "is not a finite number"),
    ([{"attack": "scale", "params": {"ratio": "abc"}}], "'ratio' = 'abc' is not a number in [0.01, 2]"),
    ([{"attack": "scale", "params": {"ratio": True}}], "'ratio' = True is not a number"),
    ([{"attack": "scale", "params": {"ratio": None}}], "'ratio' = None is not a number"),
    ([{"attack": "gaussian_blur", "params": {"kernel": 4}}], "'kernel' = 4 is not an odd integer in [1, 99]"),
    ([{"attack": "median_blur", "params": {"kernel": 3.5}}], "'kernel' = 3.5 is not an odd integer"),
    ([{"attack": "jpeg", "params": {"quality": 101}}], "'quality' = 101 is outside its range [1, 100]"),
    ([{"attack": "crop", "params": {"percent": 10, "resize": "yes please"}}],
     "'resize' = 'yes please' is not true or false"),
    ([{"attack": "text", "params": {"length": 10 ** 9}}], "'length' = 1000000000 is outside its range [1, 500]"),
    ([{"attack": "scale", "params": {"ratoi": 2}}], "attack 'scale' has no parameter 'ratoi'; its parameters: ratio"),
    ([{"attack": "invert", "params": {"amount": 1}}], "attack 'invert' has no parameter 'amount'"),
    ([{"attack": "scale"}], "attack 'scale' needs parameter 'ratio'"),
    ([{"attack": "scale", "params": [1, 2]}], "params must be a mapping"),
    ([{"attack": "scale", "params": {"ratio": []}}], "'ratio' is an empty list"),
    ([{"attack": "scale", "parms": {"ratio": 1}}], "unknown key 'parms'"),
    ([{"attack": ["scale"]}], "unknown attack"),
    ([{"attack": "nope"}], "unknown attack 'nope'"),
    (["scale"], "needs an 'attack' key"),
    ([], "'attacks' list is empty"),
    ({"attack": "scale"}, "'attacks' list is empty or not a list"),
    ([{"attack": "invert"}, {"attack": "invert"}], "duplicate attack names 'invert' and 'invert'"),
    ([{"attack": "invert", "name": "Neg"}, {"attack": "hflip", "name": "neg"}],
     "duplicate attack names 'Neg' and 'neg'"),
    ([{"attack": "gamma", "params": {"gamma": [0.5, 0.5000001]}}], "duplicate attack names 'gamma_0.5'"),
], ids=lambda x: str(x)[:40] if isinstance(x, str) else None)
def test_bad_attack_sets_are_refused_with_one_clear_message(entries, message):
    with pytest.raises(UsageError) as exc:
        expand_config(entries, "attack config my.yaml")
    text = str(exc.value)
    assert text.startswith("attack config my.yaml: ") and message in text, text
    assert "\n" not in text


@pytest.mark.parametrize("name", ["../../../../victim", "a/b", "..", ".hidden", "", "a b", "x" * 101, "név", 3])
def test_names_that_become_paths_are_checked(name):
    with pytest.raises(UsageError, match="is not allowed"):
        expand_config([{"attack": "invert", "name": name}])


@pytest.mark.parametrize("value", ["../x", "a/b", "x y"])
def test_list_values_are_checked_before_they_become_names(value):
    """A list value is formatted into the instance name: it is type-checked first (a string is never a number)."""
    with pytest.raises(UsageError, match="is not a number"):
        expand_config([{"attack": "scale", "params": {"ratio": [1.0, value]}}])


def test_good_names_and_values_still_load():
    specs = expand_config([{"attack": "rotation", "name": "rot-A_1.5", "params": {"angle": [-5, 2.5]}},
                           {"attack": "crop", "params": {"percent": 10, "resize": False}}])
    assert [s.name for s in specs] == ["rot-A_1.5_-5", "rot-A_1.5_2.5", "crop"]
    assert specs[2].params == {"percent": 10, "resize": False}


def test_attack_spec_checks_itself_for_api_callers():
    with pytest.raises(UsageError, match="'ratio' = 200 is outside"):
        AttackSpec("big", "scale", {"ratio": 200})
    with pytest.raises(UsageError, match="is not allowed"):
        AttackSpec("../x", "invert", {})
    check_params("scale", {"ratio": 1.5})  # fine


def test_a_bad_set_fails_when_loaded_before_any_worker(tmp_path, monkeypatch):
    """Finetune views only call load_attack_config: it must refuse the set itself (no lazy failure in workers)."""
    import neardup.data.attacks as attacks_mod

    calls = []
    for d in list(ATTACKS.values()):
        monkeypatch.setitem(attacks_mod.ATTACKS, d.name, d.__class__(d.name, lambda *a, **k: calls.append(a),
                                                                       d.doc, d.params, d.required))
    bad = tmp_path / "views.yaml"
    bad.write_text("attacks:\n  - {attack: jpeg, params: {quality: [50, 90]}}\n"
                   "  - {attack: scale, params: {ratio: 200}}\n")
    with pytest.raises(UsageError, match=r"views.yaml: attack 'scale' parameter 'ratio' = 200 is outside its range"):
        load_attack_config(bad)
    assert calls == []  # nothing was applied to any image


@pytest.mark.parametrize("content, message", [
    (b"attacks:\n  - {attack: invert, name: \"\xff\"}\n", "not UTF-8"),
    ("".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else '1'}]\n" for i in range(9)).encode()
     + b"attacks: [{attack: invert}]\n", "YAML aliases"),
    (b"attacks: [unclosed", "bad YAML"),
    (b"- attack: invert\n", "must be a mapping with an 'attacks' list"),
    (b"attacks: [{attack: invert}]\nextra: 1\n", "unknown key 'extra'"),
    (b"attacks:\n", "'attacks' list is empty or not a list"),
    (b"x: " + b"a" * (1 << 20) + b"\n", "limit"),
], ids=["not-utf8", "alias-bomb", "bad-yaml", "not-a-mapping", "extra-key", "null-list", "too-large"])
def test_bad_attack_files(tmp_path, content, message):
    f = tmp_path / "set.yaml"
    f.write_bytes(content)
    with pytest.raises(UsageError, match=message):
        load_attack_config(f)


def test_builtin_sets_pass_their_own_checks():
    assert len(load_attack_config("default")) == 58
    assert len(load_attack_config("biomedical")) == 13
