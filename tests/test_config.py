"""Config validation: defaults filled, bad keys named, PPO runs merged."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from crystalrl.config import ConfigError, ppo_run_config, validate_config

REPO = Path(__file__).resolve().parents[1]


def _load(name):
    return yaml.safe_load((REPO / "config" / name).read_text())


def test_paper_config_is_valid_and_defaulted():
    cfg = validate_config(_load("config.yaml"))
    assert cfg["model"]["num_layers"] == 16 and cfg["model"]["num_heads"] == 16
    assert cfg["tokenize"] == {"symprec": 0.01, "tol": 0.01}  # defaults filled in
    assert cfg["model"]["n_max"] == 21  # the one n_max
    assert cfg["evaluate"]["matcher"] == {"ltol": 0.2, "stol": 0.3, "angle_tol": 5.0}
    assert len(cfg["sample"]["spacegroups"]) == 14


def test_empty_config_gets_every_default():
    cfg = validate_config({})
    assert cfg["run"] == "paper" and cfg["pretrain"]["clip_grad"] == 1.0 and cfg["ppo"]["clip_eps"] == 0.2


def test_misspelled_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError) as e:
        validate_config({"pretrain": {"batchsize": 10}})
    msg = str(e.value)
    assert "config key 'pretrain.batchsize': unknown key" in msg and "did you mean 'batch_size'" in msg


def test_wrong_type_and_range_are_named():
    with pytest.raises(ConfigError) as e:
        validate_config({"model": {"num_layers": "four"}, "ppo": {"clip_eps": -1}})
    msg = str(e.value)
    assert "config key 'model.num_layers'" in msg and "config key 'ppo.clip_eps'" in msg


@pytest.mark.parametrize("cfg, key", [
    ({"ppo": {"lr": float("nan")}}, "ppo.lr"),
    ({"sample": {"temperature": float("inf")}}, "sample.temperature"),
    ({"pretrain": {"lr_decay": float("-inf")}}, "pretrain.lr_decay"),
    ({"ppo": {"runs": ["x"]}, "ppo_runs": {"x": {"beta": float("nan")}}}, "ppo_runs.x.beta"),
    ({"relax": {"fmax": float("nan")}}, "relax.fmax"),
    ({"data": {"split": [0.8, float("nan"), 0.1]}}, "data.split.1"),
])
def test_nan_and_infinity_are_refused_naming_the_key(cfg, key):
    """Schema bounds are comparisons, which NaN passes: `ppo.lr: .nan` once ran and wrote a NaN model."""
    with pytest.raises(ConfigError, match=f"config key '{key}': -?(nan|inf) is not a finite number"):
        validate_config(cfg)


def test_split_must_sum_to_one():
    with pytest.raises(ConfigError, match="data.split"):
        validate_config({"data": {"split": [0.5, 0.1, 0.1]}})


def test_ppo_run_overrides():
    cfg = validate_config(_load("config.yaml"))
    assert ppo_run_config(cfg, "ehull")["beta"] == 0.1
    d = ppo_run_config(cfg, "dielectric")
    assert d["beta"] == 15.0 and d["reward"] == "dielectric_fom" and d["spacegroups"] == [225]
    cfg["ppo_runs"]["bad"] = {"betta": 1}
    with pytest.raises(ConfigError, match="ppo_runs.bad"):
        ppo_run_config(cfg, "bad")


def test_snakemake_reports_bad_key_by_name(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: demo\ntokenize:\n  symprecc: 0.1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(bad)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "config key 'tokenize.symprecc': unknown key (did you mean 'symprec'?)" in proc.stdout + proc.stderr


def test_every_dataclass_config_mirrors_its_schema_section():
    """The schema is the only home of defaults: each dataclass config takes its section's keys
    (bar the ones named as another consumer's) and sets no default of its own."""
    import dataclasses
    import importlib

    from crystalrl.config import SectionConfig

    for mod in ("crystalrl.model.config", "crystalrl.train.loop", "crystalrl.rl.ppo", "crystalrl.evaluate.sun",
                "crystalrl.mlip", "crystalrl.hull"):
        importlib.import_module(mod)
    classes = SectionConfig.__subclasses__()
    assert {c.SECTION for c in classes} >= {"model", "pretrain", "ppo", "evaluate", "mlip", "hull"}
    for cls in classes:
        fields = {f.name for f in dataclasses.fields(cls)}
        for name in ("pretrain", "sft") if cls.SECTION == "pretrain" else (cls.SECTION,):
            keys = cls.schema_keys(name)
            assert fields <= keys and keys - fields <= set(cls.OTHER_KEYS), (cls.__name__, name)
        assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   for f in dataclasses.fields(cls)), f"{cls.__name__} sets a default of its own"
        with pytest.raises(ConfigError, match=f"config key '{cls.SECTION}.no_such_key'"):
            cls.from_dict({"no_such_key": 1})


def test_sft_section_builds_a_train_config():
    from crystalrl.train.loop import TrainConfig

    cfg = TrainConfig.from_dict({"lr": 3e-4}, section_name="sft")
    assert cfg.lr == 3e-4 and cfg.steps == 5500 and cfg.clip_grad == 1.0
