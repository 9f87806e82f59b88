"""The `vxlan` config section, its planning contributor and its kernel kinds, on hand-built
facts and the fake kernel."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any

import pytest

from uplinkd import plan
from uplinkd.config import Config, ConfigError, parse
from uplinkd.model import (
    ADDRESSES,
    AF_INET,
    FDB,
    ROUTES,
    RULES,
    VXLAN,
    Addr,
    Gateway,
    KernelState,
    Link,
    NftState,
    Observed,
    Route,
    RouteKey,
    Rule,
)
from uplinkd.plan import Facts
from uplinkd.plan.fake import apply as fake_apply
from uplinkd.tunnel.health import TunnelHealth
from uplinkd.tunnel.vxlan import FdbEntry, VxlanLink

HOME_KEY = "GW7cTEnbLLp+3AJ8jqYLWmH1Ed1p3ZMhUiqFs6rEOGI="


def segment(**over: Any) -> dict[str, Any]:
    return {
        "tunnel": "home",
        "interface": "vx0",
        "vni": 42,
        "remotes": ["10.99.0.1"],
        "bridge": "brl2",
        **over,
    }


def document(*segments: dict[str, Any], **tunnel: Any) -> dict[str, Any]:
    return {
        "uplinks": {
            "wan": {
                "match": {"name": "wan"},
                "address": {"mode": "static", "cidr": "10.101.0.2/24", "gateway": "10.101.0.1"},
                "table": 101,
            },
            "lte1": {
                "match": {"name": "lte1"},
                "address": {"mode": "static", "cidr": "10.102.0.2/24", "gateway": "10.102.0.1"},
                "table": 102,
            },
        },
        "tunnels": {
            "home": {
                "interface": "wg0",
                "private_key_file": "/run/credentials/uplinkd/wg.key",
                "addresses": ["10.99.0.2/24"],
                "table": 150,
                "peers": [
                    {"public_key": HOME_KEY, "endpoint": "198.51.100.100:51820", "allowed_ips": ["0.0.0.0/0"]}
                ],
                "underlay": ["wan", "lte1"],
                "route": "full",
                **tunnel,
            }
        },
        "vxlan": {f"s{i}" if i else "home": s for i, s in enumerate(segments or (segment(),))},
    }


def config(**over: Any) -> Config:
    return parse(document(segment(**over)))


def observed(*, bridge: bool = True, lte_mtu: int = 1428) -> Observed:
    links = [
        Link(index=2, name="wan", up=True, carrier=True, mtu=1500),
        Link(index=3, name="lte1", up=True, carrier=True, mtu=lte_mtu),
        Link(index=9, name="wg0", up=True, carrier=True, mtu=1368),
    ]
    if bridge:
        links.append(Link(index=20, name="brl2", up=True, carrier=True, mtu=1500))
    addrs = (
        Addr(2, ipaddress.ip_interface("10.101.0.2/24")),
        Addr(3, ipaddress.ip_interface("10.102.0.2/24")),
    )
    gws = (
        Gateway(2, AF_INET, ipaddress.ip_address("10.101.0.1")),
        Gateway(3, AF_INET, ipaddress.ip_address("10.102.0.1")),
    )
    return Observed(links={li.index: li for li in links}, addrs=addrs, gateways=gws)


def intent(cfg: Config, **seen: Any) -> plan.Intent:
    health = TunnelHealth(state="up", reason="test", ifname="wg0")
    return plan.desired(cfg, Facts(observed(**seen), tunnels={"home": health}))


# --- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"tunnel": "office"}, "vxlan.home.tunnel: 'office' is not a tunnel; use a name from tunnels (home)"),
        ({"vni": 0}, "vxlan.home.vni: 0 is out of range; use a VNI from 1 to 16777215"),
        ({"vni": 1 << 24}, "vxlan.home.vni: 16777216 is out of range"),
        ({"port": 0}, "vxlan.home.port: 0 is out of range; use a UDP port"),
        (
            {"local": "10.99.0.7"},
            "vxlan.home.local: 10.99.0.7 is not among tunnels.home.addresses (10.99.0.2)",
        ),
        ({"local": "10.99.0.1"}, "vxlan.home.remotes: 10.99.0.1 is the local end"),
        ({"remotes": ["10.99.0.1", "fd00::1"]}, "vxlan.home.remotes: remotes mix IPv4 and IPv6"),
        ({"remotes": ["10.99.0.1", "10.99.0.1"]}, "vxlan.home.remotes: a remote appears twice"),
        ({"remotes": []}, "vxlan.home.remotes"),
        ({"remotes": ["fd00::1"]}, "vxlan.home.local: tunnels.home has no IPv6 address for the local end"),
        ({"bridge": "br l2"}, "vxlan.home.bridge: 'br l2' cannot be an interface name"),
        ({"bridge": "vx0"}, "vxlan.home.bridge: the interface cannot be its own bridge"),
        ({"bridge": "wan"}, "vxlan.home.bridge: 'wan' is uplinks.wan's; name another interface"),
        ({"interface": "wg0"}, "vxlan.home.interface: 'wg0' is tunnels.home.interface's"),
        ({"interface": "a" * 16}, "vxlan.home.interface:"),
        ({"mtu": 100}, "vxlan.home.mtu: 100 is out of range; use 'auto' or 576 to 9000"),
        ({"mtu": "big"}, "vxlan.home.mtu"),
        (
            {"mac": "01:00:5e:00:00:01"},
            "vxlan.home.mac: 01:00:5e:00:00:01 is a multicast MAC; use a unicast one",
        ),
        ({"address": "192.168.35.2/24"}, "vxlan.home.table: `address` needs a table for its source rule"),
        ({"gateway": "192.168.35.1"}, "gateway and table need `address`"),
        (
            {"address": "192.168.35.2/24", "table": 160, "gateway": "192.168.36.1"},
            "vxlan.home.gateway: 192.168.36.1 is not on the segment 192.168.35.0/24",
        ),
        (
            {"address": "192.168.35.2/24", "table": 151},
            "vxlan.home.table: 151 is already used by tunnels.home",
        ),
        ({"address": "192.168.35.2/24", "table": 254}, "vxlan.home.table: 254 is not usable"),
        ({"vendor": 1}, "vxlan.home.vendor"),
        ({"vni": "42"}, "vxlan.home.vni: '42': expected a whole number"),
        ({"vni": True}, "vxlan.home.vni: true: expected a whole number"),
        ({"remotes": "10.99.0.1"}, "vxlan.home.remotes: '10.99.0.1': expected a list"),
        ({"remotes": [1]}, "vxlan.home.remotes: 1 is not an address; write it as a string"),
        ({"local": 167772162}, "vxlan.home.local: 167772162 is not an address"),
        (
            {"address": "192.168.35.2", "table": 160},
            "vxlan.home.address: '192.168.35.2' has no prefix length",
        ),
        ({"interface": "vx\u00a0"}, "vxlan.home.interface:"),
    ],
)
def test_config_errors_name_the_field_and_the_fix(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        config(**over)
    assert message in str(e.value), str(e.value)


def test_remotes_must_be_reached_through_the_tunnel() -> None:
    doc = document(segment(remotes=["10.98.0.1"]))
    doc["tunnels"]["home"]["peers"][0]["allowed_ips"] = ["10.99.0.0/24"]
    with pytest.raises(ConfigError) as e:
        parse(doc)
    assert "vxlan.home.remotes: 10.98.0.1 is not reached through tunnels.home" in str(e.value)
    assert "add it to the peer's allowed_ips" in str(e.value)


def test_two_segments_need_their_own_interface_and_vni() -> None:
    with pytest.raises(ConfigError) as e:
        parse(document(segment(), segment(bridge="brl3")))
    text = str(e.value)
    assert "vxlan.s1.interface: 'vx0' is also vxlan.home's" in text
    assert "vxlan.s1.vni: 42 on port 4789 is also vxlan.home's" in text
    assert parse(document(segment(), segment(interface="vx1", vni=43, bridge="brl3"))).vxlan["s1"].vni == 43


def test_a_stable_mac_derived_from_interface_and_vni() -> None:
    mac = config().vxlan["home"].mac_value
    assert mac == config().vxlan["home"].mac_value != config(vni=43).vxlan["home"].mac_value
    first = int(mac[:2], 16)
    assert first & 0x02 and not first & 0x01  # locally administered, unicast
    assert config(mac="02:00:00:00:00:01").vxlan["home"].mac_value == "02:00:00:00:00:01"


# --- planning ---------------------------------------------------------------------------------


def test_the_interface_its_flood_entries_bridge_and_auto_mtu() -> None:
    cfg = parse(document(segment(remotes=["10.99.0.1", "10.99.0.3"])))
    i = intent(cfg)
    (link,) = i.kernel[VXLAN].values()
    # the tunnel: min(1500, 1428) - 60 = 1368; the segment: - 50 (IPv4 inner)
    assert link == VxlanLink(
        "vx0",
        vni=42,
        local=ipaddress.ip_address("10.99.0.2"),
        mtu=1318,
        mac=cfg.vxlan["home"].mac_value,
        bridge="brl2",
    )
    assert set(i.kernel[FDB]) == {
        FdbEntry("vx0", ipaddress.ip_address("10.99.0.1")),
        FdbEntry("vx0", ipaddress.ip_address("10.99.0.3")),
    }
    assert i.reasons["vxlan home"] == "vni 42, mtu 1318"
    assert intent(cfg, lte_mtu=1500).kernel[VXLAN]["vx0"].mtu == 1390
    assert intent(parse(document(segment(mtu=1500)))).kernel[VXLAN]["vx0"].mtu == 1500


def test_auto_over_ipv6_inner_addresses_is_70_below_the_tunnel() -> None:
    doc = document(segment(remotes=["fd99::1"]))
    doc["tunnels"]["home"]["addresses"] = ["10.99.0.2/24", "fd99::2/64"]
    doc["tunnels"]["home"]["peers"][0]["allowed_ips"] = ["0.0.0.0/0", "::/0"]
    link = intent(parse(doc)).kernel[VXLAN]["vx0"]
    assert (str(link.local), link.mtu) == ("fd99::2", 1368 - 70)


def test_an_absent_bridge_is_joined_when_it_appears() -> None:
    i = intent(config(), bridge=False)
    assert i.kernel[VXLAN]["vx0"].bridge is None
    assert "bridge brl2 is not there yet" in i.reasons["vxlan home"]


def test_mss_is_clamped_on_tunnel_segment_and_bridge() -> None:
    state = next(o for o in intent(config()).kernel if isinstance(o, NftState))
    assert state.tunnel_ifnames == ("brl2", "vx0", "wg0")


def test_source_in_source_out_for_the_routers_segment_address() -> None:
    i = intent(config(address="192.168.35.2/24", gateway="192.168.35.1", table=160))
    assert Rule(AF_INET, 10003, 160, src=ipaddress.ip_network("192.168.35.2/32")) in i.kernel[RULES]
    default = i.kernel[ROUTES][RouteKey(AF_INET, 160, "0.0.0.0/0")]
    assert default == Route(
        RouteKey(AF_INET, 160, "0.0.0.0/0"), oif=20, gateway=ipaddress.ip_address("192.168.35.1")
    )
    assert RouteKey(AF_INET, 160, "192.168.35.0/24") in i.kernel[ROUTES]
    assert any(a.ifindex == 20 and str(a.address) == "192.168.35.2/24" for a in i.kernel[ADDRESSES])
    # the rule sits above every band but P+0 (connected routes, which it would pick as well)
    assert sorted({r.priority for r in i.kernel[RULES]})[:2] == [10000, 10003]


def test_plan_creates_the_interface_before_its_entries_and_restart_writes_nothing() -> None:
    wanted = intent(config()).kernel
    ops = plan.diff(KernelState(), wanted).ops
    kinds = [op.kind.name for op in ops if op.kind.name in ("vxlan", "fdb")]
    assert kinds == ["vxlan", "fdb"]
    after = fake_apply(KernelState(), plan.diff(KernelState(), wanted))
    assert not plan.diff(after, wanted)
    # flush: every entry and the interface go, the interface after its entries
    gone = [op for op in plan.teardown(after).ops if op.kind.name in ("vxlan", "fdb")]
    assert [(op.verb, op.kind.name) for op in gone] == [("delete", "fdb"), ("delete", "vxlan")]


def test_an_unknown_mtu_leaves_the_interfaces_own() -> None:
    wanted = intent(config()).kernel
    link = wanted[VXLAN]["vx0"]
    have = wanted.replaced(VXLAN, [replace(link, mtu=1400)])
    unknown = wanted.replaced(VXLAN, [replace(link, mtu=None)])
    assert not plan.diff(have, unknown)
    assert [str(op) for op in plan.diff(have, wanted).ops] == [f"{link} (in place)"]


def test_a_new_vni_recreates_the_interface_and_writes_its_entries_again() -> None:
    old = intent(config()).kernel
    new = intent(config(vni=43)).kernel
    ops = plan.diff(old, new).ops
    assert [(op.verb, op.kind.name) for op in ops if op.kind.name in ("vxlan", "fdb")] == [
        ("delete", "vxlan"),
        ("add", "vxlan"),
        ("replace", "fdb"),
    ]
    assert fake_apply(old, plan.diff(old, new)) == new
