"""Hostile and careless config input: strict types, absolute paths, interface names in bytes,
and pathological files, each refused with a line that names the field (or file) and the fix,
through every path that reads a config (load, `uplinkctl check`, `plan --config`, the daemon's
start) and through the control socket's request parser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from uplinkd import cli
from uplinkd.config import ConfigError, load, parse
from uplinkd.config.fields import shown
from uplinkd.config.ifname import glob_problem, problem
from uplinkd.control import BadRequest, parse_request

pytestmark = pytest.mark.timeout(120)  # a FIFO used to block load() for ever


def one(**uplink: Any) -> dict[str, Any]:
    return {"uplinks": {"a": {"match": {"name": "eth0"}, "table": 101, **uplink}}}


def problems(data: dict[str, Any]) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as err:
        parse(data)
    return err.value.problems


# --- strict scalars: what JSON/TOML wrote as another type is refused, naming the field -------

STRICT = [
    ("weight-bool", one(weight=True), "uplinks.a.weight: true: expected a whole number, not true/false"),
    (
        "table-string",
        one(table="101"),
        "uplinks.a.table: '101': expected a whole number, not a string; write it without quotes",
    ),
    ("table-float", one(table=101.0), "uplinks.a.table: 101.0: expected a whole number; write 101"),
    ("weight-fraction", one(weight=1.5), "uplinks.a.weight: 1.5: expected a whole number"),
    ("mark-bool", one(mark=False), "uplinks.a.mark: false: expected a whole number, not true/false"),
    (
        "interval-string",
        one(probe={"interval": "2"}),
        "uplinks.a.probe.interval: '2': expected a number, not a string; write it without quotes",
    ),
    (
        "top-probe-bool",
        {"probe": {"timeout": True}},
        "probe.timeout: true: expected a number, not true/false",
    ),
    (
        "quorum-string",
        one(probe={"quorum": "1"}),
        "uplinks.a.probe.quorum: '1': expected a whole number, not a string; write it without quotes",
    ),
    (
        "down-after-bool",
        one(probe={"down_after": True}),
        "uplinks.a.probe.down_after: true: expected a whole number, not true/false",
    ),
    (
        "buckets-string",
        {"balance": {"buckets": "512"}},
        "balance.buckets: '512': expected a whole number, not a string; write it without quotes",
    ),
    (
        "idle-timer-bool",
        {"balance": {"idle_timer": True}},
        "balance.idle_timer: true: expected a number, not true/false",
    ),
    (
        "priority-string",
        {"rules": {"priority": "10000"}},
        "rules.priority: '10000': expected a whole number, not a string; write it without quotes",
    ),
    (
        "protocol-bool",
        {"kernel": {"protocol": True}},
        "kernel.protocol: true: expected a whole number, not true/false",
    ),
    (
        "nexthop-base-bool",
        {"kernel": {"nexthop_base": True}},
        "kernel.nexthop_base: true: expected a whole number, not true/false",
    ),
    ("nft-table-number", {"kernel": {"nft_table": 7}}, "kernel.nft_table: 7: expected a string"),
    (
        "resync-string",
        {"control": {"resync_interval": "30"}},
        "control.resync_interval: '30': expected a number, not a string; write it without quotes",
    ),
    (
        "hook-timeout-bool",
        {"hooks": {"timeout": True}},
        "hooks.timeout: true: expected a number, not true/false",
    ),
    (
        "hook-timeout-negative",
        {"hooks": {"timeout": -1}},
        "hooks.timeout: -1.0 is out of range; use 0.1 to 3600 seconds",
    ),
    ("name-number", one(match={"name": 5}), "uplinks.a.match.name: 5: expected a string"),
    ("driver-number", one(match={"driver": [5]}), "uplinks.a.match.driver.0: 5: expected a string"),
    (
        "vendor-number",
        one(match={"usb": {"vendor": 4817}}),
        "uplinks.a.match.usb.vendor: 4817: expected a string",
    ),
    ("target-number", one(probe={"targets": [1]}), "uplinks.a.probe.targets.0: 1: expected a string"),
    ("dns-name-bool", one(probe={"dns_name": True}), "uplinks.a.probe.dns_name: true: expected a string"),
    (
        "cidr-number",
        one(address={"mode": "static", "cidr": 167772162}),
        'uplinks.a.address.cidr: 167772162 is not a string; write it in quotes, e.g. "10.64.0.2/30"',
    ),
    (
        "gateway-number",
        one(address={"mode": "static", "cidr": "10.0.0.2/24", "gateway": 167772161}),
        'uplinks.a.address.gateway: 167772161 is not a string; write it in quotes, e.g. "10.64.0.1"',
    ),
    (
        "hostname-bool",
        one(address={"mode": "dhcp", "hostname": True}),
        "uplinks.a.address.hostname: true: expected a string",
    ),
    (
        "hostname-space",
        one(address={"mode": "dhcp", "hostname": "my router"}),
        "uplinks.a.address.hostname: 'my router' is not a host name; "
        "use up to 63 letters, digits, '.', '-' or '_'",
    ),
    (
        "last-resort-bool",
        {"balance": {"last_resort": True}},
        "balance.last_resort: true is not allowed; use 'carrier' or 'unreachable'",
    ),
    # absolute paths, as the daemon's working directory is nobody's business
    (
        "socket-relative",
        {"control": {"socket": "uplinkd.sock"}},
        "control.socket: 'uplinkd.sock' is relative, so it would depend on the daemon's working "
        'directory; use an absolute path, e.g. "/run/uplinkd/control.sock"',
    ),
    (
        "socket-too-long",
        {"control": {"socket": "/run/" + "s" * 103}},
        f"control.socket: {shown('/run/' + 's' * 103)} "
        'is longer than 107 bytes; use a shorter path, e.g. "/run/uplinkd/control.sock"',
    ),
    (
        "socket-number",
        {"control": {"socket": 5}},
        'control.socket: 5 is not a path; write an absolute path in quotes, e.g. "/run/uplinkd/control.sock"',
    ),
    (
        "state-dir-relative",
        {"control": {"state_dir": "state"}},
        "control.state_dir: 'state' is relative, so it would depend on the daemon's working directory; "
        'use an absolute path, e.g. "/var/lib/uplinkd"',
    ),
    (
        "hook-relative",
        {"hooks": {"on_change": "on-change.sh"}},
        "hooks.on_change: 'on-change.sh' is relative, so it would depend on the daemon's working directory; "
        'use an absolute path, e.g. "/etc/uplinkd/on-change"',
    ),
]


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in STRICT], ids=[c[0] for c in STRICT])
def test_loose_values_are_refused_naming_the_field_and_fix(data: dict[str, Any], expected: str) -> None:
    assert problems(data) == (expected,)


def test_numbers_where_numbers_belong_still_load_from_json_and_toml(tmp_path: Path) -> None:
    """Strict does not mean fussy: a whole number is a fine float, hex strings stay for masks."""
    toml = tmp_path / "c.toml"
    toml.write_text(
        '[uplinks.a]\nmatch = { name = "eth0" }\ntable = 101\nweight = 2\n'
        "[uplinks.a.probe]\ninterval = 5\ntimeout = 0.5\n"
        '[kernel]\nmark_mask = "0xff00"\nprotocol = 77\n'
        '[control]\nsocket = "/run/u/control.sock"\n[hooks]\non_change = "/etc/uplinkd/hook"\ntimeout = 3\n'
    )
    c = load(toml)
    up = c.uplinks["a"]
    assert (up.table, up.weight, up.probe.interval, up.probe.timeout) == (101, 2, 5.0, 0.5)
    assert c.kernel.mark_mask == 0xFF00 and str(c.control.socket) == "/run/u/control.sock"
    assert c.hooks.timeout == 3.0 and str(c.hooks.on_change) == "/etc/uplinkd/hook"
    js = tmp_path / "c.json"
    js.write_text(json.dumps(one(weight=2, probe={"interval": 5})))
    assert load(js).uplinks["a"].probe.interval == 5.0


# --- interface names: bytes, as the kernel counts them; nothing nft cannot quote --------------

FIX = "use 1-15 bytes without '/', ':', '\"', '\\', spaces or control characters"

IFNAMES = [
    ("15-umlauts", "ä" * 15, f"'{'ä' * 15}' is 30 bytes, more than the kernel's 15; {FIX}"),
    ("8-umlauts", "ä" * 8, f"'{'ä' * 8}' is 16 bytes, more than the kernel's 15; {FIX}"),
    ("quote", 'lte"1', f"'lte\"1' contains '\"', which nft cannot quote; {FIX}"),
    ("backslash", "lte\\1", f"'lte\\\\1' contains '\\\\', which nft cannot quote; {FIX}"),
    ("colon", "eth0:1", f"'eth0:1' contains ':'; {FIX}"),
    ("tab", "a\tb", f"'a\\tb' contains a byte the kernel counts as space (0x09); {FIX}"),
    ("nbsp-byte", "aà", f"'aà' contains a byte the kernel counts as space (0xa0); {FIX}"),
    ("control", "a\x01b", f"'a\\x01b' contains '\\x01', which nft cannot quote; {FIX}"),
    ("dot", ".", f"'.' cannot be an interface name; {FIX}"),
    ("dotdot", "..", f"'..' cannot be an interface name; {FIX}"),
    ("glob-quote", 'lte"*', f"'lte\"*' contains '\"', which nft cannot quote; {FIX}"),
    (
        "glob-never-matches",
        "abcdefghijklmnop*",
        "'abcdefghijklmnop*' matches only names longer than the kernel's 15 bytes; "
        "shorten it so it can match an interface",
    ),
    (
        "glob-too-long",
        "[ab]" * 70,
        f"{shown('[ab]' * 70)} is 280 bytes; a glob for interface names needs at most 256",
    ),
    (
        "huge-name",
        "x" * 100_000,
        f"{shown('x' * 100_000)} cannot be an interface name; use 1-15 characters without '/' or spaces",
    ),
]


@pytest.mark.parametrize(("name", "expected"), [c[1:] for c in IFNAMES], ids=[c[0] for c in IFNAMES])
def test_interface_names_the_kernel_or_nft_cannot_take_are_refused(name: str, expected: str) -> None:
    assert problems(one(match={"name": name})) == (f"uplinks.a.match.name: {expected}",)


@pytest.mark.parametrize(
    "name",
    ["ä" * 7, "a" * 15, "wwan*", "enx" + "[0-9a-f]" * 12, "lte?", "a'b", "a#b", "ppp-isp.1", "eth[!0]*"],
)
def test_interface_names_the_kernel_and_nft_take_are_accepted(name: str) -> None:
    assert parse(one(match={"name": name})).uplinks["a"].match.name == name


def test_kernel_names_that_break_the_nft_table_are_named_for_the_planner() -> None:
    """What `problem` says about names only the kernel can produce (not a config glob)."""
    assert problem("wwan*") == "'wwan*' ends in '*', which nft reads as a wildcard; rename the interface"
    assert problem('lte"1') is not None and problem("lte1") is None
    assert glob_problem("wwan*") is None


# --- pathological files, through every path that reads a config --------------------------------


def _deep_json(p: Path) -> None:
    p.write_text('{"a":' * 100_000 + "1" + "}" * 100_000)


def _deep_toml(p: Path) -> None:
    p.write_text("a = " + "[" * 100_000 + "]" * 100_000)


def _deep_but_parseable(p: Path) -> None:
    p.write_text('{"uplinks": {"a": {"match": {"name": ' + "[" * 500 + "]" * 500 + "}}}}")


def _big_int_json(p: Path) -> None:
    p.write_text('{"uplinks": {}, "balance": {"table": ' + "9" * 5000 + "}}")


def _big_int_toml(p: Path) -> None:
    p.write_text("[balance]\ntable = " + "9" * 5000 + "\n")


def _big_hex_toml(p: Path) -> None:
    p.write_text("[kernel]\nmark_mask = 0x" + "f" * 5000 + "\n")


def _garbage(p: Path) -> None:
    p.write_bytes(bytes(range(256)) * 8)


def _not_utf8(p: Path) -> None:
    p.write_bytes(b'{"uplinks": {"caf\xe9": {}}}')


def _surrogate(p: Path) -> None:
    p.write_text('{"uplinks": {"a": {"match": {"name": "\\ud800"}, "table": 101}}}')


def _nul(p: Path) -> None:
    p.write_text('{"uplinks": {"a": {"match": {"name": "eth\\u0000"}, "table": 101}}}')


def _huge(p: Path) -> None:
    with p.open("wb") as f:
        f.write(b'{"uplinks": {}, "x": "' + b"x" * (2 << 20) + b'"}')


def _wide(p: Path) -> None:  # under the size cap, but half a million values to walk
    p.write_text('{"uplinks": {}, "x": [' + ",".join(["1"] * 500_000) + "]}")


def _directory(p: Path) -> None:
    p.mkdir()


def _fifo(p: Path) -> None:
    os.mkfifo(p)


def _dev_zero(p: Path) -> None:
    p.symlink_to("/dev/zero")


FILES: list[tuple[str, str, Callable[[Path], None], str]] = [
    ("deep-json", "c.json", _deep_json, "not valid JSON (nested too deeply)"),
    ("deep-toml", "c.toml", _deep_toml, "not valid TOML (nested too deeply)"),
    ("deep-parseable", "c.json", _deep_but_parseable, "nested more than 16 levels deep"),
    ("big-int-json", "c.json", _big_int_json, "(4300 digits)"),
    ("big-int-toml", "c.toml", _big_int_toml, "(4300 digits)"),
    ("big-hex-toml", "c.toml", _big_hex_toml, "kernel.mark_mask: a 20000-bit number is not a 32-bit mask"),
    ("garbage", "c.json", _garbage, "not UTF-8 text"),
    ("not-utf8", "c.json", _not_utf8, "not UTF-8 text"),
    ("surrogate", "c.json", _surrogate, "uplinks.a.match.name: text that is not valid Unicode"),
    ("nul", "c.json", _nul, "uplinks.a.match.name: text with a NUL character; remove it"),
    ("huge", "c.json", _huge, "larger than 1 MiB"),
    ("wide", "c.json", _wide, "more than 50000 values; a config has a few hundred"),
    ("directory", "c.json", _directory, "cannot read (Is a directory)"),
    ("fifo", "c.json", _fifo, "is a FIFO; give a JSON or TOML file"),
    ("dev-zero", "c.json", _dev_zero, "is a character device; give a JSON or TOML file"),
]


@pytest.fixture(params=FILES, ids=[f[0] for f in FILES])
def bad_file(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    _, name, make, expected = request.param
    path = tmp_path / name
    make(path)
    return path, expected


def test_load_turns_every_pathological_file_into_a_config_error(bad_file: tuple[Path, str]) -> None:
    path, expected = bad_file
    with pytest.raises(ConfigError) as err:
        load(path)
    assert any(expected in line for line in err.value.problems), err.value.problems
    assert all(len(line) < 400 for line in err.value.problems), "a hostile value flooded the message"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip


def test_uplinkctl_check_exits_2_with_the_problem_and_no_traceback(bad_file: tuple[Path, str]) -> None:
    path, expected = bad_file
    run = _run("-m", "uplinkd.cli", "check", str(path))
    assert run.returncode == 2, run.stderr
    assert expected in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_plan_config_exits_2_before_touching_the_kernel(
    bad_file: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, expected = bad_file
    assert cli.main(["plan", "--config", str(path)]) == cli.EXIT_USAGE
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize("which", ["deep-json", "big-int-toml", "fifo"])
def test_the_daemon_refuses_to_start_on_a_pathological_file(which: str, tmp_path: Path) -> None:
    _, name, make, expected = next(f for f in FILES if f[0] == which)
    path = tmp_path / name
    make(path)
    run = _run("-m", "uplinkd.daemon", "--config", str(path))
    assert run.returncode == 2, run.stderr
    assert f"{path} is invalid" in run.stderr and expected in run.stderr
    assert "Traceback" not in run.stderr


# --- control requests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply; send a flat JSON object per line"),
        (b'{"command": "status", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b'{"command": "explain", "dst": "10.0.0.1", "mark": ' + b"9" * 5000 + b"}", "(4300 digits)"),
        (b'{"command": ' + b"[" * 900 + b"]" * 900 + b"}", "command: [[[[...]]]] is unknown"),
        (b'{"command": "drain", "uplink": ' + b"[" * 900 + b"]" * 900 + b"}", "drain.uplink: [[[[...]]]]"),
    ],
    ids=["deep", "deep-inside", "huge-int", "deep-command", "deep-field"],
)
def test_pathological_requests_get_a_clear_error(line: bytes, expected: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_request(line)
    assert expected in str(err.value) and len(str(err.value)) < 300, str(err.value)[:500]
