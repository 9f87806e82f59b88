"""An Ethernet segment between the lab's router and "home" (tests/netns/test_vxlan.py).

On the router: a bridge `brl2` (not uplinkd's) with one host behind it (ROUTER_HOST); uplinkd
is configured to put its VXLAN interface into that bridge. At home (the lab's internet
namespace, where `harness.tunnel_home.Home` runs wireguard-go): a VXLAN interface by hand
(VNI 42, local = home's inner address, one flood entry to the router's inner address), a
bridge `brhome` holding it, the home router's address on that bridge (HOME_GATEWAY), and one
host behind it (HOME_HOST). Every namespace made here starts with the lab's prefix, so the
lab deletes it on close.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

from uplinkd import control
from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon

from harness.readback import wait_until
from harness.tunnel_home import (
    INNER_HOME,
    INNER_ROUTER,
    NAMES,
    Home,
    add_outside,
    count_at_isps,
    router_config,
)

VNI = 42
ROUTER_HOST, HOME_HOST, HOME_GATEWAY = "10.77.0.11/24", "10.77.0.22/24", "10.77.0.1/24"
ROUTER_SEGMENT_ADDRESS = "10.77.0.2/24"  # the router's own address on the segment
BRIDGE = "brl2"


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True).stdout


def exec_in(ns: str, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], check=check, capture_output=True, text=True, timeout=timeout
    )


def _host(lab: Lab, role: str, *, bridge_ns: str, bridge: str, port: str, address: str) -> str:
    ns = lab.prefix + role
    subprocess.run(["ip", "netns", "add", ns], check=True)
    ip(bridge_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
    ip(bridge_ns, "link", "set", port, "master", bridge, "up")
    ip(ns, "address", "add", address, "dev", "eth0")
    ip(ns, "link", "set", "lo", "up")
    ip(ns, "link", "set", "eth0", "up")
    return ns


class Segment:
    """Both ends' bridges and hosts; the home end's VXLAN interface."""

    def __init__(
        self,
        lab: Lab,
        home: Home,
        *,
        home_mtu: int,
        inner: tuple[str, str] = (INNER_HOME.split("/")[0], INNER_ROUTER.split("/")[0]),
    ) -> None:
        """`inner`: home's and the router's tunnel addresses the segment runs between."""
        self.lab = lab
        ip(lab.router, "link", "add", BRIDGE, "type", "bridge", "forward_delay", "0")
        ip(lab.router, "link", "set", BRIDGE, "up")
        self.router_host = _host(
            lab, "l2host", bridge_ns=lab.router, bridge=BRIDGE, port="l2p", address=ROUTER_HOST
        )
        local, remote = inner
        ns = lab.inet
        ip(ns, "link", "add", "brhome", "type", "bridge", "forward_delay", "0")
        ip(ns, "link", "add", "vxh", "mtu", str(home_mtu), "type", "vxlan", "id", str(VNI), "local", local,
           "dstport", "4789", "nolearning")  # fmt: skip
        subprocess.run(
            ["bridge", "-n", ns, "fdb", "append", "00:00:00:00:00:00", "dev", "vxh", "dst", remote],
            check=True,
        )
        ip(ns, "link", "set", "vxh", "master", "brhome", "up")
        ip(ns, "link", "set", "brhome", "up")
        ip(ns, "address", "add", HOME_GATEWAY, "dev", "brhome")
        self.home_host = _host(lab, "homehost", bridge_ns=ns, bridge="brhome", port="hl", address=HOME_HOST)

    def set_host_mtu(self, mtu: int) -> None:
        for ns in (self.router_host, self.home_host):
            ip(ns, "link", "set", "eth0", "mtu", str(mtu))

    def like_a_wire(self) -> None:
        """Hosts send frames as a NIC on a cable does: no TSO/GSO super-packets (which a
        bridge forwards whatever their size, and a VXLAN port answers with "fragmentation
        needed" when DF is set) and no GRO."""
        for ns in (self.router_host, self.home_host):
            exec_in(ns, "ethtool", "-K", "eth0", "tso", "off", "gso", "off", "gro", "off")


def plain_bridges(*namespaces: str) -> None:
    """Bridged frames skip iptables/nft's inet hooks (as without br_netfilter, NixOS's
    default): where br_netfilter is loaded, it refragments bridged IPv4 and would let the
    MSS clamp see bridged SYNs, which a router without it does not do."""
    for ns in namespaces:
        for key in ("iptables", "ip6tables", "arptables"):
            exec_in(ns, "sysctl", "-qw", f"net.bridge.bridge-nf-call-{key}=0")


DHCP_SCRIPT = """#!/bin/sh
# udhcpc's hook: apply the lease's address and, when the server sent one, its MTU (option 26)
case "$1" in
bound|renew)
    ip address add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    ;;
esac
exit 0
"""


def dhcp_lease(ns: str, script: Path) -> None:
    """Ask the segment's DHCP server for a lease with udhcpc (asking for option 26, mtu)
    and apply it with DHCP_SCRIPT."""
    script.write_text(DHCP_SCRIPT)
    script.chmod(0o755)
    exec_in(
        ns, "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-O", "mtu", "-s", str(script)
    )


def vxlan_config(**over: Any) -> dict[str, Any]:
    """`vxlan.home` for the router: over tunnel `home`, into BRIDGE."""
    return {
        "tunnel": "home",
        "interface": "vx" + uuid.uuid4().hex[:8],
        "vni": VNI,
        "remotes": [INNER_HOME.split("/")[0]],
        "bridge": BRIDGE,
        **over,
    }


BULK_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5001)); s.listen(1); s.settimeout(30)
print("ready", flush=True)
c, _ = s.accept(); c.settimeout(30); n = 0
while True:
    b = c.recv(65536)
    if not b: break
    n += len(b)
