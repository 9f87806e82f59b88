"""Where a tunnel rides over an ordered underlay list: fail-back (immediate, hold, never),
a healthy uplink the tunnel cannot pass (a network that drops UDP), its health from
handshake and probes; and the config that asks for them, with errors naming the field."""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import Any

import pytest

from tests.unit.test_tunnels_plan import DOWN, HOME_KEY, UP, WG, config, observed, table
from uplinkd import plan
from uplinkd.config import ConfigError, FailBackHold, parse
from uplinkd.model import AF_INET, ROUTES, HealthVerdict, NftState, Route, RouteKey
from uplinkd.plan import Facts
from uplinkd.plan import tunnels as ptunnels
from uplinkd.tunnel import dns
from uplinkd.tunnel.dns import NamedEndpoint
from uplinkd.tunnel.health import TunnelHealth, TunnelState, combined
from uplinkd.tunnel.underlay import RETRY_ALL_S, TRY_S, Ride, Verdict, step
from uplinkd.tunnel.wireguard import Endpoint

PREFS = ("wan", "lte1")
BOTH = frozenset(PREFS)


class Rider:
    """Steps a ride the way the worker does, with the carrier the plan would choose."""

    def __init__(self, hold: float | None) -> None:
        self.ride = Ride()
        self.hold = hold
        self.verdict = Verdict("unknown", "", frozenset(), None)

    def look(self, *, healthy: frozenset[str], at: float, state: TunnelState = "up") -> Verdict:
        # what planning would put in T_under from the last verdict (see plan.tunnels.underlay)
        ok = [p for p in PREFS if p in healthy]
        ok = [p for p in ok if p not in self.verdict.avoid] or ok
        held = [p for p in ok if p == self.verdict.stay_on]
        carrier = (held or ok or [None])[0]
        self.ride, self.verdict = step(
            self.ride, prefs=PREFS, healthy=healthy, carrier=carrier, state=state, reason="r",
            hold=self.hold, now=at,
        )  # fmt: skip
        return self.verdict

    def carrier(self) -> str | None:
        return self.ride.carrier


@pytest.mark.parametrize(("hold", "back_at"), [(0.0, 20.0), (30.0, 50.0), (None, None)])
def test_fail_back_immediate_after_hold_or_never(hold: float | None, back_at: float | None) -> None:
    r = Rider(hold)
    r.look(healthy=BOTH, at=0)
    assert r.carrier() == "wan" and r.verdict.stay_on is None  # a first choice is never pinned
    r.look(healthy=frozenset({"lte1"}), at=10)
    r.look(healthy=frozenset({"lte1"}), at=11)
    assert r.carrier() == "lte1"
    t = 20.0
    while t < 120:  # wan back from t=20
        r.look(healthy=BOTH, at=t)
        r.look(healthy=BOTH, at=t + 0.1)  # the pass after a verdict change
        if r.carrier() == "wan":
            break
        t += 1
    if back_at is None:
        assert r.carrier() == "lte1" and r.verdict.stay_on == "lte1"
        assert "fail_back never" in r.verdict.reason
    else:
        assert r.carrier() == "wan" and t == back_at


def test_hold_restarts_when_the_preferred_uplink_fails_again() -> None:
    r = Rider(30.0)
    r.look(healthy=BOTH, at=0)
    r.look(healthy=frozenset({"lte1"}), at=1)
    r.look(healthy=BOTH, at=2)
    r.look(healthy=BOTH, at=25)
    r.look(healthy=frozenset({"lte1"}), at=26)  # wan flaps: the hold starts again
    r.look(healthy=BOTH, at=27)
    r.look(healthy=BOTH, at=50)
    assert r.carrier() == "lte1"
    r.look(healthy=BOTH, at=57)
    r.look(healthy=BOTH, at=57.1)
    assert r.carrier() == "wan"


