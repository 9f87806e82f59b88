"""Policy rules (`ip rule`): the bands that send traffic to the uplinks' tables.

A rule has no attributes apart from its identity: it cannot change, only be added or
deleted. Ours carry FRA_PROTOCOL, so reading back never picks up someone else's rule,
even at one of our priorities.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from uplinkd.config import Ownership
from uplinkd.linux import FRA_NO_SUPPRESS, fwmark_text, table_name
from uplinkd.model.kinds.base import Kind, Stage, Verb, ip_command
from uplinkd.model.kinds.io import Snapshot, Transport
from uplinkd.model.net import FAMILIES, IPNetwork, fam


@dataclass(frozen=True, order=True)
class Rule:
    """A policy rule. All its fields are its identity: rules cannot be changed, only replaced."""

    family: int
    priority: int
    table: int
    fwmark: int | None = None
    fwmask: int | None = None
    src: IPNetwork | None = None
    suppress_prefixlength: int | None = None

    @property
    def key(self) -> Rule:
        return self

    def __str__(self) -> str:
        parts = [f"ip {fam(self.family)} rule", f"priority {self.priority}"]
        if self.src is not None:
            parts.append(f"from {self.src}")
        if self.fwmark is not None:
            parts.append(f"fwmark {fwmark_text(self.fwmark, self.fwmask or None)}")
        parts.append(f"lookup {table_name(self.table)}")
        if self.suppress_prefixlength is not None:
            parts.append(f"suppress_prefixlength {self.suppress_prefixlength}")
        return " ".join(parts)


def _present(value: Any) -> tuple[bool, Any]:
    return (value is not None, value)


class Rules(Kind[Rule, Rule]):
    name = "rule"
    type = Rule
    create_stage = Stage.RULES
    delete_stage = Stage.RULES_GONE
    exclusive = True

    def key(self, obj: Rule) -> Rule:
        return obj

    def order(self, obj: Rule) -> tuple[Any, ...]:
        # the dataclass order, but total: an absent selector sorts before a present one
        return (
            obj.family,
            obj.priority,
            obj.table,
            _present(obj.fwmark),
            _present(obj.fwmask),
            _present(obj.src),
            _present(obj.suppress_prefixlength),
        )

    def render(self, verb: Verb, obj: Rule) -> str:
        return ip_command(str(obj), verb)

    def read(self, snapshot: Snapshot, owner: Ownership) -> Iterator[Rule]:
        for msg in snapshot.rules:
            if msg.get("FRA_PROTOCOL") != owner.protocol or msg["family"] not in FAMILIES:
                continue
            src = msg.get("FRA_SRC")
            suppress = msg.get("FRA_SUPPRESS_PREFIXLEN")
            yield Rule(
                family=msg["family"],
                priority=msg.get("FRA_PRIORITY") or 0,
                table=msg.get("FRA_TABLE") or msg["table"],
                fwmark=msg.get("FRA_FWMARK"),
                fwmask=msg.get("FRA_FWMASK") if msg.get("FRA_FWMARK") is not None else None,
                src=ipaddress.ip_network(f"{src}/{msg['src_len']}") if src else None,
                suppress_prefixlength=None if suppress in (None, FRA_NO_SUPPRESS) else suppress,
            )

    async def write(self, io: Transport, verb: Verb, obj: Rule, owner: Ownership) -> None:
        fields: dict[str, Any] = {
            "family": obj.family,
            "priority": obj.priority,
            "table": obj.table,
            "protocol": owner.protocol,
        }
        if obj.fwmark is not None:
            fields.update(fwmark=obj.fwmark, fwmask=obj.fwmask)
        if obj.src is not None:
            fields.update(src=str(obj.src.network_address), src_len=obj.src.prefixlen)
        if obj.suppress_prefixlength is not None:
            fields.update(suppress_prefixlen=obj.suppress_prefixlength)
        await io.rule("del" if verb == "delete" else "add", **fields)


KIND = Rules()
