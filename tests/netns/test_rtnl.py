"""uplinkd.kernel.rtnl against a real kernel, each test in its own netns.

Runs as root.  Everything the module writes is read back with iproute2
(``ip -json``), and objects created with iproute2 are decoded by the module.

Lab per test (all in one fresh namespace ``rtnl-<random>``)::

    a0 10.1.0.1/24 <-veth-> a1
    b0 10.2.0.1/24 <-veth-> b1

Setting ``a1``/``b1`` down takes the carrier away from ``a0``/``b0``.
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from socket import AF_INET
from typing import Any, TypeVar

import pytest
from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_DELROUTE
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from uplinkd import linux
from uplinkd.kernel import rtnl
from uplinkd.kernel.rtnl import GroupMember, NexthopInfo, ResilientParams, messages
from uplinkd.linux import SOL_NETLINK

T = TypeVar("T")

PROTO = 77
TABLE = 200

NETLINK_LIST_MEMBERSHIPS = 9
RTM_NEWLINK = 16
NLMSG_ERROR = 2


@dataclass
class Lab:
    ns: str
    ifindex: dict[str, int]

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "-n", self.ns, *args], check=check, capture_output=True, text=True)

    def ip_json(self, *args: str) -> Any:
        out = self.ip("-json", *args).stdout.strip()
        return json.loads(out) if out else []

    def nexthop_json(self, nh_id: int) -> dict[str, Any] | None:
        result = self.ip("-json", "nexthop", "show", "id", str(nh_id), check=False)
        if result.returncode != 0 or not result.stdout.strip():
            return None
        data = json.loads(result.stdout)
        obj = data[0] if isinstance(data, list) else data
        assert isinstance(obj, dict)
        return obj

    def nexthop_ids(self) -> set[int]:
        return {int(nh["id"]) for nh in self.ip_json("nexthop", "show")}

    def ipr(self, **kwarg: Any) -> AsyncIPRoute:
        # flags=0: attach to the existing namespace, never create one
        return AsyncIPRoute(netns=self.ns, flags=0, **kwarg)


@pytest.fixture
def lab() -> Iterator[Lab]:
    ns = f"rtnl-{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        cmds = [
            "link add a0 type veth peer name a1",
            "link add b0 type veth peer name b1",
            "link set lo up",
            "link set a0 up",
            "link set a1 up",
            "link set b0 up",
            "link set b1 up",
            "addr add 10.1.0.1/24 dev a0",
            "addr add 10.2.0.1/24 dev b0",
        ]
        for cmd in cmds:
            subprocess.run(["ip", "-n", ns, *cmd.split()], check=True)
        links = json.loads(
            subprocess.run(
                ["ip", "-n", ns, "-json", "link", "show"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        lab = Lab(ns, {link["ifname"]: int(link["ifindex"]) for link in links})
        _wait(lambda: _carrier(lab, "a0") and _carrier(lab, "b0"), what="veth carrier")
        yield lab
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def _carrier(lab: Lab, ifname: str) -> bool:
    (link,) = lab.ip_json("link", "show", ifname)
    return "LOWER_UP" in link["flags"]


def _wait(pred: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


async def _one_batch(ipr: AsyncIPRoute) -> list[Any]:
    return [msg async for msg in ipr.get()]


async def collect_events(
    ipr: AsyncIPRoute,
    until: Callable[[list[Any]], bool] = lambda _: False,
    timeout: float = 3.0,
) -> list[Any]:
    """Read event messages until ``until(events)`` holds or ``timeout`` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    events: list[Any] = []
    while not until(events):
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            events.extend(await asyncio.wait_for(_one_batch(ipr), remaining))
        except TimeoutError:
            break
    return events


def nh_events(events: list[Any]) -> list[tuple[str, NexthopInfo]]:
    return [
        (msg["event"], rtnl.decode_nexthop(msg))
        for msg in events
        if msg["header"]["type"] in (messages.RTM_NEWNEXTHOP, messages.RTM_DELNEXTHOP)
    ]


