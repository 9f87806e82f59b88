"""The home end of a tunnel for the lab, and what the lab's ISPs count: shared by
tests/netns/test_tunnels.py and bench/tunnel_failover.py.

"Home" is a wireguard-go peer in the lab's internet namespace (the server's), listening on
the server's address, routing the LAN prefix back into its tunnel. Every ISP counts, before
its fault chain, what arrives from the router: the tunnel's encrypted packets (UDP to
home's port) and anything addressed to OUTSIDE (an address a LAN client tries to reach
around the tunnel).
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from uplinkd.lab import Lab
from uplinkd.tunnel.wireguard import PrivateKey

from harness.lab_config import static_uplink
from harness.readback import wait_until
from harness.tunnel_lab import kill_pid, new_key, write_key

SERVER = "198.51.100.100"
HOME_PORT = 51820
OUTSIDE4, OUTSIDE6 = "198.51.100.200", "2001:db8:100::200"
INNER_ROUTER, INNER_HOME = "10.99.0.2/24", "10.99.0.1/24"
NAMES = ("wan", "lte1")
# the LAN's internal IPv6 prefix for `lan.lan0.ipv6.mode = translate` (not ULA: see README)
LAN_INNER6 = "2001:db8:ff::/64"


def upstream(index: int) -> str:
    return f"198.51.100.{index}"


def uplink(index: int, *, v6: bool = False) -> dict[str, Any]:
    return static_uplink(index, NAMES[index - 1], v6=v6, probe={"targets": [SERVER, upstream(index)]})


class Home:
    """The home end: wireguard-go in the lab's internet namespace, or (`kernel`, where the
    kernel has it: the VM tier) a kernel WireGuard link there."""

    def __init__(self, lab: Lab, workdir: Path, *, kernel: bool = False) -> None:
        self.lab = lab
        self.kernel = kernel
        self.ifname = "wgh" + uuid.uuid4().hex[:8]
        self.key = new_key()
        self.public = PrivateKey(self.key).public_key.base64
        self.key_file = write_key(workdir / "home.key", self.key)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, router_public: str) -> None:
        if self.kernel:
            self.run("ip", "link", "add", self.ifname, "type", "wireguard")
        else:
            self._start_wireguard_go()
        self.run(
            "wg", "set", self.ifname, "listen-port", str(HOME_PORT), "private-key", str(self.key_file),
            "peer", router_public, "allowed-ips", "10.99.0.2/32,192.168.50.0/24,fd50::/64",
        )  # fmt: skip
        for cmd in (
            f"address add {INNER_HOME} dev {self.ifname}",
            f"link set dev {self.ifname} up",
            f"route add 192.168.50.0/24 dev {self.ifname}",
            f"route add fd50::/64 dev {self.ifname}",
        ):
            self.run("ip", *cmd.split())

    def _start_wireguard_go(self) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.inet, "wireguard-go", "-f", self.ifname],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        sock = Path(f"/var/run/wireguard/{self.ifname}.sock")
        wait_until(sock.exists, timeout=10, what="home's wireguard-go socket")

    def run(self, *argv: str) -> str:
        return subprocess.run(
            ["ip", "netns", "exec", self.lab.inet, *argv], check=True, capture_output=True, text=True
        ).stdout

    def endpoint(self) -> str:
        return self.run("wg", "show", self.ifname, "endpoints").split()[-1]

    def handshake(self) -> int:
        return int(self.run("wg", "show", self.ifname, "latest-handshakes").split()[-1])

    def stop(self) -> None:
        if self.proc is not None:
            kill_pid(self.proc.pid)
            self.proc.wait()


def count_at_isps(lab: Lab) -> None:
    """At every ISP, count what arrives from the router, before the fault chain drops it
    (the encrypted packets also when they carry the router's address on that uplink)."""
    for index, isp in enumerate(lab.isps, 1):
        own = uplink(index)["address"]["cidr"].split("/")[0]  # the router's address at this ISP
        script = f"""
table inet tuntest {{
    chain c {{
        type filter hook prerouting priority -400; policy accept;
        iifname "down" udp dport {HOME_PORT} counter comment "encrypted"
        iifname "down" udp dport {HOME_PORT} ip saddr {own} counter comment "encrypted_own_src"
        iifname "down" ip daddr {OUTSIDE4} counter comment "leak4"
        iifname "down" ip6 daddr {OUTSIDE6} counter comment "leak6"
        iifname "down" counter comment "all"
    }}
}}
"""
        subprocess.run(
            ["ip", "netns", "exec", isp.netns, "nft", "-f", "-"], input=script, text=True, check=True
        )


def counters(lab: Lab, name: str) -> dict[str, int]:
    out = subprocess.run(
        ["ip", "netns", "exec", lab.isp(name).netns, "nft", "-j", "list", "chain", "inet", "tuntest", "c"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    found: dict[str, int] = {}
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule:
            packets = next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
            found[rule["comment"]] = int(packets)
    return found


class Counted:
    """What the ISPs count from now on (nft's inline counters cannot be reset: deltas)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.start = {isp.name: counters(lab, isp.name) for isp in lab.isps}

    def __getitem__(self, name: str) -> dict[str, int]:
        now = counters(self.lab, name)
        return {k: v - self.start[name].get(k, 0) for k, v in now.items()}


def block_udp(lab: Lab, name: str, on: bool = True) -> None:
    """A network that drops UDP: ISP `name` drops the router's UDP to home's port (after
    counting it), while ICMP (the uplink's probes) passes: the uplink stays healthy."""
    netns = lab.isp(name).netns
    if on:
        script = f"""
table inet udpblock {{
    chain c {{
        type filter hook prerouting priority -300; policy accept;
        iifname "down" udp dport {HOME_PORT} drop
    }}
}}
"""
        subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=script, text=True, check=True)
    else:
        subprocess.run(
            ["ip", "netns", "exec", netns, "nft", "delete", "table", "inet", "udpblock"], check=True
        )


def router_wireguard_go(lab: Lab) -> list[int]:
    """Pids of the wireguard-go processes in the router (our daemon under test starts them)."""
    out = subprocess.run(["ip", "netns", "pids", lab.router], capture_output=True, text=True, check=False)
    found = []
    for pid in out.stdout.split():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "wireguard-go":
                found.append(int(pid))
        except OSError:
            continue
    return found


def kill_router_wireguard_go(lab: Lab) -> None:
    for pid in router_wireguard_go(lab):
        kill_pid(pid)


def leak_attempts(lab: Lab) -> None:
    """From the LAN client, for a few seconds: TCP, UDP and ICMP to OUTSIDE, IPv4 and IPv6."""
    script = f"""
import socket, time
end = time.monotonic() + 4
while time.monotonic() < end:
    for fam, dst in ((socket.AF_INET, "{OUTSIDE4}"), (socket.AF_INET6, "{OUTSIDE6}")):
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(fam, kind)
            s.settimeout(0.2)
            try:
                if kind == socket.SOCK_STREAM:
                    s.connect((dst, 80))
                else:
                    s.sendto(b"x", (dst, 53))
            except OSError:
                pass
            s.close()
    time.sleep(0.1)
"""
    client = lab.clients[0].netns
    pings = [
        subprocess.Popen(
            ["ip", "netns", "exec", client, "ping", "-n", "-c", "8", "-i", "0.5", "-W", "1", dst],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for dst in (OUTSIDE4, OUTSIDE6)
    ]
    subprocess.run(["ip", "netns", "exec", client, "python3", "-c", script], check=True, timeout=30)
    for p in pings:
        p.wait(timeout=30)


def add_outside(lab: Lab) -> None:
    """OUTSIDE: addresses on the lab's internet that LAN clients try to reach; and the LAN
    client's address in the translated LAN prefix (its IPv6 source to the internet)."""
    lab.run(lab.clients[0].netns, ["ip", "address", "add", "2001:db8:ff::11/64", "dev", "eth0", "nodad"])
    lab.run("inet", ["ip", "address", "add", f"{OUTSIDE4}/32", "dev", "br0"])
    lab.run("inet", ["ip", "address", "add", f"{OUTSIDE6}/128", "dev", "br0", "nodad"])


def router_config(workdir: Path, home: Home, **tunnel: Any) -> tuple[dict[str, Any], str]:
    """wan (with native IPv6) and lte1, a full tunnel home over [wan, lte1]; and the
    router's public key (its private key is written to a 0600 file in `workdir`)."""
    key = new_key()
    key_file = write_key(workdir / "router.key", key)
    cfg: dict[str, Any] = {
        "uplinks": {"wan": uplink(1, v6=True), "lte1": uplink(2)},
        "probe": {"profile": "fast"},
        # LAN IPv6 would go out (translated) by wan's native IPv6: what the kill switch must stop
        "lan": {"lan0": {"ipv6": {"mode": "translate", "prefix": LAN_INNER6}}},
        "tunnels": {
            "home": {
                "interface": "wgt" + uuid.uuid4().hex[:8],
                "private_key_file": str(key_file),
                "addresses": [INNER_ROUTER],
                "table": 150,
                "peers": [
                    {
                        "public_key": home.public,
                        "endpoint": f"{SERVER}:{HOME_PORT}",
                        # the endpoint lies inside AllowedIPs: the mark rule must keep it out
                        "allowed_ips": ["0.0.0.0/0"],
                        "keepalive": 1,
                    }
                ],
                "underlay": ["wan", "lte1"],
                "route": "full",
                **tunnel,
            }
        },
    }
    return cfg, PrivateKey(base64.b64decode(key_file.read_text())).public_key.base64


def prepare_lab(lab: Lab) -> None:
    """The tunnel tests' usual lab: ISPs wan and lte1 (addressed by the test's config), a LAN
    client, OUTSIDE on the internet, and the counters at every ISP."""
    for name in NAMES:
        lab.add_isp(name, address="none")
    lab.add_client()
    add_outside(lab)
    count_at_isps(lab)


@contextlib.contextmanager
def tunnel_lab(prepare: Callable[[Lab], None] = prepare_lab) -> Iterator[Lab]:
    """A lab built by `prepare`; the router's wireguard-go (started by uplinkd's worker, not
    by the lab) is stopped with it."""
    with Lab() as lab:
        try:
            prepare(lab)
            yield lab
        finally:
            kill_router_wireguard_go(lab)


@contextlib.contextmanager
def home_peer(lab: Lab, workdir: Path) -> Iterator[Home]:
    """Home's wireguard-go peer, stopped at the end (started by the test: `Home.start`)."""
    home = Home(lab, workdir)
    try:
        yield home
    finally:
        home.stop()
