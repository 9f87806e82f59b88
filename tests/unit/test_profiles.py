"""The probe timing profiles are one table (config.probe.PROFILES): what reads it agrees with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from uplinkd.config import PROFILES, Probe, parse, schema

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_a_profile_sets_exactly_its_timings(profile: str) -> None:
    probe = parse({"probe": {"profile": profile}}).probe
    assert {name: getattr(probe, name) for name in PROFILES[profile]} == PROFILES[profile]


def test_field_defaults_are_the_default_profile() -> None:
    fields = Probe.model_fields
    assert {name: fields[name].default for name in PROFILES["default"]} == PROFILES["default"]


def test_every_profile_has_the_same_fields_and_is_selectable() -> None:
    assert len({frozenset(timings) for timings in PROFILES.values()}) == 1
    assert set(schema()["$defs"]["Probe"]["properties"]["profile"]["enum"]) == set(PROFILES)


def test_schema_publishes_the_table() -> None:
    assert schema()["$defs"]["Probe"]["profiles"] == PROFILES


def _seconds(cell: str) -> float:
    return float(cell.strip().removesuffix("s").strip())


def test_readme_table_matches() -> None:
    text = README.read_text()
    table = text[text.index("| profile | interval | fast_interval |") :].split("\n\n", 1)[0]
    rows = {
        m["name"]: [cell.strip() for cell in m["cells"].split("|")]
        for m in re.finditer(r"^\| `(?P<name>\w+)` \|(?P<cells>.*)\|$", table, re.MULTILINE)
    }
    assert set(rows) == set(PROFILES)
    for name, cells in rows.items():
        timings = PROFILES[name]
        interval, fast_interval, timeout, suspect_after, counts = cells[:5]
        down_after, up_after = (int(n) for n in counts.split("/"))
        assert (
            _seconds(interval),
            _seconds(fast_interval),
            _seconds(timeout),
            _seconds(suspect_after),
            down_after,
            up_after,
        ) == (
            timings["interval"],
            timings["fast_interval"],
            timings["timeout"],
            timings["suspect_after"],
            timings["down_after"],
            timings["up_after"],
        ), name
