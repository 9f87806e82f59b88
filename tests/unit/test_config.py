"""Config validation: good configs, every error message, file loading, schema and `uplinkctl check`."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from uplinkd import config as cfgmod
from uplinkd.config import ConfigError, load, parse, schema

from examples import ISSUE_EXAMPLE

ISSUE_TOML = """
[uplinks.wan]
table = 101
weight = 3
match = { name = "eth1" }
address = { mode = "external" }

[uplinks.lte1]
table = 102
match = { usb = { vendor = "12d1", product = "14db" } }
address = { mode = "dhcp" }

[uplinks.lte2]
table = 103
match = { name = "wwan*", driver = ["qmi_wwan", "cdc_mbim"] }
address = { mode = "static", cidr = "10.64.0.2/30" }

[balance]
table = 200
last_resort = "carrier"

[rules]
priority = 10000
"""


def up(name: str = "eth1", table: int = 101, **fields: Any) -> dict[str, Any]:
    """One uplink's config section, matched by interface name."""
    return {"match": {"name": name}, "table": table, **fields}


def one(**fields: Any) -> dict[str, Any]:
    """A config with a single uplink `a` (eth1, table 101) plus the given fields."""
    return {"uplinks": {"a": up(**fields)}}


def problems(data: dict[str, Any]) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as err:
        parse(data)
    return err.value.problems


# --- good configs ------------------------------------------------------------------------------


def test_issue_example_is_valid() -> None:
    c = parse(ISSUE_EXAMPLE)
    assert list(c.uplinks) == ["wan", "lte1", "lte2"]
    wan, lte1, lte2 = c.uplinks["wan"], c.uplinks["lte1"], c.uplinks["lte2"]
    assert (wan.table, wan.weight, wan.address.mode) == (101, 3, "external")
    assert (lte1.table, lte1.weight, lte1.address.mode) == (102, 1, "dhcp")
    assert lte1.match.usb is not None
    assert (lte1.match.usb.vendor, lte1.match.usb.product, lte1.match.usb.serial) == ("12d1", "14db", None)
    assert lte2.match.driver == ("qmi_wwan", "cdc_mbim")
    assert lte2.match.name == "wwan*" and not lte2.match.is_exact_name
    assert wan.match.is_exact_name
    assert lte2.address.mode == "static"
    assert lte2.address.cidr == ipaddress.IPv4Interface("10.64.0.2/30")
    assert lte2.address.gateway is None
    assert lte2.weight == 1
    assert (c.balance.table, c.balance.last_resort, c.rules.priority) == (200, "carrier", 10000)
    assert [c.mark_of(n) for n in c.uplinks] == [0x6500, 0x6600, 0x6700]


def test_minimal_config_has_defaults() -> None:
    c = parse({})
    assert c.uplinks == {}
    assert c.balance.table == 200
    assert c.balance.last_resort == "carrier"
    assert c.balance.buckets == 512
    assert c.rules.priority == 10000
    assert c.kernel.protocol == 77
    assert c.kernel.mark_mask == 0xFF00
    assert c.kernel.nft_table == "uplinkd"
    assert c.control.resync_interval == 30.0


@pytest.mark.parametrize(
    ("mask", "expected"),
    [("0xff00", 0xFF00), ("0XFF0000", 0xFF0000), ("65280", 0xFF00), (0xF000, 0xF000), ("0b1111", 0xF)],
    ids=["hex", "hex-upper", "decimal-string", "int", "binary-string"],
)
def test_mark_mask_accepts_numbers_and_hex_strings(mask: object, expected: int) -> None:
    assert parse({"kernel": {"mark_mask": mask}}).kernel.mark_mask == expected


