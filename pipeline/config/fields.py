"""The vocabulary the schema is written in: `setting(...)`, a dataclass field that also carries
what every consumer of the schema needs to know about it.

    batch: int = setting(1, doc="requests a runner may batch", ge=1, le=64, flags=("-b", "--batch_size"))

From that one line follow the default, the type check and bounds when a file or a flag gives the
value, the `--set` path, the run folder's copy, and the command-line flag with its help text.
Bounds and choices apply to a scalar, or to each item of a list. Nothing here knows any field.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import MISSING, dataclass
from functools import lru_cache

_SPEC = "spec"


@dataclass(frozen=True)
class Spec:
    """What one field promises, beyond its type."""

    doc: str
    ge: float | None = None  # value >= ge
    gt: float | None = None  # value > gt
    le: float | None = None  # value <= le
    choices: tuple | None = None
    flags: tuple[str, ...] = ()  # command-line flags of a run setting; () = none
    metavar: str | None = None
    key: str | None = None  # the file's key where it differs from the field name
    form: str | None = None  # how a fixed-length list is written, e.g. "[height, width]"
    max_items: int | None = None  # lists
    min_len: int | None = None  # strings
    max_len: int | None = None
    in_file: bool = True  # False: filled in by the loader (e.g. where the file was), not a key
    env: str | None = None  # an environment variable that replaces the default


def setting(default=MISSING, *, doc: str, factory=None, **spec) -> dataclasses.Field:
    """A dataclass field with its Spec. No default and no factory: the field is required."""
    s = Spec(doc=doc, **spec)
    meta = {_SPEC: s}
    if s.env is not None:
        fallback = default
        return dataclasses.field(default_factory=lambda: os.environ.get(s.env, fallback),
                                 metadata=meta)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Entry:
    """One field of a schema class, as the generic code sees it."""

    name: str
    hint: object  # the resolved type annotation
    spec: Spec
    field: dataclasses.Field

    @property
    def key(self) -> str:
        return self.spec.key or self.name

    @property
    def required(self) -> bool:
        return self.field.default is MISSING and self.field.default_factory is MISSING

    def default(self):
        if self.field.default_factory is not MISSING:
            return self.field.default_factory()
        return self.field.default


@lru_cache(maxsize=None)
def entries(cls) -> tuple[Entry, ...]:
    """The fields of a schema class in declaration order, with types resolved."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_SPEC)
        if spec is None:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with setting(...)")
        out.append(Entry(f.name, hints[f.name], spec, f))
    return tuple(out)


def entry(cls, name: str) -> Entry:
    for e in entries(cls):
        if e.name == name:
            return e
    raise KeyError(f"{cls.__name__} has no field '{name}'")


# --------------------------------------------------------------------------------------------
# Types
# --------------------------------------------------------------------------------------------

def optional_of(hint) -> tuple[object, bool]:
    """(T, True) for `T | None`, else (hint, False)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
        raise TypeError(f"unsupported union {hint}")
    return hint, False


def is_schema_class(hint) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def scalar_of(hint):
    """The scalar type a field holds: itself, or the item type of a list or tuple."""
    hint, _ = optional_of(hint)
    if typing.get_origin(hint) in (list, tuple):
        return typing.get_args(hint)[0]
    return hint


# --------------------------------------------------------------------------------------------
# Values: bounds and choices (the type is already right when these run)
# --------------------------------------------------------------------------------------------

def _num(x) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        x = int(x)
    return f"{x:_}" if isinstance(x, int) and abs(x) >= 10_000 else str(x)


def range_text(spec: Spec, is_int: bool) -> str | None:
    """The allowed range in words, e.g. 'a positive integer <= 64', '>= 0 and <= 3_600_000'."""
    lo = None
    if spec.ge is not None:
        lo = "a positive integer" if is_int and spec.ge == 1 else f">= {_num(spec.ge)}"
    elif spec.gt is not None:
        lo = f"> {_num(spec.gt)}"
    hi = None if spec.le is None else f"<= {_num(spec.le)}"
    if lo and hi:
        return f"{lo} and {hi}" if not lo.startswith("a ") else f"{lo} {hi}"
    return lo or hi


def value_problem(value, spec: Spec) -> str | None:
    """Why `value` (of the right type) breaks the field's bounds or choices, or None."""
    if spec.choices is not None:
        if value not in spec.choices:
            shown = ", ".join(str(c) for c in spec.choices)
            close = difflib.get_close_matches(str(value), [str(c) for c in spec.choices], n=1,
                                              cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            got = f"'{value}'" if isinstance(value, str) else str(value)
            return f"must be one of {shown}; got {got}{hint}"
        return None
    if isinstance(value, str):
        if spec.min_len is not None and len(value) < spec.min_len:
            return "must not be empty" if spec.min_len == 1 else \
                f"must have at least {spec.min_len} characters"
        if spec.max_len is not None and len(value) > spec.max_len:
            return f"must have at most {spec.max_len} characters, got {len(value)}"
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    below = (spec.ge is not None and value < spec.ge) or (spec.gt is not None and value <= spec.gt)
    above = spec.le is not None and value > spec.le
    if below or above:
        return f"must be {range_text(spec, isinstance(value, int))}; got {_num(value)}"
    return None


def items_problem(items: list, spec: Spec) -> str | None:
    if spec.max_items is not None and len(items) > spec.max_items:
        return f"must have at most {spec.max_items} entries, got {len(items)}"
    return None
