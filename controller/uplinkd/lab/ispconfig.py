"""What an ISP namespace of the lab is set up with: its options, its nft table and fault
scripts, and dnsmasq's command line. Computes only; `uplinkd.lab.isp` applies them."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Literal

from uplinkd.lab.addresses import IspAddresses

AddressMode = Literal["static", "dhcp", "none"]
"""How the router side gets its address: the lab assigns it, the ISP's dnsmasq leases it,
or nobody does."""

DhcpServer = Literal["serve", "silent"]
"""``silent``: an ISP that should answer DHCP but does not (no server is started)."""

DOWN = "down"
UP = "up"
TABLE = "lab"
MIN_LEASE_S = 120
"""dnsmasq refuses leases shorter than two minutes (for DHCPv6 too: it raises them to 120 s)."""
DHCP6_POOL = ("::1000", "::1fff")
"""The host part of the addresses an ISP with ``dhcp6`` hands out, in its current /64."""

READY_TIMEOUT_S = 5.0
POLL_S = 0.02


@dataclass(frozen=True)
class IspOptions:
    address: AddressMode = "static"
    dhcp: DhcpServer = "serve"
    lease_seconds: int = MIN_LEASE_S
    ra: bool = False
    """Send IPv6 router advertisements for the ISP's /64, 2001:db8:<N>::/64 until renumbered
    (SLAAC, default route)."""
    routed6: bool = False
    """Route the /64 to the router's ::2 — with ``ra``, to its link-local address (a 3GPP
    network routes the UE's /64 so) — and do not masquerade IPv6 upstream."""
    ra_mtu: int | None = None
    """The MTU the RAs name."""
    onlink6: bool = False
    """With ``routed6`` and ``ra``: keep the /64 on-link instead (no route to the router), as
    an Ethernet-style stick does: the ISP finds each address by neighbour discovery."""
    dhcp6: bool = False
    """With ``ra``: addresses only by stateful DHCPv6 (IA_NA, ``DHCP6_POOL`` of the /64, for
    ``lease_seconds``): the RAs set the M flag and advertise the prefix without the A flag, so
    nobody gets an address by SLAAC (a wired ISP or an LTE router in bridge mode that
    requires DHCPv6)."""
    ipv4: bool = True
    """False: an IPv6-only ISP, as strict as a real one: no IPv4 address on either of its
    links, no DHCPv4 server, IPv4 forwarding off, and every IPv4 packet from the router side
    counted as foreign (``foreign_sources()["ipv4"]``) and dropped."""

    def __post_init__(self) -> None:
        if self.lease_seconds < MIN_LEASE_S:
            raise ValueError(f"dnsmasq's shortest lease is {MIN_LEASE_S} s")
        if self.dhcp6 and not self.ra:
            raise ValueError("dhcp6 needs ra: dnsmasq announces its DHCPv6 service by RA (the M flag)")

    @property
    def serves_dhcp(self) -> bool:
        return self.address == "dhcp" and self.dhcp == "serve" and self.ipv4

    @property
    def runs_dnsmasq(self) -> bool:
        return self.serves_dhcp or self.ra


@dataclass(frozen=True)
class Faults:
    blackhole: bool = False
    loss_percent: int = 0
    block_icmp: bool = False


@dataclass(frozen=True)
class DnsmasqLease:
    """One line of dnsmasq's lease file."""

    expires: int
    mac: str
    address: IPv4Address
    hostname: str


ND_TYPES = "{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert }"


