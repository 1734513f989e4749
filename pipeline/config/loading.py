"""Config files to `Config` and back: YAML or JSON, duplicate keys refused with their line, shape,
types, bounds and choices checked by the schema's declarations (convert.py). `validate` checks
what depends on several fields and on the machine."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from pipeline.config.convert import from_dict, mapping, to_dict
from pipeline.config.schema import Config
from pipeline.errors import ConfigError


class ConfigFileError(ConfigError):
    """A config file that cannot be read or parsed; names the file and, where known, the line."""

    def __init__(self, path, line: int | None, reason: str):
        self.path = str(path)
        self.line = line
        self.field = "<file>"
        self.reason = reason
        where = self.path if line is None else f"{self.path}:{line}"
        ValueError.__init__(self, f"{where}: {reason}")


def load_config(path) -> Config:
    """Read a YAML (.yaml/.yml) or JSON (.json) config; shape and types are checked here."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise ConfigFileError(path, None, "config files must end in .yaml, .yml or .json")
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigFileError(path, None, f"cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigFileError(path, None, "not a text file (cannot decode it as UTF-8)") from None
    data = _parse_json(path, text) if suffix == ".json" else _parse_yaml(path, text)
    if data is None:
        raise ConfigFileError(path, None, "the file is empty")
    return config_from_dict(data, source=str(path))


def config_from_dict(d, source: str | None = None) -> Config:
    """Build a Config from the YAML/JSON structure. Checks keys, types, bounds and choices;
    `validate` checks what relates fields to each other and to the machine."""
    d = mapping(d, "<config>")
    if "name" not in d:
        if source is None:
            raise ConfigError("name", "missing: a config that does not come from a file needs a name")
        d = {"name": Path(source).stem, **d}
    cfg = from_dict(Config, d)
    cfg.source = None if source is None else str(source)
    return cfg


def config_to_dict(cfg: Config) -> dict:
    """The YAML/JSON structure of `cfg`, every setting explicit; config_from_dict round-trips it."""
    return to_dict(cfg)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""


def _construct_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' is given twice (first on line {seen[key] + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.1 (PyYAML) reads 1e-4, without a dot, as a string; YAML 1.2 and every reader of these
# files means a number.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def yaml_value(text: str):
    """One value as a config file would read it (for `--set FIELD=VALUE`)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def read_yaml(path):
    """The data of a YAML file, or ConfigFileError naming the file (and the line)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigFileError(path, None, f"cannot read: {e.strerror or e}") from None
    return _parse_yaml(path, text)


def _parse_yaml(path: Path, text: str):
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(p for p in (e.context, e.problem) if p) or "invalid YAML"
        raise ConfigFileError(path, line, f"cannot parse YAML: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigFileError(path, None, f"cannot parse YAML: {e}") from None


def _parse_json(path: Path, text: str):
    def unique_pairs(pairs):
        out = {}
        for key, value in pairs:
            if key in out:
                raise ValueError(f"key '{key}' is given twice")
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=unique_pairs)
    except json.JSONDecodeError as e:
        raise ConfigFileError(path, e.lineno, f"cannot parse JSON: {e.msg} (column {e.colno})") from None
    except ValueError as e:  # a duplicate key; json does not say where
        raise ConfigFileError(path, None, f"cannot parse JSON: {e}") from None
