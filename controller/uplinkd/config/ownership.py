"""The `kernel` section: what the controller owns in the kernel (its protocol number, nexthop
ids, the mark bits of uplinks and of policies, its nft table)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from uplinkd.config.fields import Int, Section, Text, ranged, shown

# Nexthop ids base .. base + 2^25 are ours, and must stay 32-bit.
MAX_NEXTHOP_BASE = (1 << 32) - (1 << 25) - 1


def _int_or_hex(v: object) -> object:
    if isinstance(v, str):
        try:
            return int(v, 0)
        except ValueError:
            raise ValueError(f'{v!r} is not a number; write e.g. 65280 or "0xff00"') from None
    return v


class Ownership(Section):
    """The `kernel` section: what the controller owns in the kernel (its protocol number,
    nexthop ids, mark bits, nft table). Nothing outside these is ever touched."""

    protocol: Int = Field(default=77, description="route/rule/nexthop protocol number (rt_protos)")
    nexthop_base: Int = Field(
        default=100_000_000,
        description="first nexthop id owned; ids base .. base+2^25 are reserved",
    )
    mark_mask: Int = Field(default=0xFF00, description="fwmark/ct mark bits the controller owns")
    policy_mask: Int | None = Field(
        default=None,
        description="fwmark/ct mark bits for policy marks, apart from mark_mask; default: the 8 bits "
        "above mark_mask (0xff0000 with the default mark_mask), or below it if those do not fit",
    )
    nft_table: Text = Field(default="uplinkd", description="name of the 'inet' nftables table")

    _int_fields = field_validator("protocol", "nexthop_base", "mark_mask", "policy_mask", mode="before")(
        classmethod(lambda cls, v: _int_or_hex(v))
    )

    _protocol = ranged(
        "protocol", low=5, high=254, use="5-254, a number no routing daemon here uses (default 77)"
    )
    _nh_base = ranged("nexthop_base", low=1, high=MAX_NEXTHOP_BASE)

    @field_validator("mark_mask", "policy_mask")
    @classmethod
    def _mask(cls, v: int | None) -> int | None:
        if v is None:
            return v
        if not 0 < v < (1 << 32):
            text = f"{v:#x}" if -(1 << 64) < v < (1 << 64) else shown(v)
            raise ValueError(f"{text} is not a 32-bit mask; use e.g. 0xff00")
        low = v & -v
        if (v // low) & ((v // low) + 1):
            raise ValueError(f"{v:#x} is not one run of bits; use contiguous bits, e.g. 0xff00")
        return v

    @field_validator("nft_table")
    @classmethod
    def _nft_table(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,31}", v):
            raise ValueError(f"{shown(v)} is not an nftables table name; use letters, digits, _")
        return v

    @model_validator(mode="after")
    def _masks_apart(self) -> Ownership:
        if self.policy_mask is not None and self.mark_mask & self.policy_mask:
            raise ValueError(
                f"policy_mask: {self.policy_mask:#x} overlaps mark_mask {self.mark_mask:#x}; "
                "use bits of their own, e.g. 0xff0000"
            )
        return self

    @property
    def policy_bits(self) -> int:
        """The policy mask in effect: as given, or 8 bits next to mark_mask (above if they fit)."""
        if self.policy_mask is not None:
            return self.policy_mask
        above = 0xFF << self.mark_mask.bit_length()
        if above < (1 << 32):
            return above
        return (0xFF << self.mark_shift) >> 8  # mark_mask reaches bit 31: below it (shift >= 8)

    @property
    def policy_shift(self) -> int:
        return max(0, (self.policy_bits & -self.policy_bits).bit_length() - 1)

    @property
    def mark_shift(self) -> int:
        return (self.mark_mask & -self.mark_mask).bit_length() - 1

    @property
    def mark_slots(self) -> int:
        return self.mark_mask >> self.mark_shift
