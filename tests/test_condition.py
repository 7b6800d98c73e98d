"""Conditioned generation (crystalrl.model.condition): a whitelist keeps every sample inside its
chemical system, PPO's included; a composition bias moves element frequencies the way asked; the
log-probability a sample carries stays the model's own under both."""
from __future__ import annotations

import jax
import numpy as np

from crystalrl.model.condition import atom_bias, atom_mask
from crystalrl.model.sampler import sample
from crystalrl.model.store import build_model
from crystalrl.rl.ppo import PPOConfig, run_ppo, total_logp
from crystalrl.spacegroups import spacegroup_probs

from test_ppo import SMALL, oxygen_site_fraction, tokens_of

LI, O = 3, 8
G = np.array([1, 2, 12, 62, 139, 166, 194, 225] * 8)


def _site_share(out, z):
    occupied = out.W > 0
    return float(np.mean(out.A[occupied] == z))


def test_composition_bias_moves_element_frequencies_the_way_asked():
    model = build_model(SMALL, seed=0)
    key = jax.random.key(1)
    plain = _site_share(sample(model, key, G), O)
    up = _site_share(sample(model, key, G, atom_bias=atom_bias({"O": 3.0}, model.cfg)), O)
    down = _site_share(sample(model, key, G, atom_bias=atom_bias({"O": -3.0, "Li": 3.0}, model.cfg)), O)
    assert up > plain + 0.05 and down < plain, (plain, up, down)


def test_sampled_log_probability_is_the_models_own_under_mask_and_bias():
    model = build_model(SMALL, seed=0)
    out = sample(model, jax.random.key(2), G[:16], atom_mask=atom_mask(["Li", "O", "Fe"], model.cfg),
                 atom_bias=atom_bias({"O": 2.0}, model.cfg))
    own = np.asarray(total_logp(model, out.tokens()))
    np.testing.assert_allclose(out.logp, own, rtol=1e-4, atol=1e-2)


def test_ppo_restricted_to_a_chemical_system_samples_only_inside_it():
    seen = []

    def reward(samples):
        seen.extend(s["A"][s["W"] > 0] for s in samples)
        return oxygen_site_fraction(samples)

    cfg = PPOConfig.from_dict(dict(beta=0.0, steps=2, batch_size=24, lr=3e-3, seed=3, elements=["Li", "O"],
                                   composition_bias={"O": 1.0}))
    run_ppo(build_model(SMALL, seed=0), build_model(SMALL, seed=0), reward, spacegroup_probs([1, 2, 225]), cfg,
            decode=tokens_of)
    atoms = np.concatenate(seen)
    assert atoms.size > 0 and set(np.unique(atoms)) <= {LI, O}, np.unique(atoms)


def test_prototype_fixes_wyckoff_letters_site_elements_and_shared_elements():
    """A perovskite-like prototype in Pm-3m: sites a, b, c and d (d's element copied from a): every
    sample has exactly those sites and allowed elements, and its log-likelihood is the model's own."""
    from crystalrl.model.prototype import Prototype

    model = build_model(SMALL, seed=0)
    proto = Prototype.from_dict({"spacegroup": 221, "wyckoff": ["a", "b", "c", "d"],
                                 "atoms": [["Sr", "Ba"], ["Ti", "Zr"], ["O"], []], "same_element": [[0, 3]]})
    w_fixed, mask, same_as = proto.arrays(model.cfg, elements=["Sr", "Ba", "Ti", "Zr", "O", "Li"])
    out = sample(model, jax.random.key(4), np.full(32, 221), atom_mask=mask, wyckoff_fixed=w_fixed,
                 same_element_as=same_as)
    assert (out.W[:, :4] == [1, 2, 3, 4]).all() and (out.W[:, 4:] == 0).all(), out.W[:3]
    assert set(out.A[:, 0]) <= {38, 56} and set(out.A[:, 1]) <= {22, 40} and set(out.A[:, 2]) == {O}
    assert (out.A[:, 3] == out.A[:, 0]).all() and len(set(out.A[:, 0])) == 2  # copied, and both drawn
    np.testing.assert_allclose(out.logp, np.asarray(total_logp(model, out.tokens())), rtol=1e-4, atol=1e-2)


def test_prototype_problems_name_the_field():
    from crystalrl.model.prototype import Prototype

    bad = Prototype.from_dict({"spacegroup": 221, "wyckoff": ["a", "q"], "atoms": [["O"]], "same_element": [[1, 0]]})
    text = "; ".join(bad.problems(21))
    assert "wyckoff[1]" in text and "a..n" in text and "atoms: 1 lists for 2 sites" in text and "same_element [1, 0]" in text
