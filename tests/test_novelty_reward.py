"""The `novelty` reward: the evaluation's own novelty against the training split, as a PPO reward
(alone, as a component of a sum, in the ppo job's inputs and in the run's identity)."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from crystalrl.config import validate_config
from crystalrl.rewards import NOVELTY_SETTINGS, make_reward
from crystalrl.stages.ppo import build_reward, novelty_index, reward_key

#: The evaluation's defaults: the settings the workflow gives a run's novelty reward.
SETTINGS = {k: validate_config({})["evaluate"][k] for k in NOVELTY_SETTINGS}


def _rocksalt(a, b, lattice):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(lattice), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture
def train_file(tmp_path):
    """A tiny training split: NaCl, and a KCl row whose CIF is broken (never parsed: no sample
    lands in its formula group)."""
    nacl = _rocksalt("Na", "Cl", 5.69)
    table = pd.DataFrame({"cif": [nacl.to(fmt="cif"), "data_broken\n"], "formula": ["Na1 Cl1", "K1 Cl1"],
                          "spacegroup": [225, 225]})
    path = tmp_path / "train.parquet"
    table.to_parquet(path)
    return path


def test_novelty_pays_for_unmatched_valid_samples_only(train_file):
    index, settings = novelty_index(str(train_file), SETTINGS)
    reward = make_reward("novelty", novelty=(index, settings))
    perturbed = _rocksalt("Na", "Cl", 5.69)
    perturbed.perturb(0.05)  # well inside StructureMatcher's tolerances: still the training crystal
    rr = reward([_rocksalt("Na", "Cl", 5.69), perturbed, _rocksalt("Mg", "O", 4.21), None])
    assert rr.reward.tolist() == [0.0, 0.0, 1.0, 0.0]
    assert rr.valid.tolist() == [True, True, True, False]
    assert index.n_parsed == 1  # the NaCl reference only: KCl's group was never searched

    # unmatched but invalid as the evaluation judges it: overlapping atoms, no charge balance
    overlapping = Structure(Lattice.cubic(4.0), ["Mg", "O"], [[0, 0, 0], [0.01, 0, 0]])
    uncharged = Structure(Lattice.cubic(5.0), ["Na", "Cl", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]])
    rr = reward([overlapping, uncharged])
    assert rr.reward.tolist() == [0.0, 0.0] and rr.valid.tolist() == [True, True]


def test_a_sum_with_novelty_logs_it_per_sample(train_file):
    spec = validate_config({"ppo": {"reward": {"diversity": {"weight": 1.0}, "novelty": {"weight": 0.5}}}})["ppo"]["reward"]
    reward = build_reward(spec, dict(mlip={}, hull={}, novelty=SETTINGS), clip=5.0, train=str(train_file))
    rr = reward([_rocksalt("Na", "Cl", 5.69), _rocksalt("Mg", "O", 4.21), _rocksalt("Mg", "O", 4.21), None])
    np.testing.assert_array_equal(rr.extras["reward_novelty"], [0.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(rr.reward, [1.0, 0.5 + 0.5, 0.5 + 0.5, 0.0])
    with pytest.raises(ValueError, match="training split"):
        build_reward(spec, dict(mlip={}, hull={}, novelty=SETTINGS), clip=5.0)


def test_the_run_key_holds_the_training_split(train_file, tmp_path):
    """A run resumed on another training split (or other matcher settings) would mix rewards."""
    from types import SimpleNamespace

    other = tmp_path / "other.parquet"
    pd.read_parquet(train_file).iloc[:1].to_parquet(other)
    params = dict(mlip={}, hull={}, novelty=SETTINGS)

    def key(reward, train, **novelty):
        return reward_key(reward, {**params, "novelty": {**SETTINGS, **novelty}}, SimpleNamespace(train=train))

    assert key("novelty", str(train_file)) != key("novelty", str(other))
    assert key("novelty", str(train_file)) != key("novelty", str(train_file), match_spacegroup=True)
    assert key("diversity", []) == reward_key("diversity", params, SimpleNamespace())  # other runs keep their key


@pytest.mark.slow
def test_the_ppo_job_reads_the_train_split_and_a_misspelled_component_stops_the_dry_run(tmp_path):
    from test_workflow import job_inputs, make_workdir, snakemake

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    good = make_workdir(tmp_path / "a", {"ppo": {"reward": {"ehull": {"weight": 1}, "novelty": {"weight": 0.5}}}})
    out = snakemake(good, "-n", "-p", "--forceall", "results/demo/models/ppo_ehull")
    assert "results/demo/data/train.parquet" in job_inputs(out, "ppo")
    (good / "extra.yaml").write_text("{}\n")  # the demo's ehull alone: the job does not wait for the split
    out = snakemake(good, "-n", "-p", "--forceall", "results/demo/models/ppo_ehull")
    assert "results/demo/data/train.parquet" not in job_inputs(out, "ppo")
    bad = make_workdir(tmp_path / "b", {"ppo": {"reward": {"ehull": {"weight": 1}, "novelti": {"weight": 0.5}}}})
    with pytest.raises(AssertionError, match="config key 'ppo.reward.novelti'.*did you mean 'novelty'"):
        snakemake(bad, "-n")
