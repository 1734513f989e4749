"""Command-line flags from the schema: every field of a settings class that declares `flags`
becomes one argparse option (dest = the field's name, help = its doc, its range and choices),
and `settings_from_args` turns the parsed namespace back into the settings object. benchmark.py
and the sweep both build their run flags here, so they cannot drift apart.

A flag's value is checked as it is parsed: argparse then names the flag in its one-line error,
e.g. `argument -v/--videos: must be a positive integer <= 100_000; got 1_000_000_000`.
"""
from __future__ import annotations

import argparse

from pipeline.config.convert import from_dict, to_dict
from pipeline.config.decode_backend import check_forced_backend
from pipeline.config.fields import (
    Entry,
    entries,
    optional_of,
    range_text,
    scalar_of,
    value_problem,
)
from pipeline.config.schema import RunSettings
from pipeline.errors import ConfigError


class OptionError(ConfigError):
    """A run setting out of bounds, named by its flags (settings built in code, not parsed)."""

    def __init__(self, flags: str, reason: str):
        self.field = flags
        self.reason = reason
        ValueError.__init__(self, f"{flags}: {reason}")


def flag_entries(cls) -> list[Entry]:
    return [e for e in entries(cls) if e.spec.flags]


def add_setting_flags(parser: argparse.ArgumentParser, cls=RunSettings, skip=(), only=None,
                      defaults: dict | None = None) -> None:
    """One option per flagged field of `cls` (except `skip`; or just those in `only`);
    `defaults` replaces declared defaults for this command only (e.g. no progress bars inside a
    sweep's runs)."""
    defaults = defaults or {}
    for e in flag_entries(cls):
        if e.name in skip or (only is not None and e.name not in only):
            continue
        default = defaults[e.name] if e.name in defaults else (None if e.required else e.default())
        help_text = _help(e)
        if scalar_of(e.hint) is bool:
            parser.add_argument(*e.spec.flags, dest=e.name, default=default, help=help_text,
                                action=argparse.BooleanOptionalAction)
            continue
        metavar = e.spec.metavar or ("{" + ",".join(map(str, e.spec.choices)) + "}"
                                     if e.spec.choices else None)
        parser.add_argument(*e.spec.flags, dest=e.name, default=default, help=help_text,
                            type=_parse_for(e), metavar=metavar, required=e.required)


TRUST_OVERRIDE = "model.trust_checkpoint=true"  # what --trust-checkpoint sets


def add_trust_flag(p: argparse.ArgumentParser) -> None:
    """`--trust-checkpoint`: the user's explicit opt-in, as `--set model.trust_checkpoint=true`."""
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling of a torch.save checkpoint that holds more than "
                        "weights; it can run code from the file (model.trust_checkpoint: true)")


def with_trust(args: argparse.Namespace) -> list[str]:
    """The `--set` overrides, and `--trust-checkpoint`'s last (it wins) when given."""
    return list(args.overrides) + ([TRUST_OVERRIDE] if args.trust_checkpoint else [])


def add_override_flag(p: argparse.ArgumentParser, every: bool = False) -> None:
    """`--set FIELD=VALUE`, repeatable (overrides.py); `every`: for each of several configs."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help=("override a field of every config, " if every else
                         "override a config field for this run, ")
                   + "e.g. --set model.precision=fp32 --set model.resolution=[720,1280] "
                     "--set videos.synthetic.count=8 (VALUE is read as YAML; "
                     "pipeline[1].gpus=[0,1] indexes the step list)")


def settings_from_args(args: argparse.Namespace, cls=RunSettings, **fixed):
    """The settings object from parsed flags; `fixed` sets fields the command decides itself
    (e.g. a capacity probe's request count), checked like the rest."""
    values = {e.name: getattr(args, e.name) for e in entries(cls) if hasattr(args, e.name)}
    values.update(fixed)
    return check_settings(cls(**values))


def check_settings(settings):
    """`settings` if every field is within its declaration; else OptionError naming the flag.
    For settings built in code (a sweep, a test), which no parser has checked. Run settings
    that force a decoder the run's CPU cannot use are refused too (decode_backend.py): this is
    where benchmark.py, its --dry-run and a sweep all check them before a config is read."""
    cls = type(settings)
    try:
        checked = from_dict(cls, to_dict(settings))
    except ConfigError as exc:
        name = exc.field.split(".")[0].split("[")[0]
        flags = next((e.spec.flags for e in entries(cls) if e.name == name), ())
        raise OptionError("/".join(flags) or exc.field, exc.reason) from None
    if isinstance(checked, RunSettings):
        check_forced_backend(checked)
    return checked


def check_flag_value(value, cls, name: str, flag: str | None = None):
    """One value (e.g. each of a sweep's comma-separated loads) against field `name`'s bounds;
    ValueError naming the flag."""
    e = next(e for e in entries(cls) if e.name == name)
    problem = value_problem(value, e.spec)
    if problem:
        raise ValueError(f"{flag or '/'.join(e.spec.flags)}: {problem}")
    return value


def _help(e: Entry) -> str:
    text = e.spec.doc
    if scalar_of(e.hint) in (int, float) and e.spec.choices is None:
        limits = range_text(e.spec, scalar_of(e.hint) is int)
        if limits:
            text += f" [{limits}]"
    return text.replace("%", "%%")  # argparse formats help with %


def _parse_for(e: Entry):
    """The argparse `type` of a flag: text -> value, refused with the reason argparse will show."""
    hint, _ = optional_of(e.hint)
    spec = e.spec

    def parse(text: str):
        if hint is int:
            value = _int(text)
        elif hint is float:
            try:
                value = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
        else:
            value = text
        problem = value_problem(value, spec)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = hint.__name__ if isinstance(hint, type) else "value"
    return parse


def _int(text: str) -> int:
    """An integer, also written as 1e6 (whole numbers only), so that a bound can be reported."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
    if not number.is_integer():
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'")
    return int(number)