@pytest.mark.parametrize(
    ("data", "uplink", "mark"),
    [
        (one(), "a", 101 << 8),
        (one(table=357), "a", 101 << 8),
        (one(table=1), "a", 1 << 8),
        (one(mark=7), "a", 7 << 8),
        ({**one(), "kernel": {"mark_mask": "0xff0000"}}, "a", 101 << 16),
        ({**one(mark=3), "kernel": {"mark_mask": "0xf000"}}, "a", 3 << 12),
        ({**one(table=300), "kernel": {"mark_mask": "0xff"}}, "a", 44),
    ],
    ids=["table-101", "table-357-mod-256", "table-1", "explicit", "mask-ff0000", "mask-f000", "mask-ff"],
)
def test_mark_of_is_table_mod_256_shifted_under_the_mask(
    data: dict[str, Any], uplink: str, mark: int
) -> None:
    assert parse(data).mark_of(uplink) == mark


def test_top_level_probe_is_every_uplinks_default_and_uplink_wins() -> None:
    c = parse(
        {
            "probe": {"targets": ["192.0.2.1", "192.0.2.2"], "interval": 5},
            "uplinks": {"a": up(), "b": up("eth2", 102, probe={"interval": 7, "profile": "fast"})},
        }
    )
    a, b = c.uplinks["a"].probe, c.uplinks["b"].probe
    assert a.targets == b.targets == ("192.0.2.1", "192.0.2.2")
    assert (a.interval, b.interval) == (5.0, 7.0)
    assert b.fast_interval == cfgmod.PROFILES["fast"]["fast_interval"]
    assert a.fast_interval == cfgmod.PROFILES["default"]["fast_interval"]


@pytest.mark.parametrize("table", [1, 100, 252, 256, 257, 16777215], ids=lambda t: f"table-{t}")
def test_table_bounds_accepted(table: int) -> None:
    # 256 has default mark 0, so give it an explicit mark.
    assert parse(one(table=table, mark=9)).uplinks["a"].table == table


@pytest.mark.parametrize("weight", [1, 256], ids=["min", "max"])
def test_weight_bounds_accepted(weight: int) -> None:
    assert parse(one(weight=weight)).uplinks["a"].weight == weight


def test_usb_ids_are_normalised_to_lowercase_without_0x() -> None:
    c = parse(one(match={"usb": {"vendor": "0x12D1", "product": "14DB"}}))
    usb = c.uplinks["a"].match.usb
    assert usb is not None and (usb.vendor, usb.product) == ("12d1", "14db")


def test_single_driver_string_becomes_a_tuple() -> None:
    assert parse(one(match={"driver": "cdc_ether"})).uplinks["a"].match.driver == ("cdc_ether",)


def test_glob_names_may_overlap() -> None:
    c = parse({"uplinks": {"a": up("wwan*"), "b": up("wwan*", 102)}})
    assert list(c.uplinks) == ["a", "b"]


# --- bad configs: one problem, exact text --------------------------------------------------------

RESERVED = "is the kernel's '{}' table; pick another number, e.g. 100-252"
TABLE_RANGE = "is out of range; use a table id from 1 to 16777215"
WEIGHT = "is out of range; use a whole number from 1 to 256"
IFNAME = "cannot be an interface name; use 1-15 characters without '/' or spaces"
MODES = "use one of 'external', 'static', 'dhcp', 'modem'"

