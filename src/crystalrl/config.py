"""Config validation against the package schema (`crystalrl/schema.yaml`), with defaults filled in.

Snakemake's own `validate` reports errors as schema paths; here every problem names
the config key the user wrote (`pretrain.batchsize`) and suggests the key they meant.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import importlib
import math
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import jsonschema
import yaml

#: The only home of config defaults; shipped inside the package so installed code finds it.
SCHEMA_PATH = Path(__file__).with_name("schema.yaml")


class ConfigError(ValueError, KeyError):
    """A config key is unknown, mistyped or out of range.

    A ValueError, and a KeyError too, since code that predates the schema raised that
    for unknown keys; its message prints as written (not as a quoted key)."""

    __str__ = Exception.__str__


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


@functools.lru_cache(maxsize=4)
def _schema(schema_path: str) -> dict[str, Any]:
    return yaml.safe_load(Path(schema_path).read_text())


def _non_finite(instance: Any, path: tuple = ()) -> list[str]:
    """A message for every NaN or infinity anywhere in `instance`.

    JSON Schema's bounds are comparisons, and every comparison with NaN is false, so
    `minimum`/`exclusiveMinimum` let NaN through (YAML writes it `.nan`); no setting of
    this workflow means anything by NaN or infinity, so none may hold one.
    """
    if isinstance(instance, float) and not math.isfinite(instance):
        key = ".".join(map(str, path)) or "<top level>"
        return [f"config key '{key}': {instance} is not a finite number"]
    if isinstance(instance, dict):
        return [m for k, v in instance.items() for m in _non_finite(v, path + (k,))]
    if isinstance(instance, (list, tuple)):
        return [m for i, v in enumerate(instance) for m in _non_finite(v, path + (i,))]
    return []


def _errors(validator_schema: dict, instance: Any, prefix: str = "") -> list[str]:
    errors = sorted(_Validator(validator_schema).iter_errors(instance),
                    key=lambda e: list(map(str, e.absolute_path)))
    msgs = _non_finite(instance) + [_describe(e) for e in errors]
    if prefix:  # errors of a section name its keys from the top of the config
        msgs = [m.replace("config key '", f"config key '{prefix}.", 1).replace(f"'{prefix}.<top level>'", f"'{prefix}'")
                for m in msgs]
    return msgs


def validate_config(config: dict[str, Any], schema_path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """Validate `config` in place (defaults filled in) and return it.

    Raises ConfigError listing every bad key, so one run reports all mistakes.
    """
    msgs = _errors(_schema(str(schema_path)), config)
    if msgs:
        raise ConfigError("invalid configuration:\n" + "\n".join(msgs))
    split = config.get("data", {}).get("split")
    if split is not None and abs(sum(split) - 1.0) > 1e-6:
        raise ConfigError(f"config key 'data.split': fractions must sum to 1, got {split}")
    return config


def section(name: str, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Config section `name` validated against its schema, with the schema's defaults filled in.

    The way library code gets defaults: `section("ppo", {"beta": 1.0})` is the `ppo`
    section a user who wrote only `beta` would run with.
    """
    props = _schema(str(SCHEMA_PATH))["properties"]
    if name not in props:
        raise KeyError(f"no config section {name!r}; sections: {sorted(props)}")
    out = copy.deepcopy(dict(values or {}))
    msgs = _errors(props[name], out, prefix=name)
    if msgs:
        raise ConfigError("invalid configuration:\n" + "\n".join(msgs))
    return out


class SectionConfig:
    """Base of the frozen dataclasses that mirror one schema section (`SECTION`).

    `from_dict` validates a section (unknown keys and bad values are errors naming the
    key), fills the schema's defaults and keeps this class's fields. The dataclasses set
    no defaults of their own: the schema is the only home of defaults. Keys of the
    section that belong to another consumer are listed in `OTHER_KEYS`.
    """

    SECTION: ClassVar[str]
    OTHER_KEYS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None = None, section_name: str | None = None):
        """The config of `values` (a section as written by a user, or complete); `section_name`
        validates against another section of the same shape (`sft` for a TrainConfig)."""
        full = section(section_name or cls.SECTION, values)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in full.items() if k in names})

    @classmethod
    def schema_keys(cls, section_name: str | None = None) -> set[str]:
        return set(_schema(str(SCHEMA_PATH))["properties"][section_name or cls.SECTION]["properties"])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def import_callable(spec: str, key: str, what: str = "module:function") -> Callable:
    """The callable a config value `module:attr` names (config key `key`): the one place user
    code (rewards, ASE calculator factories) is imported. ConfigError naming the key otherwise."""
    module_name, _, attr = str(spec).partition(":")
    if not module_name or not attr:
        raise ConfigError(f"config key '{key}': {spec!r} is not of the form {what}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to see
        raise ConfigError(f"config key '{key}': cannot import {spec!r} ({type(exc).__name__}: {exc})") from exc
    obj = getattr(module, attr, None)
    if not callable(obj):
        raise ConfigError(f"config key '{key}': cannot import {spec!r}: module {module_name!r} has no callable {attr!r}")
    return obj


def ppo_run_config(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The settings of PPO run `name`: the `ppo` keys overridden by `ppo_runs[name]`, validated."""
    base = {k: v for k, v in config["ppo"].items() if k != "runs"}
    overrides = dict(config.get("ppo_runs", {}).get(name, {}))
    unknown = set(overrides) - set(base)
    if unknown:
        raise ConfigError(f"config key 'ppo_runs.{name}': unknown keys {sorted(unknown)}; allowed: {sorted(base)}")
    try:
        merged = section("ppo", {**base, **{k: {**base[k], **v} if isinstance(base.get(k), dict) and isinstance(v, dict)
                                            else v for k, v in overrides.items()}})
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("config key 'ppo.", f"config key 'ppo_runs.{name}.")) from None
    merged.pop("runs", None)
    return merged
