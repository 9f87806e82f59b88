"""Two namespaces joined by a veth, for the tunnel I/O tests (WireGuard, VXLAN)::

    ns a: va 10.201.0.1/24 (+ .3 on b's side for moving an endpoint)   ns b: vb 10.201.0.2/24, .3

Helpers to run commands there, to make WireGuard keys, and to stop processes by pid.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UNDERLAY_A = "10.201.0.1"
UNDERLAY_B = "10.201.0.2"
UNDERLAY_B2 = "10.201.0.3"


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=20)


@dataclass
class Pair:
    tag: str
    a: str
    b: str

    def ip(self, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "-n", ns, *args, check=check)

    def exec(self, ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", ns, *argv, check=check)

    def ping(
        self, ns: str, address: str, *, within: int = 2, size: int | None = None, df: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Ping `address` until the first reply, for at most `within` s (one every 0.2 s: a
        WireGuard handshake that failed is retried only after 5 s). With `size`, the payload
        size, sent with DF (`df`) or allowed to fragment."""
        extra = ["-s", str(size), "-M", "do" if df else "dont"] if size is not None else []
        argv = ["ping", "-n", "-c", "1", "-i", "0.2", "-w", str(within), *extra, address]
        return self.exec(ns, *argv, check=False)

    def pings(
        self, ns: str, address: str, *, within: int = 2, size: int | None = None, df: bool = True
    ) -> bool:
        """Whether a ping to `address` is answered (see `ping`)."""
        return self.ping(ns, address, within=within, size=size, df=df).returncode == 0


@contextlib.contextmanager
def namespace_pair(prefix: str) -> Iterator[Pair]:
    tag = uuid.uuid4().hex[:6]
    pair = Pair(tag, f"{prefix}-{tag}-a", f"{prefix}-{tag}-b")
    try:
        run("ip", "netns", "add", pair.a)
        run("ip", "netns", "add", pair.b)
        run("ip", "-n", pair.a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", pair.b)
        pair.ip(pair.a, "addr", "add", f"{UNDERLAY_A}/24", "dev", "va")
        pair.ip(pair.b, "addr", "add", f"{UNDERLAY_B}/24", "dev", "vb")
        pair.ip(pair.b, "addr", "add", f"{UNDERLAY_B2}/24", "dev", "vb")
        for ns, dev in ((pair.a, "va"), (pair.b, "vb")):
            pair.ip(ns, "link", "set", "lo", "up")
            pair.ip(ns, "link", "set", dev, "up")
        yield pair
    finally:
        for ns in (pair.a, pair.b):
            run("ip", "netns", "del", ns, check=False)


@contextlib.contextmanager
def bridged_hosts(pair: Pair, address_a: str, address_b: str) -> Iterator[tuple[str, str]]:
    """A bridge `br0` in a and in b, each with a host namespace behind it (`eth0` with the
    given address, e.g. 10.77.0.1/24) through the port `lan`; yields the hosts' namespaces."""
    hosts = (f"{pair.a}h", f"{pair.b}h")
    try:
        for ns, host, address in ((pair.a, hosts[0], address_a), (pair.b, hosts[1], address_b)):
            run("ip", "netns", "add", host)
            pair.ip(ns, "link", "add", "br0", "type", "bridge")
            pair.ip(ns, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", host)
            pair.ip(ns, "link", "set", "lan", "master", "br0", "up")
            pair.ip(ns, "link", "set", "br0", "up")
            pair.ip(host, "addr", "add", address, "dev", "eth0")
            pair.ip(host, "link", "set", "lo", "up")
            pair.ip(host, "link", "set", "eth0", "up")
        yield hosts
    finally:
        for host in hosts:
            run("ip", "netns", "del", host, check=False)


def new_key() -> bytes:
    """A WireGuard private key, clamped as `wg genkey` does."""
    key = bytearray(os.urandom(32))
    key[0] &= 248
    key[31] = (key[31] & 127) | 64
    return bytes(key)


def write_key(path: Path, key: bytes, mode: int = 0o600) -> Path:
    path.write_text(base64.b64encode(key).decode() + "\n")
    path.chmod(mode)
    return path


def kill_pid(pid: int) -> None:
    """Stop a process this test started, by pid, if it still runs. A wireguard-go killed so
    leaves its control socket behind (it removes it only on SIGTERM): remove that too."""
    try:
        args = [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        args = []
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if args and Path(os.fsdecode(args[0])).name == "wireguard-go":
        Path("/var/run/wireguard", f"{os.fsdecode(args[-1])}.sock").unlink(missing_ok=True)


def nft_counter(pair: Pair, ns: str, table: str, *, chain: str = "c") -> int:
    """Packets counted by the first counter in `table`'s `chain`."""
    out = pair.exec(ns, "nft", "-j", "list", "chain", "inet", table, chain).stdout
    for item in json.loads(out)["nftables"]:
        rule: dict[str, Any] | None = item.get("rule")
        if rule is None:
            continue
        for expr in rule["expr"]:
            if "counter" in expr:
                return int(expr["counter"]["packets"])
    raise AssertionError(f"no counter in {table}/{chain}")
