"""LAN IPv6 `tunnel` (issue 13): a LAN's IPv6 goes only through the WireGuard tunnel home,
never out of an uplink, whether the tunnel is up or down and even without the kill switch;
it is the default mode of a listed LAN when a full tunnel is configured.

The lab is the tunnels test's (harness/tunnel_home.py): wan (with native IPv6) and lte1,
"home" a wireguard-go peer in the lab's internet namespace. Here the tunnel carries IPv6
too: home routes the LAN's tunnel prefix back into it, and a host behind home (OUTSIDE6 on
the internet side) is what the LAN client reaches. Every ISP counts, before anything can
drop it, IPv6 arriving from the router with the LAN's prefix as its source or OUTSIDE6 as
its destination: both must stay 0.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from uplinkd import control
from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon

from harness.readback import wait_until
from harness.tunnel_home import (
    INNER_ROUTER,
    NAMES,
    OUTSIDE4,
    OUTSIDE6,
    Counted,
    Home,
    home_peer,
    leak_attempts,
    prepare_lab,
    router_config,
    tunnel_lab,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(240),
]

WAIT = 30.0
TUNNEL6_ROUTER, TUNNEL6_HOME = "2001:db8:77::2/64", "2001:db8:77::1/64"
LAN_TUNNEL6 = "2001:db8:78::/64"  # the LAN's prefix, routed to us by home through the tunnel
CLIENT6 = "2001:db8:78::11"


def count_lan_sources(lab: Lab) -> None:
    """At every ISP: IPv6 from the router with the LAN's tunnel prefix as its source."""
    for isp in lab.isps:
        script = f"""
table inet lantest {{
    chain c {{
        type filter hook prerouting priority -400; policy accept;
        iifname "down" ip6 saddr {LAN_TUNNEL6} counter comment "lan6"
    }}
}}
"""
        subprocess.run(
            ["ip", "netns", "exec", isp.netns, "nft", "-f", "-"], input=script, text=True, check=True
        )


