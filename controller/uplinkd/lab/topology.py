"""The lab: network namespaces standing for a router and the world around it.

::

    lan1 ─┐                  ┌─ wan ═══ down ─ isp1 ─ up ─┐
    lan2 ─┼─ lan0 ─ router ──┼─ lte1 ══ down ─ isp2 ─ up ─┼─ br0 ─ inet (server)
          │  (bridge)        └─ lte2 ══ down ─ isp3 ─ up ─┘

Every namespace is named ``<prefix><role>`` with a per-lab prefix ``ul<6 hex>-``, so labs
can run side by side and cleanup only ever deletes its own.  The router starts bare: forwarding
on, L4 multipath hashing, loose reverse-path filtering, and *no default route*: routing the
uplinks is the job of the controller under test (or of :meth:`Lab.route_by_hand`).

Traffic never leaves the lab: the namespaces have no link to the host, and each ISP's default
route is ``unreachable``.  See :mod:`uplinkd.lab.addresses` for the address plan.
"""

from __future__ import annotations

import atexit
import json
import logging
import secrets
import select
import shutil
import subprocess
import sys
import tempfile
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from uplinkd.lab.addresses import (
    LAN_ROUTER4,
    LAN_ROUTER6,
    MAX_ISPS,
    SERVER4,
    SERVER6,
    ClientAddresses,
)
from uplinkd.lab.flows import DEFAULT_PORT, MAX_DURATION_S, FlowReport, FlowsRun
from uplinkd.lab.isp import AddressMode, DhcpServer, Isp, IspOptions
from uplinkd.lab.netns import (
    COMMAND_TIMEOUT_S,
    File,
    LabError,
    Runner,
    check_run,
    delete_namespaces,
    list_namespaces,
    uplinkd_path,
)
from uplinkd.lab.pd import PdServer, PdTimes

log = logging.getLogger(__name__)

LAN_BRIDGE = "lan0"
INET_BRIDGE = "br0"
# Fixed bridge MACs: a bridge otherwise takes its lowest port's MAC, which changes as ports
# come and go and leaves neighbours with stale ARP entries.
LAN_BRIDGE_MAC = "02:00:5e:00:50:01"
INET_BRIDGE_MAC = "02:00:5e:00:64:64"
SERVER_LIFETIME_S = MAX_DURATION_S
MANUAL_NAT_TABLE = "lab_manual"

ROUTER_SYSCTLS: dict[str, str | int] = {
    "net.ipv4.ip_forward": 1,
    "net.ipv6.conf.all.forwarding": 1,
    "net.ipv4.fib_multipath_hash_policy": 1,  # L4: flows of one host spread over uplinks
    "net.ipv6.fib_multipath_hash_policy": 1,
    # As the NixOS module: no per-packet reverse-path walk by the kernel (accept_local lets it
    # skip the walk); uplinkd's nft table drops spoofed own addresses instead.
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.default.rp_filter": 0,
    "net.ipv4.conf.all.accept_local": 1,
    "net.ipv6.conf.all.accept_dad": 0,
    "net.ipv6.conf.default.accept_dad": 0,
    # A static IPv6 address survives carrier loss, as IPv4 ones do (an address manager
    # such as networkd would put it back; the lab has none).
    "net.ipv6.conf.all.keep_addr_on_down": 1,
}
HOST_SYSCTLS: dict[str, str | int] = {
    "net.ipv6.conf.all.accept_dad": 0,
    "net.ipv6.conf.default.accept_dad": 0,
}


def new_prefix() -> str:
    """A namespace prefix no existing namespace uses: ``ul`` + 6 hex digits + ``-``."""
    taken = {name[:9] for name in list_namespaces()}
    for _ in range(100):
        prefix = f"ul{secrets.token_hex(3)}-"
        if prefix not in taken:
            return prefix
    raise LabError("no free lab prefix found")


