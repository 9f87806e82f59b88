"""The worker supervisor (uplinkd.workers) and the kinds it runs: which workers each pass
wants, and that the supervisor starts, restarts, stops and revives them. No root: the test
kind's workers only wait; the real kinds are asked what they want, never started."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from uplinkd.config import Config, parse
from uplinkd.dhcp import DhcpSpec, DhcpWorkers
from uplinkd.model import KernelState, Lease, State, UplinkStatus
from uplinkd.plan import Intent
from uplinkd.probes import ProbeSpec, ProbeWorkers
from uplinkd.runtime import Runtime
from uplinkd.workers import Supervisor, WorkerKind

NO_INTENT = Intent(kernel=KernelState(), uplinks=(), reasons={})


def intent(*uplinks: UplinkStatus) -> Intent:
    return Intent(kernel=KernelState(), uplinks=uplinks, reasons={})


class Waiter:
    """A worker that records each run, dies on its first `deaths` runs, then waits."""

    def __init__(self, name: str, spec: str, runs: list[tuple[str, str]], deaths: int) -> None:
        self.name, self.spec, self.runs, self.deaths = name, spec, runs, deaths

    async def run(self) -> None:
        self.runs.append((self.name, self.spec))
        if self.deaths > 0:
            self.deaths -= 1
            raise RuntimeError(f"{self.name} broke")
        await asyncio.Event().wait()


class Waiters(WorkerKind[str, Waiter]):
    """The test's kind: wants what `want` says, whatever the intent."""

    name = "waiter"

    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt)
        self.want: dict[str, str] = {}
        self.runs: list[tuple[str, str]] = []
        self.deaths: dict[str, int] = {}
        self.stops: list[str] = []

    def wanted(self, intent: Intent, running: Mapping[str, str]) -> dict[str, str]:
        return dict(self.want)

    def make(self, name: str, spec: str) -> Waiter:
        return Waiter(name, spec, self.runs, self.deaths.get(name, 0))

    def stopped(self, name: str) -> None:
        self.stops.append(name)


class LateWaiters(Waiters):
    name = "late"
    after_writes = True
    needs_our_routes = True


def supervised(
    test: Callable[[Supervisor, Waiters, LateWaiters], Awaitable[None]],
) -> None:
    """Run `test` with a supervisor of both test kinds inside a task group, as the daemon does,
    and check that the group ends only when the test is done (no worker ended it)."""

    async def main() -> None:
        rt = Runtime(Config())
        early, late = Waiters(rt), LateWaiters(rt)
        sup = Supervisor([early, late], backoff=(0.01, 0.04))
        async with asyncio.TaskGroup() as tasks:
            sup.start_in(tasks)
            await test(sup, early, late)
            sup.stop(needs_our_routes=False)
            sup.stop(needs_our_routes=True)

    asyncio.run(asyncio.wait_for(main(), 10))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_starts_missing_restarts_changed_and_stops_unwanted() -> None:
    async def test(sup: Supervisor, early: Waiters, late: LateWaiters) -> None:
        early.want = {"a": "eth1", "b": "eth2"}
        sup.sync(NO_INTENT, after_writes=False)
        await settle()
        assert sorted(early.runs) == [("a", "eth1"), ("b", "eth2")]
        assert sorted(sup.running(Waiters)) == ["a", "b"]

        early.runs.clear()
        early.want = {"a": "eth1", "b": "eth9"}  # b's spec changed; a's did not
        sup.sync(NO_INTENT, after_writes=False)
        await settle()
        assert early.runs == [("b", "eth9")] and early.stops == ["b"]
        assert sup.running(Waiters)["b"].spec == "eth9"

        early.want = {"b": "eth9"}
        sup.sync(NO_INTENT, after_writes=False)
        await settle()
        assert early.stops == ["b", "a"] and list(sup.running(Waiters)) == ["b"]

    supervised(test)


def test_each_kind_is_synced_at_its_own_stage_and_flush_stops_only_those_needing_our_routes() -> None:
    async def test(sup: Supervisor, early: Waiters, late: LateWaiters) -> None:
        early.want = {"a": "eth1"}
        late.want = {"a": "eth1"}
        sup.sync(NO_INTENT, after_writes=False)
        await settle()
        assert list(sup.running(Waiters)) == ["a"]  # LateWaiters is a Waiters too
        assert sup.running(LateWaiters) == {}
        sup.sync(NO_INTENT, after_writes=True)
        await settle()
        assert list(sup.running(LateWaiters)) == ["a"]

        sup.stop(needs_our_routes=True)  # what `flush` does
        assert sup.running(LateWaiters) == {} and late.stops == ["a"]
        assert early.stops == [] and "a" in sup.running(Waiters)

    supervised(test)