def test_a_healthy_uplink_that_carries_no_tunnel_is_left_for_the_next() -> None:
    r = Rider(0.0)
    r.look(healthy=BOTH, at=0, state="up")
    v = r.look(healthy=BOTH, at=1, state="down")  # wan healthy, the tunnel not: UDP dropped?
    assert v.state == "degraded" and "trying lte1" in v.reason and r.carrier() == "wan"
    v = r.look(healthy=BOTH, at=1 + TRY_S, state="down")
    assert v.avoid == {"wan"} and v.state == "degraded"
    v = r.look(healthy=BOTH, at=1.1 + TRY_S, state="down")
    assert r.carrier() == "lte1" and v.state == "degraded" and "no tunnel through wan" in v.reason
    v = r.look(healthy=BOTH, at=2 + TRY_S, state="up")
    assert v.state == "up" and r.carrier() == "lte1" and v.avoid == {"wan"}
    # immediate fail-back does not go back to the uplink that cannot carry it...
    v = r.look(healthy=BOTH, at=100, state="up")
    assert r.carrier() == "lte1"
    # ... until it has been out of service (what comes back may be another network)
    r.look(healthy=frozenset({"lte1"}), at=101)
    v = r.look(healthy=BOTH, at=102)
    v = r.look(healthy=BOTH, at=102.1)
    assert v.avoid == frozenset() and r.carrier() == "wan"


def test_down_only_when_every_healthy_uplink_was_tried_then_again_from_the_top() -> None:
    r = Rider(0.0)
    t = 0.0
    states = set()
    while t < 3 * TRY_S:
        v = r.look(healthy=BOTH, at=t, state="down")
        states.add(v.state)
        t += 0.5
    # never up: it stays down (the kill switch on) while lte1 is tried, not degraded
    assert states == {"down"}
    assert v.state == "down" and v.avoid == BOTH and "tried wan, lte1" in v.reason
    v = r.look(healthy=BOTH, at=t + RETRY_ALL_S, state="down")
    assert v.avoid == frozenset()
    r.look(healthy=BOTH, at=t + RETRY_ALL_S + 0.1, state="down")
    assert r.carrier() == "wan"


def test_a_dying_uplink_is_not_blamed_within_the_grace() -> None:
    """The tunnel's probes may fail before the uplink's own do: within TRY_S the tunnel is
    degraded (not down, so no kill-switch flap) and the uplink is not avoided."""
    r = Rider(0.0)
    r.look(healthy=BOTH, at=0)
    v = r.look(healthy=BOTH, at=1, state="down")
    assert v.state == "degraded" and v.avoid == frozenset()
    v = r.look(healthy=frozenset({"lte1"}), at=1.5, state="down")  # its prober agrees now
    r.look(healthy=frozenset({"lte1"}), at=1.6, state="up")
    assert r.carrier() == "lte1" and r.verdict.avoid == frozenset()


def test_probes_decide_once_they_have_a_verdict_else_the_handshake() -> None:
    assert combined(handshake_up=True, handshake_why="h", probed=None) == ("up", "h")
    assert combined(handshake_up=True, handshake_why="h", probed="unknown") == ("up", "h")
    assert combined(handshake_up=True, handshake_why="h", probed="down", probe_why="0/1")[0] == "down"
    assert combined(handshake_up=False, handshake_why="h", probed="degraded")[0] == "degraded"


# --- config -----------------------------------------------------------------------------------


