"""Passes of the daemon's loop, decided without a kernel: adoption at start, conntrack
flushes on failover, drain, flush-and-pause, and contributors that collide. Each pass runs
on the fake kernel (`plan.fake`), so what is asserted is the state the kernel ends up in."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from test_plan import THREE, THREE_OBS, config, uplink

from uplinkd import plan
from uplinkd.config import Config
from uplinkd.model import (
    GROUPS,
    ROUTES,
    ConntrackFlush,
    Health,
    HealthVerdict,
    KernelState,
    Observed,
    RouteKey,
    Rule,
    State,
)
from uplinkd.plan import Facts, Intent, adopt, desired, diff, step, teardown, verdicts
from uplinkd.plan.fake import apply

BASE = 100_000_000
MASK = 0xFF00
PROBED = config(
    {n: uplink(f"eth{i}", 100 + i, probe={"targets": ["192.0.2.100"]}) for i, n in enumerate("abc", 1)}
)


class Loop:
    """The daemon's pass, as pure steps: facts → intent → plan → fake kernel."""

    def __init__(self, config: Config, kernel: KernelState | None = None) -> None:
        self.config = config
        self.kernel = kernel or KernelState()
        self.adopted = adopt(config, self.kernel)
        self.intent: Intent | None = None
        self.paused = False
        self.written: list[str] = []

    def run(self, obs: Observed = THREE_OBS, **facts: Any) -> plan.Plan:
        facts.setdefault("health", verdicts(self.config, facts.pop("probed", {}), self.adopted))
        previous = {s.name: s.ifindex for s in self.intent.uplinks if s.ifindex} if self.intent else {}
        intent = desired(self.config, Facts(obs, previous=previous, **facts))
        p = step(self.kernel, intent, before=self.intent, mask=MASK)
        if self.paused:  # as the daemon: watch, but neither write nor keep score
            return p
        self.kernel = apply(self.kernel, p)
        self.written += [str(op) for op in p.ops]
        self.intent = intent
        return p

    def status(self, name: str) -> tuple[State, bool]:
        assert self.intent is not None
        (s,) = [s for s in self.intent.uplinks if s.name == name]
        return s.state, s.in_group


def up(**names: str) -> dict[str, HealthVerdict]:
    return {n: HealthVerdict(Health(h)) for n, h in names.items()}


# --- adoption ---------------------------------------------------------------------------------------


def test_a_restart_adopts_the_group_and_writes_nothing() -> None:
    first = Loop(PROBED)
    first.run(probed=up(a="up", b="up", c="up"))
    assert first.status("b") == (State.UP, True)
    again = Loop(PROBED, first.kernel)  # a restart: the kernel is as the last run left it
    assert again.adopted == {"a", "b", "c"}
    assert verdicts(PROBED, {}, again.adopted)["a"] == HealthVerdict(Health.UP, plan.ADOPTED)
    assert not again.run()  # no verdict yet: the adopted stay in service, nothing is written
    assert again.status("a") == (State.UP, True)


def test_a_restart_adopts_only_what_was_in_the_group() -> None:
    first = Loop(PROBED)
    first.run(probed=up(a="up", b="down", c="up"))
    again = Loop(PROBED, first.kernel)
    assert again.adopted == {"a", "c"}
    assert not again.run()  # b is not probed yet (unknown), so it stays out as it was
    assert again.status("b") == (State.PROBING, False)


def test_a_cold_start_adopts_nothing_and_probes_first() -> None:
    loop = Loop(PROBED)
    assert loop.adopted == frozenset()
    loop.run()
    assert [loop.status(n) for n in "abc"] == [(State.PROBING, True)] * 3  # the last resort: all of them
    assert "ip -4 route add default nhid 100000000 table 200" in loop.written


def test_adoption_ignores_members_of_unknown_tables() -> None:
    group = plan.desired(THREE, Facts(THREE_OBS)).kernel[GROUPS][BASE]
    foreign = replace(group, members=(*group.members, replace(group.members[0], id=BASE + 2 * 999)))
    assert adopt(THREE, KernelState([foreign])) == {"a", "b", "c"}


# --- failover ------------------------------------------------------------------------------------------