def _proto(obj: dict[str, Any]) -> str:
    return str(obj["protocol"])


def _weights(obj: dict[str, Any]) -> dict[int, int]:
    # iproute2 omits "weight" when it is 1
    return {int(m["id"]): int(m.get("weight", 1)) for m in obj["group"]}


# -- offline codec ------------------------------------------------------------------


def test_nh_grp_weight_codec() -> None:
    msg = rtnl.nhmsg()
    msg["attrs"] = [
        ["NHA_ID", 9],
        ["NHA_GROUP", [{"id": 1, "weight": 1}, {"id": 2, "weight": 256}, {"id": 3, "weight": 300}]],
    ]
    msg.encode()
    raw = bytes(msg.data)
    # struct nexthop_grp: id, weight-1 low byte, weight-1 high byte, resvd
    assert (1).to_bytes(4, "little") + bytes([0, 0, 0, 0]) in raw
    assert (2).to_bytes(4, "little") + bytes([255, 0, 0, 0]) in raw
    assert (3).to_bytes(4, "little") + bytes([299 & 0xFF, 299 >> 8, 0, 0]) in raw
    decoded = rtnl.nhmsg(raw)
    decoded.decode()
    assert decoded.get_attr("NHA_ID") == 9
    assert decoded.get_attr("NHA_GROUP") == [
        {"id": 1, "weight": 1},
        {"id": 2, "weight": 256},
        {"id": 3, "weight": 300},
    ]


def test_rtmsg_ext_knows_nh_id() -> None:
    rtmsg()  # compile pyroute2's table first: the subclass must still get its own
    msg = rtnl.rtmsg_ext()
    msg["family"] = AF_INET
    msg["attrs"] = [["RTA_TABLE", 1000], ["RTA_NH_ID", 4242], ["RTA_DST", "10.0.0.0"]]
    msg.encode()
    decoded = rtnl.rtmsg_ext(bytes(msg.data))
    decoded.decode()
    assert decoded.get_attr("RTA_NH_ID") == 4242
    route = rtnl.decode_route(decoded)
    assert (route.nhid, route.table, route.dst) == (4242, 1000, "10.0.0.0")


# -- single nexthops ---------------------------------------------------------------


@pytest.mark.timeout(30)
def test_single_nexthop_with_gateway(lab: Lab) -> None:
    async def go() -> list[NexthopInfo]:
        async with lab.ipr() as ipr:
            await rtnl.replace_nexthop(
                ipr,
                id=1,
                family=AF_INET,
                oif=lab.ifindex["a0"],
                gateway="10.1.0.2",
                protocol=PROTO,
            )
            return await rtnl.dump_nexthops(ipr)

    (nh,) = run(go())
    obj = lab.nexthop_json(1)
    assert obj is not None
    assert obj["gateway"] == "10.1.0.2"
    assert obj["dev"] == "a0"
    assert _proto(obj) == str(PROTO)
    assert nh == NexthopInfo(
        id=1,
        family=AF_INET,
        protocol=PROTO,
        oif=lab.ifindex["a0"],
        gateway="10.1.0.2",
        blackhole=False,
        flags=0,
        group=(),
        group_type=None,
        resilient=None,
    )
    assert not nh.is_group and not nh.dead and not nh.linkdown and not nh.onlink

    # replace in place: same id, new gateway
    async def again() -> NexthopInfo:
        async with lab.ipr() as ipr:
            await rtnl.replace_nexthop(
                ipr,
                id=1,
                family=AF_INET,
                oif=lab.ifindex["a0"],
                gateway="10.1.0.3",
                protocol=PROTO,
            )
            return await rtnl.get_nexthop(ipr, id=1)

    assert run(again()).gateway == "10.1.0.3"
    obj = lab.nexthop_json(1)
    assert obj is not None and obj["gateway"] == "10.1.0.3"


