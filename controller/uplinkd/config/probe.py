"""The `probe` section: how an uplink's health is checked, and the timing profiles.

`PROFILES` is the one table of timing defaults: the `default` profile's values are the
fields' defaults, the field descriptions quote both profiles from it, and `uplinkctl schema`
publishes it (`$defs.Probe.profiles`) for the NixOS module and the docs.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Final, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from uplinkd.config.fields import Float, Int, Section, Text, ranged, shown

PROFILES: Final[dict[str, dict[str, float | int]]] = {
    # An idle uplink costs ~2 targets x 72 B every 20 s = 0.6 MB/day; traffic that gets no
    # answer for `suspect_after` starts fast rounds, so a dead uplink in use is seen in ~2-3 s.
    "default": {
        "interval": 20.0,
        "fast_interval": 0.5,
        "down_interval": 2.0,
        "timeout": 1.0,
        "suspect_after": 1.0,
        "down_after": 3,
        "up_after": 3,
    },
    # Sub-second: a blackholed uplink in use is down in ~0.6 s; idle cost ~1.2 MB/day.
    "fast": {
        "interval": 10.0,
        "fast_interval": 0.1,
        "down_interval": 0.5,
        "timeout": 0.2,
        "suspect_after": 0.2,
        "down_after": 2,
        "up_after": 3,
    },
}


def _timing(name: str, description: str) -> Any:
    """A timing field: its default from the `default` profile, its description quoting all."""
    values = ", ".join(f"{profile} {timings[name]:g}" for profile, timings in PROFILES.items())
    return Field(default=PROFILES["default"][name], description=f"{description} (profiles: {values})")


def _publish_profiles(schema: dict[str, Any]) -> None:
    schema["profiles"] = {name: dict(timings) for name, timings in PROFILES.items()}


class Probe(Section):
    """Health checks for one uplink, sent through it (its fwmark and SO_BINDTODEVICE)."""

    model_config = ConfigDict(json_schema_extra=_publish_profiles)

    profile: Literal["default", "fast"] = Field(
        default="default", description="timing preset; fields given explicitly win"
    )
    method: Literal["icmp", "tcp", "dns"] = "icmp"
    targets: tuple[Text, ...] = Field(
        default=(),
        description="icmp/dns: addresses; tcp: address:port (IPv6: [addr]:port). "
        "Empty: no probes, the uplink is healthy while it has carrier and an address",
    )
    dns_name: Text = Field(default=".", description="name asked of DNS targets (type NS)")
    quorum: Int = Field(default=1, description="targets that must answer for a round to pass")
    interval: Float = _timing("interval", "seconds between rounds while healthy")
    fast_interval: Float = _timing("fast_interval", "seconds between rounds while suspicious")
    down_interval: Float = _timing("down_interval", "seconds between rounds while down")
    timeout: Float = _timing("timeout", "seconds to wait for an answer")
    suspect_after: Float = _timing("suspect_after", "packets out but none in for this long: probe hard")
    down_after: Int = _timing("down_after", "failed rounds in a row before down")
    up_after: Int = _timing("up_after", "good rounds in a row before up")
    loss_threshold: Float = Field(default=20.0, description="percent loss (EWMA) that degrades")
    rtt_threshold: Float = Field(default=500.0, description="milliseconds RTT (EWMA) that degrades")
    degraded_weight: Float = Field(default=0.5, description="weight factor while degraded")

    @model_validator(mode="before")
    @classmethod
    def _profile(cls, data: Any) -> Any:
        if isinstance(data, dict):
            preset = PROFILES.get(str(data.get("profile", "default")))
            if preset is not None:
                return {**preset, **data}
        return data

    @field_validator("dns_name")
    @classmethod
    def _dns_name(cls, v: str) -> str:
        labels = [label for label in v.strip(".").split(".") if label]
        if len(v) > 253 or any(len(label) > 63 for label in labels):
            raise ValueError(f"{shown(v)} is not a DNS name; use labels of at most 63 characters, 253 in all")
        return v

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(v) > 16:
            raise ValueError(f"{len(v)} targets; use at most 16")
        return v

    _intervals = ranged("interval", "fast_interval", "down_interval", low=0.05, high=3600, unit="seconds")
    _short = ranged("timeout", "suspect_after", low=0.01, high=60, unit="seconds")
    _counts = ranged("down_after", "up_after", "quorum", low=1, high=100)
    _loss = ranged("loss_threshold", low=0, high=100, above=True, use="a percentage above 0, at most 100")
    _rtt = ranged("rtt_threshold", low=1, high=60000, unit="milliseconds")
    _factor = ranged("degraded_weight", low=0, high=1, above=True, use="a factor above 0, at most 1")

    @model_validator(mode="after")
    def _consistent(self) -> Probe:
        problems = []
        if self.quorum > max(1, len(self.targets)) and self.targets:
            problems.append(
                f"quorum: {self.quorum} is more than the {len(self.targets)} targets; "
                f"use 1 to {len(self.targets)}"
            )
        for target in self.targets:
            try:
                parse_target(self.method, target)
            except ValueError as e:
                problems.append(f"targets: {e}")
        if problems:
            raise ValueError("\n".join(problems))
        return self


def parse_target(method: str, text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int | None]:
    """A probe target as (address, port). tcp needs a port; icmp/dns take an address."""
    if method == "tcp":
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f'{shown(text)} needs a port for tcp; write e.g. "198.51.100.1:443"')
        try:
            return ipaddress.ip_address(host), int(port)
        except ValueError:
            raise ValueError(
                f'{shown(text)}: {shown(host)} is not an IP address; write e.g. "198.51.100.1:443"'
            ) from None
    try:
        return ipaddress.ip_address(text), 53 if method == "dns" else None
    except ValueError:
        raise ValueError(f'{shown(text)} is not an IP address; write e.g. "198.51.100.1"') from None