def test_a_failed_uplink_leaves_the_group_and_then_its_connections_are_flushed() -> None:
    loop = Loop(PROBED)
    loop.run(probed=up(a="up", b="up", c="up"))
    p = loop.run(probed=up(a="up", b="down", c="up"))
    ops = [str(op) for op in p.ops]
    assert ops == [
        "ip nexthop replace id 100000000 group 100000202/100000206 "
        "type resilient buckets 512 idle_timer 10 unbalanced_timer 0",
        "conntrack -D --mark 0x6600/0xff00  # b: up → down: ",
    ]
    assert not loop.run(probed=up(a="up", b="down", c="up"))  # flushed once, not every pass


def test_an_unplug_flushes_and_removes_only_that_uplink() -> None:
    loop = Loop(THREE)
    loop.run()
    gone = replace(THREE_OBS, links={i: li for i, li in THREE_OBS.links.items() if li.name != "eth3"})
    p = loop.run(gone)
    assert p.ops[-1].obj == ConntrackFlush("c", 0x6700, MASK, "up → absent: no interface matches")
    verbs = [(op.verb, op.kind.name) for op in p.ops]
    assert verbs[0] == ("replace", "group") and verbs[-2] == ("replace", "nft-table")  # leaves nft last
    assert {verb for verb, _ in verbs[1:-2]} == {"delete"}
    assert {key.table for key in loop.kernel[ROUTES]} == {101, 102, 200}


def test_the_first_pass_flushes_nothing() -> None:
    loop = Loop(PROBED)
    assert not [op for op in loop.run(probed=up(a="down", b="down", c="down")).ops if op.kind.action]


# --- drain ------------------------------------------------------------------------------------------


def test_drain_takes_an_uplink_out_of_the_group_and_keeps_its_connections() -> None:
    loop = Loop(THREE)
    loop.run()
    p = loop.run(drained=frozenset({"b"}))
    assert [op.verb for op in p.ops] == ["replace"] and not [op for op in p.ops if op.kind.action]
    assert loop.status("b") == (State.UP, False)
    assert RouteKey(2, 102, "0.0.0.0/0") in loop.kernel[ROUTES]  # its table stays for pinned flows
    assert [str(op) for op in loop.run().ops] == [  # undrain: back in the group
        "ip nexthop replace id 100000000 group 100000202,3/100000204/100000206,2 "
        "type resilient buckets 512 idle_timer 10 unbalanced_timer 0"
    ]


# --- flush and pause ----------------------------------------------------------------------------------


def test_flush_removes_everything_and_a_pass_while_paused_writes_nothing() -> None:
    loop = Loop(THREE)
    loop.run()
    loop.kernel = apply(loop.kernel, teardown(loop.kernel))  # uplinkctl flush
    loop.paused = True
    assert not teardown(loop.kernel)  # a second flush while paused: nothing to do
    before = loop.kernel
    pending = loop.run()
    assert pending and loop.kernel == before  # the plan is shown, not applied
    loop.paused = False  # uplinkctl resume
    loop.run()
    assert not diff(loop.kernel, plan.desired(THREE, Facts(THREE_OBS)).kernel)


# --- contributors ------------------------------------------------------------------------------------


def test_two_contributors_claiming_the_same_object_are_refused_by_name() -> None:
    def rogue(config: Config, facts: Facts, survey: plan.Survey) -> plan.Contribution:
        return plan.Contribution(objects=(Rule(2, 10030, 200),))

    with pytest.raises(plan.ConflictError, match="claimed by both the balance and the rogue contributor"):
        desired(THREE, Facts(THREE_OBS), contributors=(*plan.CONTRIBUTORS, ("rogue", rogue)))


def test_a_new_contributor_adds_its_objects_and_nothing_else_changes() -> None:
    extra = Rule(2, 10040, 300)

    def policies(config: Config, facts: Facts, survey: plan.Survey) -> plan.Contribution:
        return plan.Contribution(objects=(extra,), reasons={"policies": "one test policy"})

    base = desired(THREE, Facts(THREE_OBS))
    more = desired(THREE, Facts(THREE_OBS), contributors=(*plan.CONTRIBUTORS, ("policies", policies)))
    assert diff(base.kernel, more.kernel).ops == (plan.Op("add", extra),)
    assert more.uplinks == base.uplinks and more.reasons["policies"] == "one test policy"


def test_facts_are_a_value_the_caller_cannot_change_afterwards() -> None:
    leases: dict[str, Any] = {}
    facts = Facts(THREE_OBS, leases=leases)
    leases["a"] = object()
    assert dict(facts.leases) == {}
    with pytest.raises(TypeError):
        facts.leases["a"] = object()  # type: ignore[index]