@pytest.mark.timeout(30)
def test_device_only_and_onlink_nexthop(lab: Lab) -> None:
    async def go() -> dict[int, NexthopInfo]:
        async with lab.ipr() as ipr:
            await rtnl.replace_nexthop(
                ipr, id=2, family=AF_INET, oif=lab.ifindex["b0"], gateway=None, protocol=PROTO
            )
            # gateway outside b0's subnet: only accepted with onlink
            await rtnl.replace_nexthop(
                ipr,
                id=3,
                family=AF_INET,
                oif=lab.ifindex["b0"],
                gateway="192.0.2.1",
                protocol=PROTO,
                onlink=True,
            )
            return {nh.id: nh for nh in await rtnl.dump_nexthops(ipr, family=AF_INET)}

    nhs = run(go())
    obj = lab.nexthop_json(2)
    assert obj is not None
    assert "gateway" not in obj
    assert obj["dev"] == "b0"
    assert obj["scope"] == "host"  # the kernel's choice for a device-only IPv4 nexthop
    assert _proto(obj) == str(PROTO)
    assert nhs[2].gateway is None and nhs[2].oif == lab.ifindex["b0"]
    assert nhs[2].protocol == PROTO

    obj3 = lab.nexthop_json(3)
    assert obj3 is not None and "onlink" in obj3["flags"]
    assert nhs[3].onlink and nhs[3].flags & linux.RTNH_F_ONLINK


# -- groups ------------------------------------------------------------------------


async def _two_members(lab: Lab, ipr: AsyncIPRoute) -> None:
    await rtnl.replace_nexthop(
        ipr, id=1, family=AF_INET, oif=lab.ifindex["a0"], gateway="10.1.0.2", protocol=PROTO
    )
    await rtnl.replace_nexthop(
        ipr, id=2, family=AF_INET, oif=lab.ifindex["b0"], gateway="10.2.0.2", protocol=PROTO
    )


RES = ResilientParams(buckets=32, idle_timer=2.5, unbalanced_timer=7.0)


@pytest.mark.timeout(30)
def test_resilient_group_weights(lab: Lab) -> None:
    async def go() -> NexthopInfo:
        async with lab.ipr() as ipr:
            await _two_members(lab, ipr)
            await rtnl.replace_group(
                ipr,
                id=10,
                members=[GroupMember(1, 3), GroupMember(2, 1)],
                resilient=RES,
                protocol=PROTO,
            )
            return await rtnl.get_nexthop(ipr, id=10)

    nh = run(go())
    obj = lab.nexthop_json(10)
    assert obj is not None
    assert obj["type"] == "resilient"
    assert obj["resilient_args"]["buckets"] == 32
    assert float(obj["resilient_args"]["idle_timer"]) == 2.5
    assert float(obj["resilient_args"]["unbalanced_timer"]) == 7.0
    assert _weights(obj) == {1: 3, 2: 1}
    assert _proto(obj) == str(PROTO)

    assert nh.is_group
    assert nh.group_type == "resilient"
    assert nh.group == (GroupMember(1, 3), GroupMember(2, 1))
    assert nh.resilient == RES
    assert nh.protocol == PROTO
    assert nh.oif is None and nh.gateway is None