class Client:
    """LAN client number ``index``: namespace ``<prefix>lan<index>``, ``eth0`` on lan0."""

    def __init__(self, *, index: int, netns: str) -> None:
        self.index = index
        self.name = f"lan{index}"
        self.netns = netns
        self.addresses = ClientAddresses(index)

    def __repr__(self) -> str:
        return f"Client({self.name!r})"


class Lab:
    """A router, its ISPs, the internet and LAN clients, in network namespaces.

    Use as a context manager; :meth:`close` (also run at interpreter exit) stops every
    process the lab started, by pid, and deletes every namespace it made::

        with Lab() as lab:
            wan = lab.add_isp("wan")
            lab.add_isp("lte1", address="dhcp")
            lab.add_client()
            lab.route_by_hand(wan)
            report = lab.flows(tcp=10, udp=10, duration=2)
            assert report.by_uplink() == {"wan": 20}
    """

    def __init__(self) -> None:
        self.prefix = new_prefix()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"uplinkd-{self.prefix}"))
        self._runner = Runner()
        self._namespaces: list[str] = []
        self._isps: list[Isp] = []
        self._clients: list[Client] = []
        self._server: subprocess.Popen[str] | None = None
        self._closed = False
        atexit.register(self.close)
        try:
            self.router = self._add_namespace("router", ROUTER_SYSCTLS)
            self.inet = self._add_namespace("inet", HOST_SYSCTLS)
            self._setup_router()
            self._setup_inet()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"Lab({self.prefix!r}, isps={self._isps}, clients={self._clients})"

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- building --------------------------------------------------------------------------

    def add_isp(
        self,
        name: str,
        *,
        ifname: str | None = None,
        plugged: bool = True,
        address: AddressMode = "static",
        dhcp: DhcpServer = "serve",
        lease_seconds: int = 120,
        ra: bool = False,
        routed6: bool = False,
        ra_mtu: int | None = None,
        onlink6: bool = False,
        dhcp6: bool = False,
        ipv4: bool = True,
    ) -> Isp:
        """Add ISP ``isp<N>`` standing for uplink ``name``; plugged in as ``ifname``
        (default: ``name``) unless ``plugged`` is False.  ``routed6``: the ISP routes its /64
        to the router's ``2001:db8:<N>::2`` (as a 3GPP network routes a UE's /64) and does not
        masquerade IPv6 upstream, so the server sees the router's (translated) sources.
        ``dhcp6`` (with ``ra``): the router's IPv6 address only by DHCPv6 IA_NA, no SLAAC.
        ``ipv4=False``: an IPv6-only ISP (no IPv4 anywhere on it, IPv4 from the router counted
        as foreign and dropped; see ``IspOptions.ipv4``)."""
        if any(isp.name == name for isp in self._isps):
            raise LabError(f"there already is an ISP named {name!r}")
        index = len(self._isps) + 1
        if index > MAX_ISPS:
            raise LabError(f"at most {MAX_ISPS} ISPs")
        options = IspOptions(
            address=address,
            dhcp=dhcp,
            lease_seconds=lease_seconds,
            ra=ra,
            routed6=routed6,
            ra_mtu=ra_mtu,
            onlink6=onlink6,
            dhcp6=dhcp6,
            ipv4=ipv4,
        )
        netns = self._add_namespace(f"isp{index}", {})
        isp = Isp(
            name=name,
            index=index,
            netns=netns,
            options=options,
            runner=self._runner,
            workdir=self.workdir,
        )
        self._isps.append(isp)
        isp.setup(inet_netns=self.inet, inet_bridge=INET_BRIDGE)
        if plugged:
            self.plug(isp, ifname or name)
        return isp

    def add_client(self) -> Client:
        """Add LAN client ``lan<K>``: 192.168.50.<10+K>, default route via the router."""
        index = len(self._clients) + 1
        client = Client(index=index, netns=self._add_namespace(f"lan{index}", HOST_SYSCTLS))
        self._clients.append(client)
        port = f"lanport{index}"
        self._runner.ip(
            client.netns, "link", "add", "name", "eth0", "type", "veth",
            "peer", "name", port, "netns", self.router,
        )  # fmt: skip
        self._runner.ip_batch(
            self.router, [f"link set dev {port} master {LAN_BRIDGE}", f"link set dev {port} up"]
        )
        self._runner.ip_batch(
            client.netns,
            [
                "link set dev lo up",
                f"address add {client.addresses.host4} dev eth0",
                f"address add {client.addresses.host6} dev eth0 nodad",
                "link set dev eth0 up",
                f"route add default via {LAN_ROUTER4.ip}",
                f"route add default via {LAN_ROUTER6.ip}",
            ],
        )
        return client

    # --- hotplug ---------------------------------------------------------------------------

    def plug(self, isp: Isp, ifname: str) -> None:
        """Connect ``isp`` to the router as interface ``ifname`` (a USB stick appearing).
        An ISP plugged in under another name is unplugged first (moved to another port)."""
        if isp.ifname is not None:
            self.unplug(isp.ifname)
        isp.attach(router_netns=self.router, ifname=ifname)

    def unplug(self, ifname: str) -> None:
        """Remove the router's uplink ``ifname`` (and its ISP end)."""
        for isp in self._isps:
            if isp.ifname == ifname:
                isp.detach(router_netns=self.router)
                return
        raise LabError(f"no ISP is plugged in as {ifname!r}")

    # --- looking things up -----------------------------------------------------------------

    @property
    def isps(self) -> tuple[Isp, ...]:
        return tuple(self._isps)

    @property
    def clients(self) -> tuple[Client, ...]:
        return tuple(self._clients)

    def serve_pd(
        self,
        name: str,
        *,
        pool: str,
        delegated_len: int = 56,
        times: PdTimes | None = None,
        via: str | None = None,
        addresses: tuple[str, str] | None = None,
    ) -> PdServer:
        """Start a DHCPv6-PD server (Kea) at ISP ``name`` delegating /``delegated_len``s of
        ``pool``, routed to the router (and, with ``addresses``, leasing IA_NA addresses of
        that range); stopped with the lab."""
        server = PdServer(
            self.isp(name), runner=self._runner, inet_netns=self.inet, workdir=self.workdir,
            pool=IPv6Network(pool), delegated_len=delegated_len, times=times or PdTimes(),
            addresses=addresses,
        )  # fmt: skip
        server.route(via)
        server.start()
        return server

    def isp(self, name: str) -> Isp:
        for isp in self._isps:
            if isp.name == name:
                return isp
        raise LabError(f"no ISP named {name!r}")

    def netns(self, role: str) -> str:
        """The full namespace name for a role (``router``, ``inet``, ``isp1``, ``lan1``)."""
        name = role if role.startswith(self.prefix) else self.prefix + role
        if name not in self._namespaces:
            raise LabError(f"this lab has no namespace {role!r}")
        return name

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(self._namespaces)

    def uplink_of_source(self, address: str | IPv4Address | IPv6Address) -> str:
        """Which uplink a server-seen source address stands for (each ISP masquerades to
        its own address); KeyError if none."""
        names = self.uplink_names()
        key = str(ip_address(str(address)))
        if key not in names:
            raise KeyError(f"{address} is no ISP's upstream address")
        return names[key]

    def uplink_names(self) -> dict[str, str]:
        """Every ISP's upstream address (v4 and v6), and its /64 (a ``/`` key: an ISP with
        ``routed6`` passes the router's sources unchanged) → the ISP's uplink name."""
        names: dict[str, str] = {}
        for isp in self._isps:
            names[str(isp.addresses.upstream4.ip)] = isp.name
            names[str(isp.addresses.upstream6.ip)] = isp.name
            names[str(isp.addresses.gateway6.network)] = isp.name  # routed6: sources kept
            names[str(isp.prefix6)] = isp.name  # renumbered
        return names

    def link(self, role: str, ifname: str) -> dict[str, Any]:
        """``ip -json link show`` of one interface."""
        out = self._runner.ip(self.netns(role), "-json", "link", "show", "dev", ifname)
        entries: list[dict[str, Any]] = json.loads(out)
        return entries[0]

    # --- running programs ------------------------------------------------------------------

    def run(
        self,
        role: str,
        argv: list[str],
        *,
        input: str | None = None,
        timeout: float = COMMAND_TIMEOUT_S,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in a lab namespace to completion; LabError (with stderr) on failure."""
        return self._runner.run(
            self.netns(role), argv, input=input, timeout=timeout, check=check
        )

    def popen(
        self,
        role: str,
        argv: list[str],
        *,
        stdout: File = subprocess.DEVNULL,
        stderr: File = subprocess.DEVNULL,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[str]:
        """Start ``argv`` in a lab namespace; :meth:`close` stops it (by pid) if still running."""
        return self._runner.popen(self.netns(role), argv, stdout=stdout, stderr=stderr, env=env)

    def stop(self, proc: subprocess.Popen[str]) -> None:
        """Stop a process started with :meth:`popen` (SIGTERM, then SIGKILL)."""
        self._runner.stop(proc)

    # --- traffic ---------------------------------------------------------------------------

    def start_server(self) -> None:
        """Start the traffic server in ``inet`` (done by the flow methods when needed)."""
        if self._server is not None and self._server.poll() is None:
            return
        argv = [
            *self._python_module("uplinkd.lab.traffic"), "server",
            "--bind", str(SERVER4.ip), "--bind", str(SERVER6.ip),
            "--port", str(DEFAULT_PORT), "--duration", str(SERVER_LIFETIME_S),
        ]  # fmt: skip
        with (self.workdir / "server.log").open("w") as server_log:
            proc = self.popen(
                "inet", argv, stdout=subprocess.PIPE, stderr=server_log, env=self._python_env()
            )
        self._server = proc
        assert proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], 10.0)
        line = proc.stdout.readline() if readable else ""
        if line.strip() != "ready":
            self.stop(proc)
            self._server = None
            log_text = (self.workdir / "server.log").read_text()
            raise LabError(f"traffic server did not start: {line!r} {log_text}")

    def start_flows(
        self,
        *,
        client: str | Client = "lan1",
        tcp: int = 10,
        udp: int = 10,
        interval_ms: int = 20,
        duration: float = 2.0,
        family: Literal[4, 6] = 4,
        wait_established: bool = True,
    ) -> FlowsRun:
        """Start flows from a LAN client to the server in the background; collect them with
        ``.result()``.  With ``wait_established``, return once every flow had a reply."""
        if not 0 < duration <= MAX_DURATION_S:
            raise ValueError(f"duration must be in (0, {MAX_DURATION_S:g}] s")
        self.start_server()
        role = client.name if isinstance(client, Client) else client
        server = SERVER4.ip if family == 4 else SERVER6.ip
        argv = [
            *self._python_module("uplinkd.lab.traffic"), "client",
            "--server", str(server), "--port", str(DEFAULT_PORT),
            "--tcp", str(tcp), "--udp", str(udp),
            "--interval-ms", str(interval_ms), "--duration", str(duration),
        ]  # fmt: skip
        proc = self.popen(
            role, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._python_env()
        )
        run = FlowsRun(
            proc, duration=duration, uplink_names=self.uplink_names(), stop=self._runner.stop
        )
        if wait_established:
            try:
                run.wait_established(timeout=min(duration, 5.0))
            except LabError:
                self.stop(proc)
                raise
        return run

    def flows(
        self,
        *,
        client: str | Client = "lan1",
        tcp: int = 10,
        udp: int = 10,
        interval_ms: int = 20,
        duration: float = 2.0,
        family: Literal[4, 6] = 4,
    ) -> FlowReport:
        """Run flows from a LAN client to the server for ``duration`` s and report them."""
        return self.start_flows(
            client=client,
            tcp=tcp,
            udp=udp,
            interval_ms=interval_ms,
            duration=duration,
            family=family,
            wait_established=False,
        ).result()

    # --- routing without the controller ----------------------------------------------------

    def route_by_hand(self, isp: Isp) -> None:
        """Route the LAN out through ``isp`` without the controller: a plain default route
        in main (v4; v6 too when the ISP is ``static``) and masquerade of LAN traffic on any
        uplink, in nft table ``inet lab_manual``.  :meth:`clear_route_by_hand` undoes it."""
        a = isp.addresses
        self._runner.ip(self.router, "route", "replace", "default", "via", str(a.gateway4.ip))
        if isp.options.address == "static":
            self._runner.ip(
                self.router, "-6", "route", "replace", "default", "via", str(a.gateway6.ip)
            )
        self._runner.nft(
            self.router,
            f"""\
table inet {MANUAL_NAT_TABLE}
delete table inet {MANUAL_NAT_TABLE}
table inet {MANUAL_NAT_TABLE} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        iifname "{LAN_BRIDGE}" oifname != "{LAN_BRIDGE}" masquerade
    }}
}}
""",
        )

    def clear_route_by_hand(self) -> None:
        for family in ("-4", "-6"):
            self._runner.run(
                self.router, ["ip", family, "route", "flush", "exact", "default"], check=False
            )
        self._runner.run(
            self.router, ["nft", "delete", "table", "inet", MANUAL_NAT_TABLE], check=False
        )

    # --- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process the lab started (by pid), delete every namespace it made and
        its work directory.  Safe to call more than once, and after a failed setup."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            self._runner.stop_all()
        finally:
            present = {name for name in list_namespaces() if name.startswith(self.prefix)}
            mine = [*reversed(self._namespaces), *sorted(present - set(self._namespaces))]
            delete_namespaces(mine)
            shutil.rmtree(self.workdir, ignore_errors=True)
            left = [name for name in list_namespaces() if name.startswith(self.prefix)]
            if left:
                raise LabError(f"namespaces left after close: {left}")

    # --- internals -------------------------------------------------------------------------

    def _add_namespace(self, role: str, sysctls: dict[str, str | int]) -> str:
        name = self.prefix + role
        check_run(["ip", "netns", "add", name])
        self._namespaces.append(name)
        self._runner.ip(name, "link", "set", "dev", "lo", "up")
        if sysctls:
            self._runner.sysctl(name, sysctls)
        return name

    def _setup_router(self) -> None:
        self._runner.ip_batch(
            self.router,
            [
                f"link add name {LAN_BRIDGE} address {LAN_BRIDGE_MAC} type bridge forward_delay 0",
                f"address add {LAN_ROUTER4} dev {LAN_BRIDGE}",
                f"address add {LAN_ROUTER6} dev {LAN_BRIDGE} nodad",
                f"link set dev {LAN_BRIDGE} up",
            ],
        )

    def _setup_inet(self) -> None:
        self._runner.ip_batch(
            self.inet,
            [
                f"link add name {INET_BRIDGE} address {INET_BRIDGE_MAC} type bridge forward_delay 0",
                f"address add {SERVER4} dev {INET_BRIDGE}",
                f"address add {SERVER6} dev {INET_BRIDGE} nodad",
                f"link set dev {INET_BRIDGE} up",
                "route add unreachable default",
                "route add unreachable ::/0",
            ],
        )

    @staticmethod
    def _python_module(module: str) -> list[str]:
        return [sys.executable, "-m", module]

    @staticmethod
    def _python_env() -> dict[str, str]:
        """Makes this very ``uplinkd`` importable by ``python -m``, installed or not."""
        return {"PYTHONPATH": uplinkd_path()}

