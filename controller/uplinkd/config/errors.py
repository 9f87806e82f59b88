"""Bad configuration, said in the config file's own words: one line per problem.

`describe` turns pydantic's validation errors into `dotted.field: what is wrong; how to fix
it`, the field spelled as the NixOS module spells it; `ConfigError` carries those lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import ValidationError

from uplinkd.config.fields import shown


class ConfigError(Exception):
    """A config that cannot be used, with one line per problem."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


_FIXES = {
    "extra_forbidden": "unknown key; remove it or check its spelling",
    "missing": "is required; add it",
    "int_parsing": "expected a whole number",
    "int_type": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "dict_type": "expected a table/object",
    "model_type": "expected a table/object",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "literal_error": "",
    "union_tag_invalid": "",
    "union_tag_not_found": "needs a 'mode'; use one of 'external', 'static', 'dhcp', 'modem'",
    "ip_v4_interface": 'expected an IPv4 address with prefix, e.g. "10.64.0.2/30"',
    "ip_v6_interface": 'expected an IPv6 address with prefix, e.g. "2001:db8::2/64"',
    "ip_v4_address": 'expected an IPv4 address, e.g. "10.64.0.1"',
    "ip_v6_address": 'expected an IPv6 address, e.g. "2001:db8::1"',
}


def _unquote(kind: str, value: object) -> str:
    """What to write instead, when a number or true/false was written as something else."""
    if kind in ("int_type", "float_type") and isinstance(value, bool):
        return ", not true/false"
    if kind in ("int_type", "float_type") and isinstance(value, str):
        try:
            float(value.strip())
        except ValueError:
            return ""
        return ", not a string; write it without quotes"
    if kind == "int_type" and isinstance(value, float) and value.is_integer():
        return f"; write {int(value)}"
    if kind == "bool_type" and isinstance(value, str | int):
        return ", not a string or number; write true or false without quotes"
    return ""


def _location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for part in loc:
        text = str(part)
        # Discriminated unions add the tag as a path element ("address.static.cidr").
        if parts and parts[-1] == "address" and text in ("external", "static", "dhcp"):
            continue
        if text.startswith("function-") or text.endswith("]"):
            continue
        parts.append(text)
    return ".".join(parts)


def describe(error: ValidationError) -> list[str]:
    """One line per problem: `dotted.field: what is wrong; how to fix it`."""
    lines: list[str] = []
    for err in error.errors(include_url=False):
        where = _location(tuple(err["loc"]))
        kind = err["type"]
        if kind == "value_error":
            text = str(err["ctx"]["error"]) if "ctx" in err else err["msg"]
            # A model-level check may report several problems, already prefixed with paths.
            # Model-wide checks (empty location) already name their fields; a model's own
            # checks name a field inside it ("quorum: ..."), which joins the path.
            for line in text.splitlines():
                if not where:
                    lines.append(line)
                elif re.match(r"[a-z_][a-z0-9_.]*: ", line):
                    lines.append(f"{where}.{line}")
                else:
                    lines.append(f"{where}: {line}")
            continue
        fix = _FIXES.get(kind)
        if kind == "literal_error":
            fix = f"{shown(err['input'])} is not allowed; use {err['ctx']['expected']}"
        elif kind == "union_tag_invalid":
            fix = f"{err['ctx']['tag']!r} is not a mode; use one of {err['ctx']['expected_tags']}"
        elif fix is None:
            fix = err["msg"]
        elif kind not in ("missing", "extra_forbidden"):
            fix = f"{shown(err['input'])}: {fix}{_unquote(kind, err['input'])}"
        lines.append(f"{where}: {fix}" if where else fix)
    return lines
