"""The control socket's request parser: every command, and bad requests that name the field and fix."""

from __future__ import annotations

import ipaddress
import json

import pytest

from uplinkd import control
from uplinkd.control import BadRequest, parse_request

COMMANDS = "use one of status, plan, drain, undrain, flush, resume, reload, explain"


GOOD: list[tuple[str, bytes, type, dict[str, object]]] = [
    ("status", b'{"command": "status"}', control.Status, {"command": "status"}),
    ("status-newline", b'{"command": "status"}\n', control.Status, {"command": "status"}),
    ("plan", b'{"command": "plan"}', control.PlanReq, {"command": "plan"}),
    (
        "drain",
        b'{"command": "drain", "uplink": "lte1"}',
        control.Drain,
        {"command": "drain", "uplink": "lte1"},
    ),
    (
        "undrain",
        b'{"command": "undrain", "uplink": "lte1"}',
        control.Drain,
        {"command": "undrain", "uplink": "lte1"},
    ),
    ("flush", b'{"command": "flush"}', control.Flush, {"command": "flush"}),
    ("resume", b'{"command": "resume"}', control.Resume, {"command": "resume"}),
    ("reload", b'{"command": "reload"}', control.Reload, {"command": "reload"}),
    (
        "explain-minimal",
        b'{"command": "explain", "dst": "198.51.100.7"}',
        control.Explain,
        {"command": "explain", "dst": ipaddress.ip_address("198.51.100.7"), "src": None, "mark": None},
    ),
    (
        "explain-full",
        json.dumps(
            {
                "command": "explain",
                "dst": "2001:db8::7",
                "src": "2001:db8:1::10",
                "iif": "lan0",
                "mark": 0x6500,
                "ipproto": "tcp",
                "sport": 40000,
                "dport": 443,
            }
        ).encode(),
        control.Explain,
        {
            "dst": ipaddress.ip_address("2001:db8::7"),
            "src": ipaddress.ip_address("2001:db8:1::10"),
            "iif": "lan0",
            "mark": 0x6500,
            "ipproto": "tcp",
            "sport": 40000,
            "dport": 443,
        },
    ),
    (
        "explain-mark-bounds",
        b'{"command": "explain", "dst": "10.0.0.1", "mark": 4294967295, "sport": 1, "dport": 65535}',
        control.Explain,
        {"mark": 0xFFFFFFFF, "sport": 1, "dport": 65535},
    ),
]


@pytest.mark.parametrize(("line", "kind", "fields"), [c[1:] for c in GOOD], ids=[c[0] for c in GOOD])
def test_good_request(line: bytes, kind: type, fields: dict[str, object]) -> None:
    req = parse_request(line)
    assert type(req) is kind
    for name, value in fields.items():
        assert getattr(req, name) == value, name


def test_every_command_has_a_request() -> None:
    for command in control.COMMANDS:
        extra = {"uplink": "x"} if command in ("drain", "undrain") else {}
        extra |= {"dst": "10.0.0.1"} if command == "explain" else {}
        assert parse_request(json.dumps({"command": command, **extra}).encode()).command == command