print(n, flush=True)
"""


def bulk(client_ns: str, server_ns: str, server: str, *, size: int, timeout: float = 30) -> int:
    """Bytes the server received of `size` sent by the client over one TCP connection
    (-1: the client gave up after `timeout` seconds without progress)."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, "python3", "-c", BULK_SERVER.replace("30", str(timeout))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        send = (
            f"import socket; s = socket.create_connection(({server!r}, 5001), timeout={timeout}); "
            f"s.sendall(b'x' * {size}); s.close()"
        )
        if exec_in(client_ns, "python3", "-c", send, check=False).returncode != 0:
            return -1
        out, _ = proc.communicate(timeout=2 * timeout)
        return int(out.strip().splitlines()[-1])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- the MTU lab (tests/netns/test_vxlan_mtu.py, bench/vxlan_mtu.py) ----------------------------

UPLINK_MTU = 1428
TUNNEL_MTU = UPLINK_MTU - 60  # auto over IPv4
SEGMENT_MTU = TUNNEL_MTU - 50  # auto between IPv4 inner addresses
HOME_INNER = INNER_HOME.split("/")[0]
FRAGMENTS = """
table inet fragcount {
    chain c {
        type filter hook prerouting priority -500; policy accept;
        iifname "down" ip frag-off & 0x1fff != 0 counter comment "later"
        iifname "down" ip frag-off & 0x2000 != 0 counter comment "first"
        iifname "down" counter comment "all"
    }
}
"""


def mtu_lab(lab: Lab) -> None:
    """Uplinks wan and lte1 at UPLINK_MTU (both ends of their veths), each ISP counting what
    arrives from the router before anything could reassemble it: fragments (the first, with
    more-fragments set; the later ones, with an offset) and all packets; one LAN client."""
    for name in NAMES:
        lab.add_isp(name, address="none")
        ip(lab.router, "link", "set", "dev", name, "mtu", str(UPLINK_MTU))
        ip(lab.isp(name).netns, "link", "set", "dev", "down", "mtu", str(UPLINK_MTU))
        subprocess.run(
            ["ip", "netns", "exec", lab.isp(name).netns, "nft", "-f", "-"],
            input=FRAGMENTS,
            text=True,
            check=True,
        )
    lab.add_client()
    add_outside(lab)
    count_at_isps(lab)


def fragments(lab: Lab) -> dict[str, int]:
    """Packets the ISPs counted from the router so far: fragments (first or later) and all."""
    total = {"later": 0, "first": 0, "all": 0}
    for isp in lab.isps:
        out = exec_in(isp.netns, "nft", "-j", "list", "chain", "inet", "fragcount", "c").stdout
        for item in json.loads(out)["nftables"]:
            rule = item.get("rule")
            if rule:
                packets = next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
                total[rule["comment"]] += int(packets)
    return total


def start_segment(lab: Lab, home: Home, workdir: Path, **segment: Any) -> tuple[LabDaemon, Segment]:
    """Home's wireguard-go at TUNNEL_MTU, the segment (home's end at the segment's MTU), plain
    bridges, and the daemon with tunnel `home` and `vxlan.home` (`segment` overrides); returns
    once the tunnel is up and the segment is in its bridge."""
    cfg, router_public = router_config(workdir, home)
    cfg["vxlan"] = {"home": vxlan_config(**segment)}
    home.start(router_public)
    ip(lab.inet, "link", "set", home.ifname, "mtu", str(TUNNEL_MTU))
    seg = Segment(lab, home, home_mtu=segment.get("mtu", SEGMENT_MTU))
    plain_bridges(lab.router, lab.inet)
    daemon = LabDaemon(lab.router, cfg, workdir=workdir)
    daemon.start()

    def ready() -> bool:
        s = control.call(daemon.socket, {"command": "status"})
        return bool(s["tunnels"][0]["state"] == "up" and s["vxlan"][0]["bridge"] == BRIDGE)

    wait_until(ready, timeout=30, what=f"tunnel up, segment bridged ({daemon.log_path})")
    return daemon, seg