def base_ruleset(addresses: IspAddresses | None = None, *, routed6: bool = False, ipv4: bool = True) -> str:
    """The ISP's nft table: counters of packets from the router side whose source is not the
    ISP's own (what a carrier resets sessions for), an (initially empty) fault chain, and
    masquerade upstream (IPv4 only with ``routed6``). Without ``ipv4`` (an IPv6-only ISP) no
    IPv4 source is the ISP's own: every IPv4 packet from the router side (but DHCP's 0.0.0.0)
    is counted foreign, and dropped.

    The fault chain hooks prerouting at raw priority, before conntrack, so dropped packets
    leave no connection state behind; the counters come before it.
    """
    counting = ""
    drop4 = "" if ipv4 else f'        iifname "{DOWN}" meta nfproto ipv4 drop\n'
    if addresses is not None:
        mine4 = f"{addresses.gateway4.network}, 0.0.0.0" if ipv4 else "0.0.0.0"
        mine6 = f"{addresses.gateway6.network}, fe80::/10, ::/128"
        counting = f"""\
    counter foreign4 {{
    }}
    counter foreign6 {{
    }}
    set mine6 {{
        type ipv6_addr; flags interval; elements = {{ {mine6} }}
    }}
    chain sources {{
        type filter hook prerouting priority raw - 10; policy accept;
        iifname "{DOWN}" ip saddr != {{ {mine4} }} counter name "foreign4"
        iifname "{DOWN}" ip6 saddr != @mine6 counter name "foreign6"
{drop4}    }}
    counter forwarded6 {{
    }}
    chain forwarded {{
        type filter hook forward priority filter; policy accept;
        iifname "{DOWN}" oifname "{UP}" meta nfproto ipv6 counter name "forwarded6"
    }}
"""
    family = "meta nfproto ipv4 " if routed6 else ""
    return f"""\
table inet {TABLE} {{
{counting}    chain faults {{
        type filter hook prerouting priority raw; policy accept;
    }}
    chain upstream_nat {{
        type nat hook postrouting priority srcnat; policy accept;
        {family}oifname "{UP}" masquerade
    }}
}}
"""


def faults_script(faults: Faults) -> str:
    """An nft script that replaces the fault chain's rules with ``faults``.  Computes only."""
    rules: list[str] = []
    if faults.blackhole:
        rules += [
            "udp dport 67 accept",
            f"icmpv6 type {ND_TYPES} accept",
            "drop",
        ]
    if faults.block_icmp:
        rules += [
            "meta l4proto icmp drop",
            f"icmpv6 type != {ND_TYPES} drop",
        ]
    if faults.loss_percent > 0:
        rules.append(f"numgen random mod 100 < {faults.loss_percent} drop")
    lines = [f"flush chain inet {TABLE} faults"]
    lines += [f'add rule inet {TABLE} faults iifname "{DOWN}" {rule}' for rule in rules]
    return "\n".join(lines) + "\n"


def dnsmasq_argv(
    *, addresses: IspAddresses, options: IspOptions, workdir: Path, name: str
) -> list[str]:
    """dnsmasq serving only the ISP's ``down`` link: no DNS, no config file, files in
    ``workdir``.  Computes only."""
    first, last = addresses.dhcp_pool
    argv = [
        "dnsmasq",
        "--conf-file=/dev/null",
        "--keep-in-foreground",
        "--port=0",
        f"--interface={DOWN}",
        "--bind-interfaces",
        f"--pid-file={workdir / f'{name}.pid'}",
        f"--dhcp-leasefile={workdir / f'{name}.leases'}",
        f"--log-facility={workdir / f'{name}.dnsmasq.log'}",
        "--log-dhcp",
    ]
    if options.serves_dhcp:
        argv += [
            f"--dhcp-range={first},{last},255.255.255.0,{options.lease_seconds}",
            f"--dhcp-option=option:router,{addresses.gateway4.ip}",
            "--dhcp-authoritative",
            # dnsmasq pings an address before offering it and waits up to 3 s for an answer.
            "--no-ping",
        ]
    if options.ra:
        mtu = f"mtu:{options.ra_mtu}," if options.ra_mtu is not None else ""
        # the prefixes of the link's addresses: a renumbered one is advertised as it
        # changes, and the one it replaced as an "old prefix" (lifetime 0) for a while.
        # Stateful (no mode keyword): dnsmasq leases addresses of the range by DHCPv6 and its
        # RAs set the M flag and clear the prefix's A flag (its man page, --enable-ra)
        first6, last6 = DHCP6_POOL
        ranged = (
            f"--dhcp-range={first6},{last6},constructor:{DOWN},64,{options.lease_seconds}"
            if options.dhcp6
            else f"--dhcp-range=::,constructor:{DOWN},ra-only,64"
        )
        argv += ["--enable-ra", ranged, f"--ra-param={DOWN},{mtu}10,600"]
    return argv