@pytest.mark.timeout(30)
def test_replace_group_members(lab: Lab) -> None:
    """Dropping a member keeps the group id and the routes using it; type and
    bucket count are fixed."""

    async def go() -> tuple[NexthopInfo, list[int], int, int]:
        async with lab.ipr(ext_ack=True) as ipr:
            await _two_members(lab, ipr)
            await rtnl.replace_group(
                ipr,
                id=10,
                members=[GroupMember(1, 3), GroupMember(2, 1)],
                resilient=RES,
                protocol=PROTO,
            )
            await rtnl.replace_route(
                ipr, family=AF_INET, table=TABLE, dst=None, dst_len=0, nhid=10, protocol=PROTO
            )
            await rtnl.replace_group(ipr, id=10, members=[GroupMember(1, 3)], resilient=RES, protocol=PROTO)
            group = await rtnl.get_nexthop(ipr, id=10)
            routes = [r.nhid or 0 for r in await rtnl.dump_routes(ipr, family=AF_INET, table=TABLE)]
            with pytest.raises(NetlinkError) as type_change:
                await rtnl.replace_group(ipr, id=10, members=[GroupMember(1)], resilient=None, protocol=PROTO)
            with pytest.raises(NetlinkError) as bucket_change:
                await rtnl.replace_group(
                    ipr,
                    id=10,
                    members=[GroupMember(1)],
                    resilient=ResilientParams(buckets=64),
                    protocol=PROTO,
                )
            return group, routes, type_change.value.code, bucket_change.value.code

    group, routes, type_errno, bucket_errno = run(go())
    assert group.id == 10 and group.group == (GroupMember(1, 3),)
    assert group.group_type == "resilient" and group.resilient == RES
    assert routes == [10]
    assert type_errno == errno.EINVAL
    assert bucket_errno == errno.EINVAL

    obj = lab.nexthop_json(10)
    assert obj is not None
    assert _weights(obj) == {1: 3}
    assert obj["type"] == "resilient" and obj["resilient_args"]["buckets"] == 32
    assert lab.nexthop_ids() == {1, 2, 10}  # the dropped member still exists
    (route,) = lab.ip_json("route", "show", "table", str(TABLE))
    assert route["nhid"] == 10


@pytest.mark.timeout(30)
def test_decode_objects_created_by_iproute2(lab: Lab) -> None:
    p = str(PROTO)
    lab.ip("nexthop", "add", "id", "1", "via", "10.1.0.2", "dev", "a0", "proto", p)
    lab.ip("nexthop", "add", "id", "2", "dev", "b0", "proto", p)
    lab.ip("nexthop", "add", "id", "3", "blackhole", "proto", p)
    lab.ip("nexthop", "add", "id", "4", "via", "192.0.2.9", "dev", "b0", "onlink")
    lab.ip("nexthop", "add", "id", "20", "group", "1,5/2,2", "proto", p)
    lab.ip(
        "nexthop",
        "add",
        "id",
        "21",
        "group",
        "1,3/2",
        "type",
        "resilient",
        "buckets",
        "16",
        "idle_timer",
        "4",
        "unbalanced_timer",
        "9",
        "proto",
        p,
    )

    async def go() -> dict[int, NexthopInfo]:
        async with lab.ipr() as ipr:
            return {nh.id: nh for nh in await rtnl.dump_nexthops(ipr)}

    nhs = run(go())
    assert set(nhs) == {1, 2, 3, 4, 20, 21}
    assert nhs[1].gateway == "10.1.0.2" and nhs[1].oif == lab.ifindex["a0"]
    assert nhs[1].protocol == PROTO and nhs[1].family == AF_INET
    assert nhs[2].gateway is None and nhs[2].oif == lab.ifindex["b0"]
    assert nhs[3].blackhole and nhs[3].oif is None
    assert nhs[4].onlink and nhs[4].protocol == 0
    assert nhs[20].group_type == "mpath" and nhs[20].resilient is None
    assert nhs[20].group == (GroupMember(1, 5), GroupMember(2, 2))
    assert nhs[20].family == socket.AF_UNSPEC
    assert nhs[21].group_type == "resilient"
    assert nhs[21].group == (GroupMember(1, 3), GroupMember(2, 1))
    assert nhs[21].resilient == ResilientParams(buckets=16, idle_timer=4.0, unbalanced_timer=9.0)


