"""The nftables table: every present uplink's interface and its mark (which connections
are pinned to it, and masquerade out of it), and the IPv6 part `lan6` computes."""

from __future__ import annotations

from uplinkd.config import Config
from uplinkd.model import NftState, NftUplink
from uplinkd.plan import lan6, tunnels
from uplinkd.plan.facts import Contribution, Facts, Survey


def contribute(config: Config, facts: Facts, survey: Survey) -> Contribution:
    uplinks = sorted(
        (NftUplink(s.dev, s.mark) for s in survey.statuses if s.dev is not None), key=lambda u: u.ifname
    )
    return Contribution(
        objects=(
            NftState(
                table=config.kernel.nft_table,
                mask=config.kernel.mark_mask,
                uplinks=tuple(uplinks),
                ipv6=lan6.nft_part(config, survey),
                tunnel_ifnames=tuple(sorted(t.interface for t in config.tunnels.values())),
                tunnel_peers=tunnels.nft_peers(config, survey),
            ),
        )
    )
