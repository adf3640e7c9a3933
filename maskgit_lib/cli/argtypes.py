"""Argparse value types shared by every ``maskgit`` command.

Each raises ``argparse.ArgumentTypeError`` with a sentence that names what was
expected, so ``maskgit inpaint --steps -3`` prints
``argument --steps: must be an integer >= 1, got -3`` instead of a traceback.
"""
from __future__ import annotations

import argparse
from typing import Callable

from ..errors import ConfigError
from ..masking import get_schedule


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low`` (message: "must be an integer >= 1, got -3")."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


positive_int = int_at_least(1)
"""An argparse type: an integer >= 1."""


def seed_int(text: str) -> int:
    """An argparse type: a seed in 0 .. 2**63 - 1 (what ``torch.Generator.manual_seed`` accepts)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..2**63-1, got {text!r}")
    return value


def dropout_rate(text: str) -> float:
    """An argparse type: a dropout rate in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a dropout rate in [0, 1), got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """An argparse type: a finite number >= 0 (temperatures)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    if value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1), got {text}")
    return value


def schedule_arg(text: str) -> str:
    """An argparse type: a schedule name that :func:`~maskgit_lib.masking.get_schedule` knows."""
    try:
        get_schedule(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text