# -- routes ------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_route_with_nhid(lab: Lab) -> None:
    async def write() -> None:
        async with lab.ipr() as ipr:
            await _two_members(lab, ipr)
            await rtnl.replace_group(
                ipr,
                id=10,
                members=[GroupMember(1, 3), GroupMember(2)],
                resilient=RES,
                protocol=PROTO,
            )
            await rtnl.replace_route(
                ipr, family=AF_INET, table=TABLE, dst=None, dst_len=0, nhid=10, protocol=PROTO
            )

    run(write())
    (route,) = lab.ip_json("route", "show", "table", str(TABLE))
    assert route["dst"] == "default"
    assert route["nhid"] == 10
    assert _proto(route) == str(PROTO)

    # the reverse: a route written by iproute2, decoded here
    lab.ip("route", "add", "10.60.0.0/16", "nhid", "1", "table", str(TABLE), "proto", str(PROTO))

    async def read() -> list[rtnl.RouteInfo]:
        async with lab.ipr() as ipr:
            return await rtnl.dump_routes(ipr, family=AF_INET, table=TABLE)

    routes = {(r.dst, r.dst_len): r for r in run(read())}
    assert set(routes) == {(None, 0), ("10.60.0.0", 16)}
    default = routes[(None, 0)]
    assert (default.nhid, default.protocol, default.table) == (10, PROTO, TABLE)
    assert default.type == linux.RTN_UNICAST
    assert routes[("10.60.0.0", 16)].nhid == 1
    assert routes[("10.60.0.0", 16)].protocol == PROTO

    async def delete() -> list[rtnl.RouteInfo]:
        async with lab.ipr() as ipr:
            await rtnl.delete_route(ipr, family=AF_INET, table=TABLE, dst=None, dst_len=0)
            with pytest.raises(NetlinkError) as again:
                await rtnl.delete_route(ipr, family=AF_INET, table=TABLE, dst=None, dst_len=0)
            assert again.value.code == errno.ESRCH
            return await rtnl.dump_routes(ipr, family=AF_INET, table=TABLE)

    assert [(r.dst, r.nhid) for r in run(delete())] == [("10.60.0.0", 1)]
    assert [r["dst"] for r in lab.ip_json("route", "show", "table", str(TABLE))] == ["10.60.0.0/16"]


@pytest.mark.timeout(30)
def test_ipv6_nexthop_and_route(lab: Lab) -> None:
    async def go() -> tuple[NexthopInfo, list[rtnl.RouteInfo]]:
        async with lab.ipr() as ipr:
            await rtnl.replace_nexthop(
                ipr,
                id=6,
                family=socket.AF_INET6,
                oif=lab.ifindex["a0"],
                gateway="fe80::2",
                protocol=PROTO,
            )
            await rtnl.replace_group(ipr, id=60, members=[GroupMember(6, 2)], resilient=None, protocol=PROTO)
            await rtnl.replace_route(
                ipr,
                family=socket.AF_INET6,
                table=TABLE,
                dst="2001:db8::",
                dst_len=32,
                nhid=60,
                protocol=PROTO,
            )
            return (
                await rtnl.get_nexthop(ipr, id=6),
                await rtnl.dump_routes(ipr, family=socket.AF_INET6, table=TABLE),
            )

    nh, routes = run(go())
    assert (nh.family, nh.gateway, nh.oif) == (socket.AF_INET6, "fe80::2", lab.ifindex["a0"])
    obj = lab.nexthop_json(6)
    assert obj is not None and obj["gateway"] == "fe80::2"
    assert [(r.dst, r.dst_len, r.nhid, r.protocol) for r in routes] == [("2001:db8::", 32, 60, PROTO)]
    (route,) = lab.ip_json("-6", "route", "show", "table", str(TABLE))
    assert route["dst"] == "2001:db8::/32" and route["nhid"] == 60


