"""What the kinds need from the kernel, and nothing more: one `Snapshot` of its dumps to
read from and a `Transport` to write through. What marks an object as ours is the config's
`kernel` section (`config.Ownership`: protocol, nexthop id range, mark mask, nft table).

Protocols only, so this package stays pure: `kernel/state.py` takes the snapshot and
implements the transport with pyroute2 (and `kernel.rtnl` where pyroute2 falls short),
nft and ctnetlink. The record protocols name exactly the fields the kinds read, which
`kernel.rtnl.RouteInfo`/`NexthopInfo` and pyroute2's messages have.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from uplinkd.config import Ownership
from uplinkd.model.observed import Link
from uplinkd.tunnel.vxlan import FdbEntry, VxlanLink

if TYPE_CHECKING:
    from uplinkd.model.kinds.nft import NftState


NEXTHOP_SPAN = 1 << 25  # our nexthop ids are [kernel.nexthop_base, base + 2**25)


def owns_nexthop(owner: Ownership, nhid: int) -> bool:
    """Whether a nexthop id is in the range the `kernel` section reserves for us."""
    return owner.nexthop_base <= nhid < owner.nexthop_base + NEXTHOP_SPAN


# --- what the kernel says, as the kinds read it ------------------------------------------------


class Message(Protocol):
    """A decoded netlink message (pyroute2's nlmsg): header fields by name, attributes by
    their NLA name."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def __getitem__(self, key: str) -> Any: ...


class RouteRecord(Protocol):
    """A route as the kernel's typed decoder reports it (`kernel.rtnl.RouteInfo`)."""

    @property
    def family(self) -> int: ...
    @property
    def table(self) -> int: ...
    @property
    def dst(self) -> str | None: ...
    @property
    def dst_len(self) -> int: ...
    @property
    def protocol(self) -> int: ...
    @property
    def type(self) -> int: ...
    @property
    def priority(self) -> int | None: ...
    @property
    def oif(self) -> int | None: ...
    @property
    def gateway(self) -> str | None: ...
    @property
    def nhid(self) -> int | None: ...


class MemberRecord(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def weight(self) -> int: ...


class ResilientRecord(Protocol):
    @property
    def buckets(self) -> int: ...
    @property
    def idle_timer(self) -> float: ...
    @property
    def unbalanced_timer(self) -> float: ...


class NexthopRecord(Protocol):
    """A nexthop object as the kernel's typed decoder reports it (`kernel.rtnl.NexthopInfo`)."""

    @property
    def id(self) -> int: ...
    @property
    def family(self) -> int: ...
    @property
    def protocol(self) -> int: ...
    @property
    def oif(self) -> int | None: ...
    @property
    def gateway(self) -> str | None: ...
    @property
    def group(self) -> Sequence[MemberRecord]: ...
    @property
    def resilient(self) -> ResilientRecord | None: ...


@dataclass(frozen=True)
class Snapshot:
    """One reading of the kernel: every dump a kind reads from, taken once per pass."""

    links: Mapping[int, Link]
    addrs: Sequence[Message] = ()
    routes: Sequence[RouteRecord] = ()  # both families
    rules: Sequence[Message] = ()  # both families
    nexthops: Sequence[NexthopRecord] = ()
    # Our nft table as kernel/nft.py parsed it (the text format lives next to its renderer);
    # None: absent, or edited by hand since we loaded it.
    nft: NftState | None = None
    # the VXLAN interfaces uplinkd created (their alias says so), and the forwarding entries
    # with a remote on them
    vxlans: Sequence[VxlanLink] = ()
    fdb: Sequence[FdbEntry] = ()


class Transport(Protocol):
    """The kernel requests the kinds write with; `kernel/` implements it. Protocol numbers
    are the caller's to pass; errors are raised as the transport's own exceptions (the
    applier translates errno)."""

    async def rule(self, command: Literal["add", "del"], **fields: Any) -> None: ...
    async def addr(self, command: Literal["add", "del"], **fields: Any) -> None: ...
    async def link_up(self, *, index: int) -> None: ...
    async def link_mtu(self, *, index: int, mtu: int) -> None: ...
    async def ipv6_conf(self, *, dev: str, key: str, value: int) -> None: ...
    async def replace_route(
        self,
        *,
        family: int,
        table: int,
        dst: str | None,
        dst_len: int,
        protocol: int,
        unreachable: bool,
        nhid: int | None,
        oif: int | None,
        gateway: str | None,
        exclusive: bool,
    ) -> None: ...
    async def delete_route(
        self, *, family: int, table: int, dst: str | None, dst_len: int, protocol: int
    ) -> None: ...
    async def replace_nexthop(
        self, *, id: int, family: int, oif: int, gateway: str | None, protocol: int
    ) -> None: ...
    async def replace_group(
        self,
        *,
        id: int,
        members: Sequence[tuple[int, int]],
        buckets: int,
        idle_timer: float,
        unbalanced_timer: float,
        protocol: int,
    ) -> None: ...
    async def delete_nexthop(self, *, id: int) -> None: ...
    async def nft_load(self, state: NftState) -> None: ...
    async def nft_delete(self, table: str) -> None: ...
    async def conntrack_flush(self, *, mark: int, mask: int) -> None: ...
    async def vxlan_link(self, command: Literal["set", "del"], link: VxlanLink) -> None: ...
    async def vxlan_fdb(self, command: Literal["add", "del"], entry: FdbEntry) -> None: ...
