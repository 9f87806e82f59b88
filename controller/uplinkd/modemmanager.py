"""ModemManager's D-Bus API as uplinkd uses it: names, the enum values it reads, and how a
bearer's `Ip4Config`/`Ip6Config` becomes the fact the planner routes by (and is kept in the
state directory across restarts). Values only; the watcher that talks to it is `modem`.
Names and values follow ModemManager's D-Bus API reference (ModemManager-enums.h)."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dbus_fast import Variant

from uplinkd.model import Bearer, BearerIp

MM = "org.freedesktop.ModemManager1"
MM_PATH = "/org/freedesktop/ModemManager1"
MODEM = f"{MM}.Modem"
MODEM_3GPP = f"{MM}.Modem.Modem3gpp"
SIMPLE = f"{MM}.Modem.Simple"
SIM = f"{MM}.Sim"
BEARER = f"{MM}.Bearer"
DBUS, DBUS_PATH = "org.freedesktop.DBus", "/org/freedesktop/DBus"
PROPS = f"{DBUS}.Properties"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"


# ModemManager's enums (ModemManager-enums.h)
STATE_LOCKED, STATE_REGISTERED = 2, 8
LOCK_SIM_PIN, LOCK_SIM_PUK = 2, 4
METHOD_STATIC, METHOD_DHCP = 2, 3
# 3GPP registration states that carry data: home, roaming and their csfb-not-preferred kin
REGISTERED_3GPP = frozenset({1, 5, 9, 10})
REGISTRATION = {
    0: "idle", 1: "home", 2: "searching", 3: "denied", 4: "unknown", 5: "roaming",
    6: "home-sms-only", 7: "roaming-sms-only", 8: "emergency-only",
    9: "home-csfb-not-preferred", 10: "roaming-csfb-not-preferred", 11: "attached-rlos",
}  # fmt: skip
STATES = {
    -1: "failed", 0: "unknown", 1: "initializing", 2: "locked", 3: "disabled", 4: "disabling",
    5: "enabling", 6: "enabled", 7: "searching", 8: "registered", 9: "disconnecting",
    10: "connecting", 11: "connected",
}  # fmt: skip
ACCESS = (
    (1 << 15, "5gnr"), (1 << 14, "lte"), (1 << 16, "lte-cat-m"), (1 << 17, "lte-nb-iot"),
    (1 << 9, "hspa+"), (1 << 8, "hspa"), (1 << 7, "hsupa"), (1 << 6, "hsdpa"), (1 << 5, "umts"),
    (1 << 4, "edge"), (1 << 3, "gprs"), (1 << 1, "gsm"),
)  # fmt: skip

AUTH_ERRORS = frozenset({"org.freedesktop.DBus.Error.AccessDenied", f"{MM}.Error.Core.Unauthorized"})
WRONG_PIN = f"{MM}.Error.MobileEquipment.IncorrectPassword"
POLKIT_FIX = (
    "ModemManager refused uplinkd (polkit): allow its user the org.freedesktop.ModemManager1.* "
    "actions (the NixOS module adds this rule; elsewhere add a polkit rule for the uplinkd user)"
)


def unwrap(props: Mapping[str, Any], key: str, default: Any = None) -> Any:
    value = props.get(key)
    return value.value if isinstance(value, Variant) else default if value is None else value


def access_technology(bits: int) -> str | None:
    return next((name for bit, name in ACCESS if bits & bit), None)


def bearer_ip(config: Mapping[str, Any], *, v6: bool) -> tuple[BearerIp | None, bool]:
    """An Ip4Config/Ip6Config as a fact, and whether IPv6 comes by router advertisement."""
    method = unwrap(config, "method", 0)
    address, prefix = unwrap(config, "address"), unwrap(config, "prefix")
    if v6 and method == METHOD_DHCP:
        return None, True  # SLAAC on the data interface
    if method not in (METHOD_STATIC, METHOD_DHCP) or not address or not prefix:
        return None, False
    gateway = unwrap(config, "gateway") or None
    dns = tuple(
        ipaddress.ip_address(d) for k in ("dns1", "dns2", "dns3") if (d := unwrap(config, k))
    )
    return (
        BearerIp(
            ipaddress.ip_interface(f"{address}/{prefix}"),
            ipaddress.ip_address(gateway) if gateway else None,
            mtu=unwrap(config, "mtu") or None,
            dns=dns,
        ),
        False,
    )


def bearer_json(bearer: Bearer) -> dict[str, Any]:
    def ip(b: BearerIp | None) -> dict[str, Any] | None:
        if b is None:
            return None
        gateway = str(b.gateway) if b.gateway else None
        return {"address": str(b.address), "gateway": gateway, "mtu": b.mtu, "dns": [str(d) for d in b.dns]}

    return {"interface": bearer.interface, "ip4": ip(bearer.ip4), "ip6": ip(bearer.ip6), "ra6": bearer.ra6}


def stored_bearer(path: Path) -> Bearer | None:
    """The bearer a previous run recorded (used at start, so a restart changes nothing in
    the kernel; the watcher confirms or drops it on its first look)."""

    def ip(d: dict[str, Any] | None) -> BearerIp | None:
        if d is None:
            return None
        gateway = ipaddress.ip_address(d["gateway"]) if d.get("gateway") else None
        dns = tuple(ipaddress.ip_address(x) for x in d.get("dns", ()))
        return BearerIp(ipaddress.ip_interface(d["address"]), gateway, d.get("mtu"), dns)

    try:
        d = json.loads(path.read_text())
        return Bearer(str(d["interface"]), ip(d.get("ip4")), ip(d.get("ip6")), bool(d.get("ra6")))
    except (OSError, ValueError, TypeError, LookupError, AttributeError):  # missing or mangled
        return None


def pin_digest(sim: str, pin: str) -> str:
    return hashlib.sha256(f"{sim}\0{pin}".encode()).hexdigest()