# -- deleting ----------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_delete_nexthops(lab: Lab) -> None:
    async def go() -> int:
        async with lab.ipr() as ipr:
            await _two_members(lab, ipr)
            await rtnl.replace_group(
                ipr,
                id=10,
                members=[GroupMember(1), GroupMember(2)],
                resilient=None,
                protocol=PROTO,
            )
            await rtnl.replace_route(
                ipr, family=AF_INET, table=TABLE, dst=None, dst_len=0, nhid=10, protocol=PROTO
            )
            await rtnl.delete_nexthop(ipr, id=10)
            assert [nh.id for nh in await rtnl.dump_nexthops(ipr)] == [1, 2]
            # the route went with its group
            assert await rtnl.dump_routes(ipr, family=AF_INET, table=TABLE) == []
            await rtnl.delete_nexthop(ipr, id=1)
            await rtnl.delete_nexthop(ipr, id=2)
            with pytest.raises(NetlinkError) as missing:
                await rtnl.delete_nexthop(ipr, id=2)
            with pytest.raises(NetlinkError):
                await rtnl.get_nexthop(ipr, id=2)
            return int(missing.value.code)

    assert run(go()) == errno.ENOENT
    assert lab.nexthop_ids() == set()
    assert lab.ip_json("route", "show", "table", str(TABLE)) == []


# -- events ------------------------------------------------------------------------

EVENT_GROUPS = (
    linux.RTNLGRP_LINK,
    linux.RTNLGRP_IPV4_IFADDR,
    linux.RTNLGRP_IPV4_ROUTE,
    linux.RTNLGRP_IPV4_RULE,
    linux.RTNLGRP_IPV6_ROUTE,
    linux.RTNLGRP_NEXTHOP,
)


@pytest.mark.timeout(30)
def test_subscribe_memberships(lab: Lab) -> None:
    """subscribe() uses NETLINK_ADD_MEMBERSHIP, which also reaches groups > 32."""

    async def go() -> set[int]:
        async with lab.ipr() as ev:
            await rtnl.subscribe(ev, [*EVENT_GROUPS, 33])  # 33 = RTNLGRP_BRVLAN
            raw = ev.socket.getsockopt(SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, 16)
            bits = int.from_bytes(raw, "little")
            return {bit + 1 for bit in range(len(raw) * 8) if bits >> bit & 1}

    assert run(go()) == {*EVENT_GROUPS, 33}


@pytest.mark.timeout(30)
def test_nexthop_events(lab: Lab) -> None:
    """Explicit changes are notified: new, and on deleting a group member the
    member's RTM_DELNEXTHOP followed by the shrunken group's RTM_NEWNEXTHOP."""

    async def go() -> tuple[list[tuple[str, NexthopInfo]], list[tuple[str, NexthopInfo]]]:
        async with lab.ipr() as ev, lab.ipr() as ipr:
            await rtnl.subscribe(ev, EVENT_GROUPS)
            await _two_members(lab, ipr)
            await rtnl.replace_group(
                ipr,
                id=10,
                members=[GroupMember(1, 3), GroupMember(2)],
                resilient=RES,
                protocol=PROTO,
            )
            created = nh_events(await collect_events(ev, lambda e: len(nh_events(e)) >= 3))
            # deleted by another program
            lab.ip("nexthop", "del", "id", "2")
            deleted = nh_events(await collect_events(ev, lambda e: len(nh_events(e)) >= 2))
            return created, deleted

    created, deleted = run(go())
    assert [(kind, nh.id) for kind, nh in created] == [
        ("RTM_NEWNEXTHOP", 1),
        ("RTM_NEWNEXTHOP", 2),
        ("RTM_NEWNEXTHOP", 10),
    ]
    assert created[0][1].gateway == "10.1.0.2" and created[0][1].protocol == PROTO
    assert created[2][1].group == (GroupMember(1, 3), GroupMember(2, 1))
    assert created[2][1].resilient == RES
    assert [(kind, nh.id) for kind, nh in deleted] == [
        ("RTM_DELNEXTHOP", 2),
        ("RTM_NEWNEXTHOP", 10),
    ]
    assert deleted[0][1].gateway == "10.2.0.2"  # a deletion carries the full object
    assert deleted[1][1].group == (GroupMember(1, 3),)


