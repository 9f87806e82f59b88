"""What every config section is built from: a strict, frozen model, and one range check.

`Section` refuses unknown keys and cannot be changed after validation. A number outside its
bounds is refused with "<value> is out of range; use <fix>", where the fix is "<low> to
<high> <unit>" unless a field says it better ("a whole number from 1 to 256"). `ranged` makes
the pydantic validator for a model's fields; `check_range` is the same check for a validator
that also does something else.

Scalars are strict: `Int`, `Float` and `Text` refuse what JSON or TOML did not write as that
type (`weight: true`, `table: "101"`, `interval: "2"`), and `shown` is how every message
quotes what the file said, cut short so a hostile value cannot flood the error.
"""

from __future__ import annotations

import re
import reprlib
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Strict, field_validator

N = TypeVar("N", int, float)

# A whole number: not true/false, not "101", not 3.0.
Int = Annotated[int, Strict()]
# A number: a whole number is fine (1 means 1.0), true/false and "1.5" are not.
Float = Annotated[float, Strict()]
Text = Annotated[str, Strict()]
# true or false: not 1, not "yes".
Flag = Annotated[bool, Strict()]

_REPR = reprlib.Repr()
_REPR.maxstring = 80
_REPR.maxother = 80
_REPR.maxlevel = 3


def shown(value: object) -> str:
    """How an error message quotes a value from the file: short, and never failing."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, int) and value.bit_length() > 128:
        return f"a {value.bit_length()}-bit number"
    try:
        return _REPR.repr(value)
    except (RecursionError, ValueError):  # a huge int inside a list, or nesting
        return f"a {type(value).__name__}"


class Section(BaseModel):
    """A part of the config file: unknown keys are errors, values are frozen once valid."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_range(
    value: N, *, low: float, high: float, unit: str = "", use: str | None = None, above: bool = False
) -> N:
    """`value` if `low <= value <= high` (`low < value` with `above`), else ValueError."""
    inside = low < value <= high if above else low <= value <= high
    if not inside:
        fix = use if use is not None else f"{low} to {high} {unit}".rstrip()
        raise ValueError(f"{shown(value)} is out of range; use {fix}")
    return value


def ranged(
    *fields: str, low: float, high: float, unit: str = "", use: str | None = None, above: bool = False
) -> Any:
    """A pydantic field validator holding `fields` to `check_range(low=..., high=...)`.

    Assign it in the model's body: `_timers = ranged("a", "b", low=0, high=60, unit="seconds")`.
    """

    def check(cls: type, value: N) -> N:
        return check_range(value, low=low, high=high, unit=unit, use=use, above=above)

    return field_validator(*fields)(check)


def byte_amount(value: object) -> object:
    """A number of bytes from "5G", "500M", "10k" (powers of 1000) or a plain number."""
    if not isinstance(value, str):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)[bB]?\s*", value)
    if m is None:
        raise ValueError(f'{value!r} is not an amount of bytes; write e.g. 5000000000 or "5G"')
    return round(float(m.group(1)) * 1000 ** " KMGT".index(m.group(2).upper() or " "))
