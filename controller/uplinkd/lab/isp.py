"""One ISP of the lab: its namespace, its DHCP server, and the faults it can be told to have.

An ISP namespace ``<prefix>isp<N>`` has two links:

* ``down``: the router's uplink (a veth pair; the router end is the uplink interface, e.g.
  ``wan`` or ``lte1``).  The ISP's gateway address lives here, and dnsmasq serves DHCP (and,
  if asked, IPv6 router advertisements) on it.
* ``up``: a veth into the ``inet`` namespace's bridge.  Everything leaving through ``up`` is
  masqueraded to the ISP's own address, so the server sees one source address per ISP.

Faults are applied inside the ISP only: the router under test is never touched by them.
They act on traffic *from the router side*; link-local control traffic (ARP, neighbour
discovery, DHCP) keeps working under a blackhole, like an LTE modem whose network is gone
while the modem itself still answers.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import Literal

from uplinkd.lab.addresses import IspAddresses
from uplinkd.lab.netns import LabError, Runner

AddressMode = Literal["static", "dhcp", "none"]
"""How the router side gets its address: the lab assigns it, the ISP's dnsmasq leases it,
or nobody does."""

DhcpServer = Literal["serve", "silent"]
"""``silent``: an ISP that should answer DHCP but does not (no server is started)."""

DOWN = "down"
UP = "up"
TABLE = "lab"
MIN_LEASE_S = 120
"""dnsmasq refuses leases shorter than two minutes."""

READY_TIMEOUT_S = 5.0
POLL_S = 0.02


@dataclass(frozen=True)
class IspOptions:
    address: AddressMode = "static"
    dhcp: DhcpServer = "serve"
    lease_seconds: int = MIN_LEASE_S
    ra: bool = False
    """Send IPv6 router advertisements for 2001:db8:<N>::/64 (SLAAC, default route)."""
    routed6: bool = False
    """Route 2001:db8:<N>::/64 to the router's ::2 and do not masquerade IPv6 upstream."""

    def __post_init__(self) -> None:
        if self.lease_seconds < MIN_LEASE_S:
            raise ValueError(f"dnsmasq's shortest lease is {MIN_LEASE_S} s")

    @property
    def serves_dhcp(self) -> bool:
        return self.address == "dhcp" and self.dhcp == "serve"

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