def test_fail_back_shapes() -> None:
    assert config().tunnels["home"].hold == 0.0
    assert config(fail_back="never").tunnels["home"].hold is None
    t = config(fail_back={"hold": 30}).tunnels["home"]
    assert t.hold == 30.0 and t.fail_back == FailBackHold(hold=30.0)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("later", "tunnels.home.fail_back: 'later' is not a fail-back; use \"immediate\", \"never\""),
        (30, "tunnels.home.fail_back: 30: write a hold time as {hold = 30}"),
        ({"hold": -1}, "tunnels.home.fail_back.hold: -1"),
        ({"hold": 5, "x": 1}, "tunnels.home.fail_back.x"),
    ],
)
def test_fail_back_errors_name_the_field(value: Any, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        config(fail_back=value)
    assert words in str(e.value), str(e.value)


def test_fail_back_needs_a_preference_list() -> None:
    with pytest.raises(ConfigError) as e:
        config(underlay="balance", fail_back="never")
    assert "tunnels.home.fail_back: applies to an ordered underlay list" in str(e.value)


def test_a_tunnels_probe_takes_the_top_level_timing_never_its_targets() -> None:
    cfg = config(probe={"targets": ["10.99.0.1"]})
    doc = cfg.model_dump(mode="json", exclude_none=True)
    doc["probe"] = {"profile": "fast", "targets": ["198.51.100.1"]}
    del doc["tunnels"]["home"]["probe"]
    t = parse(doc).tunnels["home"]
    assert t.probe.targets == () and t.probe.timeout == 0.2
    doc["tunnels"]["home"]["probe"] = {"targets": ["10.99.0.1"]}
    assert parse(doc).tunnels["home"].probe.targets == ("10.99.0.1",)
    with pytest.raises(ConfigError) as e:
        config(probe={"targets": ["home"]})
    assert "tunnels.home.probe" in str(e.value)


# --- planning ---------------------------------------------------------------------------------


def intent_with(health: TunnelHealth, *, cfg: Any = None, wan: HealthVerdict = UP) -> plan.Intent:
    return plan.desired(
        cfg or config(), Facts(observed(), health={"wan": wan, "lte1": UP}, tunnels={"home": health})
    )


def test_planning_skips_avoided_uplinks_and_keeps_the_held_one() -> None:
    base = TunnelHealth(state="up", reason="t", ifname=WG)
    avoided = table(intent_with(replace(base, avoid=frozenset({"wan"}))), 150, AF_INET)
    assert avoided is not None and avoided.oif == 3
    held = table(intent_with(replace(base, stay_on="lte1")), 150, AF_INET)
    assert held is not None and held.oif == 3
    # held on an uplink that is no longer healthy: the first healthy one
    gone = table(intent_with(replace(base, stay_on="wan"), wan=DOWN), 150, AF_INET)
    assert gone is not None and gone.oif == 3
    assert table(intent_with(base), 150, AF_INET).oif == 2  # type: ignore[union-attr]
    # every healthy uplink avoided: still routed (the worker tries again), never unreachable
    both = TunnelHealth(state="down", reason="t", ifname=WG, avoid=BOTH)
    r = table(intent_with(both), 150, AF_INET)
    assert r is not None and r.oif == 2
    assert table(intent_with(base, wan=DOWN), 150, AF_INET).oif == 3  # type: ignore[union-attr]


def test_degraded_keeps_traffic_in_the_tunnel_and_probe_targets_always_route_into_it() -> None:
    cfg = config(probe={"targets": ["10.98.0.1"]})
    degraded = intent_with(TunnelHealth(state="degraded", reason="trying lte1", ifname=WG), cfg=cfg)
    r = table(degraded, 151, AF_INET)
    assert r is not None and r.oif == 9
    down = intent_with(TunnelHealth(state="down", reason="x", ifname=WG), cfg=cfg)
    routes = down.kernel[ROUTES]
    assert routes[RouteKey(AF_INET, 151, "0.0.0.0/0")].type == "unreachable"  # the kill switch
    probe_route = routes.get(RouteKey(AF_INET, 151, "10.98.0.1/32"))
    assert isinstance(probe_route, Route) and probe_route.oif == 9
    assert down.reasons["tunnel home"] == "down: x"


# --- endpoints given as DNS names -------------------------------------------------------------


def test_a_named_endpoint_is_accepted_and_a_bad_one_names_both_forms() -> None:
    t = config(peers=[{"public_key": HOME_KEY, "endpoint": "Home.Example.org.:51820"}]).tunnels["home"]
    peer = t.peers[0]
    assert peer.endpoint_value is None and peer.endpoint_name == NamedEndpoint("home.example.org", 51820)
    with pytest.raises(ConfigError) as e:
        config(peers=[{"public_key": HOME_KEY, "endpoint": "home_example:51820"}])
    assert "tunnels.home.peers.0.endpoint" in str(e.value) and "home.example.org:51820" in str(e.value)
    with pytest.raises(ConfigError) as e:
        config(resolvers=["dns.example"])
    assert "tunnels.home.resolvers.0" in str(e.value)


def _reply(ident: int, records: list[tuple[int, bytes]], *, rcode: int = 0) -> bytes:
    q = dns.query("home.example.org", dns.TYPE_A, ident)
    head = struct.pack("!HHHHHH", ident, 0x8180 | rcode, 1, len(records), 0, 0)
    body = q[12:]
    for rtype, rdata in records:  # each answer names the question by a pointer to offset 12
        body += struct.pack("!HHHIH", 0xC00C, rtype, 1, 300, len(rdata)) + rdata
    return head + body


def test_dns_answers_are_read_with_pointers_cnames_and_errors() -> None:
    records = [(5, b"\x03www\xc0\x0c"), (1, bytes([198, 51, 100, 100])), (1, bytes([198, 51, 100, 7]))]
    data = _reply(7, records)
    found, ttl = dns.answer(data, ident=7, qtype=dns.TYPE_A)
    assert [str(a) for a in found] == ["198.51.100.100", "198.51.100.7"] and ttl == 300
    with pytest.raises(ValueError, match="not a reply"):
        dns.answer(data, ident=8, qtype=dns.TYPE_A)
    with pytest.raises(ValueError, match="NXDOMAIN"):
        dns.answer(_reply(7, [], rcode=3), ident=7, qtype=dns.TYPE_A)
    with pytest.raises(ValueError, match="past the end"):
        dns.answer(data[:40], ident=7, qtype=dns.TYPE_A)


def test_a_named_endpoint_plans_from_what_it_resolved_to() -> None:
    named = {"public_key": HOME_KEY, "endpoint": "home.example.org:51820", "allowed_ips": ["0.0.0.0/0"]}
    cfg = config(peers=[named])
    unresolved = intent_with(TunnelHealth(state="down", reason="x", ifname=WG), cfg=cfg)
    nft = next(o for o in unresolved.kernel if isinstance(o, NftState))
    assert nft.tunnel_peers == ()
    ep = Endpoint.parse("198.51.100.100:51820")
    health = TunnelHealth(state="up", reason="x", ifname=WG, resolved=(("home.example.org:51820", ep),))
    nft = next(o for o in intent_with(health, cfg=cfg).kernel if isinstance(o, NftState))
    assert nft.tunnel_peers == (("198.51.100.100", 51820, ("wan",)),)


# --- the underlay as a policy -----------------------------------------------------------------


def with_policy(**tunnel_over: Any) -> Any:
    doc = config().model_dump(mode="json", exclude_none=True)
    doc["tunnels"]["home"].update(fwmark=0x1000000, **tunnel_over)
    doc["policies"] = {"cheap": {"tiers": [["lte1"], ["wan"]], "table": 160}}
    return parse(doc)


def test_a_policy_underlay_takes_the_policys_group() -> None:
    cfg = with_policy(underlay={"policy": "cheap"})
    up = TunnelHealth(state="up", reason="t", ifname=WG)
    i = intent_with(up, cfg=cfg)
    r = table(i, 150, AF_INET)
    policy_route = table(i, 160, AF_INET)
    assert r is not None and policy_route is not None and r.nhid == policy_route.nhid is not None
    assert i.reasons["tunnel home underlay ipv4"] == "policy cheap (lte1)"
    nft = next(o for o in i.kernel if isinstance(o, NftState))
    assert nft.tunnel_peers == (("198.51.100.100", 51820, ("lte1",)),)
    # lte1 down: the policy's next tier
    down = plan.desired(cfg, Facts(observed(), health={"wan": UP, "lte1": DOWN}, tunnels={"home": up}))
    assert down.reasons["tunnel home underlay ipv4"] == "policy cheap (wan)"
    # 'default' is the balance group
    default = intent_with(up, cfg=with_policy(underlay={"policy": "default"}))
    assert table(default, 150, AF_INET).nhid == 100_000_000  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("over", "words"),
    [
        ({"underlay": {"policy": "nope"}}, "tunnels.home.underlay.policy: 'nope' is not a policy"),
        ({"underlay": {"policy": "cheap", "x": 1}}, "tunnels.home.underlay.x: unknown key"),
        ({"underlay": "wan"}, "tunnels.home.underlay: 'wan' is not an underlay; use 'balance', a list"),
        (
            {"underlay": {"policy": "cheap"}, "fail_back": "never"},
            "tunnels.home.fail_back: applies to an ordered underlay list, not to underlay policy",
        ),
    ],
)
def test_policy_underlay_errors_name_the_field(over: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as e:
        with_policy(**over)
    assert words in str(e.value), str(e.value)


def test_a_policy_underlays_tier_change_flushes_the_uplink_it_left() -> None:
    cfg = with_policy(underlay={"policy": "cheap"})
    up = TunnelHealth(state="up", reason="t", ifname=WG)
    on_lte1 = intent_with(up, cfg=cfg)
    on_wan = plan.desired(cfg, Facts(observed(), health={"wan": UP, "lte1": DOWN}, tunnels={"home": up}))
    back = ptunnels.underlay_moved(on_wan.reasons, on_lte1.reasons, on_lte1.uplinks, mask=0xFF00)
    assert [op.obj.uplink for op in back] == ["wan"]  # type: ignore[attr-defined]
    balance = config(underlay="balance").model_copy()
    b = intent_with(up, cfg=balance)
    assert ptunnels.underlay_moved(b.reasons, on_lte1.reasons, b.uplinks, mask=0xFF00) == ()
