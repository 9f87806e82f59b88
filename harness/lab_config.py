"""Config pieces for the netns lab (`uplinkd.lab.Lab`): ISP number `index` (1-based) is
reached at 10.<100+index>.0.1 and 2001:db8:<index>::1, and routes both prefixes to the router."""

from __future__ import annotations

from typing import Any


def static_uplink(index: int, name: str, *, v6: bool = True, **extra: Any) -> dict[str, Any]:
    """ISP number `index` as uplink `name` in table 100 + index, with static addresses the
    controller sets (IPv4, and IPv6 with `v6`); `extra` adds or overrides fields."""
    address: dict[str, Any] = {
        "mode": "static",
        "cidr": f"10.{100 + index}.0.2/24",
        "gateway": f"10.{100 + index}.0.1",
    }
    if v6:
        address.update(cidr6=f"2001:db8:{index}::2/64", gateway6=f"2001:db8:{index}::1")
    return {"match": {"name": name}, "address": address, "table": 100 + index, **extra}
