"""What every config section is built from: a strict, frozen model, and one range check.

`Section` refuses unknown keys and cannot be changed after validation. A number outside its
bounds is refused with "<value> is out of range; use <fix>", where the fix is "<low> to
<high> <unit>" unless a field says it better ("a whole number from 1 to 256"). `ranged` makes
the pydantic validator for a model's fields; `check_range` is the same check for a validator
that also does something else.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, field_validator

N = TypeVar("N", int, float)


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
        raise ValueError(f"{value} is out of range; use {fix}")
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
