"""uplinkd.probes.Counters on a real interface's sysfs counters: kept descriptors follow the
traffic, a removed interface reads None, and one made again under the same name (a replugged
modem) is read afresh, also when the old one was only renamed away.

The script runs inside a namespace of its own (`ip netns exec` mounts that namespace's
/sys), with veth pairs there and IPv6 off, so the only packets are the frames it sends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from uplinkd.lab.netns import uplinkd_path

SCRIPT = r"""
import json, socket, subprocess
from uplinkd.probes import Counters

def ip(*args):
    subprocess.run(["ip", *args], check=True)

peers = iter(f"peer{i}" for i in range(10))

def make(name):
    peer = next(peers)
    ip("link", "add", name, "type", "veth", "peer", "name", peer)
    ip("link", "set", name, "up")
    ip("link", "set", peer, "up")

def send(name, n):
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((name, 0))
        for _ in range(n):  # broadcast to the veth peer, in this namespace only
            s.send(b"\xff" * 6 + bytes.fromhex("020000000001") + b"\x88\xb5" + bytes(46))

seen = {}
make("ctr0")
kept = Counters("ctr0", reopen_s=3600)  # reopens only when a read fails
renamed = Counters("ctr0", reopen_s=1.0)
seen["start"] = kept.read(0.0)
renamed.read(0.0)
send("ctr0", 5)
seen["after_5"] = kept.read(0.1)
ip("link", "delete", "ctr0")
seen["deleted"] = kept.read(0.2)
make("ctr0")
send("ctr0", 2)
seen["made_again"] = kept.read(0.3)
renamed.read(0.4)
ip("link", "set", "ctr0", "down")
ip("link", "set", "ctr0", "name", "old0")
make("ctr0")
seen["renamed_kept"] = renamed.read(0.9)
seen["renamed_reopened"] = renamed.read(1.5)
kept.close(); renamed.close()
print(json.dumps(seen))
"""


@pytest.fixture
def netns() -> Iterator[str]:
    ns = f"ctr-{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        for key in ("all", "default"):
            sysctl = ["sysctl", "-q", "-w", f"net.ipv6.conf.{key}.disable_ipv6=1"]
            subprocess.run(["ip", "netns", "exec", ns, *sysctl], check=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def test_counters_follow_a_real_interface_through_removal_and_rename(netns: str) -> None:
    env = {**os.environ, "PYTHONPATH": uplinkd_path()}
    done = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", SCRIPT],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = {k: tuple(v) if v is not None else None for k, v in json.loads(done.stdout).items()}
    tx0, rx0 = seen["start"]
    assert seen["after_5"] == (tx0 + 5, rx0), "the kept descriptors read the 5 frames sent"
    assert seen["deleted"] is None, "a removed interface reads None"
    assert seen["made_again"] == (2, 0), "the new ctr0's own counters, not the old one's"
    assert seen["renamed_kept"] == (2, 0), "within reopen_s the renamed device is still read"
    assert seen["renamed_reopened"] == (0, 0), "after reopen_s the new ctr0 is read"
