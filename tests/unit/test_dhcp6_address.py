"""DHCPv6 IA_NA, the uplink's own address, without a kernel: the IA_NA and IA Address options on
the wire (RFC 8415 layouts, byte by byte) with their status codes, what a Reply binds, the
binding kept in state_dir, the client's pure choices (which Advertise, how a Renew went, when
duplicate-address detection failed), the RA's M flag, `address.dhcp6` and its errors, and what
the planner wants for a leased address."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from uplinkd import plan
from uplinkd.config import ConfigError, parse
from uplinkd.model import (
    ADDRESSES,
    AF_INET6,
    NFT,
    ROUTES,
    RULES,
    Addr,
    Lease6,
    Link,
    NftState,
    NftTranslation,
    Observed,
    RouteKey,
    Rule,
    StaticAddr,
)
from uplinkd.model.adverts import Advert, AdvertPrefix, encode_advert
from uplinkd.model.adverts import decode as decode_advert
from uplinkd.pd import binding as store
from uplinkd.pd import wants_address
from uplinkd.pd.binding import Binding
from uplinkd.pd.client import dad_state
from uplinkd.pd.messages import (
    INFINITY,
    IaAddress,
    IaNa,
    IaPd,
    IaPrefix,
    Malformed,
    Message,
    MessageType,
    Status,
    decode,
)
from uplinkd.pd.replies import bindings_of, ended_of, outcome_of, pure_rank
from uplinkd.plan import Facts

ip6 = ipaddress.IPv6Address
DUID = bytes.fromhex("0004") + bytes(range(16))
SERVER = bytes.fromhex("000200000a0b0c0d")
ADDRESS = ip6("2001:db8:1::1234")
ROUTER = ip6("fe80::1")
NA = IaNa(7, 60, 96, (IaAddress(ADDRESS, 120, 180),))
PD = IaPd(7, 60, 96, (IaPrefix(ipaddress.IPv6Network("2001:db8:e1::/56"), 120, 180),))
BOTH = frozenset({"na", "pd"})


def reply(*, na: tuple[IaNa, ...] = (), pd: tuple[IaPd, ...] = (), **more: Any) -> Message:
    return Message(MessageType.REPLY, 1, client_id=DUID, server_id=SERVER, ia_na=na, ia_pd=pd, **more)


# --- the wire -----------------------------------------------------------------------------------


def test_an_ia_na_with_its_address_is_laid_out_as_rfc_8415_says() -> None:
    wire = NA.encode()
    # OPTION_IA_NA (3), length 12 + 28; IAID, T1, T2 (§21.4)
    assert wire[:16] == bytes.fromhex("00030028000000070000003c00000060")
    # OPTION_IAADDR (5), length 24: address, preferred, valid (§21.6)
    assert wire[16:20] == bytes.fromhex("00050018")
    assert wire[20:36] == ADDRESS.packed and wire[36:] == bytes.fromhex("00000078000000b4")
    assert decode(reply(na=(NA,)).encode()).ia_na == (NA,)


def test_one_solicit_carries_ia_na_before_ia_pd_and_reads_back() -> None:
    msg = Message(
        MessageType.SOLICIT, 0x123456, client_id=DUID, elapsed=0, ia_na=(IaNa(7),), ia_pd=(IaPd(7),)
    )
    wire = msg.encode()
    assert wire.index(bytes.fromhex("0003000c00000007")) < wire.index(bytes.fromhex("0019000c00000007"))
    assert decode(wire) == msg


def test_status_codes_inside_the_ia_and_inside_the_address_are_read() -> None:
    no_addrs = bytes.fromhex("000d00020002")  # OPTION_STATUS_CODE NoAddrsAvail, no message
    ia = bytes.fromhex("00030012000000070000000000000000") + no_addrs
    got = decode(bytes.fromhex("07000001") + ia).ia_na[0]
    assert got.status == Status.NO_ADDRS_AVAIL and got.addresses == ()
    assert Binding.from_ia(got, server_id=SERVER, now=0.0) is None
    inner = bytes.fromhex("000d00060003") + b"gone"  # NoBinding with a message, in the IAADDR
    addr = bytes.fromhex("0005") + (24 + len(inner)).to_bytes(2, "big") + ADDRESS.packed + bytes(8) + inner
    ia = (
        bytes.fromhex("0003")
        + (12 + len(addr)).to_bytes(2, "big")
        + bytes.fromhex("00000007")
        + bytes(8)
        + addr
    )
    (held,) = decode(bytes.fromhex("07000001") + ia).ia_na[0].addresses
    assert held == IaAddress(ADDRESS, 0, 0, Status.NO_BINDING)


@pytest.mark.parametrize(
    "wire",
    [
        bytes.fromhex("07000001000300080000000700000000"),  # IA_NA shorter than 12
        bytes.fromhex("070000010003000e0000000700000000000000000005"),  # IAADDR cut short
        bytes.fromhex("070000010003001000000007000000000000000000050000"),  # IAADDR of 0
    ],
)
def test_a_malformed_ia_na_refuses_the_whole_message(wire: bytes) -> None:
    with pytest.raises(Malformed):
        decode(wire)


# --- bindings -----------------------------------------------------------------------------------


def test_an_ia_na_binds_its_address_as_a_128_and_renews_it_with_lifetimes_0() -> None:
    b = Binding.from_ia(NA, server_id=SERVER, now=1000.0)
    assert b is not None and b.kind == "na"
    assert b.prefix == ipaddress.IPv6Network(f"{ADDRESS}/128")
    assert (b.renew_at, b.rebind_at, b.expires_at) == (1060.0, 1096.0, 1180.0)
    assert b.ia() == IaNa(7, 0, 0, (IaAddress(ADDRESS, 0, 0),))
    assert b.lease6() == Lease6(ipaddress.IPv6Interface(f"{ADDRESS}/128"), 1180.0)


@pytest.mark.parametrize(
    "addresses",
    [
        (IaAddress(ip6("fe80::5"), 120, 180),),  # link-local
        (IaAddress(ip6("ff02::1"), 120, 180),),  # multicast
        (IaAddress(ADDRESS, 120, 0),),  # valid lifetime 0: the server takes it back
        (IaAddress(ADDRESS, 300, 180),),  # preferred beyond valid: ignored (§21.6)
        (IaAddress(ADDRESS, 120, 180, Status.NO_BINDING),),
    ],
)
def test_an_address_no_uplink_may_use_binds_nothing(addresses: tuple[IaAddress, ...]) -> None:
    assert Binding.from_ia(IaNa(7, 60, 96, addresses), server_id=SERVER, now=0.0) is None


def test_the_address_binding_is_kept_apart_from_the_delegation(tmp_path: Path) -> None:
    na = Binding.from_ia(NA, server_id=SERVER, now=1000.0)
    assert na is not None
    store.save(tmp_path / "wan.na.json", na)
    assert store.load(tmp_path / "wan.na.json", now=1100.0, kind="na") == na
    assert store.load(tmp_path / "wan.na.json", now=1100.0, kind="pd") is None  # not a delegation
    assert store.load(tmp_path / "wan.na.json", now=1180.0, kind="na") is None  # expired
    # a file written before IA_NA existed holds a delegation
    pd = Binding.from_ia(PD, server_id=SERVER, now=1000.0)
    assert pd is not None
    old = pd.to_json().replace(', "kind": "pd"', "")
    (tmp_path / "wan.pd.json").write_text(old)
    assert store.load(tmp_path / "wan.pd.json", now=1100.0) == pd


# --- the client's choices -----------------------------------------------------------------------


def test_an_advertise_offering_every_ia_wanted_beats_a_preferred_one_offering_some() -> None:
    both = reply(na=(NA,), pd=(PD,))
    only_na = reply(na=(NA,), preference=255)
    assert pure_rank(both, iaid=7, kinds=BOTH) == 0
    assert pure_rank(only_na, iaid=7, kinds=BOTH) == 255 - 256
    assert pure_rank(only_na, iaid=7, kinds=frozenset({"na"})) == 255  # complete: taken at once
    assert pure_rank(reply(na=(IaNa(7, status=Status.NO_ADDRS_AVAIL),)), iaid=7, kinds=BOTH) is None
    assert pure_rank(reply(na=(NA,), status=Status.UNSPEC_FAIL), iaid=7, kinds=BOTH) is None
    assert pure_rank(reply(na=(IaNa(8, 60, 96, NA.addresses),)), iaid=7, kinds=BOTH) is None  # not our IAID


def test_a_renew_is_bound_only_when_every_held_binding_is_extended() -> None:
    na = Binding.from_ia(NA, server_id=SERVER, now=0.0)
    pd = Binding.from_ia(PD, server_id=SERVER, now=0.0)
    assert na is not None and pd is not None
    held = {"na": na, "pd": pd}
    full = reply(na=(NA,), pd=(PD,))
    got = bindings_of(full, iaid=7, kinds=BOTH, now=10.0)
    assert set(got) == {"na", "pd"} and outcome_of(full, held, got) == "bound"
    half = reply(na=(NA,), pd=(IaPd(7, status=Status.NO_BINDING),))
    got = bindings_of(half, iaid=7, kinds=BOTH, now=10.0)
    assert set(got) == {"na"} and outcome_of(half, held, got) == "refused"
    assert outcome_of(None, held, {}) == "silent"
    # an IA asked for but never held may stay unanswered (an ISP that delegates nothing)
    got = bindings_of(reply(na=(NA,)), iaid=7, kinds=BOTH, now=10.0)
    assert outcome_of(reply(na=(NA,)), {"na": na}, got) == "bound"


def test_a_reply_ending_a_held_binding_is_told_from_a_refusal() -> None:
    """Valid lifetime 0 or NotOnLink ends the binding now (RFC 8415 §18.2.10.1); NoBinding or
    an IA left out leaves it in force until its own lifetime while the client asks anew."""
    na = Binding.from_ia(NA, server_id=SERVER, now=0.0)
    pd = Binding.from_ia(PD, server_id=SERVER, now=0.0)
    assert na is not None and pd is not None
    held = {"na": na, "pd": pd}
    zero = reply(na=(IaNa(7, 0, 0, (IaAddress(ADDRESS, 0, 0),)),), pd=(PD,))
    assert ended_of(zero, held, iaid=7) == {"na"}
    moved = reply(na=(IaNa(7, 0, 0, (IaAddress(ADDRESS, 0, 0, Status.NOT_ON_LINK),)),))
    assert ended_of(moved, held, iaid=7) == {"na"}
    assert ended_of(reply(na=(IaNa(7, status=Status.NOT_ON_LINK),)), held, iaid=7) == {"na"}
    gone = IaPd(7, 0, 0, (IaPrefix(pd.prefix, 0, 0),))
    assert ended_of(reply(na=(NA,), pd=(gone,)), held, iaid=7) == {"pd"}
    assert ended_of(reply(pd=(IaPd(7, status=Status.NO_BINDING),)), held, iaid=7) == set()
    other = IaNa(7, 0, 0, (IaAddress(ip6("2001:db8:1::99"), 0, 0),))  # not the one held
    assert ended_of(reply(na=(other,)), held, iaid=7) == set()
    assert ended_of(None, held, iaid=7) == set()


@pytest.mark.parametrize(
    ("t1", "t2", "preferred", "valid", "want"),
    [
        (0, 0, 120, 180, (60, 96)),  # the client's choice: 0.5 and 0.8 of preferred
        (0, 0, 0, 3600, (1800, 2880)),  # deprecated: from the valid lifetime, not every second
        (INFINITY, INFINITY, 1800, 3600, (INFINITY, INFINITY)),  # "do not renew": it runs out
        (7200, 9000, 1800, 3600, (1800, 2880)),  # a finite T1/T2 beyond the lease: within it
        (0, 0, INFINITY, INFINITY, (INFINITY, INFINITY)),
        (100, 200, 1800, 3600, (100, 200)),  # the server's, when they fit
    ],
)
def test_renew_and_rebind_times_fall_within_the_valid_lifetime(
    t1: int, t2: int, preferred: int, valid: int, want: tuple[int, int]
) -> None:
    b = Binding.from_ia(IaNa(7, t1, t2, (IaAddress(ADDRESS, preferred, valid),)), server_id=SERVER, now=0.0)
    assert b is not None and (b.t1, b.t2) == want


def test_a_preferred_address_is_held_before_a_deprecated_one_the_server_still_lists() -> None:
    new = ip6("2001:db8:1::5678")
    ia = IaNa(7, 0, 0, (IaAddress(ADDRESS, 0, 3600), IaAddress(new, 1800, 3600)))
    b = Binding.from_ia(ia, server_id=SERVER, now=0.0)
    assert b is not None and b.prefix.network_address == new


IF_INET6 = """\
fe800000000000000000000000000001 02 40 20 80     wan
20010db8000100000000000000001234 02 80 00 c8     wan
20010db8000100000000000000005678 02 80 00 40     wan
20010db8000100000000000000001234 03 80 00 80    lte1
"""


def test_dad_state_reads_proc_net_if_inet6() -> None:
    assert dad_state(IF_INET6, dev="wan", address=ADDRESS) == "failed"  # dadfailed|tentative|permanent
    assert dad_state(IF_INET6, dev="wan", address=ip6("2001:db8:1::5678")) == "tentative"
    assert dad_state(IF_INET6, dev="lte1", address=ADDRESS) == "ok"
    assert dad_state(IF_INET6, dev="wan", address=ip6("2001:db8:1::9")) is None


# --- the RA's M flag and `address.dhcp6` --------------------------------------------------------


def test_the_m_flag_reads_back_from_an_advert() -> None:
    managed = Advert(router=ROUTER, lifetime=600, hop_limit=64, managed=True)
    wire = encode_advert(managed)
    assert wire[5] & 0x80  # the M bit of the flags byte (RFC 4861 4.2)
    assert decode_advert(wire, ROUTER) == managed
    assert decode_advert(encode_advert(Advert(router=ROUTER, lifetime=600)), ROUTER).managed is False  # type: ignore[union-attr]


def uplink(address: dict[str, Any]) -> dict[str, Any]:
    return {"uplinks": {"wan": {"match": {"name": "wan"}, "address": address, "table": 101}}}


def test_dhcp6_decides_whether_the_uplink_asks_for_an_address() -> None:
    managed = Advert(router=ROUTER, lifetime=600, managed=True)
    slaac = Advert(
        router=ROUTER, lifetime=600, prefixes=(AdvertPrefix(ipaddress.IPv6Network("2001:db8:1::/64"), 9, 9),)
    )
    auto = parse(uplink({"mode": "dhcp"}))
    assert auto.uplinks["wan"].address.dhcp6 is None  # type: ignore[union-attr]  # unset: auto
    assert wants_address(auto, "wan", managed) and not wants_address(auto, "wan", slaac)
    assert not wants_address(auto, "wan", None)
    assert wants_address(parse(uplink({"mode": "dhcp", "dhcp6": "always"})), "wan", None)
    assert not wants_address(parse(uplink({"mode": "dhcp", "dhcp6": "never"})), "wan", managed)
    static = parse(uplink({"mode": "static", "cidr": "10.0.0.2/24"}))
    assert not wants_address(static, "wan", managed) and not wants_address(static, "lte9", managed)
    ipv4_only = uplink({"mode": "dhcp", "dhcp6": "always"})
    ipv4_only["uplinks"]["wan"]["families"] = ["ipv4"]
    assert not wants_address(parse(ipv4_only), "wan", managed)  # no IPv6 on it at all


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ({"mode": "dhcp", "dhcp6": "yes"}, "uplinks.wan.address.dhcp6"),
        ({"mode": "dhcp", "dhcp6": True}, "uplinks.wan.address.dhcp6"),
        ({"mode": "static", "cidr": "10.0.0.2/24", "dhcp6": "always"}, "uplinks.wan.address.dhcp6"),
    ],
)
def test_a_wrong_dhcp6_names_the_field(address: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(uplink(address))
    (problem,) = e.value.problems
    assert problem.startswith(message), problem
    assert "auto" in problem or "unknown key" in problem, problem


# --- planning -----------------------------------------------------------------------------------

LEASED = ipaddress.IPv6Interface(f"{ADDRESS}/128")


def dhcp_facts(*, held: bool = True, dadfailed: bool = False) -> Facts:
    links = {
        2: Link(index=2, name="wan", up=True, carrier=True),
        4: Link(index=4, name="lan0", up=True, carrier=True),
    }
    addrs = (Addr(2, LEASED, dadfailed=dadfailed),) if held else ()
    return Facts(
        Observed(links=links, addrs=addrs),
        leases6={"wan": Lease6(LEASED, None)},
        adverts={"wan": Advert(router=ROUTER, lifetime=600, managed=True)},
    )


def test_a_leased_address_goes_on_the_uplink_and_is_used_like_a_slaac_one() -> None:
    cfg = parse(
        {
            **uplink({"mode": "dhcp"}),
            "lan": {"lan0": {"ipv6": {"mode": "translate", "prefix": "2001:db8:ff::/64"}}},
        }
    )
    i = plan.desired(cfg, dhcp_facts())
    assert StaticAddr(2, LEASED, dev="wan") in i.kernel[ADDRESSES].values()
    src = ipaddress.IPv6Network(f"{ADDRESS}/128")
    assert Rule(AF_INET6, 10020, 101, src=src) in i.kernel[RULES].values()
    assert i.kernel[ROUTES][RouteKey(AF_INET6, 101, "::/0")].gateway == ROUTER
    (table,) = (t for t in i.kernel[NFT].values() if isinstance(t, NftState))
    assert table.ipv6.translations == (NftTranslation("lan0", "2001:db8:ff::/64", "wan", str(src)),)
    assert i.reasons["lan lan0 ipv6"] == f"translate 2001:db8:ff::/64 via wan as {src}"


def test_the_address_is_added_first_and_used_once_the_kernel_holds_it_with_dad_passed() -> None:
    cfg = parse(uplink({"mode": "dhcp"}))
    for facts in (dhcp_facts(held=False), dhcp_facts(dadfailed=True)):
        i = plan.desired(cfg, facts)
        assert StaticAddr(2, LEASED, dev="wan") in i.kernel[ADDRESSES].values()
        assert not [r for r in i.kernel[RULES].values() if r.family == AF_INET6 and r.src is not None]
        assert RouteKey(AF_INET6, 101, "::/0") not in i.kernel[ROUTES]
