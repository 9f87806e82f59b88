"""The nftables table: every present uplink's interface and its mark (which connections
are pinned to it, and masquerade out of it), the IPv6 part `lan6` computes, the tunnels'
interfaces and peers, and the steering rules that give new connections their policy's mark
(one nft rule per rule and address family it needs)."""

from __future__ import annotations

from uplinkd.config import Config, Steer
from uplinkd.model import NftState, NftSteer, NftUplink
from uplinkd.plan import lan6, tunnels
from uplinkd.plan.facts import Contribution, Facts, Survey


def steering(config: Config) -> tuple[NftSteer, ...]:
    """`rules.steer` as nft rules, in config order. A rule whose prefixes, DSCP or ICMP
    protocol tie it to address families is split per family; one that needs neither
    applies to both at once."""
    out: list[NftSteer] = []
    for index, rule in enumerate(config.rules.steer):
        needs_family = bool(rule.src or rule.dst) or rule.dscp is not None or rule.families != {4, 6}
        for family in sorted(rule.families) if needs_family else [None]:
            out.append(_one(config, index, rule, family))
    return tuple(out)


def _one(config: Config, index: int, rule: Steer, family: int | None) -> NftSteer:
    return NftSteer(
        rule=index,
        policy=rule.policy,
        mark=config.policy_mark(rule.policy),
        local=rule.local,
        family=family,
        src=tuple(str(p) for p in rule.src if family is None or p.version == family),
        dst=tuple(str(p) for p in rule.dst if family is None or p.version == family),
        protocol=rule.protocol,
        sport=rule.sport,
        dport=rule.dport,
        iif=rule.iif,
        dscp=rule.dscp,
        uid=rule.uid,
    )


def clamped(config: Config) -> tuple[str, ...]:
    """Interfaces whose TCP SYNs get the MSS clamp both ways: the tunnels', the VXLAN
    segments' and their bridges' (what is routed onto the segment)."""
    names = {t.interface for t in config.tunnels.values()}
    names |= {v.interface for v in config.vxlan.values()}
    names |= {v.bridge for v in config.vxlan.values() if v.bridge is not None}
    return tuple(sorted(names))


def contribute(config: Config, facts: Facts, survey: Survey) -> Contribution:
    uplinks = sorted(
        (NftUplink(s.dev, s.mark) for s in survey.statuses if s.dev is not None), key=lambda u: u.ifname
    )
    steer = steering(config)
    return Contribution(
        objects=(
            NftState(
                table=config.kernel.nft_table,
                mask=config.kernel.mark_mask,
                uplinks=tuple(uplinks),
                ipv6=lan6.nft_part(config, survey, facts),
                tunnel_ifnames=clamped(config),
                tunnel_peers=tunnels.nft_peers(config, facts, survey),
                tunnel_marks=tuple(sorted({t.mark for t in config.tunnels.values()})),
                policy_mask=config.kernel.policy_bits if steer else 0,
                steer=steer,
            ),
        )
    )
