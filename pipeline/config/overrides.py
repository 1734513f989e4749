"""`--set FIELD=VALUE`: change one field of a loaded config for this run. The config goes to its
plain form, the assignment lands there, and the whole is loaded again, so an override is checked
exactly like the same value written in the file. `assign` does the middle part for any schema
(the run config here, the training config in pipeline/train/config.py).

A dotted path into an optional section that is off (null, e.g. `videos.streams` in a config
without streams) turns the section on with its declared defaults, then sets the field:
`--set videos.streams.count=2` is `--set 'videos.streams={count: 2}'`."""
from __future__ import annotations

import re
import typing

import yaml

from pipeline.config.fields import entries, is_schema_class, optional_of
from pipeline.config.loading import config_from_dict, config_to_dict, yaml_value
from pipeline.config.schema import Config
from pipeline.errors import ConfigError

_PART = re.compile(r"[^.\[\]]+|\[\d+\]")


def apply_overrides(cfg: Config, overrides) -> Config:
    """The config with `--set FIELD=VALUE` assignments applied (VALUE read as YAML; `pipeline[1]`
    indexes the step list), validated again as a whole."""
    if not overrides:
        return cfg
    d = config_to_dict(cfg)  # fresh containers: cfg itself is left as it was
    assign(d, overrides, Config)
    return config_from_dict(d, source=cfg.source)


def assign(d: dict, overrides, schema=None) -> dict:
    """Apply `FIELD=VALUE` assignments to the plain form `d` of a config (every field explicit),
    in place; the caller loads the result again, which checks each value and refuses unknown keys
    with a suggestion. `schema`: the class `d` is the plain form of, which lets a path go into an
    optional section that is null (it is made with its defaults first)."""
    for text in overrides or ():
        field, sep, value = text.partition("=")
        if not sep or not field:
            raise ConfigError("--set", f"expected FIELD=VALUE, got '{text}'")
        keys = [int(k[1:-1]) if k.startswith("[") else k for k in _PART.findall(field)]
        if not keys:
            raise ConfigError("--set", f"expected FIELD=VALUE, got '{text}'")
        node, cls = d, schema
        for i, key in enumerate(keys[:-1]):
            hint = _hint(cls, key)
            try:
                if node[key] is None and _section(hint) is not None:
                    node[key] = {}  # a section that is off: on, with its defaults
                node = node[key]
            except (KeyError, IndexError, TypeError):
                raise ConfigError(field, f"--set: no such field ('{keys[i]}' not found)") from None
            cls = _section(hint)
        try:
            parsed = yaml_value(value)
        except yaml.YAMLError as e:
            raise ConfigError(field, f"--set: cannot read '{value}' as a YAML value "
                                     f"({getattr(e, 'problem', None) or e})") from None
        last = keys[-1]
        if isinstance(node, dict) and isinstance(last, str):
            node[last] = parsed  # an unknown key is refused, with a suggestion, on loading
        elif isinstance(node, list) and isinstance(last, int) and last < len(node):
            node[last] = parsed
        else:
            raise ConfigError(field, "--set: no such field")
    return d


def _hint(cls, key):
    """The type of `key` (a file key, or a list index) in schema class or list type `cls`;
    None where it is not known."""
    if cls is None:
        return None
    if isinstance(key, int):
        args = typing.get_args(cls) if typing.get_origin(cls) is list else ()
        return args[0] if args else None
    if not is_schema_class(cls):
        return None
    return next((e.hint for e in entries(cls) if e.key == key), None)


def _section(hint):
    """What a path goes on into below a field of type `hint`: a schema class (that of an
    optional section too) or a list type; None for anything else."""
    if hint is None:
        return None
    inner, _ = optional_of(hint)
    if is_schema_class(inner) or typing.get_origin(inner) is list:
        return inner
    return None
