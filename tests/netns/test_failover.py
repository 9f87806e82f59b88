"""Health checking end to end on the real kernel: blackholes, carrier loss, partial loss,
filtered ICMP, total outage, wrong probe targets, flapping, sticky connections, hooks.

Every test builds its own lab (three ISPs, one LAN client) and tears it down. Timing is the
benchmark's business (bench/failover.py): here the waits are generous and the assertions are
about behaviour: which uplink is in the group, which flows moved, which packets were lost.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from uplinkd import control
from uplinkd.lab import FlowReport, Lab
from uplinkd.lab.launcher import LabDaemon

from harness.readback import group_members, routes, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(180),
]

NAMES = ("wan", "lte1", "lte2", "lte3")
TABLES = {101 + i: name for i, name in enumerate(NAMES)}
MASK = 0xFF00
MARK = {name: (101 + i) << 8 for i, name in enumerate(NAMES)}  # table mod 256, under the mask
SERVER = "198.51.100.100"
NOBODY = "198.51.100.250"  # on the lab's internet, but nobody answers
# the lab's traffic client waits up to 5 s for every flow to have a reply
WAIT = 30.0  # generous: a loaded CI box must not fail on timing


def upstream(index: int) -> str:
    return f"198.51.100.{index}"


def uplink(index: int, name: str, targets: list[str] | None = None) -> dict[str, Any]:
    """ISP number `index` (1-based) as uplink `name`, with a static address the controller sets.
    Probe targets: the server and the ISP's own upstream address, unless given."""
    return {
        "match": {"name": name},
        "address": {"mode": "static", "cidr": f"10.{100 + index}.0.2/24", "gateway": f"10.{100 + index}.0.1"},
        "table": 100 + index,
        "probe": {"targets": [SERVER, upstream(index)] if targets is None else targets},
    }


def config(
    n: int = 3, *, probe: dict[str, Any] | None = None, targets: list[str] | None = None, **top: Any
) -> dict[str, Any]:
    """n uplinks (wan, lte1, ...) probed with the `fast` profile unless `probe` says otherwise."""
    return {
        "uplinks": {name: uplink(i + 1, name, targets) for i, name in enumerate(NAMES[:n])},
        "probe": {"profile": "fast", **(probe or {})},
        "balance": {"table": 200},
        **top,
    }


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        for name in NAMES[:3]:
            lab.add_isp(name, address="none")  # the controller puts the static address on
        lab.add_client()
        yield lab


def status(c: LabDaemon) -> dict[str, Any]:
    """`uplinkctl status --json`, asked over the control socket from this process: polling
    the CLI (a Python start-up every 50 ms) loads a small machine enough to drop packets of
    the very flows a test watches."""
    return dict(control.call(c.socket, {"command": "status"}))


def uplink_status(c: LabDaemon, name: str) -> dict[str, Any]:
    return next(u for u in status(c)["uplinks"] if u["name"] == name)


def wait_state(c: LabDaemon, name: str, *states: str, timeout: float = WAIT) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        up = uplink_status(c, name)
        return up if up["state"] in states else None

    what = f"uplink {name} to be {'/'.join(states)} (log: {c.log_path})"
    return dict(wait_until(reached, timeout=timeout, what=what))


def in_group(lab: Lab) -> set[str]:
    return set(group_members(lab.router, TABLES))


def wait_group(lab: Lab, names: set[str], timeout: float = WAIT) -> None:
    wait_until(lambda: in_group(lab) == names, timeout=timeout, what=f"group to be {sorted(names)}")


def start_all_up(c: LabDaemon, lab: Lab, n: int = 3) -> None:
    c.start()
    for name in NAMES[:n]:
        wait_state(c, name, "up")
    wait_group(lab, set(NAMES[:n]))


def transitions(c: LabDaemon, name: str) -> list[tuple[str, str]]:
    """(from, to) of every state change of `name` the daemon logged (after its first state)."""
    pattern = re.compile(rf" INFO uplink {re.escape(name)}: (\S+) → (\S+) ")
    return [(m[1], m[2]) for m in pattern.finditer(c.log()) if m[1] != "-"]