def lan_sources(lab: Lab) -> dict[str, int]:
    found: dict[str, int] = {}
    for isp in lab.isps:
        out = subprocess.run(
            ["ip", "netns", "exec", isp.netns, "nft", "list", "chain", "inet", "lantest", "c"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        words = out[out.index("counter packets") :].split()
        found[isp.name] = int(words[2])
    return found


def prepare(lab: Lab) -> None:
    prepare_lab(lab)
    count_lan_sources(lab)
    lab.run(lab.clients[0].netns, ["ip", "address", "add", f"{CLIENT6}/64", "dev", "eth0", "nodad"])


@pytest.fixture
def lab() -> Iterator[Lab]:
    with tunnel_lab(prepare) as lab:
        yield lab


@pytest.fixture
def home(lab: Lab, tmp_path: Path) -> Iterator[Home]:
    with home_peer(lab, tmp_path) as h:
        yield h


def start_home6(home: Home, router_public: str) -> None:
    """Home with IPv6 inside the tunnel: its tunnel address, and the LAN's prefix routed back."""
    home.start(router_public)
    router6 = TUNNEL6_ROUTER.split("/", maxsplit=1)[0]
    allowed = f"10.99.0.2/32,192.168.50.0/24,fd50::/64,{router6}/128,{LAN_TUNNEL6}"
    home.run("wg", "set", home.ifname, "peer", router_public, "allowed-ips", allowed)
    home.run("ip", "-6", "address", "add", TUNNEL6_HOME, "dev", home.ifname, "nodad")
    home.run("ip", "-6", "route", "add", LAN_TUNNEL6, "dev", home.ifname)


def config(tmp_path: Path, home: Home, lan: dict[str, Any], **tunnel: Any) -> tuple[dict[str, Any], str]:
    cfg, public = router_config(tmp_path, home, **tunnel)
    t = cfg["tunnels"]["home"]
    t["addresses"] = [INNER_ROUTER, TUNNEL6_ROUTER]
    t["peers"][0]["allowed_ips"] = ["0.0.0.0/0", "::/0"]
    cfg["lan"] = {"lan0": lan}
    return cfg, public


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[LabDaemon]]:
    started: list[LabDaemon] = []
    try:
        yield started
    finally:
        for d in started:
            d.stop()


def status(c: LabDaemon) -> dict[str, Any]:
    return dict(control.call(c.socket, {"command": "status"}))


def wait_tunnel(c: LabDaemon, state: str) -> None:
    wait_until(lambda: status(c)["tunnels"][0]["state"] == state, timeout=WAIT, what=f"tunnel {state}")


def wait_uplinks(c: LabDaemon) -> None:
    def up() -> bool:
        return all(u["state"] == "up" for u in status(c)["uplinks"])

    wait_until(up, timeout=WAIT, what="both uplinks up")


def ping6(lab: Lab, dst: str) -> bool:
    argv = ["ping", "-6", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-I", CLIENT6, dst]
    return lab.run(lab.clients[0].netns, argv, check=False).returncode == 0


def test_lan_ipv6_reaches_a_host_through_the_tunnel_and_never_an_uplink(
    lab: Lab, home: Home, tmp_path: Path, daemons: list[LabDaemon]
) -> None:
    cfg, public = config(tmp_path, home, {"ipv6": {"mode": "tunnel", "prefix": LAN_TUNNEL6}})
    start_home6(home, public)
    c = LabDaemon(lab.router, cfg, workdir=tmp_path)
    daemons.append(c)
    c.start()
    wait_uplinks(c)
    wait_tunnel(c, "up")
    shown = lab.run("router", ["ip", "-6", "address", "show", "dev", "lan0"]).stdout
    assert "2001:db8:78::1/64" in shown
    (lan,) = status(c)["lan"]
    assert (lan["mode"], lan["prefixes"]) == ("tunnel", [LAN_TUNNEL6]), lan
    seen = Counted(lab)
    assert ping6(lab, TUNNEL6_HOME.split("/", maxsplit=1)[0])  # home's end of the tunnel
    assert ping6(lab, OUTSIDE6)  # a host behind home, on the internet side
    leak_attempts(lab)
    for name in NAMES:
        assert seen[name]["leak6"] == 0, (name, seen[name])
    assert lan_sources(lab) == {name: 0 for name in NAMES}
    assert seen["wan"]["encrypted"] + seen["lte1"]["encrypted"] > 0  # it did go, encrypted


def test_tunnel_mode_leaks_nothing_even_without_the_kill_switch_and_is_the_default(
    lab: Lab, home: Home, tmp_path: Path, daemons: list[LabDaemon]
) -> None:
    """The tunnels test shows a `translate` LAN leaking by wan's native IPv6 when the kill
    switch is off and the tunnel is down; a `tunnel` LAN (here by default: `lan0 = {}` with
    a full tunnel) leaks nothing in the same state: the nft forward rule closes it."""
    cfg, _ = config(tmp_path, home, {}, kill_switch=False)  # home never starts: tunnel down
    c = LabDaemon(lab.router, cfg, workdir=tmp_path)
    daemons.append(c)
    c.start()
    wait_uplinks(c)
    assert status(c)["tunnels"][0]["state"] == "down"
    (lan,) = status(c)["lan"]
    assert lan["mode"] == "tunnel", lan
    # routing alone would take LAN IPv6 out of wan (no kill switch): only nft stops it
    route = lab.run("router", ["ip", "-6", "route", "get", OUTSIDE6, "from", CLIENT6, "iif", "lan0"]).stdout
    assert "dev wan" in route, route
    seen = Counted(lab)
    assert not ping6(lab, OUTSIDE6)
    lab.run(lab.clients[0].netns, ["ip", "address", "add", "2001:db8:1::77/64", "dev", "eth0", "nodad"])
    ping = ["ping", "-6", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", "-I", "2001:db8:1::77", OUTSIDE6]
    assert lab.run(lab.clients[0].netns, ping, check=False).returncode != 0  # not even wan's own prefix
    leak_attempts(lab)
    for name in NAMES:
        assert seen[name]["leak6"] == 0, (name, seen[name])
    assert lan_sources(lab) == {name: 0 for name in NAMES}


# Known flaky in long runs (one IPv6 request of three missing at wan's ISP, once in about 4
# runs after other netns tests; never alone); the cause is not found yet.
@pytest.mark.flaky(reruns=2)
def test_a_delegate_lan_keeps_its_ipv6_on_its_uplink_beside_a_full_tunnel(
    lab: Lab, home: Home, tmp_path: Path, daemons: list[LabDaemon]
) -> None:
    """`delegate` is an explicit choice the full tunnel does not override: the LAN's IPv4 goes
    through the tunnel, its delegated IPv6 by wan (the only way the ISP routes the prefix
    back), and `audit` agrees with both."""
    cfg, public = config(tmp_path, home, {"ipv6": {"mode": "delegate", "uplink": "wan", "subnet": 1}})
    start_home6(home, public)
    lab.serve_pd("wan", pool="2001:db8:e1::/48")
    c = LabDaemon(lab.router, cfg, workdir=tmp_path)
    daemons.append(c)
    c.start()
    wait_uplinks(c)
    wait_tunnel(c, "up")

    def delegated() -> bool:
        return (
            "2001:db8:e1:1::1/64" in lab.run("router", ["ip", "-6", "address", "show", "dev", "lan0"]).stdout
        )

    wait_until(delegated, timeout=WAIT, what="the delegated /64 on lan0")
    client = "2001:db8:e1:1::11"
    lab.run(lab.clients[0].netns, ["ip", "address", "add", f"{client}/64", "dev", "eth0", "nodad"])
    seen = Counted(lab)
    ping = ["ping", "-6", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-I", client, OUTSIDE6]
    pinged = lab.run(lab.clients[0].netns, ping, check=False)
    assert pinged.returncode == 0
    answered = int(re.search(r"(\d+) received", pinged.stdout).group(1))  # type: ignore[union-attr]
    ping4 = ["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", OUTSIDE4]
    assert lab.run(lab.clients[0].netns, ping4, check=False).returncode == 0
    # by wan, by choice: every answered request passed wan's ISP, none lte1's
    assert seen["wan"]["leak6"] >= answered >= 1 and seen["lte1"]["leak6"] == 0, seen
    assert seen["wan"]["leak4"] == 0 and seen["lte1"]["leak4"] == 0  # IPv4: through the tunnel
    audited = c.ctl("audit", "--config", str(c.config_path), check=False)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert "ok: lan0 (ipv6 delegate): 2001:db8:e1:1::2 → 2001:db8:ffff::1: unicast dev wan" in audited.stdout