def test_a_dying_worker_is_logged_and_runs_again_without_ending_the_daemon(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def test(sup: Supervisor, early: Waiters, late: LateWaiters) -> None:
        early.want = {"a": "eth1", "b": "eth2"}
        early.deaths = {"a": 3}
        sup.sync(NO_INTENT, after_writes=False)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if early.runs.count(("a", "eth1")) == 4:
                break
        # three deaths, three restarts (after 0.01, 0.02, 0.04 s); b never noticed
        assert early.runs.count(("a", "eth1")) == 4
        assert early.runs.count(("b", "eth2")) == 1
        assert early.stops == []  # what it recorded stands while it restarts
        assert sup.running(Waiters)["a"].deaths == 0

    with caplog.at_level(logging.ERROR, logger="uplinkd.workers"):
        supervised(test)
    died = [r for r in caplog.records if "died; starting it again" in r.getMessage()]
    assert len(died) == 3 and "waiter worker for a" in died[0].getMessage()
    assert any(r.exc_info and "a broke" in str(r.exc_info[1]) for r in caplog.records)


def test_nothing_starts_before_the_task_group_exists() -> None:
    rt = Runtime(Config())
    kind = Waiters(rt)
    kind.want = {"a": "eth1"}
    sup = Supervisor([kind])
    sup.sync(NO_INTENT, after_writes=False)
    assert sup.running(Waiters) == {} and kind.runs == []


# --- the real kinds: what they want ----------------------------------------------------------

PROBED = {"probe": {"targets": ["198.51.100.1"]}}


def up(name: str, *, state: State = State.UP, dev: str | None = "eth1", **kw: Any) -> UplinkStatus:
    return UplinkStatus(name, state, "", dev=dev, mark=0x6500, **kw)


def test_probers_for_ready_uplinks_with_targets_only() -> None:
    rt = Runtime(
        parse(
            {
                "uplinks": {
                    "wan": {"match": {"name": "eth1"}, "table": 101, **PROBED},
                    "lte1": {"match": {"name": "eth2"}, "table": 102, **PROBED},
                    "lte2": {"match": {"name": "eth3"}, "table": 103},  # no targets
                    "lte3": {"match": {"name": "eth4"}, "table": 104, **PROBED},
                }
            }
        )
    )
    kind = ProbeWorkers(rt)
    wanted = kind.wanted(
        intent(
            up("wan"),
            up("lte1", state=State.PRESENT, dev="eth2"),
            up("lte2", dev="eth3"),
            up("lte3", state=State.DOWN, dev="eth4"),
        ),
        {},
    )
    probe = rt.config.uplinks["wan"].probe
    assert wanted == {"wan": ProbeSpec("eth1", 0x6500, probe), "lte3": ProbeSpec("eth4", 0x6500, probe)}


def test_a_prober_takes_over_an_adopted_uplink_once_and_its_verdicts_wake_the_loop() -> None:
    rt = Runtime(parse({"uplinks": {"wan": {"match": {"name": "eth1"}, "table": 101, **PROBED}}}))
    rt.adopted.add("wan")
    kind = ProbeWorkers(rt)
    spec = ProbeSpec("eth1", 0x6500, rt.config.uplinks["wan"].probe)
    assert str(kind.make("wan", spec).tracker.health) == "up"
    assert rt.adopted == set()
    assert str(kind.make("wan", spec).tracker.health) == "unknown"
    kind.stopped("wan")
    assert "wan" not in rt.health


def test_dhcp_clients_for_present_dhcp_uplinks_with_carrier(tmp_path: Path) -> None:
    rt = Runtime(
        parse(
            {
                "uplinks": {
                    "a": {"match": {"name": "eth1"}, "table": 101, "address": {"mode": "dhcp"}},
                    "b": {"match": {"name": "eth2"}, "table": 102, "address": {"mode": "dhcp"}},
                    "c": {"match": {"name": "eth3"}, "table": 103, "address": {"mode": "dhcp"}},
                    "d": {"match": {"name": "eth4"}, "table": 104},  # external
                },
                "control": {"state_dir": str(tmp_path)},
            }
        )
    )
    lease = Lease(ipaddress.IPv4Interface("100.64.0.10/24"), ipaddress.IPv4Address("100.64.0.1"))
    kind = DhcpWorkers(rt)
    rt.leases["c"] = lease
    running_b = DhcpSpec("eth2", tmp_path / "b.lease.json", None)
    wanted = kind.wanted(
        intent(
            up("a", state=State.PRESENT, link_ready=True),
            # carrier lost: the running client keeps going (it rides out the flap)
            up("b", state=State.PRESENT, dev="eth2"),
            up("c", state=State.ABSENT, dev=None),
            up("d", state=State.UP, dev="eth4", link_ready=True),
        ),
        {"b": running_b},
    )
    assert wanted == {"a": DhcpSpec("eth1", tmp_path / "a.lease.json", None), "b": running_b}
    # an unplugged stick has no lease in force, and forgetting it wakes the loop
    assert "c" not in rt.leases and rt.wake.is_set()