def conntrack(netns: str, src: str | None = None) -> dict[str, tuple[int, str]]:
    """Conntrack entries (from `src`, or all) as original tuple → (ct mark, entry id).
    A deleted and re-created connection keeps its tuple but gets a new id."""
    argv = ["conntrack", "-L", "-o", "id,extended", *(["-s", src] if src else [])]
    out = subprocess.run(
        ["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, check=False, timeout=10
    ).stdout
    entries = {}
    for line in out.splitlines():
        words = line.split()
        tuple_ = [w for w in words if w.split("=")[0] in ("src", "dst", "sport", "dport")][:4]
        mark = next((int(w[5:]) for w in words if w.startswith("mark=")), 0)
        ident = next((w for w in words if w.startswith("id=")), "")
        entries[" ".join([words[2], *tuple_])] = (mark, ident)
    return entries


def on_uplink(entries: dict[str, tuple[int, str]], name: str) -> set[str]:
    return {k for k, (mark, _) in entries.items() if mark & MASK == MARK[name]}


def healthy_flows_undisturbed(report: FlowReport, healthy: set[str]) -> None:
    flows = [f for f in report.flows if report.uplink(f.first_source) in healthy]
    assert flows, "no flow started on a healthy uplink; the test proves nothing"
    moved = [report.uplinks_of(f) for f in flows if f.moved]
    assert not moved, f"flows on healthy uplinks moved: {moved}"
    lost = sum(f.lost for f in flows)
    assert lost == 0, f"flows on healthy uplinks lost {lost} packets"
    assert sum(f.reconnects for f in flows) == 0, "a TCP flow on a healthy uplink reconnected"


def failed_flows_resumed(report: FlowReport, dead: str, alive: set[str]) -> None:
    flows = report.started_on(dead)
    assert flows, f"no flow started on {dead}; the test proves nothing"
    for f in flows:
        last = report.uplink(f.last_source)
        assert last in alive, f"a {f.proto} flow of {dead} did not resume elsewhere: {report.uplinks_of(f)}"
        # replies kept coming after the move, not just one
        assert f.runs[-1].last_seq - f.runs[-1].first_seq >= 5, f.runs
        if f.proto == "udp":
            # the same socket, so the same 5-tuple: a VPN's session survives, with a new source
            assert len(f.local_ports) == 1


# --- blackhole ------------------------------------------------------------------------------


def test_blackhole_takes_the_uplink_out_and_its_return_moves_nothing(lab: Lab, make_controller: Any) -> None:
    c = make_controller(config())
    start_all_up(c, lab)
    flows = lab.start_flows(tcp=15, udp=30, interval_ms=20, duration=6.0)
    time.sleep(1.0)
    lab.isp("lte1").blackhole()  # carrier stays up: only probes can tell
    st = wait_state(c, "lte1", "down")
    assert not st["in_group"] and st["probe"]["health"] == "down"
    assert in_group(lab) == {"wan", "lte2"}
    report = flows.result()
    failed_flows_resumed(report, "lte1", {"wan", "lte2"})
    healthy_flows_undisturbed(report, {"wan", "lte2"})

    # flows that start while lte1 is out, and run through its return
    steady = lab.start_flows(tcp=10, udp=20, interval_ms=20, duration=12.0)
    lab.isp("lte1").blackhole(False)
    st = wait_state(c, "lte1", "up")
    assert st["in_group"]
    wait_group(lab, {"wan", "lte1", "lte2"})
    # it came back after up_after (3) good rounds in a row, not on the first answer
    rounds = [
        (int(answered) > 0, health)
        for answered, health in re.findall(r"DEBUG lte1: (\d+)/\d+ answered, tracker (\w+)", c.log())
    ]
    back = max(i for i in range(1, len(rounds)) if rounds[i][1] == "up" and rounds[i - 1][1] == "down")
    assert rounds[back - 3 : back + 1] == [(False, "down"), (True, "down"), (True, "down"), (True, "up")]
    # new connections use it again ...
    wait_until(
        lambda: "lte1" in lab.flows(tcp=6, udp=12, interval_ms=20, duration=0.3).by_uplink(),
        timeout=WAIT,
        what="a new flow through lte1",
    )
    # ... and nothing that was running moved onto it
    old = steady.result()
    assert "lte1" not in old.by_uplink(at="first")
    assert not old.moved(), [old.uplinks_of(f) for f in old.moved()]
    assert old.lost() == 0 and old.reconnects() == 0


# --- carrier --------------------------------------------------------------------------------


def test_carrier_loss_flushes_only_that_uplinks_connections(lab: Lab, make_controller: Any) -> None:
    c = make_controller(config())
    start_all_up(c, lab)
    flows = lab.start_flows(tcp=15, udp=30, interval_ms=20, duration=5.0)
    time.sleep(0.5)
    before = conntrack(lab.router)
    for name in ("wan", "lte1", "lte2"):
        assert on_uplink(before, name), f"no connection pinned to {name}: {before}"
    lab.isp("lte1").carrier(False)
    st = wait_state(c, "lte1", "present")
    assert st["reason"] == "no carrier" and not st["in_group"]
    wait_until(lambda: not on_uplink(conntrack(lab.router), "lte1"), timeout=WAIT,
               what="lte1's connections to be flushed")  # fmt: skip
    after = conntrack(lab.router)
    for name in ("wan", "lte2"):  # the very same entries (same id), not re-created ones
        gone = {k for k in on_uplink(before, name) if after.get(k) != before[k]}
        assert not gone, f"{name}'s connections were flushed: {gone}"
    flushes = [w.split(" INFO ", 1)[1] for w in c.writes() if " INFO conntrack " in w]
    assert [f.split("  #")[0] for f in flushes] == ["conntrack -D --mark 0x6600/0xff00"], flushes
    report = flows.result()
    failed_flows_resumed(report, "lte1", {"wan", "lte2"})
    healthy_flows_undisturbed(report, {"wan", "lte2"})
    lab.isp("lte1").carrier(True)
    wait_state(c, "lte1", "up")
    wait_group(lab, {"wan", "lte1", "lte2"})


# --- partial loss ---------------------------------------------------------------------------


def test_partial_loss_degrades_and_cuts_the_weight(lab: Lab, make_controller: Any) -> None:
    cfg = config(
        # eight probes a round (each target twice), a round every 0.2 s: the smoothed loss
        # settles quickly and stays near 40% (it must not wander below the recovery point,
        # half the threshold), and a round where all eight are lost does not come at all
        targets=[SERVER, upstream(1), upstream(2), upstream(3)] * 2,
        probe={"interval": 0.2, "down_after": 5, "loss_threshold": 20, "degraded_weight": 0.5},
    )
    cfg["uplinks"]["lte1"]["weight"] = 4
    c = make_controller(cfg)
    start_all_up(c, lab)
    assert group_members(lab.router, TABLES) == {"wan": 1, "lte1": 4, "lte2": 1}
    lab.isp("lte1").loss(40)
    st = wait_state(c, "lte1", "degraded")
    assert st["in_group"] and st["weight"] == 2, st
    assert "loss" in st["reason"] and st["probe"]["loss_pct"] > 0, st
    wait_until(lambda: group_members(lab.router, TABLES) == {"wan": 1, "lte1": 2, "lte2": 1},
               timeout=WAIT, what="lte1's weight halved in the kernel's group")  # fmt: skip
    lab.isp("lte1").loss(0)
    wait_state(c, "lte1", "up")
    wait_until(lambda: group_members(lab.router, TABLES) == {"wan": 1, "lte1": 4, "lte2": 1},
               timeout=WAIT, what="lte1's full weight back")  # fmt: skip
    assert "down" not in {to for _, to in transitions(c, "lte1")}, transitions(c, "lte1")
    assert transitions(c, "wan") == transitions(c, "lte2") == [("probing", "up")]


# --- ICMP filtered --------------------------------------------------------------------------


def test_icmp_filtered_tcp_probes_keep_the_uplink_up(lab: Lab, make_controller: Any) -> None:
    lab.start_server()  # the TCP probe target: 198.51.100.100:9000
    cfg = config(probe={"interval": 0.2})
    cfg["uplinks"]["wan"]["probe"] = {"method": "tcp", "targets": [f"{SERVER}:9000"]}
    # lte1 probes with ICMP, as before
    c = make_controller(cfg)
    start_all_up(c, lab)
    lab.isp("wan").block_icmp()
    lab.isp("lte1").block_icmp()
    wait_state(c, "lte1", "down")  # ICMP probes: no answer
    time.sleep(1.0)  # several more rounds for wan
    wan = uplink_status(c, "wan")
    assert wan["state"] == "up" and wan["in_group"], wan
    assert wan["probe"]["method"] == "tcp" and wan["probe"]["loss_pct"] == 0
    assert transitions(c, "wan") == [("probing", "up")]
    assert in_group(lab) == {"wan", "lte2"}
    # the filter really is there: ICMP through wan gets no answer, TCP does
    ping = ["ping", "-c", "2", "-W", "1", "-i", "0.2", "-I", "wan", "-m", str(MARK["wan"]), SERVER]
    assert lab.run("router", ping, check=False).returncode != 0
    assert lab.flows(tcp=4, udp=0, duration=0.5).lost() == 0


# --- total outage ---------------------------------------------------------------------------


def test_every_uplink_dead_uses_the_last_resort(lab: Lab, make_controller: Any) -> None:
    c = make_controller(config())
    start_all_up(c, lab)
    for name in ("wan", "lte1", "lte2"):
        lab.isp(name).blackhole()
    for name in ("wan", "lte1", "lte2"):
        wait_state(c, name, "down")
    # no uplink is healthy: every uplink with carrier carries traffic (a probe target's
    # outage must not take the router offline)
    wait_group(lab, {"wan", "lte1", "lte2"})
    st = status(c)
    assert "last resort" in st["balance"]["ipv4"]
    assert all(u["in_group"] and u["state"] == "down" for u in st["uplinks"])
    # unless configured to refuse
    cfg = config(balance={"table": 200, "last_resort": "unreachable"})
    cfg["control"] = c.config["control"]
    c.write_config(cfg)
    c.ctl("reload")
    wait_until(lambda: routes(lab.router, 200) and routes(lab.router, 200)[0].get("type") == "unreachable",
               timeout=WAIT, what="unreachable default in the balance table")  # fmt: skip
    assert in_group(lab) == set()
    assert not any(u["in_group"] for u in status(c)["uplinks"])
    # one uplink coming back is used alone
    lab.isp("lte2").blackhole(False)
    wait_state(c, "lte2", "up")
    wait_group(lab, {"lte2"})
    assert lab.flows(tcp=3, udp=3, duration=0.5).by_uplink() == {"lte2": 6}


def test_wrong_probe_targets_do_not_take_the_router_offline(lab: Lab, make_controller: Any) -> None:
    c = make_controller(config(targets=[NOBODY]))
    c.start()
    for name in ("wan", "lte1", "lte2"):
        wait_state(c, name, "down")
    wait_group(lab, {"wan", "lte1", "lte2"})
    report = lab.flows(tcp=10, udp=20, duration=1.0)
    assert report.lost() == 0 and "none" not in report.by_uplink(), report.by_uplink()
    assert len(report.by_uplink()) >= 2, "the last resort should spread over the uplinks"


def test_last_healthy_uplinks_probe_outage_keeps_its_connections(lab: Lab, make_controller: Any) -> None:
    # Rounds every 0.5 s even while up (lte2's traffic is fine, so nothing else would make
    # it probe before its slow interval). Buckets idle for 1 s may move to a joining member:
    # long-lived connections (a VPN) have long left their bucket idle, so a re-hashed
    # connection would move.
    c = make_controller(config(probe={"interval": 0.5}, balance={"table": 200, "idle_timer": 1.0}))
    start_all_up(c, lab)
    for name in ("wan", "lte1"):
        lab.isp(name).blackhole()
        wait_state(c, name, "down")
    wait_group(lab, {"lte2"})
    flows = lab.start_flows(tcp=10, udp=20, interval_ms=20, duration=6.0)
    time.sleep(1.5)
    # lte2's probes fail, its traffic does not: it goes down, and the last resort puts
    # every uplink with carrier in the group (two of them blackholed)
    lab.isp("lte2").block_icmp()
    wait_state(c, "lte2", "down")
    wait_group(lab, {"wan", "lte1", "lte2"})
    report = flows.result()
    assert report.by_uplink(at="first") == {"lte2": 30}
    # new connections may land on a dead uplink (that is the last resort's price), but the
    # ones that work through lte2 must stay there
    assert not report.moved(), [report.uplinks_of(f) for f in report.moved()]
    assert report.lost() == 0 and report.reconnects() == 0


def test_last_resort_leaves_connections_alone_on_later_passes(lab: Lab, make_controller: Any) -> None:
    c = make_controller(config(targets=[NOBODY]))
    c.start()
    for name in ("wan", "lte1", "lte2"):
        wait_state(c, name, "down")
    wait_group(lab, {"wan", "lte1", "lte2"})
    flows = lab.start_flows(tcp=10, udp=20, interval_ms=20, duration=3.0)
    time.sleep(0.5)
    client = str(lab.clients[0].addresses.host4.ip)
    before = conntrack(lab.router, client)
    assert len(before) == 30, before
    passes = status(c)["passes"]
    c.ctl("reload")  # one more reconcile pass, nothing changed
    wait_until(lambda: status(c)["passes"] > passes, timeout=WAIT, what="another pass")
    time.sleep(0.3)
    after = conntrack(lab.router, client)
    flows.result()
    assert after == before, "connections were deleted and re-created"


# --- flapping -------------------------------------------------------------------------------


def toggle_blackhole(lab: Lab, name: str, *, on: float, off: float, seconds: float, start_on: bool) -> None:
    """Blackhole `name` for `on` s, clear it for `off` s, repeatedly, for `seconds`."""
    isp = lab.isp(name)
    end = time.monotonic() + seconds
    state = start_on
    while time.monotonic() < end:
        isp.blackhole(state)
        time.sleep(on if state else off)
        state = not state


def test_flapping_faster_than_the_hysteresis_changes_nothing(lab: Lab, make_controller: Any) -> None:
    # fast profile timing: rounds 0.1 s apart (also while up, so every pulse is probed),
    # timeout 0.2 s; down after 3 failed rounds in a row (>= 0.4 s of blackhole), up after
    # 5 good rounds in a row (>= 0.4 s of clear path)
    probe = {"interval": 0.1, "down_after": 3, "up_after": 5, "loss_threshold": 100, "rtt_threshold": 60000}
    c = make_controller(config(probe=probe))
    start_all_up(c, lab)
    # up: blackhole pulses of 0.25 s cannot fail three rounds in a row
    toggle_blackhole(lab, "lte1", on=0.25, off=0.35, seconds=5.0, start_on=True)
    lab.isp("lte1").blackhole(False)
    time.sleep(0.5)
    assert transitions(c, "lte1") == [("probing", "up")]
    failed = re.findall(r"DEBUG lte1: 0/2 answered", c.log())
    assert len(failed) >= 5, "the pulses were never seen by a probe; the test proves nothing"
    # a steady blackhole: down
    lab.isp("lte1").blackhole()
    wait_state(c, "lte1", "down")
    # down: clear windows of 0.25 s cannot pass five rounds in a row
    toggle_blackhole(lab, "lte1", on=0.6, off=0.25, seconds=6.0, start_on=False)
    lab.isp("lte1").blackhole()
    time.sleep(0.5)
    assert transitions(c, "lte1") == [("probing", "up"), ("up", "down")]
    # a steady clear path: up
    lab.isp("lte1").blackhole(False)
    wait_state(c, "lte1", "up")
    assert transitions(c, "lte1") == [("probing", "up"), ("up", "down"), ("down", "up")]
    # the status events say the same
    events = [(e["from"], e["to"]) for e in status(c)["events"] if e["uplink"] == "lte1"]
    assert events == [(None, "probing"), ("probing", "up"), ("up", "down"), ("down", "up")]


# --- sticky connections -----------------------------------------------------------------------


def test_weight_change_and_a_new_uplink_move_no_connection(tmp_path: Path) -> None:
    with Lab() as lab:
        for name in NAMES[:3]:
            lab.add_isp(name, address="none")
        lte3 = lab.add_isp("lte3", address="none", plugged=False)
        lab.add_client()
        cfg = config(n=4)
        c = LabDaemon(lab.router, cfg, workdir=tmp_path)
        try:
            start_all_up(c, lab)
            assert uplink_status(c, "lte3")["state"] == "absent"
            lan = lab.start_flows(tcp=15, udp=30, interval_ms=20, duration=10.0)
            # the router's own connections are pinned too (ct mark restored in the output hook)
            own = lab.start_flows(client="router", tcp=6, udp=12, interval_ms=20, duration=10.0)
            # a weight change, by SIGHUP
            cfg["uplinks"]["wan"]["weight"] = 5
            cfg["control"] = c.config["control"]
            c.write_config(cfg)
            c.signal(signal.SIGHUP)
            wait_until(lambda: group_members(lab.router, TABLES).get("wan") == 5, timeout=WAIT,
                       what="wan's new weight in the group")  # fmt: skip
            # another by uplinkctl reload
            cfg["uplinks"]["lte2"]["weight"] = 3
            c.write_config(cfg)
            c.ctl("reload")
            wait_until(lambda: group_members(lab.router, TABLES).get("lte2") == 3, timeout=WAIT,
                       what="lte2's new weight in the group")  # fmt: skip
            # a new uplink joins
            lab.plug(lte3, "lte3")
            wait_state(c, "lte3", "up")
            wait_group(lab, {"wan", "lte1", "lte2", "lte3"})
            wait_until(
                lambda: "lte3" in lab.flows(tcp=6, udp=12, interval_ms=20, duration=0.3).by_uplink(),
                timeout=WAIT,
                what="a new flow through lte3",
            )
            for report in (lan.result(), own.result()):
                assert len(report.by_uplink(at="first")) >= 2, report.by_uplink(at="first")
                assert not report.moved(), [report.uplinks_of(f) for f in report.moved()]
                assert report.lost() == 0 and report.reconnects() == 0
        finally:
            c.stop()


# --- hooks and status -----------------------------------------------------------------------


def test_on_change_hook_gets_the_documented_environment(
    lab: Lab, make_controller: Any, tmp_path: Path
) -> None:
    out = tmp_path / "hook.out"
    hook = tmp_path / "hook.sh"
    hook.write_text(
        "#!/bin/sh\n"
        f'printf "%s|%s|%s|%s|%s\\n" "$UPLINKD_UPLINK" "$UPLINKD_STATE" "$UPLINKD_OLD_STATE" '
        f'"$UPLINKD_REASON" "$UPLINKD_DEV" >> {out}\n'
    )
    hook.chmod(0o755)
    c = make_controller(config(hooks={"on_change": str(hook)}))
    start_all_up(c, lab)
    lab.isp("lte1").carrier(False)
    wait_state(c, "lte1", "present")

    def lines() -> list[list[str]]:
        return [line.split("|") for line in out.read_text().splitlines()] if out.exists() else []

    wait_until(lambda: ["lte1", "present", "up", "no carrier", "lte1"] in lines(), timeout=WAIT,
               what=f"the hook's line for lte1 losing carrier in {out}")  # fmt: skip
    # the start (probing → up) ran it too, with the probe's reason; the first state did not
    ups = [line for line in lines() if line[1:3] == ["up", "probing"]]
    assert sorted(line[0] for line in ups) == ["lte1", "lte2", "wan"]
    assert all(line[0] == line[4] and "answered" in line[3] for line in ups), ups
    assert not [line for line in lines() if line[2] == ""], "a hook ran for an uplink's first state"


def test_status_reports_the_cost_of_probing(lab: Lab, make_controller: Any) -> None:
    cfg = config(probe={"interval": 1.0})
    cfg["uplinks"]["lte2"]["probe"]["targets"] = []  # lte2: no probes
    c = make_controller(cfg)
    start_all_up(c, lab)
    time.sleep(2.0)
    st = {u["name"]: u for u in json.loads(c.ctl("status", "--json").stdout)["uplinks"]}
    wan = st["wan"]["probe"]
    assert wan["health"] == "up" and wan["method"] == "icmp" and wan["targets"] == [SERVER, upstream(1)]
    assert wan["bytes_per_minute"] > 0 and wan["loss_pct"] == 0 and wan["rtt_ms"] is not None
    assert st["lte2"]["probe"] is None and st["lte2"]["state"] == "up"
