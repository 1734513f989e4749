"""argparse `type=` functions the commands share: a bad value is refused at parsing, naming the
flag (argparse adds it) and the reason."""
from __future__ import annotations

import argparse


def int_at_least(least: int):
    """An integer of at least `least`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be >= {least}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its messages
    return parse
