"""The kernel state the controller wants: a merge of contributors' parts.

Pure: computes and returns. `survey` says what state each uplink is in; then each
contributor, owning one concern, returns its part (kernel objects, who is in service,
reasons); `desired` merges them and refuses two contributors claiming the same thing.

A new capability (tunnels, policies, prefixes) is one module with a `contribute` function
and one line in `CONTRIBUTORS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from uplinkd.config import Config
from uplinkd.model import FAMILIES, KernelState, UplinkStatus, kind_of
from uplinkd.model.adverts import Advert
from uplinkd.plan import balance, lan6, nft, policies, tunnels, uplinks, vxlan
from uplinkd.plan.facts import Contribution, Contributor, Facts

CONTRIBUTORS: tuple[tuple[str, Contributor], ...] = (
    ("uplinks", uplinks.contribute),
    ("balance", balance.contribute),
    ("policies", policies.contribute),
    ("nft", nft.contribute),
    ("lan6", lan6.contribute),
    ("tunnels", tunnels.contribute),
    ("vxlan", vxlan.contribute),
)


class ConflictError(ValueError):
    """Two contributors claimed the same kernel object, uplink or reason: a planner bug."""


@dataclass(frozen=True)
class Intent:
    """The outcome of planning: the kernel state we want and what we think of each uplink."""

    kernel: KernelState
    uplinks: tuple[UplinkStatus, ...]
    reasons: Mapping[str, str]
    adverts: Mapping[str, Advert] = field(default_factory=dict)  # LAN → what uplinkd advertises there

    @property
    def balance_reason(self) -> dict[int, str]:
        """Family → why the balance group holds what it holds."""
        return {f: self.reasons[balance.topic(f)] for f in FAMILIES if balance.topic(f) in self.reasons}


def desired(
    config: Config, facts: Facts, *, contributors: Sequence[tuple[str, Contributor]] = CONTRIBUTORS
) -> Intent:
    """The kernel state the controller wants, given the config and the facts. Computes only."""
    survey = uplinks.survey(config, facts)
    parts = [(name, contribute(config, facts, survey)) for name, contribute in contributors]
    kernel, in_service, reasons = merge(parts)
    statuses = tuple(
        replace(s, in_group=s.name in in_service, weight=in_service.get(s.name, 0)) for s in survey.statuses
    )
    adverts: dict[str, Advert] = {}
    for who, part in parts:
        for lan, advert in part.adverts.items():
            if lan in adverts:
                raise ConflictError(f"advert on {lan}: claimed twice, the second by the {who} contributor")
            adverts[lan] = advert
    return Intent(kernel, statuses, reasons, adverts)


def merge(parts: Sequence[tuple[str, Contribution]]) -> tuple[KernelState, dict[str, int], dict[str, str]]:
    """The union of the contributions. Raises ConflictError naming both contributors when
    two claim the same kernel object key (even with equal objects), uplink or reason topic."""
    objects: dict[tuple[str, Any], tuple[str, object]] = {}
    in_service: dict[str, tuple[str, int]] = {}
    reasons: dict[str, tuple[str, str]] = {}
    for who, part in parts:
        for obj in part.objects:
            kind = kind_of(obj)
            _claim(objects, (kind.name, kind.key(obj)), who, obj, what=kind.name)
        for name, weight in part.in_service.items():
            _claim(in_service, name, who, weight, what="uplink in service")
        for topic, why in part.reasons.items():
            _claim(reasons, topic, who, why, what="reason")
    return (
        KernelState(obj for _, obj in objects.values()),
        {k: v for k, (_, v) in in_service.items()},
        {k: v for k, (_, v) in reasons.items()},
    )


def _claim(into: dict[Any, tuple[str, Any]], key: Any, who: str, value: Any, *, what: str) -> None:
    if key in into:
        name = key[1] if isinstance(key, tuple) else key
        raise ConflictError(f"{what} {name}: claimed by both the {into[key][0]} and the {who} contributor")
    into[key] = (who, value)
