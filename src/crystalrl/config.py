"""Config validation against the package schema (`crystalrl/schema.yaml`), with defaults filled in.

Snakemake's own `validate` reports errors as schema paths; here every problem names
the config key the user wrote (`pretrain.batchsize`) and suggests the key they meant.
"""
from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import jsonschema
import yaml

#: The only home of config defaults; shipped inside the package so installed code finds it.
SCHEMA_PATH = Path(__file__).with_name("schema.yaml")


class ConfigError(ValueError):
    """A config key is unknown, mistyped or out of range."""


def _with_defaults(validator_cls):
    validate_props = validator_cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_cls, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _describe(err: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    if err.validator == "additionalProperties":
        allowed = list(err.schema.get("properties", {}))
        extra = [k for k in err.instance if k not in allowed]
        msgs = []
        for k in extra:
            full = f"{key}.{k}" if err.absolute_path else k
            near = difflib.get_close_matches(k, allowed, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            msgs.append(f"config key '{full}': unknown key{hint}; allowed: {', '.join(allowed)}")
        return "\n".join(msgs)
    return f"config key '{key}': {err.message}"


def validate_config(config: dict[str, Any], schema_path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """Validate `config` in place (defaults filled in) and return it.

    Raises ConfigError listing every bad key, so one run reports all mistakes.
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = sorted(_Validator(schema).iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("invalid configuration:\n" + "\n".join(_describe(e) for e in errors))
    split = config.get("data", {}).get("split")
    if split is not None and abs(sum(split) - 1.0) > 1e-6:
        raise ConfigError(f"config key 'data.split': fractions must sum to 1, got {split}")
    return config


def ppo_run_config(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The settings of PPO run `name`: the `ppo` keys overridden by `ppo_runs[name]`."""
    base = {k: v for k, v in config["ppo"].items() if k != "runs"}
    overrides = config.get("ppo_runs", {}).get(name, {})
    unknown = set(overrides) - set(base)
    if unknown:
        raise ConfigError(f"config key 'ppo_runs.{name}': unknown keys {sorted(unknown)}; allowed: {sorted(base)}")
    return {**base, **overrides}
