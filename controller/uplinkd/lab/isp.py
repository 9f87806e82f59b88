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
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Network
from pathlib import Path

from uplinkd.lab.addresses import IspAddresses
from uplinkd.lab.ispconfig import (
    DOWN,
    MIN_LEASE_S,
    POLL_S,
    READY_TIMEOUT_S,
    TABLE,
    UP,
    AddressMode,
    DhcpServer,
    DnsmasqLease,
    Faults,
    IspOptions,
    base_ruleset,
    dnsmasq_argv,
    faults_script,
)
from uplinkd.lab.netns import LabError, Runner

__all__ = [
    "DOWN",
    "MIN_LEASE_S",
    "TABLE",
    "UP",
    "AddressMode",
    "DhcpServer",
    "DnsmasqLease",
    "Faults",
    "Isp",
    "IspOptions",
    "base_ruleset",
    "dnsmasq_argv",
    "faults_script",
]


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
        self._prefix6 = self.addresses.gateway6.network  # the /64 of the down link
        self._router_ll: str | None = None  # with ra and routed6: where the /64 is routed
        self._inet = ""  # the inet namespace (set up by setup())

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

    def leases6(self) -> list[tuple[int, str]]:
        """The IPv6 addresses dnsmasq has leased by DHCPv6 (IA_NA): (expiry, address) per
        line of its lease file after the ``duid`` line."""
        path = self._workdir / f"isp{self.index}.leases"
        found: list[tuple[int, str]] = []
        v6 = False
        for line in path.read_text().splitlines() if path.exists() else []:
            words = line.split()
            v6 = v6 or (bool(words) and words[0] == "duid")
            if v6 and len(words) >= 3 and words[0].isdigit() and ":" in words[2]:
                found.append((int(words[0]), words[2]))
        return found

    def leases(self) -> list[DnsmasqLease]:
        """The leases dnsmasq has handed out (its lease file)."""
        path = self._workdir / f"isp{self.index}.leases"
        if not path.exists():
            return []
        leases = []
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:1] == ["duid"]:
                break  # the DHCPv6 leases follow: leases6()
            if len(words) >= 4 and words[0].isdigit():
                leases.append(DnsmasqLease(int(words[0]), words[1], IPv4Address(words[2]), words[3]))
        return leases

    # --- lifecycle, driven by Lab ---------------------------------------------------------

    def setup(self, *, inet_netns: str, inet_bridge: str) -> None:
        """Create the namespace's upstream, routes and nft table (the namespace exists)."""
        a = self.addresses
        v4 = self.options.ipv4
        self._runner.sysctl(
            self.netns,
            {
                "net.ipv4.ip_forward": 1 if v4 else 0,
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
                *([f"address add {a.upstream4} dev {UP}"] if v4 else []),
                f"address add {a.upstream6} dev {UP} nodad",
                f"link set dev {UP} up",
                # Anything not for the lab's own addresses ends here.
                "route add unreachable default",
                "route add unreachable ::/0",
            ],
        )
        self._inet = inet_netns
        self._runner.nft(self.netns, base_ruleset(a, routed6=self.options.routed6, ipv4=v4))
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
                *([f"address add {a.gateway4} dev {DOWN}"] if self.options.ipv4 else []),
                f"address add {self._own6(self._prefix6)} dev {DOWN} nodad",
                f"link set dev {DOWN} {'up' if self._carrier else 'down'}",
            ],
        )
        router_side = [f"link set dev {ifname} up"]
        if self.options.address == "static":
            router_side += [
                *([f"address add {a.router4} dev {ifname}"] if self.options.ipv4 else []),
                f"address add {a.router6} dev {ifname} nodad",
            ]
        self._runner.ip_batch(router_netns, router_side)
        if self.options.routed6 and not self.options.onlink6:
            # the whole /64 goes to the router's address, as a 3GPP network routes a UE's /64
            # (with RAs, to its link-local address: the router has no other on this link)
            self._router_ll = _link_local(self._runner, router_netns, ifname) if self.options.ra else None
            self._route6(self._prefix6)
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

    @property
    def prefix6(self) -> IPv6Network:
        """The /64 on the ISP's down link (what its RAs advertise)."""
        return self._prefix6

    def renumber6(self, prefix: IPv6Network) -> None:
        """Move the down link to ``prefix`` (a /64): dnsmasq then advertises it, and the old
        one as deprecated; the ISP routes it (``routed6``) and counts it as its own."""
        old = self._prefix6
        self._prefix6 = prefix
        self._runner.nft(self.netns, f"add element inet {TABLE} mine6 {{ {prefix} }}\n")
        self._runner.ip(self.netns, "address", "add", self._own6(prefix), "dev", DOWN, "nodad")
        self._runner.ip(self.netns, "address", "del", self._own6(old), "dev", DOWN)
        if self.options.routed6 and not self.options.onlink6 and self._ifname is not None:
            self._route6(prefix)
        upstream = str(self.addresses.upstream6.ip)
        self._runner.ip(self._inet, "-6", "route", "replace", str(prefix), "via", upstream)

    # --- internals ----------------------------------------------------------------------

    def _own6(self, prefix: IPv6Network) -> str:
        """The ISP's address in ``prefix`` on the down link: ::1, or — when the /64 is routed to
        the router, whose LAN may use ::1 — one far from any host's (dnsmasq needs one to
        advertise the prefix; a 3GPP gateway has none)."""
        routed = self.options.routed6 and self.options.ra
        return f"{prefix.network_address + (0xFFFE if routed else 1)}/64"

    def _route6(self, prefix: IPv6Network) -> None:
        via = self._router_ll or str(self.addresses.router6.ip)
        self._runner.ip(
            self.netns, "-6", "route", "replace", str(prefix),
            "via", via, "dev", DOWN, "metric", "1", "onlink",
        )  # fmt: skip

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
        ports = ([":67"] if self.options.serves_dhcp else []) + ([":547"] if self.options.dhcp6 else [])
        for port in ports:
            out = self._runner.run(self.netns, ["ss", "-H", "-u", "-l", "-n", "-p", f"sport = {port}"])
            if f"pid={pid}," not in out.stdout:
                return False
        return True

    def _stop_dnsmasq(self) -> None:
        if self._dnsmasq is not None:
            self._runner.stop(self._dnsmasq)
            self._dnsmasq = None


def _link_local(runner: Runner, netns: str, ifname: str) -> str:
    """The link-local address of ``ifname`` in ``netns`` (waits for the kernel to add it)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        out = runner.ip(netns, "-6", "-json", "address", "show", "dev", ifname, "scope", "link")
        for entry in json.loads(out or "[]"):
            for info in entry.get("addr_info", []):
                return str(info["local"])
        time.sleep(POLL_S)
    raise LabError(f"{ifname} in {netns} has no link-local address after {READY_TIMEOUT_S} s")
