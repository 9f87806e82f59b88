"""Each kind of kernel object on its own: reading ours (and only ours) from one snapshot of
the kernel's dumps, and the registry that diff and the applier go by. No kernel, no root."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import pytest

from uplinkd.config import Ownership
from uplinkd.model import (
    AF_INET,
    AF_INET6,
    KINDS,
    KernelState,
    Link,
    LinkUp,
    Member,
    Nexthop,
    NexthopGroup,
    NftState,
    Route,
    RouteKey,
    Rule,
    Snapshot,
    StaticAddr,
    kind_of,
)

OURS = Ownership(protocol=77, nexthop_base=100_000_000, nft_table="uplinkd", mark_mask=0xFF00)
LINKS = {2: Link(2, "eth1", up=True, carrier=True), 3: Link(3, "usb0", up=False, carrier=False)}


@dataclass(frozen=True)
class RouteInfo:  # what kernel.rtnl decodes; the kinds read it by attribute
    family: int
    table: int
    dst: str | None
    dst_len: int
    protocol: int
    type: int = 1
    priority: int | None = None
    oif: int | None = None
    gateway: str | None = None
    nhid: int | None = None


@dataclass(frozen=True)
class GroupMember:
    id: int
    weight: int


@dataclass(frozen=True)
class Resilient:
    buckets: int
    idle_timer: float
    unbalanced_timer: float


@dataclass(frozen=True)
class NexthopInfo:
    id: int
    family: int
    protocol: int
    oif: int | None = None
    gateway: str | None = None
    group: tuple[GroupMember, ...] = ()
    resilient: Resilient | None = None


@dataclass(frozen=True)
class Message:  # a pyroute2 message: header fields and attributes by name
    fields: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


def addr(family: int, prefixlen: int, **attrs: Any) -> Message:
    return Message({"family": family, "index": 2, "prefixlen": prefixlen, **attrs})


def test_each_kind_reads_only_what_carries_our_protocol_and_ids() -> None:
    snapshot = Snapshot(
        links=LINKS,
        addrs=[
            addr(AF_INET, 24, IFA_LOCAL="10.0.0.2", IFA_PROTO=77),
            addr(AF_INET, 24, IFA_LOCAL="10.9.0.2"),  # someone else's
            addr(AF_INET6, 64, IFA_ADDRESS="2001:db8::2", IFA_PROTO=77),
        ],
        routes=[
            RouteInfo(AF_INET, 101, None, 0, 77, oif=2, gateway="10.0.0.1"),
            RouteInfo(AF_INET, 200, None, 0, 77, nhid=100_000_000),
            RouteInfo(AF_INET6, 200, None, 0, 77, type=7),
            RouteInfo(AF_INET, 101, None, 0, 77, priority=100, oif=2),  # a metric we never write
            RouteInfo(AF_INET, 254, None, 0, 3, oif=2, gateway="10.0.0.1"),  # main's, by DHCP
        ],
        rules=[
            Message({"family": AF_INET, "table": 254, "FRA_PRIORITY": 10000, "FRA_SUPPRESS_PREFIXLEN": 0,
                     "FRA_PROTOCOL": 77}),
            Message({"family": AF_INET, "table": 101, "FRA_PRIORITY": 10010, "FRA_FWMARK": 0x6500,
                     "FRA_FWMASK": 0xFF00, "FRA_PROTOCOL": 77, "FRA_SUPPRESS_PREFIXLEN": 0xFFFFFFFF}),
            Message({"family": AF_INET, "table": 101, "FRA_PRIORITY": 10020, "FRA_SRC": "10.0.0.2",
                     "src_len": 32, "FRA_PROTOCOL": 77}),
            Message({"family": AF_INET, "table": 101, "FRA_PRIORITY": 10020}),  # same priority, not ours
        ],
        nexthops=[
            NexthopInfo(100_000_202, AF_INET, 77, oif=2, gateway="10.0.0.1"),
            NexthopInfo(100_000_000, AF_INET, 77, group=(GroupMember(100_000_202, 3),),
                        resilient=Resilient(512, 10.0, 0.0)),
            NexthopInfo(5, AF_INET, 77, oif=2),  # outside our id range
            NexthopInfo(100_000_204, AF_INET, 4, oif=2),  # in our range, another protocol
        ],
        nft=NftState("uplinkd", 0xFF00, ()),
    )  # fmt: skip
    ip = ipaddress.ip_address
    assert KernelState.read(snapshot, OURS) == KernelState(
        [
            LinkUp(2),
            StaticAddr(2, ipaddress.ip_interface("10.0.0.2/24")),
            StaticAddr(2, ipaddress.ip_interface("2001:db8::2/64")),
            NftState("uplinkd", 0xFF00, ()),
            Nexthop(100_000_202, AF_INET, 2, ip("10.0.0.1")),
            NexthopGroup(100_000_000, (Member(100_000_202, 3),), 512, 1000, 0),
            Route(RouteKey(AF_INET, 101, "0.0.0.0/0"), oif=2, gateway=ip("10.0.0.1")),
            Route(RouteKey(AF_INET, 200, "0.0.0.0/0"), nhid=100_000_000),
            Route(RouteKey(AF_INET6, 200, "::/0"), type="unreachable"),
            Rule(AF_INET, 10000, 254, suppress_prefixlength=0),
            Rule(AF_INET, 10010, 101, fwmark=0x6500, fwmask=0xFF00),
            Rule(AF_INET, 10020, 101, src=ipaddress.ip_network("10.0.0.2/32")),
        ]
    )


def test_the_registry_knows_every_kind_once_and_stages_order_creates_before_deletes() -> None:
    assert len({k.name for k in KINDS}) == len(KINDS)
    for kind in KINDS:
        if kind.prune and not kind.action:
            assert kind.create_stage < kind.delete_stage, kind.name
    with pytest.raises(TypeError, match="not a registered kind"):
        kind_of(object())


def test_a_kernel_state_is_an_immutable_value() -> None:
    a = KernelState([Rule(AF_INET, 1, 200)])
    assert a == KernelState([Rule(AF_INET, 1, 200)]) and a != KernelState()
    with pytest.raises(AttributeError):
        a.x = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        a[kind_of(Rule(AF_INET, 1, 200))][Rule(AF_INET, 2, 200)] = Rule(AF_INET, 2, 200)  # type: ignore[index]