@pytest.mark.timeout(30)
def test_events_on_a_socket_that_also_writes(lab: Lab) -> None:
    """A write on a subscribed socket: its own notification reaches the event
    queue, and the ACK does not leak into it."""

    async def go() -> list[Any]:
        async with lab.ipr() as ipr:
            await rtnl.subscribe(ipr, [linux.RTNLGRP_NEXTHOP])
            await rtnl.replace_nexthop(
                ipr,
                id=1,
                family=AF_INET,
                oif=lab.ifindex["a0"],
                gateway="10.1.0.2",
                protocol=PROTO,
            )
            await rtnl.delete_nexthop(ipr, id=1)
            return await collect_events(ipr, timeout=1.0)

    events = run(go())
    assert [m["header"]["type"] for m in events] == [messages.RTM_NEWNEXTHOP, messages.RTM_DELNEXTHOP]
    assert NLMSG_ERROR not in [m["header"]["type"] for m in events]


@pytest.mark.timeout(30)
def test_carrier_loss_removes_nexthops_silently(lab: Lab) -> None:
    """Carrier loss on a member's device: the kernel removes the nexthop, drops
    it from the group, removes the group with its last member and the routes
    using it -- and sends no RTM_DELNEXTHOP/RTM_NEWNEXTHOP/RTM_DELROUTE for any
    of it (nexthop_flush_dev() passes no nl_info).  Only the link event tells;
    uplinkd has to re-dump nexthops when a link loses carrier."""

    def link_down(ifname: str) -> Callable[[list[Any]], bool]:
        def pred(events: list[Any]) -> bool:
            return any(
                m["header"]["type"] == RTM_NEWLINK
                and m.get_attr("IFLA_IFNAME") == ifname
                and m.get_attr("IFLA_CARRIER") == 0
                for m in events
            )

        return pred

    def silent(events: list[Any]) -> list[Any]:
        return [
            m
            for m in events
            if m["header"]["type"] in (messages.RTM_NEWNEXTHOP, messages.RTM_DELNEXTHOP, RTM_DELROUTE)
            and not (m["header"]["type"] == RTM_DELROUTE and m["family"] != AF_INET)
        ]

    async def go() -> None:
        async with lab.ipr() as ev, lab.ipr() as ipr:
            await _two_members(lab, ipr)
            await rtnl.replace_group(
                ipr,
                id=10,
                members=[GroupMember(1, 3), GroupMember(2)],
                resilient=RES,
                protocol=PROTO,
            )
            await rtnl.replace_route(
                ipr, family=AF_INET, table=TABLE, dst=None, dst_len=0, nhid=10, protocol=PROTO
            )
            await rtnl.subscribe(ev, EVENT_GROUPS)

            # member 1 loses carrier: nexthop 1 goes, group 10 keeps member 2
            lab.ip("link", "set", "a1", "down")
            events = await collect_events(ev, link_down("a0"))
            assert link_down("a0")(events)
            await _poll(lambda: _ids(ipr), lambda ids: 1 not in ids)
            group = await rtnl.get_nexthop(ipr, id=10)
            assert group.group == (GroupMember(2, 1),)
            assert group.resilient == RES
            (route,) = await rtnl.dump_routes(ipr, family=AF_INET, table=TABLE)
            assert route.nhid == 10

            # the last member loses carrier: nexthop 2, group 10 and the route go
            lab.ip("link", "set", "b1", "down")
            events += await collect_events(ev, link_down("b0"))
            assert link_down("b0")(events)
            await _poll(lambda: _ids(ipr), lambda ids: not ids)
            assert await rtnl.dump_routes(ipr, family=AF_INET, table=TABLE) == []

            events += await collect_events(ev, timeout=1.0)
            assert silent(events) == []

    run(go())
    assert lab.nexthop_ids() == set()
    assert lab.ip_json("route", "show", "table", str(TABLE)) == []


async def _ids(ipr: AsyncIPRoute) -> set[int]:
    return {nh.id for nh in await rtnl.dump_nexthops(ipr)}


async def _poll(get: Callable[[], Awaitable[T]], pred: Callable[[T], bool], timeout: float = 5.0) -> T:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await get()
        if pred(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not reached, last value {value!r}")
        await asyncio.sleep(0.05)
