"""The reward registry: ehull plumbing on real structures, user rewards by module:function."""
from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from crystalrl.rewards import RewardResult, dielectric_fom_reward, ehull_reward, make_reward


def _nacl():
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _mgo():
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_user_reward_from_module_function():
    reward = make_reward("user_rewards:oxygen_fraction")
    res = reward([_nacl(), _mgo(), None])
    assert np.allclose(res.reward[:2], [0.0, 0.5])
    assert res.valid.tolist() == [True, True, False]
    assert res.reward[2] == 0.0  # an undecodable sample gets the worst valid value


@pytest.mark.parametrize("spec, match", [("nosuchmodule:f", "cannot import"), ("user_rewards:nope", "cannot import"),
                                         ("justaname", "neither a known reward")])
def test_bad_reward_names_the_config_key(spec, match):
    with pytest.raises(ValueError, match=match) as e:
        make_reward(spec)
    assert "ppo.reward" in str(e.value)


class _FakeMLIP:
    mp2020_corrected = False

    def __init__(self, e_per_atom):
        self.e = e_per_atom

    def predict(self, structures, batch_size=64, properties=("energy", "forces", "stress")):
        assert tuple(properties) == ("energy",)  # a reward needs no forces: they cost a backward pass
        return {"energy": np.array([self.e[s.composition.reduced_formula] * len(s) for s in structures])}


class _FakeHull:
    def e_above_hull(self, pair, apply_mp2020=True):
        assert apply_mp2020  # the fake MLIP's energies are raw
        structures, energies = pair
        e = np.array([en / len(s) for s, en in zip(structures, energies)]) + 1.0
        e[[s.composition.reduced_formula == "MgO" for s in structures]] = np.nan  # "missing reference"
        return e, ["ok"] * len(structures)


def test_ehull_reward_clips_and_marks_invalid():
    reward = ehull_reward(_FakeMLIP({"NaCl": 30.0, "MgO": -1.0}), _FakeHull(), clip=10.0)
    res = reward([_nacl(), _mgo(), None])
    assert res.reward.tolist() == [-10.0, -10.0, -10.0]  # e_hull 31 clipped; NaN and None worst
    assert res.valid.tolist() == [True, False, False]
    assert res.extras["e_hull"][0] == pytest.approx(31.0)
    reward = ehull_reward(_FakeMLIP({"NaCl": -0.9, "MgO": -1.0}), _FakeHull(), clip=10.0)
    assert reward([_nacl()]).reward[0] == pytest.approx(-0.1)


def test_fom_reward_uses_dummy_for_failures():
    class P:
        def predict(self, structures, batch_size=64):
            n = len(structures)
            return {"fom": np.array([6.0] * (n - 1) + [np.nan]), "band_gap": np.ones(n), "eps": np.ones(n)}

    res = dielectric_fom_reward(P(), dummy=0.0)([_nacl(), _mgo(), None])
    assert res.reward.tolist() == [6.0, 0.0, 0.0] and res.valid.tolist() == [True, False, False]


def test_ehull_reward_does_not_score_overlapping_atoms():
    broken = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.01, 0, 0]])  # 0.05 A apart

    class Strict(_FakeMLIP):
        def predict(self, structures, batch_size=64, **kw):
            assert all(len(s) == 8 for s in structures), "an invalid structure reached the MLIP"
            return super().predict(structures, batch_size, **kw)

    res = ehull_reward(Strict({"NaCl": -0.9}), _FakeHull(), clip=10.0)([broken, _nacl()])
    assert res.reward.tolist() == [-10.0, pytest.approx(-0.1)] and res.valid.tolist() == [False, True]


def test_ehull_reward_skips_elements_without_hull_reference():
    class Hull(_FakeHull):
        elements = {"Na", "Cl"}

    class Strict(_FakeMLIP):
        def predict(self, structures, batch_size=64, **kw):
            assert all("Cf" not in s.composition for s in structures), "an element without reference was scored"
            return super().predict(structures, batch_size, **kw)

    nacf = _nacl()
    nacf.replace_species({"Cl": "Cf"})
    res = ehull_reward(Strict({"NaCl": -0.9}), Hull(), clip=10.0)([nacf, _nacl()])
    assert res.reward.tolist() == [-10.0, pytest.approx(-0.1)] and res.valid.tolist() == [False, True]


def _const(values, extras=None, abstain=None):
    def fn(structures):
        r = np.asarray(values, float)
        return RewardResult(reward=r, valid=np.isfinite(r), extras=dict(extras or {}), abstain=abstain)
    return fn


def test_composite_reward_is_the_weighted_sum_of_normalised_components():
    from crystalrl.rewards import composite_reward

    parts = {"ehull": (_const([-1.0, -3.0, -2.0], {"e_hull": np.array([1.0, 3.0, 2.0])}),
                       dict(weight=2.0, normalize="none", clip=None)),
             "mymod:fn": (_const([10.0, 20.0, 30.0], abstain=np.array([False, True, False])),
                          dict(weight=0.5, normalize="zscore", clip=None)),
             "diversity": (_const([0.2, 5.0, -4.0]), dict(weight=1.0, normalize="clip", clip=[0.0, 1.0]))}
    rr = composite_reward(parts)([None] * 3)
    z = (np.array([10.0, 20.0, 30.0]) - 20.0) / np.std([10.0, 20.0, 30.0])
    np.testing.assert_allclose(rr.reward, 2 * np.array([-1.0, -3.0, -2.0]) + 0.5 * z + np.array([0.2, 1.0, 0.0]))
    # every component's raw reward is logged, beside its own extras; abstention carries over
    np.testing.assert_array_equal(rr.extras["reward_mymod_fn"], [10.0, 20.0, 30.0])
    np.testing.assert_array_equal(rr.extras["reward_ehull"], [-1.0, -3.0, -2.0])
    assert "e_hull" in rr.extras and rr.abstain.tolist() == [False, True, False]


def test_diversity_reward_pays_for_spread_compositions():
    from pymatgen.core import Lattice

    from crystalrl.rewards import make_reward

    def s(*sp):
        return Structure(Lattice.cubic(4.0), list(sp), [[0, 0, 0], [0.5, 0.5, 0.5]][:len(sp)])

    rr = make_reward("diversity")([s("Fe", "O"), s("Fe", "O"), s("Li", "O"), None])
    np.testing.assert_allclose(rr.reward, [0.5, 0.5, 1.0, 0.0])


@pytest.mark.parametrize("reward, match", [
    ({"ehull": {"weight": -1.0}}, "config key 'ppo_runs.mix.reward.ehull.weight'"),
    ({"ehull": {"normalise": "zscore"}}, "config key 'ppo_runs.mix.reward.ehull.normalise': unknown key"),
    ({"ehull": {}, "novelty_x": {}}, "config key 'ppo_runs.mix.reward.novelty_x'"),
    ({"ehull": {"normalize": "clip"}}, "config key 'ppo_runs.mix.reward.ehull.clip'"),
])
def test_bad_reward_components_name_the_key(reward, match):
    from crystalrl.checks import check_config
    from crystalrl.config import ConfigError, validate_config

    cfg = validate_config({"ppo": {"runs": ["mix"]}, "ppo_runs": {"mix": {"reward": reward}}})
    try:
        problems = "\n".join(check_config(cfg))
    except ConfigError as exc:
        problems = str(exc)
    assert match in problems, problems
