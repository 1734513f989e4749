"""Between plain data (what YAML, JSON and the run folder hold) and the schema's dataclasses,
for any class declared with `setting(...)`.

`from_dict` checks keys (unknown ones with a did-you-mean, required ones), types, bounds and
choices, and raises ConfigError naming the dotted field (`pipeline[2].gpus[1]`); `to_dict` is its
inverse, every setting explicit, so `from_dict(cls, to_dict(obj))` rebuilds obj.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import typing

from pipeline.config.fields import (
    Spec,
    entries,
    is_schema_class,
    items_problem,
    optional_of,
    value_problem,
)
from pipeline.errors import ConfigError


def join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


def from_dict(cls, data, path: str = ""):
    """An instance of the schema class `cls` from a mapping; path prefixes error field names."""
    d = mapping(data, path or "<config>")
    fields = [e for e in entries(cls) if e.spec.in_file]
    by_key = {e.key: e for e in fields}
    check_keys(d, path, list(by_key), required=[e.key for e in fields if e.required])
    values = {by_key[k].name: convert(v, by_key[k].hint, by_key[k].spec, join(path, k))
              for k, v in d.items()}
    return cls(**values)


def convert(value, hint, spec: Spec, path: str):
    """`value` as the type `hint` says, checked against `spec`; ConfigError names `path`."""
    hint, optional = optional_of(hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(path, f"must not be null ({_expected(hint)})")
    if is_schema_class(hint):
        return from_dict(hint, value, path)
    origin = typing.get_origin(hint)
    if origin is list:
        items = as_list(value, path)
        problem = items_problem(items, spec)
        if problem:
            raise ConfigError(path, problem)
        (item_hint,) = typing.get_args(hint)
        return [_item(v, item_hint, spec, f"{path}[{i}]") for i, v in enumerate(items)]
    if origin is tuple:
        items = as_list(value, path)
        args = typing.get_args(hint)
        if len(items) != len(args):
            form = spec.form or f"a list of {len(args)} values"
            raise ConfigError(path, f"must be {form}, got {len(items)} values")
        return tuple(_item(v, a, spec, f"{path}[{i}]") for i, (v, a) in enumerate(zip(items, args)))
    return scalar(value, hint, spec, path)


def _item(value, hint, spec: Spec, path: str):
    if is_schema_class(hint):
        return from_dict(hint, value, path)
    return scalar(value, hint, spec, path)


_NODE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _gpu_entry(value, spec: Spec, path: str):
    """A gpus entry: a GPU id, or "node:id" (a node's name and a GPU id on that node)."""
    if isinstance(value, str):
        node, sep, gpu = value.rpartition(":")
        if not sep or not _NODE_NAME.match(node) or not gpu.isdigit():
            raise ConfigError(path, f"must be a GPU id or 'node:id' (a Ray node's name, then a "
                                    f"GPU id on it, e.g. 'node1:0'), got {value!r}")
        problem = value_problem(int(gpu), spec)
        if problem:
            raise ConfigError(path, f"the GPU id of {value!r} {problem}")
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"must be a GPU id or 'node:id', got {kind_of(value)}")
    problem = value_problem(value, spec)
    if problem:
        raise ConfigError(path, problem)
    return value


def scalar(value, hint, spec: Spec, path: str):
    if hint == (int | str):
        return _gpu_entry(value, spec, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"must be true or false, got {kind_of(value)}")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"must be an integer, got {kind_of(value)}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"must be a number, got {kind_of(value)}")
        value = float(value)
    elif hint is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"must be a string, got {kind_of(value)}")
    else:
        raise TypeError(f"{path}: the schema uses an unsupported type {hint!r}")
    problem = value_problem(value, spec)
    if problem:
        raise ConfigError(path, problem)
    return value


def to_dict(obj) -> dict:
    """The plain-data form of a schema object: keys as in files, tuples as lists."""
    return {e.key: _plain(getattr(obj, e.name)) for e in entries(type(obj)) if e.spec.in_file}


def _plain(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# Shapes and the words for what was found instead
# --------------------------------------------------------------------------------------------

def check_keys(d: dict, path: str, allowed, required=()) -> None:
    for key in d:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else "valid keys: " + ", ".join(allowed)
            raise ConfigError(join(path, key), f"unknown key '{key}'; {hint}")
    for key in required:
        if key not in d:
            raise ConfigError(join(path, key), "missing (required)")


def kind_of(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {value}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _expected(hint) -> str:
    if is_schema_class(hint):
        return "a mapping"
    if typing.get_origin(hint) in (list, tuple):
        return "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, str(hint))


def mapping(value, path: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(path, f"must be a mapping (key: value entries), got {kind_of(value)}")
    return value


def as_list(value, path: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(path, f"must be a list, got {kind_of(value)}")
    return list(value)