BAD: list[tuple[str, bytes, str]] = [
    (
        "not-json",
        b"status",
        "not JSON (Expecting value: line 1 column 1 (char 0)); send one JSON object per line",
    ),
    ("empty", b"", "not JSON (Expecting value: line 1 column 1 (char 0)); send one JSON object per line"),
    (
        "truncated",
        b'{"command": "sta',
        "not JSON (Unterminated string starting at: line 1 column 13 (char 12)); "
        "send one JSON object per line",
    ),
    ("list", b'["status"]', 'send a JSON object, e.g. {"command": "status"}'),
    ("string", b'"status"', 'send a JSON object, e.g. {"command": "status"}'),
    ("null", b"null", 'send a JSON object, e.g. {"command": "status"}'),
    ("missing-command", b"{}", f"command: is required; {COMMANDS}"),
    ("missing-command-with-fields", b'{"uplink": "a"}', f"command: is required; {COMMANDS}"),
    ("unknown-command", b'{"command": "frob"}', f"command: 'frob' is unknown; {COMMANDS}"),
    ("command-not-string", b'{"command": ["status"]}', f"command: ['status'] is unknown; {COMMANDS}"),
    ("command-null", b'{"command": null}', f"command: None is unknown; {COMMANDS}"),
    ("drain-without-uplink", b'{"command": "drain"}', "drain.uplink: is required; add it"),
    ("undrain-without-uplink", b'{"command": "undrain"}', "undrain.uplink: is required; add it"),
    ("drain-uplink-not-string", b'{"command": "drain", "uplink": 3}', "drain.uplink: 3: expected a string"),
    ("explain-without-dst", b'{"command": "explain"}', "explain.dst: is required; add it"),
    (
        "explain-bad-dst",
        b'{"command": "explain", "dst": "1.2.3"}',
        "explain.dst: '1.2.3': expected an IPv4 address, e.g. \"10.64.0.1\"; "
        "explain.dst: '1.2.3': expected an IPv6 address, e.g. \"2001:db8::1\"",
    ),
    (
        "explain-bad-src",
        b'{"command": "explain", "dst": "10.0.0.1", "src": "lan"}',
        "explain.src: 'lan': expected an IPv4 address, e.g. \"10.64.0.1\"; "
        "explain.src: 'lan': expected an IPv6 address, e.g. \"2001:db8::1\"",
    ),
    (
        "explain-mark-negative",
        b'{"command": "explain", "dst": "10.0.0.1", "mark": -1}',
        "explain.mark: Input should be greater than or equal to 0",
    ),
    (
        "explain-mark-33-bits",
        b'{"command": "explain", "dst": "10.0.0.1", "mark": 4294967296}',
        "explain.mark: Input should be less than or equal to 4294967295",
    ),
    (
        "explain-mark-not-number",
        b'{"command": "explain", "dst": "10.0.0.1", "mark": "x"}',
        "explain.mark: 'x': expected a whole number",
    ),
    (
        "explain-bad-ipproto",
        b'{"command": "explain", "dst": "10.0.0.1", "ipproto": "sctp"}',
        "explain.ipproto: 'sctp' is not allowed; use 'tcp', 'udp' or 'icmp'",
    ),
    (
        "explain-port-0",
        b'{"command": "explain", "dst": "10.0.0.1", "dport": 0}',
        "explain.dport: Input should be greater than or equal to 1",
    ),
    (
        "explain-port-65536",
        b'{"command": "explain", "dst": "10.0.0.1", "sport": 65536}',
        "explain.sport: Input should be less than or equal to 65535",
    ),
    (
        "unknown-field",
        b'{"command": "status", "verbose": true}',
        "status.verbose: unknown key; remove it or check its spelling",
    ),
    (
        "unknown-field-explain",
        b'{"command": "explain", "dst": "10.0.0.1", "to": "x"}',
        "explain.to: unknown key; remove it or check its spelling",
    ),
    (
        "two-problems",
        b'{"command": "drain", "uplnk": "a"}',
        "drain.uplink: is required; add it; drain.uplnk: unknown key; remove it or check its spelling",
    ),
]


@pytest.mark.parametrize(("line", "message"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_request(line: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_request(line)
    assert str(err.value) == message


def test_non_utf8_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match=r"^not JSON \(.*\); send one JSON object per line$"):
        parse_request(b'{"command": "\xff"}')


@pytest.mark.parametrize(
    ("ok", "result", "error", "body"),
    [
        (True, {"a": 1}, None, {"ok": True, "result": {"a": 1}}),
        (True, ipaddress.ip_address("10.0.0.1"), None, {"ok": True, "result": "10.0.0.1"}),
        (
            False,
            None,
            "drain.uplink: is required; add it",
            {"ok": False, "error": "drain.uplink: is required; add it"},
        ),
    ],
    ids=["ok", "ok-non-json-value", "error"],
)
def test_reply_is_one_json_line(ok: bool, result: object, error: str | None, body: dict[str, object]) -> None:
    line = control.reply(ok, result, error)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == body
