"""The `modem` address mode without D-Bus or a kernel: its config (every message names the field
and the fix), the Simple.Connect properties it makes, how a bearer fact is planned (address,
MTU, accept_ra, `default dev` in the uplink's table, nothing without a bearer), and how
ModemManager's Ip4Config/Ip6Config become that fact."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from dbus_fast import Variant

from uplinkd import plan
from uplinkd.config import ConfigError, Probe, parse
from uplinkd.model import (
    LINK_TUNING,
    Addr,
    Bearer,
    BearerIp,
    Link,
    LinkTuning,
    Observed,
    Route,
    Snapshot,
    StaticAddr,
)
from uplinkd.model.kinds.base import CHANGE
from uplinkd.modemmanager import METHOD_DHCP, METHOD_STATIC, access_technology, bearer_ip, pin_digest
from uplinkd.plan import Facts
from uplinkd.probes import effective_probe


def modem(**address: Any) -> dict[str, Any]:
    return {"uplinks": {"lte": {"match": {"name": "wwan0"}, "table": 110,
                                "address": {"mode": "modem", **address}}}}  # fmt: skip


def problems(data: dict[str, Any]) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as err:
        parse(data)
    return err.value.problems


# --- config -----------------------------------------------------------------------------------------


def test_connect_properties_are_exactly_what_is_set() -> None:
    address = parse(modem(apn="internet", ip_type="ipv4v6", user="web", allowed_auth=["pap", "chap"],
                          allow_roaming=False)).uplinks["lte"].address  # fmt: skip
    assert address.mode == "modem"
    assert address.connect_properties("pw") == {
        "apn": ("s", "internet"),
        "ip-type": ("u", 4),
        "user": ("s", "web"),
        "password": ("s", "pw"),
        "allowed-auth": ("u", 6),
        "allow-roaming": ("b", False),
    }
    assert parse(modem()).uplinks["lte"].address.connect_properties(None) == {}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ({"apn": "bad apn"}, "uplinks.lte.address.modem.apn: 'bad apn' is not an APN; use letters"),
        ({"ip_type": "ipv5"}, "uplinks.lte.address.modem.ip_type:"),
        ({"allowed_auth": ["pap", "kerberos"]}, "uplinks.lte.address.modem.allowed_auth.1:"),
        ({"imei": "12ab"}, "uplinks.lte.address.modem.imei: '12ab' is not an IMEI; write its 15 digits"),
        ({"iccid": "89"}, "uplinks.lte.address.modem.iccid: '89' is not an ICCID; write its 18-22 digits"),
        ({"pin_file": "pin"}, "uplinks.lte.address.modem.pin_file: 'pin' is relative; give an absolute path"),
        ({"pin": "1234"}, "uplinks.lte.address.modem.pin: unknown key"),
    ],
    ids=["apn", "ip_type", "allowed_auth", "imei", "iccid", "pin_file", "pin-inline"],
)
def test_bad_modem_settings_name_the_field_and_the_fix(address: dict[str, Any], expected: str) -> None:
    found = problems(modem(**address))
    assert any(p.startswith(expected) for p in found), found


# --- planning a bearer ------------------------------------------------------------------------------

WWAN = Link(index=7, name="wwan0", up=True, carrier=True, pointopoint=True)
ADDRESS = ipaddress.ip_interface("10.64.0.2/30")
BEARER = Bearer("wwan0", ip4=BearerIp(ADDRESS, ipaddress.ip_address("10.64.0.1"), mtu=1428))


def intent(bearer: Bearer | None, *, held: bool) -> plan.Intent:
    addrs = (Addr(7, ADDRESS),) if held else ()
    observed = Observed(links={7: WWAN}, addrs=addrs)
    bearers = {"lte": bearer} if bearer else {}
    return plan.desired(parse(modem(apn="internet")), Facts(observed, bearers=bearers))


def objects(i: plan.Intent) -> list[object]:
    return list(i.kernel)


def test_a_bearer_puts_its_address_and_mtu_on_the_interface_then_routes_dev() -> None:
    first = intent(BEARER, held=False)
    (status,) = first.uplinks
    assert (status.state, status.reason) == ("present", "adding the bearer's address")
    wanted = objects(first)
    assert StaticAddr(7, ADDRESS, dev="wwan0") in wanted
    assert LinkTuning(7, mtu=1428, dev="wwan0") in wanted
    assert not [o for o in wanted if isinstance(o, Route) and o.key.table == 110]

    second = intent(BEARER, held=True)
    (status,) = second.uplinks
    assert status.state == "up" and status.in_group and status.gateway4 is None
    (route,) = [o for o in objects(second) if isinstance(o, Route) and o.key.table == 110]
    assert route.gateway is None and route.oif == 7  # `default dev wwan0`, raw IP


def test_no_bearer_means_no_address_no_route_and_waiting() -> None:
    i = intent(None, held=True)
    (status,) = i.uplinks
    assert (status.state, status.reason, status.in_group) == ("present", "waiting for the modem's bearer", 0)
    wanted = objects(i)
    assert not [o for o in wanted if isinstance(o, (StaticAddr, LinkTuning))]
    assert not [o for o in wanted if isinstance(o, Route) and o.key.table == 110]


def test_ipv6_by_router_advertisement_asks_for_accept_ra_2() -> None:
    ra = Bearer("wwan0", ip4=BEARER.ip4, ra6=True)
    assert LinkTuning(7, mtu=1428, accept_ra=2, dev="wwan0") in objects(intent(ra, held=False))


def test_link_tuning_compares_only_the_settings_wanted() -> None:
    snapshot = Snapshot(links={7: Link(7, "wwan0", True, True, mtu=1428, accept_ra=1)})
    have = {t.ifindex: t for t in LINK_TUNING.read(snapshot, parse({}).kernel)}
    assert list(LINK_TUNING.changes(have, {7: LinkTuning(7, mtu=1428)}, recreated=frozenset())) == []
    [(stage, op)] = list(LINK_TUNING.changes(have, {7: LinkTuning(7, mtu=1400)}, recreated=frozenset()))
    assert stage[1] == CHANGE and str(op) == "ip link set dev 7 mtu 1400"


# --- ModemManager's IP configuration ------------------------------------------------------------------


def v(sig: str, value: object) -> Variant:
    return Variant(sig, value)


def test_ip4config_static_becomes_the_fact() -> None:
    config = {"method": v("u", METHOD_STATIC), "address": v("s", "10.64.0.2"), "prefix": v("u", 30),
              "gateway": v("s", "10.64.0.1"), "dns1": v("s", "10.64.0.53"), "mtu": v("u", 1428)}  # fmt: skip
    ip, ra = bearer_ip(config, v6=False)
    assert not ra and ip == BearerIp(ADDRESS, ipaddress.ip_address("10.64.0.1"), 1428,
                                     (ipaddress.ip_address("10.64.0.53"),))  # fmt: skip


def test_ip6config_dhcp_means_router_advertisements_and_ppp_means_nothing() -> None:
    assert bearer_ip({"method": v("u", METHOD_DHCP)}, v6=True) == (None, True)
    assert bearer_ip({"method": v("u", 1)}, v6=False) == (None, False)  # ppp
    assert bearer_ip({}, v6=False) == (None, False)


def test_access_technology_names_the_best_one_and_pin_digests_differ_by_sim() -> None:
    assert access_technology((1 << 14) | (1 << 5)) == "lte" and access_technology(0) is None
    assert pin_digest("8944", "1234") != pin_digest("8945", "1234")


def test_dns_probe_without_targets_asks_the_bearers_dns_servers() -> None:
    dns4 = (ipaddress.ip_address("10.64.0.53"), ipaddress.ip_address("10.64.0.54"))
    dns6 = (ipaddress.ip_address("fd64::53"),)
    bearer = Bearer(
        "wwan0",
        ip4=BearerIp(ADDRESS, None, dns=dns4),
        ip6=BearerIp(ipaddress.ip_interface("fd64::2/64"), None, dns=dns6),
    )
    dns = Probe(method="dns", quorum=5)
    assert effective_probe(dns, bearer).targets == ("10.64.0.53", "10.64.0.54", "fd64::53")
    assert effective_probe(dns, bearer).quorum == 3  # no more than the servers it asks
    # a new bearer with other servers is another probe: the prober restarts with them
    other = Bearer("wwan0", ip4=BearerIp(ADDRESS, None, dns=(ipaddress.ip_address("10.64.1.53"),)))
    assert effective_probe(dns, other).targets == ("10.64.1.53",)
    assert effective_probe(dns, other) != effective_probe(dns, bearer)
    # targets of its own win; other methods, no bearer or a bearer without DNS: unchanged
    own = Probe(method="dns", targets=("192.0.2.53",))
    assert effective_probe(own, bearer) == own
    assert effective_probe(Probe(method="icmp"), bearer).targets == ()
    assert effective_probe(dns, None).targets == ()
    assert effective_probe(dns, Bearer("wwan0", ip4=BearerIp(ADDRESS, None))).targets == ()