BAD: list[tuple[str, dict[str, Any], str]] = [
    ("unknown-top", {"bogus": 1}, "bogus: unknown key; remove it or check its spelling"),
    (
        "unknown-nested-match",
        one(match={"name": "eth1", "nam": "x"}),
        "uplinks.a.match.nam: unknown key; remove it or check its spelling",
    ),
    ("unknown-uplink-key", one(wieght=2), "uplinks.a.wieght: unknown key; remove it or check its spelling"),
    (
        "unknown-balance-key",
        {"balance": {"tabel": 3}},
        "balance.tabel: unknown key; remove it or check its spelling",
    ),
    ("missing-table", {"uplinks": {"a": {"match": {"name": "x"}}}}, "uplinks.a.table: is required; add it"),
    ("missing-match", {"uplinks": {"a": {"table": 101}}}, "uplinks.a.match: is required; add it"),
    ("weight-0", one(weight=0), f"uplinks.a.weight: 0 {WEIGHT}"),
    ("weight-257", one(weight=257), f"uplinks.a.weight: 257 {WEIGHT}"),
    ("weight-not-int", one(weight="x"), "uplinks.a.weight: 'x': expected a whole number"),
    ("table-0", one(table=0), f"uplinks.a.table: 0 {RESERVED.format('unspec')}"),
    ("table-253", one(table=253), f"uplinks.a.table: 253 {RESERVED.format('default')}"),
    ("table-254", one(table=254), f"uplinks.a.table: 254 {RESERVED.format('main')}"),
    ("table-255", one(table=255), f"uplinks.a.table: 255 {RESERVED.format('local')}"),
    ("table-2^24", one(table=16777216), f"uplinks.a.table: 16777216 {TABLE_RANGE}"),
    ("table-negative", one(table=-1), f"uplinks.a.table: -1 {TABLE_RANGE}"),
    ("balance-table-main", {"balance": {"table": 254}}, f"balance.table: 254 {RESERVED.format('main')}"),
    (
        "duplicate-table-balance",
        one(table=200, mark=5),
        "uplinks.a.table: 200 is already used by balance.table; "
        "give every uplink and the balance table its own table id",
    ),
    (
        "duplicate-mark-explicit",
        {"uplinks": {"a": up(mark=5), "b": up("eth2", 102, mark=5)}},
        "uplinks.b.mark: 5 is already used by uplinks.a; set uplinks.b.mark to a free value from 1 to 255",
    ),
    (
        "duplicate-mark-default",
        {"uplinks": {"a": up(), "b": up("eth2", 357)}},
        "uplinks.b.mark (default: table mod 256): 101 is already used by uplinks.a; "
        "set uplinks.b.mark to a free value from 1 to 255",
    ),
    (
        "duplicate-mark-explicit-vs-default",
        {"uplinks": {"a": up(), "b": up("eth2", 102, mark=101)}},
        "uplinks.b.mark: 101 is already used by uplinks.a; set uplinks.b.mark to a free value from 1 to 255",
    ),
    (
        "mark-256",
        one(mark=256),
        "uplinks.a.mark: 256 does not fit kernel.mark_mask 0xff00; "
        "set uplinks.a.mark to a value from 1 to 255",
    ),
    (
        "mark-0",
        one(mark=0),
        "uplinks.a.mark: 0 does not fit kernel.mark_mask 0xff00; set uplinks.a.mark to a value from 1 to 255",
    ),
    (
        "mark-default-0",
        one(table=512),
        "uplinks.a.mark (default: table mod 256): 0 does not fit kernel.mark_mask 0xff00; "
        "set uplinks.a.mark to a value from 1 to 255",
    ),
    (
        "mark-default-too-big-for-small-mask",
        {**one(), "kernel": {"mark_mask": "0xf000"}},
        "uplinks.a.mark (default: table mod 256): 101 does not fit kernel.mark_mask 0xf000; "
        "set uplinks.a.mark to a value from 1 to 15",
    ),
    (
        "exact-name-collision",
        {"uplinks": {"a": up(), "b": up("eth1", 102)}},
        "uplinks.b.match.name: 'eth1' is also matched by uplinks.a; each interface can be only one uplink",
    ),
    (
        "empty-match",
        one(match={}),
        "uplinks.a.match: matches nothing; give at least one of name, driver, usb, path",
    ),
    (
        "empty-driver-list",
        one(match={"driver": []}),
        "uplinks.a.match: matches nothing; give at least one of name, driver, usb, path",
    ),
    (
        "empty-usb",
        one(match={"usb": {}}),
        "uplinks.a.match.usb: matches every USB device; give at least one of vendor, product, serial",
    ),
    (
        "usb-vendor-3-digits",
        one(match={"usb": {"vendor": "12d"}}),
        "uplinks.a.match.usb.vendor: '12d' is not a USB vendor id; write four hex digits, e.g. \"12d1\"",
    ),
    (
        "usb-product-not-hex",
        one(match={"usb": {"product": "xyzw"}}),
        "uplinks.a.match.usb.product: 'xyzw' is not a USB product id; write four hex digits, e.g. \"12d1\"",
    ),
    (
        "usb-vendor-5-digits",
        one(match={"usb": {"vendor": "12d1a"}}),
        "uplinks.a.match.usb.vendor: '12d1a' is not a USB vendor id; write four hex digits, e.g. \"12d1\"",
    ),
    (
        "ifname-too-long",
        one(match={"name": "abcdefghijklmnop"}),
        f"uplinks.a.match.name: 'abcdefghijklmnop' {IFNAME}",
    ),
    ("ifname-slash", one(match={"name": "a/b"}), f"uplinks.a.match.name: 'a/b' {IFNAME}"),
    ("ifname-space", one(match={"name": "a b"}), f"uplinks.a.match.name: 'a b' {IFNAME}"),
    ("ifname-empty", one(match={"name": ""}), f"uplinks.a.match.name: '' {IFNAME}"),
    ("unknown-mode", one(address={"mode": "ppp"}), f"uplinks.a.address: 'ppp' is not a mode; {MODES}"),
    (
        "missing-mode",
        one(address={"cidr": "10.0.0.1/24"}),
        f"uplinks.a.address: {{'cidr': '10.0.0.1/24'}}: needs a 'mode'; {MODES}",
    ),
    (
        "static-gateway-outside-subnet",
        one(address={"mode": "static", "cidr": "10.64.0.2/30", "gateway": "10.64.0.9"}),
        "uplinks.a.address.gateway: 10.64.0.9 is outside 10.64.0.0/30; "
        "use a gateway inside the uplink's subnet, or null for point-to-point",
    ),
    (
        "static-bad-cidr",
        one(address={"mode": "static", "cidr": "10.64.0.300/30"}),
        "uplinks.a.address.cidr: '10.64.0.300/30': "
        'expected an IPv4 address with prefix, e.g. "10.64.0.2/30"',
    ),
    (
        "static-missing-cidr",
        one(address={"mode": "static"}),
        "uplinks.a.address.cidr: missing; a static uplink that carries IPv4 needs its IPv4 address, "
        'e.g. "10.64.0.2/30" (or set families = ["ipv6"] for an IPv6-only uplink)',
    ),
    (
        "modem-asked-for-what-it-does-not-carry",
        one(address={"mode": "modem", "ip_type": "ipv4"}, families=["ipv6"]),
        "uplinks.a.address.ip_type: 'ipv4' asks the modem for the one family this uplink does not carry "
        "(families: ipv6); ask for 'ipv6' or 'ipv4v6'",
    ),
    (
        "families-empty",
        one(families=[]),
        'uplinks.a.families: [] carries nothing; list "ipv4", "ipv6" or both',
    ),
    (
        "families-twice",
        one(families=["ipv6", "ipv6"]),
        "uplinks.a.families: 'ipv6' is listed twice; list each family once",
    ),
    (
        "families-unknown",
        one(families=["ip6"]),
        "uplinks.a.families.0: 'ip6' is not allowed; use 'ipv4' or 'ipv6'",
    ),
    (
        "ipv6-only-static-with-ipv4",
        one(address={"mode": "static", "cidr": "10.0.0.2/24", "cidr6": "2001:db8::2/64"}, families=["ipv6"]),
        'uplinks.a.address.cidr: an IPv4 address on an uplink whose families leave out "ipv4"; '
        'remove cidr and gateway, or add "ipv4" to families',
    ),
    (
        "ipv6-only-static-without-cidr6",
        one(address={"mode": "static"}, families=["ipv6"]),
        "uplinks.a.address.cidr6: missing; a static IPv6-only uplink needs its IPv6 address, "
        'e.g. "2001:db8::2/64"',
    ),
    (
        "ipv4-only-static-with-cidr6",
        one(address={"mode": "static", "cidr": "10.0.0.2/24", "cidr6": "2001:db8::2/64"}, families=["ipv4"]),
        'uplinks.a.address.cidr6: an IPv6 address on an uplink whose families leave out "ipv6"; '
        'remove cidr6 and gateway6, or add "ipv6" to families',
    ),
    (
        "static-gateway-without-cidr",
        one(address={"mode": "static", "gateway": "10.0.0.1", "cidr6": "2001:db8::2/64"}, families=["ipv6"]),
        "uplinks.a.address.gateway: 10.0.0.1 is given without cidr; give the uplink's IPv4 address in cidr "
        "too, or remove gateway",
    ),
    (
        "ipv6-only-probed-on-ipv4",
        one(address={"mode": "dhcp"}, families=["ipv6"], probe={"targets": ["192.0.2.1"]}),
        "uplinks.a.probe.targets: none is an IPv6 address, and this uplink carries only ipv6 (families); "
        "add an IPv6 target (the top-level probe's targets are an uplink's unless it names its own)",
    ),
    (
        "extend-over-ipv4-only",
        {
            **one(address={"mode": "dhcp"}, families=["ipv4"]),
            "lan": {"lan0": {"ipv6": {"mode": "extend", "uplink": "a"}}},
        },
        "lan.lan0.ipv6.uplink: 'a' carries no IPv6 (its families leave out \"ipv6\"); name an uplink "
        'that carries IPv6, or add "ipv6" to uplinks.a.families',
    ),
    (
        "translate-over-ipv4-only",
        {
            **one(address={"mode": "dhcp"}, families=["ipv4"]),
            "lan": {"lan0": {"ipv6": {"mode": "translate", "prefix": "2001:db8:ff::/64", "uplinks": ["a"]}}},
        },
        "lan.lan0.ipv6.uplinks: 'a' carries no IPv6 (its families leave out \"ipv6\"); remove it, "
        'or add "ipv6" to uplinks.a.families',
    ),
    (
        "static-bad-gateway",
        one(address={"mode": "static", "cidr": "10.64.0.2/30", "gateway": "x"}),
        "uplinks.a.address.gateway: 'x': expected an IPv4 address, e.g. \"10.64.0.1\"",
    ),
    (
        "static-bad-cidr6",
        one(address={"mode": "static", "cidr": "10.64.0.2/30", "cidr6": "10.0.0.1/8"}),
        "uplinks.a.address.cidr6: '10.0.0.1/8': "
        'expected an IPv6 address with prefix, e.g. "2001:db8::2/64"',
    ),
    (
        "rules-priority-0",
        {"rules": {"priority": 0}},
        "rules.priority: 0 is out of range; use 1 to 32726 so the band (base .. base+30) "
        "stays below main's rule at 32766",
    ),
    (
        "rules-priority-too-high",
        {"rules": {"priority": 32727}},
        "rules.priority: 32727 is out of range; use 1 to 32726 so the band (base .. base+30) "
        "stays below main's rule at 32766",
    ),
    (
        "protocol-4",
        {"kernel": {"protocol": 4}},
        "kernel.protocol: 4 is out of range; use 5-254, a number no routing daemon here uses (default 77)",
    ),
    (
        "protocol-255",
        {"kernel": {"protocol": 255}},
        "kernel.protocol: 255 is out of range; use 5-254, a number no routing daemon here uses (default 77)",
    ),
    (
        "mask-not-contiguous",
        {"kernel": {"mark_mask": "0xf0f0"}},
        "kernel.mark_mask: 0xf0f0 is not one run of bits; use contiguous bits, e.g. 0xff00",
    ),
    (
        "mask-zero",
        {"kernel": {"mark_mask": 0}},
        "kernel.mark_mask: 0x0 is not a 32-bit mask; use e.g. 0xff00",
    ),
    (
        "mask-33-bits",
        {"kernel": {"mark_mask": "0x1ff000000"}},
        "kernel.mark_mask: 0x1ff000000 is not a 32-bit mask; use e.g. 0xff00",
    ),
    (
        "mask-not-a-number",
        {"kernel": {"mark_mask": "zz"}},
        "kernel.mark_mask: 'zz' is not a number; write e.g. 65280 or \"0xff00\"",
    ),
    (
        "nexthop-base-0",
        {"kernel": {"nexthop_base": 0}},
        "kernel.nexthop_base: 0 is out of range; use 1 to 4261412863",
    ),
    (
        "nft-table-leading-digit",
        {"kernel": {"nft_table": "1bad"}},
        "kernel.nft_table: '1bad' is not an nftables table name; use letters, digits, _",
    ),
    (
        "nft-table-dash",
        {"kernel": {"nft_table": "up-linkd"}},
        "kernel.nft_table: 'up-linkd' is not an nftables table name; use letters, digits, _",
    ),
    (
        "uplink-name-leading-digit",
        {"uplinks": {"1wan": up()}},
        "uplinks: uplink name '1wan' is not usable; "
        "use a letter then letters, digits, '-' or '_' (at most 32)",
    ),
    (
        "uplink-name-dot",
        {"uplinks": {"w.an": up()}},
        "uplinks: uplink name 'w.an' is not usable; "
        "use a letter then letters, digits, '-' or '_' (at most 32)",
    ),
    (
        "resync-too-small",
        {"control": {"resync_interval": 0.5}},
        "control.resync_interval: 0.5 is out of range; use 1 to 3600 seconds",
    ),
    (
        "resync-too-big",
        {"control": {"resync_interval": 3601}},
        "control.resync_interval: 3601.0 is out of range; use 1 to 3600 seconds",
    ),
    (
        "buckets-15",
        {"balance": {"buckets": 15}},
        "balance.buckets: 15 is out of range; use 16 to 4096 buckets (512 is a good default)",
    ),
    (
        "buckets-4097",
        {"balance": {"buckets": 4097}},
        "balance.buckets: 4097 is out of range; use 16 to 4096 buckets (512 is a good default)",
    ),
    (
        "idle-timer-negative",
        {"balance": {"idle_timer": -1}},
        "balance.idle_timer: -1.0 is out of range; use 0 to 3600 seconds",
    ),
    (
        "unbalanced-timer-too-big",
        {"balance": {"unbalanced_timer": 3601}},
        "balance.unbalanced_timer: 3601.0 is out of range; use 0 to 3600 seconds",
    ),
    (
        "last-resort-unknown",
        {"balance": {"last_resort": "main"}},
        "balance.last_resort: 'main' is not allowed; use 'carrier' or 'unreachable'",
    ),
    (
        "probe-interval-too-small",
        {"probe": {"interval": 0.01}},
        "probe.interval: 0.01 is out of range; use 0.05 to 3600 seconds",
    ),
    (
        "probe-timeout-too-big",
        one(probe={"timeout": 61}),
        "uplinks.a.probe.timeout: 61.0 is out of range; use 0.01 to 60 seconds",
    ),
    (
        "probe-down-after-0",
        one(probe={"down_after": 0}),
        "uplinks.a.probe.down_after: 0 is out of range; use 1 to 100",
    ),
    (
        "probe-method-unknown",
        one(probe={"method": "http"}),
        "uplinks.a.probe.method: 'http' is not allowed; use 'icmp', 'tcp' or 'dns'",
    ),
    (
        "probe-quorum-above-targets",
        one(probe={"targets": ["192.0.2.1"], "quorum": 2}),
        "uplinks.a.probe.quorum: 2 is more than the 1 targets; use 1 to 1",
    ),
    (
        "probe-target-not-ip",
        one(probe={"targets": ["nope"]}),
        "uplinks.a.probe.targets: 'nope' is not an IP address; write e.g. \"198.51.100.1\"",
    ),
    (
        "probe-tcp-target-without-port",
        one(probe={"method": "tcp", "targets": ["192.0.2.1"]}),
        "uplinks.a.probe.targets: '192.0.2.1' needs a port for tcp; write e.g. \"198.51.100.1:443\"",
    ),
    (
        "probe-too-many-targets",
        one(probe={"targets": [f"192.0.2.{i}" for i in range(1, 18)]}),
        "uplinks.a.probe.targets: 17 targets; use at most 16",
    ),
    (
        "probe-degraded-weight-0",
        one(probe={"degraded_weight": 0}),
        "uplinks.a.probe.degraded_weight: 0.0 is out of range; use a factor above 0, at most 1",
    ),
    ("uplinks-not-object", {"uplinks": [1]}, "uplinks: [1]: expected a table/object"),
    ("uplink-not-object", {"uplinks": {"a": 3}}, "uplinks.a: 3: expected a table/object"),
]


