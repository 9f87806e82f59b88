"""Where the tunnel rides, end to end on the real kernel (wireguard-go): probes THROUGH the
tunnel, a healthy uplink that drops UDP (the next allowed uplink is tried before the tunnel
is declared down), and fail-back to the preferred uplink (immediate, after a hold, never),
each read where the packets really go: nft counters at every ISP and home's view of the
router's endpoint. The lab and home are those of test_tunnels.py (harness/tunnel_home.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns.test_tunnels import WAIT, status, tunnel, wait_tunnel, wait_up
from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon

from harness.readback import wait_until
from harness.tunnel_home import (
    HOME_PORT,
    INNER_HOME,
    NAMES,
    SERVER,
    Counted,
    Home,
    block_udp,
    home_peer,
    router_config,
    tunnel_lab,
    upstream,
)
from harness.tunnel_lab import kill_pid

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(300),
]

PROBE_TARGET = INNER_HOME.split("/")[0]  # home's address inside the tunnel


@pytest.fixture
def lab() -> Iterator[Lab]:
    with tunnel_lab() as lab:
        yield lab


@pytest.fixture
def home(lab: Lab, tmp_path: Path) -> Iterator[Home]:
    with home_peer(lab, tmp_path) as h:
        yield h


def start(lab: Lab, home: Home, tmp_path: Path, **tunnel_over: Any) -> LabDaemon:
    # rounds every second while idle (the profile's 10 s would be the detection time of an
    # idle tunnel: no traffic inside it, nothing to make its prober suspicious)
    probe = {"targets": [PROBE_TARGET], "interval": 1.0}
    cfg, router_public = router_config(tmp_path, home, probe=probe, **tunnel_over)
    hook_out = tmp_path / "hook.out"
    hook = tmp_path / "hook.sh"
    hook.write_text(
        "#!/bin/sh\n"
        'printf "%s|%s|%s|%s|%s|%s\\n" "$UPLINKD_KIND" "$UPLINKD_TUNNEL" "$UPLINKD_UPLINK" '
        f'"$UPLINKD_OLD_STATE" "$UPLINKD_STATE" "$UPLINKD_UNDERLAY" >> {hook_out}\n'
    )
    hook.chmod(0o755)
    cfg["hooks"] = {"on_change": str(hook)}
    daemon = LabDaemon(lab.router, cfg, workdir=tmp_path)
    home.start(router_public)
    daemon.start()
    for name in NAMES:
        wait_up(daemon, name)
    return daemon


def hook_lines(tmp_path: Path) -> list[list[str]]:
    out = tmp_path / "hook.out"
    return [line.split("|") for line in out.read_text().splitlines()] if out.exists() else []


def uplink_state(daemon: LabDaemon, name: str) -> str:
    return str(next(u["state"] for u in status(daemon)["uplinks"] if u["name"] == name))


def encrypted(seen: Counted) -> tuple[int, int]:
    return seen["wan"]["encrypted"], seen["lte1"]["encrypted"]


def test_probes_through_the_tunnel_and_a_network_that_drops_udp(
    lab: Lab, home: Home, tmp_path: Path
) -> None:
    daemon = start(lab, home, tmp_path)
    try:

        def probed_up() -> dict[str, Any] | None:
            t = tunnel(daemon)
            probed = (t.get("probe") or {}).get("health") == "up"
            return t if probed and t["reason"].startswith("probes:") else None

        t = wait_until(probed_up, timeout=WAIT, what="the tunnel's probes up")
        assert t["state"] == "up" and t["underlay4"] == "wan"
        assert t["probe"]["targets"] == [PROBE_TARGET] and t["probe"]["rtt_ms"] is not None

        # wan drops UDP to home; its own probes (ICMP) still pass: wan stays up, the tunnel
        # goes degraded (not down), lte1 is tried and carries it
        blocked = time.monotonic()
        block_udp(lab, "wan")
        degraded = wait_tunnel(daemon, "degraded")
        assert "wan is healthy: trying lte1" in degraded["reason"], degraded
        print(f"degraded {time.monotonic() - blocked:.1f} s after wan began dropping UDP")

        def up_on_lte1() -> dict[str, Any] | None:
            t = tunnel(daemon)
            return t if t["underlay4"] == "lte1" and t["state"] == "up" else None

        t = wait_until(up_on_lte1, timeout=WAIT, what="the tunnel up on lte1")
        print(f"tunnel up again on lte1 {time.monotonic() - blocked:.1f} s after wan began dropping UDP")
        assert uplink_state(daemon, "wan") == "up"
        assert t["avoid"] == ["wan"]
        wait_until(lambda: home.endpoint().startswith(upstream(2) + ":"), timeout=WAIT, what="home sees lte1")
        seen = Counted(lab)
        time.sleep(3)
        wan, lte1 = encrypted(seen)
        assert wan == 0 and lte1 > 0, (wan, lte1)
        # immediate fail-back does not return to wan while it is healthy and cannot carry it
        assert tunnel(daemon)["underlay4"] == "lte1"

        # lte1 drops UDP too: every healthy uplink tried, the tunnel is down, the kill switch on
        block_udp(lab, "lte1")
        down = wait_tunnel(daemon, "down")
        assert "tried wan, lte1" in down["reason"], down

        def killed() -> bool:
            routes = json.loads(lab.run("router", ["ip", "-j", "route", "show", "table", "151"]).stdout)
            return any(r["dst"] == "default" and r.get("type") == "unreachable" for r in routes)

        wait_until(killed, timeout=5, what="the kill switch's unreachable default in table 151")
        assert {uplink_state(daemon, n) for n in NAMES} == {"up"}

        # events: in status and through the hook, named as a tunnel's (never as an uplink's)
        events = [e for e in status(daemon)["events"] if e.get("kind") == "tunnel"]
        assert {"degraded", "down"} <= {e["to"] for e in events if e["tunnel"] == "home"}, events
        wait_until(lambda: any(line[4] == "down" for line in hook_lines(tmp_path)), timeout=WAIT,
                   what="the hook's line for the tunnel going down")  # fmt: skip
        tunnel_lines = [line for line in hook_lines(tmp_path) if line[0] == "tunnel"]
        assert tunnel_lines, hook_lines(tmp_path)
        assert all(line[1] == "home" and line[2] == "" for line in tunnel_lines), tunnel_lines
        assert ["tunnel", "home", "", "up", "degraded", "wan"] in tunnel_lines, tunnel_lines
        assert ["tunnel", "home", "", "degraded", "up", "lte1"] in tunnel_lines, tunnel_lines
    finally:
        daemon.stop()


@pytest.mark.parametrize("fail_back", ["immediate", "hold", "never"])
def test_fail_back_to_the_preferred_uplink(lab: Lab, home: Home, tmp_path: Path, fail_back: str) -> None:
    """wan while healthy, lte1 only after wan fails, and back to wan when it returns:
    at once, after the hold, or never; counted at each ISP."""
    hold = 8.0
    daemon = start(lab, home, tmp_path, fail_back={"hold": hold} if fail_back == "hold" else fail_back)
    try:
        wait_tunnel(daemon, "up")
        assert tunnel(daemon)["underlay4"] == "wan"
        seen = Counted(lab)
        time.sleep(2)
        wan, lte1 = encrypted(seen)
        assert wan > 0 and lte1 == 0, (wan, lte1)

        lab.isp("wan").blackhole()
        wait_until(lambda: tunnel(daemon)["underlay4"] == "lte1", timeout=WAIT, what="the tunnel on lte1")
        wait_until(lambda: home.endpoint().startswith(upstream(2) + ":"), timeout=WAIT, what="home sees lte1")
        seen = Counted(lab)
        time.sleep(2)
        wan, lte1 = encrypted(seen)
        assert wan == 0 and lte1 > 0, (wan, lte1)

        lab.isp("wan").blackhole(False)
        wait_up(daemon, "wan")
        back = time.monotonic()
        if fail_back == "immediate":
            wait_until(lambda: tunnel(daemon)["underlay4"] == "wan", timeout=5, what="back on wan at once")
        else:
            # within the hold (or ever, for never): still lte1, nothing encrypted by wan
            seen = Counted(lab)
            time.sleep(hold - 3)
            t = tunnel(daemon)
            wan, lte1 = encrypted(seen)
            assert t["underlay4"] == "lte1" and t["stay_on"] == "lte1", t
            assert wan == 0 and lte1 > 0, (wan, lte1)
            if fail_back == "never":
                time.sleep(hold)
                assert tunnel(daemon)["underlay4"] == "lte1"
                assert home.endpoint().startswith(upstream(2) + ":")
                return
            wait_until(lambda: tunnel(daemon)["underlay4"] == "wan", timeout=WAIT, what="back on wan")
            waited = time.monotonic() - back
            print(f"fail-back after {waited:.1f} s (hold {hold:g} s)")
            assert waited >= hold - 1.0  # wan_up is seen by polling: up to ~1 s after the fact
        # new handshakes (and everything else) by wan again, with wan's source address
        wait_until(lambda: home.endpoint().startswith(upstream(1) + ":"), timeout=WAIT, what="home sees wan")
        seen = Counted(lab)
        time.sleep(2)
        wan, lte1 = encrypted(seen)
        assert wan > 0 and lte1 == 0, (wan, lte1)
        assert tunnel(daemon)["state"] == "up"
    finally:
        daemon.stop()


def test_fail_back_moves_only_the_tunnels_flow_off_the_healthy_uplink(
    lab: Lab, home: Home, tmp_path: Path
) -> None:
    """A split tunnel (only home's inner prefix through it): LAN flows outside the tunnel
    started while wan was dead ride lte1. wan returns, the tunnel fails back to wan and its
    own conntrack entry on lte1 is deleted, but lte1 stays healthy and carries on every LAN
    flow it carried: none moves, none reconnects. (Deleting all of lte1's entries, as before,
    sends each flow's next packet through the balance group afresh: about half move to wan.)"""
    daemon = start(lab, home, tmp_path, route=["10.99.0.0/24"], fail_back="immediate")
    try:
        wait_tunnel(daemon, "up")
        lab.isp("wan").blackhole()
        wait_until(lambda: uplink_state(daemon, "wan") == "down", timeout=WAIT, what="wan down")
        wait_until(lambda: tunnel(daemon)["underlay4"] == "lte1", timeout=WAIT, what="the tunnel on lte1")
        run = lab.start_flows(tcp=10, udp=10, duration=14.0)
        lab.isp("wan").blackhole(False)
        wait_up(daemon, "wan")
        wait_until(lambda: tunnel(daemon)["underlay4"] == "wan", timeout=5, what="back on wan at once")
        wait_until(lambda: home.endpoint().startswith(upstream(1) + ":"), timeout=WAIT, what="home sees wan")
        report = run.result()
        assert report.by_uplink(at="first") == {"lte1": 20}, report.by_uplink(at="first")
        assert report.by_uplink(at="last") == {"lte1": 20}, [report.uplinks_of(f) for f in report.moved()]
        assert report.reconnects() == 0 and not report.moved()
        # the tunnel's own entry on lte1 was what went (counted under lte1)
        flushed = status(daemon)["counters"]["uplinks"]["lte1"]["conntrack_flushed"]
        assert flushed >= 1, flushed
    finally:
        daemon.stop()


# --- an endpoint given as a DNS name ----------------------------------------------------------

RESOLVER = "198.51.100.53"  # a dnsmasq on the lab's internet: the only name server asked
MOVED = "198.51.100.101"  # where home moves to


class Dns:
    """dnsmasq in the lab's internet namespace answering `home.test` with one address; and
    at every ISP a count of the router's questions to it."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.proc: subprocess.Popen[bytes] | None = None
        lab.run("inet", ["ip", "address", "add", f"{RESOLVER}/32", "dev", "br0"])
        for isp in lab.isps:
            script = f"""
table inet dnstest {{
    chain c {{
        type filter hook prerouting priority -400; policy accept;
        iifname "down" ip daddr {RESOLVER} udp dport 53 counter comment "dns"
    }}
}}
"""
            argv = ["ip", "netns", "exec", isp.netns, "nft", "-f", "-"]
            subprocess.run(argv, input=script, text=True, check=True)

    def answer(self, address: str) -> None:
        self.stop()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.inet, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
             "--no-resolv", "--no-hosts", "--bind-interfaces", f"--listen-address={RESOLVER}",
             "--except-interface=lo", "--pid-file=", f"--address=/home.test/{address}", "--local-ttl=5"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.3)
        assert self.proc.poll() is None, "dnsmasq did not start"

    def questions(self, name: str) -> int:
        out = subprocess.run(
            ["ip", "netns", "exec", self.lab.isp(name).netns, "nft", "-j", "list", "chain", "inet",
             "dnstest", "c"], check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        rule = next(i["rule"] for i in json.loads(out)["nftables"] if "rule" in i)
        return int(next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e))

    def stop(self) -> None:
        if self.proc is not None:
            kill_pid(self.proc.pid)
            self.proc.wait()
            self.proc = None


def test_an_endpoint_name_resolves_through_the_underlay_and_again_when_home_moves(
    lab: Lab, home: Home, tmp_path: Path
) -> None:
    dns = Dns(lab)
    dns.answer(SERVER)
    peer = {"public_key": home.public, "endpoint": f"home.test:{HOME_PORT}", "allowed_ips": ["0.0.0.0/0"],
            "keepalive": 1}  # fmt: skip
    daemon = start(lab, home, tmp_path, peers=[peer], resolvers=[RESOLVER])
    try:
        t = wait_tunnel(daemon, "up")
        assert t["resolved"] == {f"home.test:{HOME_PORT}": f"{SERVER}:{HOME_PORT}"}, t
        assert t["underlay4"] == "wan"
        # the question left by the underlay uplink (wan), never by lte1
        assert dns.questions("wan") >= 1 and dns.questions("lte1") == 0

        # a restart plans from the address the device has: no write, no new handshake
        handshake = home.handshake()
        daemon.stop(signal.SIGTERM)
        daemon.start()
        wait_tunnel(daemon, "up")
        time.sleep(2)
        assert status(daemon)["writes"] == 0, daemon.writes()
        assert home.handshake() == handshake

        # home moves: the old address stops answering, the name points to the new one
        lab.run("inet", ["ip", "address", "add", f"{MOVED}/32", "dev", "br0"])
        block = f"""
table inet homeblock {{
    chain c {{
        type filter hook prerouting priority -300; policy accept;
        ip daddr {SERVER} udp dport {HOME_PORT} drop
    }}
}}
"""
        argv = ["ip", "netns", "exec", lab.inet, "nft", "-f", "-"]
        subprocess.run(argv, input=block, text=True, check=True)
        dns.answer(MOVED)
        moved = time.monotonic()

        def up_at_new_address() -> dict[str, Any] | None:
            t = tunnel(daemon)
            there = t["resolved"].get(f"home.test:{HOME_PORT}", "").startswith(MOVED)
            return t if t["state"] == "up" and there else None

        t = wait_until(up_at_new_address, timeout=60, what="the tunnel up at home's new address")
        print(f"up at the new address {time.monotonic() - moved:.1f} s after home moved")
        assert t["endpoint"].startswith(MOVED), t
        assert dns.questions("lte1") == 0
    finally:
        daemon.stop()
        dns.stop()


# --- the underlay as a policy -----------------------------------------------------------------


def test_a_policy_underlay_carries_the_tunnel_by_its_tiers(lab: Lab, home: Home, tmp_path: Path) -> None:
    """underlay = {policy = "lte-first"} (tiers [lte1], [wan]): the encrypted packets leave by
    lte1 while it is healthy, by wan after lte1 fails; counted at each ISP."""
    cfg, router_public = router_config(
        tmp_path, home, underlay={"policy": "lte-first"}, fwmark=0x1000000
    )
    cfg["policies"] = {"lte-first": {"tiers": [["lte1"], ["wan"]], "table": 160}}
    daemon = LabDaemon(lab.router, cfg, workdir=tmp_path)
    home.start(router_public)
    daemon.start()
    try:
        for name in NAMES:
            wait_up(daemon, name)
        wait_tunnel(daemon, "up")
        wait_until(lambda: tunnel(daemon)["underlay4"] == "policy lte-first (lte1)", timeout=WAIT,
                   what="the tunnel on the policy's first tier")  # fmt: skip
        wait_until(lambda: home.endpoint().startswith(upstream(2) + ":"), timeout=WAIT, what="home sees lte1")
        seen = Counted(lab)
        time.sleep(2)
        wan, lte1 = encrypted(seen)
        assert wan == 0 and lte1 > 0, (wan, lte1)

        lab.isp("lte1").blackhole()
        wait_until(lambda: tunnel(daemon)["underlay4"] == "policy lte-first (wan)", timeout=WAIT,
                   what="the tunnel on the policy's second tier")  # fmt: skip
        wait_until(lambda: home.endpoint().startswith(upstream(1) + ":"), timeout=WAIT, what="home sees wan")
        seen = Counted(lab)
        time.sleep(2)
        wan, lte1 = encrypted(seen)
        assert wan > 0 and lte1 == 0, (wan, lte1)

        # lte1 back: the first tier again; wan's NAT binding of the tunnel's flow is flushed,
        # so its packets leave lte1 with lte1's address
        lab.isp("lte1").blackhole(False)
        wait_until(lambda: tunnel(daemon)["underlay4"] == "policy lte-first (lte1)", timeout=WAIT,
                   what="the tunnel back on the policy's first tier")  # fmt: skip
        wait_until(lambda: home.endpoint().startswith(upstream(2) + ":"), timeout=WAIT, what="home sees lte1")
        seen = Counted(lab)
        time.sleep(2)
        wan, lte1 = encrypted(seen)
        assert wan == 0 and lte1 > 0, (wan, lte1)
    finally:
        daemon.stop()