def base_ruleset(addresses: IspAddresses | None = None, *, routed6: bool = False) -> str:
    """The ISP's nft table: counters of packets from the router side whose source is not the
    ISP's own (what a carrier resets sessions for), an (initially empty) fault chain, and
    masquerade upstream (IPv4 only with ``routed6``).

    The fault chain hooks prerouting at raw priority, before conntrack, so dropped packets
    leave no connection state behind; the counters come before it.
    """
    counting = ""
    if addresses is not None:
        mine4 = f"{addresses.gateway4.network}, 0.0.0.0"
        mine6 = f"{addresses.gateway6.network}, fe80::/10, ::"
        counting = f"""\
    counter foreign4 {{
    }}
    counter foreign6 {{
    }}
    set mine6 {{
        type ipv6_addr; flags interval;
        elements = {{ {mine6} }}
    }}
    chain sources {{
        type filter hook prerouting priority raw - 10; policy accept;
        iifname "{DOWN}" ip saddr != {{ {mine4} }} counter name "foreign4"
        iifname "{DOWN}" ip6 saddr != @mine6 counter name "foreign6"
    }}
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
        prefix = addresses.gateway6.network.network_address
        argv += [
            "--enable-ra",
            f"--dhcp-range={prefix},ra-only,64",
            f"--ra-param={DOWN},10,600",
        ]
    return argv


class Isp:
    """ISP number ``index``, standing for uplink ``name``.  Made by :meth:`Lab.add_isp`."""

    def __init__(
        self,
        *,
        name: str,
        index: int,
        netns: str,
        options: IspOptions,
        runner: Runner,
        workdir: Path,
    ) -> None:
        self.name = name
        self.index = index
        self.netns = netns
        self.options = options
        self.addresses = IspAddresses(index)
        self._runner = runner
        self._workdir = workdir
        self._ifname: str | None = None
        self._dnsmasq: subprocess.Popen[str] | None = None
        self._faults = Faults()
        self._carrier = True
        self._rate_kbit: int | None = None

    def __repr__(self) -> str:
        return f"Isp({self.name!r}, isp{self.index}, ifname={self._ifname!r})"

    @property
    def ifname(self) -> str | None:
        """The router side's interface name while plugged in, else None."""
        return self._ifname

    @property
    def dnsmasq(self) -> subprocess.Popen[str] | None:
        return self._dnsmasq

    # --- faults -------------------------------------------------------------------------

    def blackhole(self, on: bool = True) -> None:
        """Drop everything from the router side, forwarded or to the ISP itself; carrier
        stays up, ARP/ND/DHCP still answered."""
        self._set_faults(replace(self._faults, blackhole=on))

    def loss(self, percent: int) -> None:
        """Drop ``percent`` % of packets from the router side at random (0 = none)."""
        if not 0 <= percent <= 100:
            raise ValueError(f"loss must be 0..100 %, not {percent}")
        self._set_faults(replace(self._faults, loss_percent=percent))

    def block_icmp(self, on: bool = True) -> None:
        """Drop ICMP (v4, and v6 except neighbour discovery) from the router side."""
        self._set_faults(replace(self._faults, block_icmp=on))

    def carrier(self, up: bool) -> None:
        """Set the ISP end of the uplink down/up: the router's end loses/regains carrier.

        Coming up, this returns once the ISP end is operationally up again.  The kernel
        reports operstate changes through its link-watch work, which runs at most once a
        second; until then IPv6 on the ISP end is not ready and would ignore the router's
        first neighbour solicitation (the retry comes a second later).
        """
        self._require_plugged()
        self._carrier = up
        self._runner.ip(self.netns, "link", "set", "dev", DOWN, "up" if up else "down")
        if up:
            self._wait_until_ready()

    def rate(self, kbit: int | None) -> None:
        """Shape both directions to ``kbit`` kbit/s (tc tbf); None removes the shaping."""
        if kbit is not None and kbit <= 0:
            raise ValueError(f"rate must be positive, not {kbit}")
        self._rate_kbit = kbit
        self._apply_rate(UP)
        if self._ifname is not None:
            self._apply_rate(DOWN)

    @property
    def faults(self) -> Faults:
        return self._faults

    def foreign_sources(self) -> dict[str, int]:
        """Packets from the router side, per family ("ipv4", "ipv6"), whose source was outside
        this ISP's prefix (and not link-local or unspecified): what a carrier would reset."""
        counts: dict[str, int] = {}
        for family in ("4", "6"):
            argv = ["nft", "-j", "list", "counter", "inet", TABLE, f"foreign{family}"]
            out = self._runner.run(self.netns, argv)
            for item in json.loads(out.stdout)["nftables"]:
                if "counter" in item:
                    counts[f"ipv{family}"] = int(item["counter"]["packets"])
        return counts

    def own_prefix6(self, prefix: str) -> None:
        """Count ``prefix`` as this ISP's own too (a pool it delegates from): sources in it
        are not foreign."""
        self._runner.run(self.netns, ["nft", "add", "element", "inet", TABLE, "mine6", f"{{ {prefix} }}"])

    def forwarded6(self) -> int:
        """IPv6 packets from the router side this ISP forwarded upstream (whatever their
        source: a NAT66'd packet carries an address inside the ISP's prefix)."""
        argv = ["nft", "-j", "list", "counter", "inet", TABLE, "forwarded6"]
        out = self._runner.run(self.netns, argv)
        found = [item["counter"] for item in json.loads(out.stdout)["nftables"] if "counter" in item]
        return int(found[0]["packets"])

    def leases(self) -> list[DnsmasqLease]:
        """The leases dnsmasq has handed out (its lease file)."""
        path = self._workdir / f"isp{self.index}.leases"
        if not path.exists():
            return []
        leases = []
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) >= 4 and words[0].isdigit():
                leases.append(DnsmasqLease(int(words[0]), words[1], IPv4Address(words[2]), words[3]))
        return leases

    # --- lifecycle, driven by Lab ---------------------------------------------------------

    def setup(self, *, inet_netns: str, inet_bridge: str) -> None:
        """Create the namespace's upstream, routes and nft table (the namespace exists)."""
        a = self.addresses
        self._runner.sysctl(
            self.netns,
            {
                "net.ipv4.ip_forward": 1,
                "net.ipv6.conf.all.forwarding": 1,
                "net.ipv6.conf.all.accept_dad": 0,
                "net.ipv6.conf.default.accept_dad": 0,
                # Keep the gateway's v6 address while carrier() has the link down.
                "net.ipv6.conf.all.keep_addr_on_down": 1,
            },
        )
        peer = f"isp{self.index}"
        self._runner.ip(
            self.netns, "link", "add", "name", UP, "type", "veth",
            "peer", "name", peer, "netns", inet_netns,
        )  # fmt: skip
        self._runner.ip(inet_netns, "link", "set", "dev", peer, "master", inet_bridge, "up")
        self._runner.ip_batch(
            self.netns,
            [
                "link set dev lo up",
                f"address add {a.upstream4} dev {UP}",
                f"address add {a.upstream6} dev {UP} nodad",
                f"link set dev {UP} up",
                # Anything not for the lab's own addresses ends here.
                "route add unreachable default",
                "route add unreachable ::/0",
            ],
        )
        self._runner.nft(self.netns, base_ruleset(a, routed6=self.options.routed6))
        self._apply_rate(UP)
        # The server reaches the ISP's /64 through the ISP (for sources it passes unchanged).
        self._runner.ip(
            inet_netns, "-6", "route", "replace", str(a.gateway6.network), "via", str(a.upstream6.ip)
        )

    def attach(self, *, router_netns: str, ifname: str) -> None:
        """Create the uplink veth pair (the router end named ``ifname``); start dnsmasq."""
        if self._ifname is not None:
            raise LabError(f"{self.name} is already plugged in as {self._ifname}")
        a = self.addresses
        self._runner.ip(
            self.netns, "link", "add", "name", DOWN, "type", "veth",
            "peer", "name", ifname, "netns", router_netns,
        )  # fmt: skip
        self._ifname = ifname
        self._runner.ip_batch(
            self.netns,
            [
                f"address add {a.gateway4} dev {DOWN}",
                f"address add {a.gateway6} dev {DOWN} nodad",
                f"link set dev {DOWN} {'up' if self._carrier else 'down'}",
            ],
        )
        if self.options.routed6:
            # the whole /64 goes to the router's address, as a 3GPP network routes a UE's /64
            self._runner.ip(
                self.netns, "-6", "route", "replace", str(a.gateway6.network),
                "via", str(a.router6.ip), "dev", DOWN, "metric", "1", "onlink",
            )  # fmt: skip
        router_side = [f"link set dev {ifname} up"]
        if self.options.address == "static":
            router_side += [
                f"address add {a.router4} dev {ifname}",
                f"address add {a.router6} dev {ifname} nodad",
            ]
        self._runner.ip_batch(router_netns, router_side)
        self._apply_rate(DOWN)
        if self._carrier:
            self._wait_until_ready()
        if self.options.runs_dnsmasq:
            self._start_dnsmasq()

    def detach(self, *, router_netns: str) -> None:
        """Delete the uplink veth pair (both ends) and stop dnsmasq."""
        if self._ifname is None:
            return
        self._stop_dnsmasq()
        self._runner.ip(router_netns, "link", "delete", "dev", self._ifname)
        self._ifname = None

    # --- internals ----------------------------------------------------------------------

    def _require_plugged(self) -> None:
        if self._ifname is None:
            raise LabError(f"{self.name} is not plugged in")

    def _wait_until_ready(self) -> None:
        """Until ``down`` is operationally up and no IPv6 address on it is tentative."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            link = json.loads(self._runner.ip(self.netns, "-json", "link", "show", "dev", DOWN))
            tentative = self._runner.ip(self.netns, "-6", "address", "show", "dev", DOWN, "tentative")
            if link[0]["operstate"] == "UP" and not tentative.strip():
                return
            if time.monotonic() >= deadline:
                raise LabError(f"{self.name}: {DOWN} not up after {READY_TIMEOUT_S} s")
            time.sleep(POLL_S)

    def _set_faults(self, faults: Faults) -> None:
        self._runner.nft(self.netns, faults_script(faults))
        self._faults = faults

    def _apply_rate(self, dev: str) -> None:
        kbit = self._rate_kbit
        if kbit is None:
            # Deleting a root qdisc that is not there fails; that is the state we want.
            self._runner.run(self.netns, ["tc", "qdisc", "del", "dev", dev, "root"], check=False)
            return
        burst = max(4000, kbit * 1000 // 8 // 100)  # bytes: 10 ms worth, at least 2 frames
        self._runner.run(
            self.netns,
            ["tc", "qdisc", "replace", "dev", dev, "root", "tbf",
             "rate", f"{kbit}kbit", "burst", str(burst), "latency", "200ms"],
        )  # fmt: skip

    def _start_dnsmasq(self) -> None:
        name = f"isp{self.index}"
        argv = dnsmasq_argv(
            addresses=self.addresses, options=self.options, workdir=self._workdir, name=name
        )
        proc = self._runner.popen(self.netns, argv, stderr=subprocess.PIPE)
        self._dnsmasq = proc
        deadline = time.monotonic() + READY_TIMEOUT_S
        pidfile = self._workdir / f"{name}.pid"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else ""
                raise LabError(f"dnsmasq for {self.name} exited {proc.returncode}: {err}")
            if self._dnsmasq_ready(proc.pid, pidfile):
                return
            time.sleep(POLL_S)
        raise LabError(f"dnsmasq for {self.name} not ready after {READY_TIMEOUT_S} s: "
                       f"{shlex.join(argv)}")

    def _dnsmasq_ready(self, pid: int, pidfile: Path) -> bool:
        """dnsmasq writes its pid file once its sockets exist; for DHCP, also see the
        socket on port 67 owned by this very process."""
        if not pidfile.exists() or pidfile.read_text().strip() != str(pid):
            return False
        if not self.options.serves_dhcp:
            return True
        out = self._runner.run(self.netns, ["ss", "-H", "-u", "-l", "-n", "-p", "sport = :67"])
        return f"pid={pid}," in out.stdout

    def _stop_dnsmasq(self) -> None:
        if self._dnsmasq is not None:
            self._runner.stop(self._dnsmasq)
            self._dnsmasq = None