@pytest.mark.parametrize(("data", "message"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_config_reports_field_and_fix(data: dict[str, Any], message: str) -> None:
    assert problems(data) == (message,)


def test_config_error_str_is_one_line_per_problem() -> None:
    err = ConfigError(["a: x", "b: y"])
    assert str(err) == "a: x\nb: y"
    assert err.problems == ("a: x", "b: y")


# --- several problems at once ---------------------------------------------------------------------


def test_field_problems_are_all_reported() -> None:
    data = {
        "uplinks": {"a": up(weight=0, table=0), "b": up("a/b", 102), "c": up("eth3", 103, match={})},
        "bogus": 1,
        "rules": {"priority": 0},
        "kernel": {"protocol": 1},
    }
    lines = problems(data)
    assert len(lines) == 7, lines
    assert {line.split(":")[0] for line in lines} == {
        "uplinks.a.table",
        "uplinks.a.weight",
        "uplinks.b.match.name",
        "uplinks.c.match",
        "bogus",
        "rules.priority",
        "kernel.protocol",
    }


def test_cross_check_problems_are_all_reported() -> None:
    data = {
        "uplinks": {
            "a": up(),
            "b": up("eth1", 101),  # same table, same default mark, same name as a
            "c": up("eth3", 200, mark=7),  # balance table
            "d": up("eth4", 104, mark=300),  # mark too big
        }
    }
    lines = problems(data)
    assert len(lines) == 5, lines
    assert lines[0].startswith("uplinks.b.table: 101 is already used by uplinks.a.table")
    assert lines[1].startswith("uplinks.b.mark (default: table mod 256): 101 is already used by uplinks.a")
    assert lines[2].startswith("uplinks.b.match.name: 'eth1' is also matched by uplinks.a")
    assert lines[3].startswith("uplinks.c.table: 200 is already used by balance.table")
    assert lines[4].startswith("uplinks.d.mark: 300 does not fit kernel.mark_mask 0xff00")


def test_bad_top_level_probe_is_reported_once_at_its_own_path() -> None:
    data = {"probe": {"interval": 0.01}, "uplinks": {"a": up(), "b": up("eth2", 102)}}
    assert problems(data) == ("probe.interval: 0.01 is out of range; use 0.05 to 3600 seconds",)


# --- files ---------------------------------------------------------------------------------------


def test_load_json_file(tmp_path: Path) -> None:
    path = tmp_path / "uplinkd.json"
    path.write_text(json.dumps(ISSUE_EXAMPLE))
    assert load(path) == parse(ISSUE_EXAMPLE)


def test_load_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "uplinkd.toml"
    path.write_text(ISSUE_TOML)
    assert load(path) == parse(ISSUE_EXAMPLE)


def test_load_file_without_suffix_is_json(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(json.dumps(ISSUE_EXAMPLE))
    assert load(path) == parse(ISSUE_EXAMPLE)


def test_load_reports_validation_problems(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[uplinks.a]\ntable = 254\nmatch = { name = "eth1" }\n')
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.problems == (f"uplinks.a.table: 254 {RESERVED.format('main')}",)


@pytest.mark.parametrize(
    ("name", "text", "start"),
    [
        ("c.json", "{nope", "not valid json (Expecting property name enclosed in double quotes: line 1"),
        ("c.json", "", "not valid json (Expecting value: line 1 column 1"),
        ("c", "uplinks = {}", "not valid JSON (Expecting value: line 1 column 1"),
        ("c.toml", "[uplinks\n", "not valid toml ("),
        ("c.toml", 'a = "x"\na = "y"\n', "not valid toml ("),
    ],
    ids=["json-syntax", "json-empty", "no-suffix-toml-text", "toml-syntax", "toml-duplicate-key"],
)
def test_load_unparsable_file(tmp_path: Path, name: str, text: str, start: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(path)
    (line,) = err.value.problems
    # The format name's case is not part of the contract ("json" today, "JSON" would do).
    assert line.lower().startswith(f"{path}: {start}".lower()), line


def test_load_unparsable_file_with_other_suffix_names_json(tmp_path: Path) -> None:
    path = tmp_path / "uplinkd.conf"
    path.write_text("{nope")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.problems[0].startswith(f"{path}: not valid JSON (")


def test_load_binary_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.problems[0].startswith(f"{path}: ")


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.problems == (f"{path}: cannot read (No such file or directory); check the path",)


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    assert err.value.problems == (f"{tmp_path}: cannot read (Is a directory); check the path",)


@pytest.mark.parametrize(
    "text", ["[1, 2]", '"uplinks"', "null", "3"], ids=["list", "string", "null", "number"]
)
def test_load_top_level_not_an_object(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.problems == (f"{path}: the top level must be an object with 'uplinks'",)


# --- schema ----------------------------------------------------------------------------------------


def test_schema_describes_uplinks() -> None:
    s = schema()
    assert s["type"] == "object"
    assert s["additionalProperties"] is False
    assert "uplinks" in s["properties"]
    assert {"Uplink", "Match", "UsbMatch", "StaticAddress", "DhcpAddress", "Balance"} <= set(s["$defs"])
    up_schema = s["$defs"]["Uplink"]
    assert up_schema["required"] == ["match", "table"]
    assert {"match", "address", "table", "weight", "mark", "probe"} <= set(up_schema["properties"])
    json.dumps(s)  # serialisable


# --- uplinkctl check / schema ------------------------------------------------------------------------


def uplinkctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "uplinkd.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_check_valid(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(ISSUE_EXAMPLE))
    r = uplinkctl("check", str(path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{path}: valid (3 uplinks)"


def test_cli_check_valid_toml(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(ISSUE_TOML)
    r = uplinkctl("check", str(path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{path}: valid (3 uplinks)"


def test_cli_check_invalid(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"uplinks": {"wan": up(weight=0)}, "bogus": 1}))
    r = uplinkctl("check", str(path))
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        f"{path}: invalid",
        f"  uplinks.wan.weight: 0 {WEIGHT}",
        "  bogus: unknown key; remove it or check its spelling",
    ]


def test_cli_check_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    r = uplinkctl("check", str(path))
    assert r.returncode == 2
    assert "cannot read (No such file or directory)" in r.stderr


def test_cli_check_binary_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(b"\xff\xfe\x00binary")
    r = uplinkctl("check", str(path))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


def test_cli_schema_prints_json_schema() -> None:
    r = uplinkctl("schema")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == json.loads(json.dumps(schema()))
    assert "Uplink" in json.loads(r.stdout)["$defs"]
