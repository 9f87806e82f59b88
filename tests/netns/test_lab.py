"""The lab library on the real kernel, without the controller; and the daemon launcher.

Needs root (network namespaces); skipped otherwise.  The router is routed by hand
(``Lab.route_by_hand``: a default route via ISP 1 and masquerade), standing in for the
controller.  The last tests start the real daemon with the launcher the tests, the
benchmarks and the demo share (:class:`~uplinkd.lab.launcher.LabDaemon`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from uplinkd.lab import DaemonError, Faults, FlowReport, Lab, LabDaemon, LabError, lab_prefixes, wait_until
from uplinkd.lab.isp import faults_script
from uplinkd.lab.netns import list_namespaces, namespace_pids

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nft") is None,
    reason="needs root, iproute2 and nftables",
)


@pytest.fixture
def lab() -> Iterator[Lab]:
    """Two static ISPs (``wan``, ``lte1``) and one LAN client, routed by hand via ``wan``."""
    with Lab() as lab:
        wan = lab.add_isp("wan")
        lab.add_isp("lte1")
        lab.add_client()
        lab.route_by_hand(wan)
        yield lab


def pings(lab: Lab, role: str, address: str, wait: str = "0.5") -> bool:
    done = lab.run(role, ["ping", "-n", "-q", "-c", "1", "-W", wait, address], check=False)
    return done.returncode == 0


def flags(lab: Lab, role: str, ifname: str) -> list[str]:
    return list(lab.link(role, ifname)["flags"])


# --- routing by hand: flows reach the server through ISP 1 -----------------------------------


@needs_root
@pytest.mark.timeout(20)
def test_flows_reach_the_server_through_isp1(lab: Lab) -> None:
    report = lab.flows(tcp=4, udp=4, interval_ms=20, duration=1)

    assert len(report.flows) == 8
    assert report.by_uplink() == {"wan": 8}
    assert {flow.last_source for flow in report.flows} == {"198.51.100.1"}
    assert report.lost() == 0
    assert report.moved() == ()
    assert len({flow.local_port for flow in report.flows}) == 8
    assert lab.uplink_of_source("198.51.100.1") == "wan"
    assert lab.uplink_of_source("198.51.100.2") == "lte1"


@needs_root
@pytest.mark.timeout(20)
def test_ipv6_flows_reach_the_server_through_isp1(lab: Lab) -> None:
    report = lab.flows(tcp=2, udp=2, duration=0.5, family=6)

    assert report.by_uplink() == {"wan": 4}
    assert {flow.last_source for flow in report.flows} == {"2001:db8:100::1"}


# --- faults ----------------------------------------------------------------------------------


@needs_root
@pytest.mark.timeout(20)
def test_blackhole_stops_flows_and_undoing_it_resumes_them(lab: Lab) -> None:
    wan = lab.isp("wan")
    run = lab.start_flows(tcp=3, udp=3, interval_ms=20, duration=3)
    time.sleep(0.5)
    wan.blackhole(True)
    outage = time.monotonic()
    assert not pings(lab, "router", "10.101.0.1", wait="0.2")  # the ISP itself is gone too
    assert "LOWER_UP" in flags(lab, "router", "wan")  # carrier stays up
    time.sleep(0.3)
    wan.blackhole(False)
    outage = time.monotonic() - outage
    report = run.result()

    # The outage is ~0.6 s; TCP retransmits after 0.2, 0.6, 1.4 s: recovered well before
    # the flows end.
    for flow in report.flows:
        assert flow.max_gap_ms >= outage * 1000 - 50, flow
        assert flow.runs[-1].last_seq >= flow.sent - 5, f"no replies after the outage: {flow}"
    udp = [flow for flow in report.flows if flow.proto == "udp"]
    assert all(flow.lost >= outage / 0.020 - 5 for flow in udp), udp
    assert report.by_uplink() == {"wan": 6}


@needs_root
@pytest.mark.timeout(20)
def test_carrier_loss_shows_on_the_router_side(lab: Lab) -> None:
    wan = lab.isp("wan")
    assert "NO-CARRIER" not in flags(lab, "router", "wan")

    wan.carrier(False)
    wait_until(lambda: "NO-CARRIER" in flags(lab, "router", "wan"), timeout=2, what="NO-CARRIER")
    assert lab.link("router", "wan")["operstate"] == "DOWN"

    wan.carrier(True)
    assert "LOWER_UP" in flags(lab, "router", "wan")
    assert pings(lab, "router", "10.101.0.1")
    assert pings(lab, "router", "2001:db8:1::1")  # static v6 addresses survive the flap


@needs_root
@pytest.mark.timeout(20)
def test_block_icmp_drops_pings_but_not_tcp(lab: Lab) -> None:
    wan = lab.isp("wan")
    assert pings(lab, "lan1", "198.51.100.100")

    wan.block_icmp(True)
    assert not pings(lab, "lan1", "198.51.100.100")
    assert not pings(lab, "router", "10.101.0.1")
    report = lab.flows(tcp=2, udp=0, duration=0.5)
    assert report.lost() == 0
    assert report.by_uplink() == {"wan": 2}

    wan.block_icmp(False)
    assert pings(lab, "lan1", "198.51.100.100")


@needs_root
@pytest.mark.timeout(20)
def test_loss_drops_about_that_share(lab: Lab) -> None:
    wan = lab.isp("wan")
    wan.loss(50)
    lossy = lab.flows(tcp=0, udp=4, interval_ms=10, duration=1)
    wan.loss(0)
    clean = lab.flows(tcp=0, udp=2, interval_ms=10, duration=0.3)

    share = lossy.lost() / lossy.sent()
    assert 0.3 < share < 0.7, share
    assert clean.lost() == 0
    assert wan.faults == Faults()


@needs_root
@pytest.mark.timeout(20)
def test_rate_installs_and_removes_tbf(lab: Lab) -> None:
    wan = lab.isp("wan")

    def qdiscs() -> str:
        return lab.run("isp1", ["tc", "qdisc", "show"]).stdout

    wan.rate(2000)
    assert qdiscs().count("tbf") == 2  # both directions: down and up
    assert lab.flows(tcp=1, udp=1, duration=0.3).lost() == 0
    wan.rate(None)
    assert "tbf" not in qdiscs()


# --- DHCP ------------------------------------------------------------------------------------


@needs_root
@pytest.mark.timeout(20)
def test_dhcp_isp_runs_dnsmasq_on_its_down_link_only() -> None:
    with Lab() as lab:
        lte = lab.add_isp("lte1", address="dhcp", lease_seconds=120)
        silent = lab.add_isp("lte2", address="dhcp", dhcp="silent")

        assert lte.dnsmasq is not None
        listening = lab.run("isp1", ["ss", "-H", "-u", "-l", "-n", "-p", "sport = :67"]).stdout
        assert f"pid={lte.dnsmasq.pid}," in listening
        assert "%down:67" in listening  # bound to the router-facing link only
        assert silent.dnsmasq is None
        assert lab.run("isp2", ["ss", "-H", "-u", "-l", "-n", "sport = :67"]).stdout == ""
        # The router side has no address: the controller's DHCP client will get one.
        assert "10.101.0." not in lab.run("router", ["ip", "-4", "address"]).stdout

        if not _has_udhcpc():
            pytest.skip("busybox udhcpc not available for a one-shot lease")
        done = lab.run("router", udhcpc_once("lte1", tries=3))
        assert "lease of 10.101.0." in done.stderr
        (lease,) = lte.leases()
        assert 50 <= int(str(lease.address).rsplit(".", 1)[1]) <= 150
        silence = lab.run("router", udhcpc_once("lte2", tries=1), check=False)
        assert silence.returncode != 0


def udhcpc_once(ifname: str, *, tries: int) -> list[str]:
    """A one-shot DHCP client that only reports the lease (its script does nothing)."""
    return ["busybox", "udhcpc", "-f", "-q", "-n", "-i", ifname,
            "-t", str(tries), "-T", "1", "-s", "/bin/true"]  # fmt: skip


def _has_udhcpc() -> bool:
    if shutil.which("busybox") is None:
        return False
    listing = subprocess.run(["busybox", "--list"], capture_output=True, text=True, check=False)
    return "udhcpc" in listing.stdout.split()


# --- hotplug ---------------------------------------------------------------------------------


@needs_root
@pytest.mark.timeout(20)
def test_unplug_and_plug_again_under_another_name(lab: Lab) -> None:
    wan = lab.isp("wan")

    lab.unplug("wan")
    assert wan.ifname is None
    assert "wan" not in lab.run("router", ["ip", "-brief", "link"]).stdout
    assert lab.run("isp1", ["ip", "link", "show", "dev", "down"], check=False).returncode != 0
    with pytest.raises(LabError):
        lab.unplug("wan")

    lab.plug(wan, "usb0")
    assert wan.ifname == "usb0"
    assert "10.101.0.2/24" in lab.run("router", ["ip", "address", "show", "dev", "usb0"]).stdout
    lab.route_by_hand(wan)  # the kernel dropped the default route with the old link
    assert lab.flows(tcp=2, udp=2, duration=0.3).by_uplink() == {"wan": 4}

    lab.plug(wan, "usb1")  # moved to another port: the old one disappears
    names = lab.run("router", ["ip", "-brief", "link"]).stdout
    assert "usb1" in names
    assert "usb0" not in names


@needs_root
@pytest.mark.timeout(20)
def test_an_isp_can_start_unplugged() -> None:
    with Lab() as lab:
        lte = lab.add_isp("lte1", plugged=False, address="dhcp")
        assert lte.ifname is None
        assert lte.dnsmasq is None
        lab.plug(lte, "wwan0")
        assert lte.dnsmasq is not None
        assert "NO-CARRIER" not in flags(lab, "router", "wwan0")
        lab.unplug("wwan0")
        assert lte.dnsmasq is None


# --- isolation and cleanup -------------------------------------------------------------------


@needs_root
@pytest.mark.timeout(30)
def test_close_leaves_no_namespace_and_no_process() -> None:
    lab = Lab()
    lab.add_isp("wan")
    lab.add_isp("lte1", address="dhcp", ra=True)
    lab.add_client()
    lab.route_by_hand(lab.isp("wan"))
    running = lab.start_flows(tcp=1, udp=1, duration=30)
    sleeper = lab.popen("router", ["sleep", "60"])
    pids = [running.pid, sleeper.pid, *(isp.dnsmasq.pid for isp in lab.isps if isp.dnsmasq)]
    assert len(pids) == 3
    assert lab.prefix in lab_prefixes()

    lab.close()
    lab.close()  # idempotent

    assert [name for name in list_namespaces() if name.startswith(lab.prefix)] == []
    assert lab.prefix not in lab_prefixes()
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}"), pid
    assert not lab.workdir.exists()


@needs_root
@pytest.mark.timeout(20)
def test_close_cleans_up_after_a_failure_inside_the_lab() -> None:
    with pytest.raises(LabError), Lab() as lab:
        lab.add_isp("wan")
        prefix = lab.prefix
        lab.run("router", ["false"])
    assert [name for name in list_namespaces() if name.startswith(prefix)] == []


@needs_root
@pytest.mark.timeout(20)
def test_two_labs_side_by_side() -> None:
    with Lab() as one, Lab() as two:
        assert one.prefix != two.prefix
        for lab in (one, two):  # the same names and addresses in both
            lab.add_isp("wan")
            lab.add_isp("lte1")
            lab.add_client()
        one.route_by_hand(one.isp("wan"))
        two.route_by_hand(two.isp("lte1"))
        assert one.flows(tcp=1, udp=1, duration=0.3).by_uplink() == {"wan": 2}
        assert two.flows(tcp=1, udp=1, duration=0.3).by_uplink() == {"lte1": 2}
        one.isp("wan").blackhole(True)  # a fault in one lab does not reach the other
        assert two.flows(tcp=1, udp=1, duration=0.3).lost() == 0


# --- pure parts (no root) --------------------------------------------------------------------


def test_faults_script_rebuilds_the_chain() -> None:
    assert faults_script(Faults()) == "flush chain inet lab faults\n"
    script = faults_script(Faults(blackhole=True, loss_percent=5, block_icmp=True))
    lines = script.splitlines()
    assert lines[0] == "flush chain inet lab faults"
    assert all(line.startswith('add rule inet lab faults iifname "down" ') for line in lines[1:])
    assert lines[-1].endswith("numgen random mod 100 < 5 drop")
    assert any(line.endswith("udp dport 67 accept") for line in lines)  # DHCP still answered


def test_flow_report_counts_flows_per_uplink() -> None:
    text = """{"flows": [
      {"proto": "udp", "local_ports": [4000], "runs": [[0, 9, "198.51.100.1"]],
       "sent": 10, "received": 10, "lost": 0, "max_gap_ms": 20.5, "reconnects": 0, "errors": 0},
      {"proto": "tcp", "local_ports": [4001, 4002],
       "runs": [[0, 4, "198.51.100.1"], [6, 9, "198.51.100.2"]],
       "sent": 10, "received": 9, "lost": 1, "max_gap_ms": 900.0, "reconnects": 1, "errors": 0},
      {"proto": "udp", "local_ports": [4003], "runs": [],
       "sent": 10, "received": 0, "lost": 10, "max_gap_ms": 200.0, "reconnects": 0, "errors": 3}
    ]}"""
    names = {"198.51.100.1": "wan", "198.51.100.2": "lte1"}
    report = FlowReport.from_json(text, names)

    assert report.by_uplink() == {"lte1": 1, "none": 1, "wan": 1}
    assert report.by_uplink(at="first") == {"none": 1, "wan": 2}
    assert report.moved() == (report.flows[1],)
    assert report.uplinks_of(report.flows[1]) == ("wan", "lte1")
    assert report.max_gap_ms() == 900.0
    assert report.lost() == 11
    assert report.started_on("wan") == report.flows[:2]
    with pytest.raises(LabError):
        FlowReport.from_json('{"flows": [{"proto": "sctp"}]}', names)


# --- the daemon launcher ------------------------------------------------------------------------

WAN_ONLY: dict[str, Any] = {
    "uplinks": {
        "wan": {
            "match": {"name": "wan"},
            "address": {"mode": "static", "cidr": "10.101.0.2/24", "gateway": "10.101.0.1"},
            "table": 101,
        }
    }
}


@needs_root
@pytest.mark.timeout(60)
def test_launcher_runs_the_daemon_in_the_namespace_until_stopped_by_pid(tmp_path: Path) -> None:
    with Lab() as lab:
        lab.add_isp("wan", address="none")
        with LabDaemon(lab.router, WAN_ONLY, workdir=tmp_path) as daemon:
            assert daemon.status()["passes"] > 0  # ready: the first pass is done
            assert daemon.pid in namespace_pids(lab.router)
            assert daemon.config["control"]["socket"] == str(tmp_path / "control.sock")
            assert daemon.wait_state("wan", "up")["dev"] == "wan"
            assert "ip -4 route add default via 10.101.0.1 dev wan table 101" in "\n".join(daemon.writes())
        assert not daemon.running
        assert (daemon.stop(), daemon.stop()) == (0, 0)  # SIGTERM: a clean exit; stopping again is a no-op


@needs_root
@pytest.mark.timeout(60)
def test_launcher_reports_a_daemon_that_exits_with_its_log(tmp_path: Path) -> None:
    bad = {"uplinks": {"x": {"match": {"name": "x"}, "table": 254}}}
    with Lab() as lab:
        daemon = LabDaemon(lab.router, bad, workdir=tmp_path)
        with pytest.raises(DaemonError, match="uplinkd exited with status 2") as raised:
            daemon.start()
        assert "254 is the kernel's 'main' table" in "\n".join(raised.value.__notes__)
        assert daemon.stop() == 2
