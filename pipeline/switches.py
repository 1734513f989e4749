"""Switches read from the environment: a variable that takes one of a few words, the first of
them when it is unset, and a wrong word an error naming the variable and the words it takes."""
from __future__ import annotations

import os

from pipeline.errors import SwitchError


def env_choice(name: str, choices: tuple[str, ...]) -> str:
    """The value of environment variable `name`: one of `choices`, choices[0] when unset."""
    value = os.environ.get(name, choices[0])
    if value not in choices:
        quoted = [repr(c) for c in choices]
        words = " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)
        raise SwitchError(f"environment variable {name}={value!r}: expected {words}")
    return value
