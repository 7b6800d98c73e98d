"""GRPO and REINFORCE (`ppo.algorithm`) on the toy reward with a known optimum: each raises the
mean reward well beyond where a random model starts; GRPO's group-relative advantage is what
its docstring says."""
from __future__ import annotations

import numpy as np
import pytest

from crystalrl.config import validate_config
from crystalrl.checks import check_config
from crystalrl.model.store import build_model
from crystalrl.rl.ppo import PPOConfig, advantages, run_ppo
from crystalrl.spacegroups import spacegroup_probs

from test_ppo import SMALL, oxygen_site_fraction, tokens_of


def test_grpo_advantages_are_standardised_within_a_space_group():
    r = np.array([1.0, 3.0, 5.0, 7.0, 2.0])
    G = np.array([2, 2, 225, 225, 12])
    abstain = np.array([False, False, False, False, False])
    adv = advantages(r, None, abstain, G, "grpo")
    np.testing.assert_allclose(adv, [-1, 1, -1, 1, 0], atol=1e-5)  # the lone group-12 sample: 0
    abstain[1] = True  # group 2 is left with one scored sample
    np.testing.assert_allclose(advantages(r, None, abstain, G, "grpo")[:2], [0, 0])
    np.testing.assert_allclose(advantages(r, 2.0, abstain, G, "ppo"), [-1, 0, 3, 5, 0])


@pytest.mark.slow
@pytest.mark.parametrize("algorithm, lr", [("grpo", 3e-3), ("reinforce", 1e-2)])  # reinforce: 1 step per batch, not 3
def test_algorithm_raises_the_toy_reward(algorithm, lr):
    cfg = PPOConfig.from_dict(dict(algorithm=algorithm, beta=0.0, steps=30, batch_size=48, group_size=8,
                                   lr=lr, seed=3))
    _, m = run_ppo(build_model(SMALL, seed=0), build_model(SMALL, seed=0), oxygen_site_fraction,
                   spacegroup_probs([1, 2, 225]), cfg, decode=tokens_of)
    start, end = m["reward_mean"].iloc[:3].mean(), m["reward_mean"].iloc[-3:].mean()
    print(m[["step", "reward_mean", "kl"]].to_string())
    assert start < 0.05 and end > start + 0.08 and end > 5 * start, (start, end)


@pytest.mark.parametrize("run, key", [
    ({"algorithm": "dpo_x"}, "ppo_runs.ehull.algorithm"),
    ({"algorithm": "grpo", "group_size": 7}, "ppo_runs.ehull.group_size"),
])
def test_bad_algorithm_settings_stop_the_checks_naming_the_key(run, key):
    cfg = validate_config({"ppo_runs": {"ehull": run}})
    problems = "\n".join(check_config(cfg))
    assert f"config key '{key}'" in problems, problems
