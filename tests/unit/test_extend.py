"""IPv6 by router advertisement (model.adverts, plan.extend, the RA workers' choices) without a
kernel: the RA wire format both ways and against malformed input, what the planner wants for a
`dhcp` uplink by RA and for an `extend` LAN, and which prefixes the LAN sender deprecates."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from uplinkd import plan
from uplinkd.advertiser import AdvertSenders
from uplinkd.adverts import save, stored
from uplinkd.config import ConfigError, parse
from uplinkd.model import (
    ADDRESSES,
    AF_INET6,
    LINK_TUNING,
    NFT,
    ROUTES,
    RULES,
    Addr,
    Health,
    HealthVerdict,
    KernelState,
    Link,
    LinkTuning,
    Observed,
    RouteKey,
    StaticAddr,
)
from uplinkd.model.adverts import (
    ROUTER_SOLICIT,
    Advert,
    AdvertPrefix,
    decode,
    encode_advert,
    encode_solicit,
    is_solicit,
)
from uplinkd.plan import Facts, Intent
from uplinkd.runtime import Runtime

ip6 = ipaddress.IPv6Address
net6 = ipaddress.IPv6Network
ROUTER = ip6("fe80::1")
PREFIX = net6("2001:db8:1::/64")
NEW = net6("2001:db8:1:1::/64")
MAC = bytes.fromhex("020000000001")


def advert(*prefixes: net6, lifetime: int = 600, preferred: int = 3600) -> Advert:
    return Advert(
        router=ROUTER,
        lifetime=lifetime,
        prefixes=tuple(AdvertPrefix(p, 7200, preferred) for p in prefixes),
        mtu=1428,
        rdnss=(ip6("2001:db8:53::53"),),
        rdnss_lifetime=900,
        hop_limit=64,
    )


# --- the wire format ----------------------------------------------------------------------------


def test_an_advert_reads_back_from_its_encoding() -> None:
    sent = advert(PREFIX, NEW)
    assert decode(encode_advert(sent, lladdr=MAC), ROUTER) == sent
    bare = Advert(router=ROUTER, lifetime=0)
    assert decode(encode_advert(bare), ROUTER) == bare
    assert is_solicit(encode_solicit()) and encode_solicit()[0] == ROUTER_SOLICIT


@pytest.mark.parametrize(
    ("data", "source"),
    [
        (encode_advert(advert(PREFIX)), ip6("2001:db8::1")),  # not from a link-local address
        (encode_advert(advert(PREFIX))[:10], ROUTER),  # shorter than the header
        (encode_advert(advert(PREFIX)) + b"\x03\x00", ROUTER),  # an option of length 0
        (encode_advert(advert(PREFIX)) + b"\x03\x04\x40", ROUTER),  # an option past the end
        (b"\x87" + encode_advert(advert(PREFIX))[1:], ROUTER),  # not an RA
        (encode_advert(advert(PREFIX))[:1] + b"\x01" + encode_advert(advert(PREFIX))[2:], ROUTER),  # code 1
    ],
)
def test_malformed_adverts_are_refused_not_raised(data: bytes, source: ip6) -> None:
    assert decode(data, source) is None


def test_odd_options_are_skipped_and_the_rest_kept() -> None:
    good = encode_advert(advert(PREFIX))
    # a prefix whose preferred lifetime exceeds its valid one (RFC 4862 5.5.3 c), an MTU below
    # IPv6's minimum, an unknown option
    bad_pio = struct.pack("!BBBBIII16s", 3, 4, 64, 0xC0, 10, 20, 0, NEW.network_address.packed)
    bad_mtu = struct.pack("!BBHI", 5, 1, 0, 1000)
    unknown = bytes((99, 1)) + bytes(6)
    got = decode(good + bad_pio + bad_mtu + unknown, ROUTER)
    assert got is not None
    assert [p.prefix for p in got.prefixes] == [PREFIX] and got.mtu is None
    assert not is_solicit(encode_solicit() + b"\x01\x00")


def test_a_kept_advert_is_adopted_until_its_router_lifetime_ends(tmp_path: Path) -> None:
    path = tmp_path / "lte1.ra.json"
    save(path, advert(PREFIX))
    assert stored(path) == advert(PREFIX)
    save(path, advert(PREFIX, lifetime=0))
    assert stored(path) is None  # no longer a router
    path.write_text("{not json")
    assert stored(path) is None


def test_extend_of_an_uplink_someone_else_configures_is_refused() -> None:
    with pytest.raises(ConfigError) as e:
        parse(
            {
                "uplinks": {
                    "lte1": {"match": {"name": "lte1"}, "address": {"mode": "external"}, "table": 101}
                },
                "lan": {"lan0": {"ipv6": {"mode": "extend", "uplink": "lte1"}}},
            }
        )
    assert e.value.problems == (
        "lan.lan0.ipv6.uplink: 'lte1' is configured by someone else (address mode 'external'), "
        "who would keep its /64 on the uplink; extend an uplink in mode 'dhcp', 'static' or 'modem'",
    )


# --- planning -----------------------------------------------------------------------------------


def config(lan: dict[str, Any] | None = None) -> Any:
    return parse(
        {
            "uplinks": {
                "lte1": {"match": {"name": "lte1"}, "address": {"mode": "dhcp"}, "table": 101},
            },
            **({"lan": lan} if lan is not None else {}),
        }
    )


EXTEND = {"lan0": {"ipv6": {"mode": "extend", "uplink": "lte1"}}}
LINKS = {
    3: Link(index=3, name="lte1", up=True, carrier=True, mtu=1500),
    4: Link(index=4, name="lan0", up=True, carrier=True),
}


def facts(*addrs: Addr, heard: Advert | None = None, health: Health = Health.UP) -> Facts:
    return Facts(
        Observed(links=LINKS, addrs=addrs),
        adverts={"lte1": heard} if heard is not None else {},
        health={"lte1": HealthVerdict(health, "test")},
    )


def test_a_dhcp_uplink_takes_its_ipv6_router_from_the_ra_into_its_own_table_only() -> None:
    slaac = Addr(3, ipaddress.ip_interface("2001:db8:1::5eff:fe00:1/64"))
    i = plan.desired(config(), facts(slaac, heard=advert(PREFIX)))
    assert i.kernel[LINK_TUNING][3] == LinkTuning(
        3, accept_ra=2, conf6=(("accept_ra_defrtr", 0),), dev="lte1"
    )
    route = i.kernel[ROUTES][RouteKey(AF_INET6, 101, "::/0")]
    assert route.gateway == ROUTER and route.oif == 3
    assert all(key.table != 254 for key in i.kernel[ROUTES])  # never main
    # without an RA (and nobody else's default route) there is no IPv6 way out
    none = plan.desired(config(), facts(slaac))
    assert RouteKey(AF_INET6, 101, "::/0") not in none.kernel[ROUTES]


def test_extend_moves_the_64_to_the_lan_and_advertises_it_while_the_uplink_serves() -> None:
    heard = advert(PREFIX)
    first = plan.desired(config(EXTEND), facts(heard=heard))
    assert (
        StaticAddr(4, ipaddress.IPv6Interface("2001:db8:1::1/64"), dev="lan0")
        in first.kernel[ADDRESSES].values()
    )
    assert [r.src for r in first.kernel[RULES].values() if r.family == AF_INET6 and r.src is not None] == [
        PREFIX
    ]
    tuning = first.kernel[LINK_TUNING][3]
    assert dict(tuning.conf6) == {"accept_ra_defrtr": 0, "accept_ra_pinfo": 0}
    assert first.adverts["lan0"].lifetime == 0  # no way out at all yet (no DHCP lease)

    held = Addr(4, ipaddress.ip_interface("2001:db8:1::1/64"))
    i = plan.desired(config(EXTEND), facts(held, heard=heard))
    sent = i.adverts["lan0"]
    assert sent.lifetime == 1800 and sent.prefixes == (AdvertPrefix(PREFIX, 7200, 3600),)
    assert sent.mtu == 1428 and sent.rdnss == heard.rdnss
    assert i.reasons["lan lan0 ipv6"] == "extend lte1's 2001:db8:1::/64 (advertised here)"
    (table,) = i.kernel[NFT].values()
    assert [p.prefix for p in table.ipv6.prefixes] == [str(PREFIX)]  # the guard lets it out of lte1

    down = plan.desired(config(EXTEND), facts(held, heard=heard, health=Health.DOWN))
    assert down.adverts["lan0"].lifetime == 0 and down.adverts["lan0"].prefixes == ()
    assert "deprecated, router lifetime 0: the uplink is down" in down.reasons["lan lan0 ipv6"]
    # the ISP renumbers: the new /64 is the current one
    renumbered = replace(heard, prefixes=(AdvertPrefix(PREFIX, 7200, 0), AdvertPrefix(NEW, 7200, 3600)))
    moved = plan.desired(config(EXTEND), facts(held, heard=renumbered))
    assert (
        StaticAddr(4, ipaddress.IPv6Interface("2001:db8:1:1::1/64"), dev="lan0")
        in moved.kernel[ADDRESSES].values()
    )


def test_the_lan_sender_deprecates_what_it_advertised_before() -> None:
    rt = Runtime(config(EXTEND))
    senders = AdvertSenders(rt)
    live = Advert(router=ip6("::"), lifetime=1800, prefixes=(AdvertPrefix(PREFIX, 7200, 3600),))

    def wanted(lan_advert: Advert, running: dict[str, Any]) -> Any:
        intent = Intent(kernel=KernelState(), uplinks=(), reasons={}, adverts={"lan0": lan_advert})
        return senders.wanted(intent, running)["lan0"]

    first = wanted(live, {})
    assert first.advert == live
    renumbered = replace(live, prefixes=(AdvertPrefix(NEW, 7200, 3600),))
    second = wanted(renumbered, {"lan0": first})
    assert second.advert.prefixes == (AdvertPrefix(NEW, 7200, 3600), AdvertPrefix(PREFIX, 7200, 0))
    lost = Advert(router=ip6("::"), lifetime=0)
    third = wanted(lost, {"lan0": second})
    assert third.advert.lifetime == 0
    assert {(p.prefix, p.preferred) for p in third.advert.prefixes} == {(NEW, 0), (PREFIX, 0)}
