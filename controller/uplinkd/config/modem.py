"""The `modem` address mode: ModemManager unlocks the SIM, registers and connects a bearer;
the controller puts the bearer's address on the data interface and routes by it.

Only what is given here is passed to ModemManager's Simple.Connect: an unset field is left
to the modem's own default (`allow_roaming` unset = ModemManager's default, which allows it).
Secrets (password, PIN) are read from files, so the config can be world-readable.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, Strict, field_validator

from uplinkd.config.fields import Section, Text, shown

IpType = Literal["ipv4", "ipv6", "ipv4v6"]
Auth = Literal["none", "pap", "chap", "mschap", "mschapv2", "eap"]


class ModemAddress(Section):
    """ModemManager connects the modem; the bearer's IP configuration goes into T_u only."""

    mode: Literal["modem"]
    apn: Text | None = Field(default=None, description="access point name; unset: the modem's default")
    ip_type: IpType | None = Field(default=None, description="ipv4, ipv6 or ipv4v6")
    user: Text | None = Field(default=None, description="APN user name")
    password_file: Path | None = Field(default=None, description="file holding the APN password")
    allowed_auth: tuple[Auth, ...] | None = Field(
        default=None, description="any of none, pap, chap, mschap, mschapv2, eap; unset: the modem's choice"
    )
    allow_roaming: Annotated[bool, Strict()] | None = Field(default=None, description="connect while roaming")
    pin_file: Path | None = Field(default=None, description="file holding the SIM PIN; sent once")
    imei: Text | None = Field(default=None, description="only the modem with this IMEI")
    iccid: Text | None = Field(default=None, description="only the modem holding the SIM with this ICCID")

    @field_validator("apn")
    @classmethod
    def _apn(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,99}", v):
            raise ValueError(
                f"{shown(v)} is not an APN; use letters, digits, '.' and '-' (e.g. \"internet\"), "
                "or leave it unset for the modem's default"
            )
        return v

    @field_validator("allowed_auth", mode="before")
    @classmethod
    def _auth_list(cls, v: object) -> object:
        return (v,) if isinstance(v, str) else v

    @field_validator("imei")
    @classmethod
    def _imei(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\d{14,16}", v):
            raise ValueError(f"{shown(v)} is not an IMEI; write its 15 digits (mmcli -m 0 shows it)")
        return v

    @field_validator("iccid")
    @classmethod
    def _iccid(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\d{18,22}F?", v):
            raise ValueError(
                f"{shown(v)} is not an ICCID; write its 18-22 digits (on the SIM card; mmcli -i 0 shows it)"
            )
        return v

    @field_validator("password_file", "pin_file")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_absolute():
            raise ValueError(f"{str(v)!r} is relative; give an absolute path, e.g. /run/secrets/lte-pin")
        return v

    def connect_properties(self, password: str | None) -> dict[str, tuple[str, object]]:
        """Simple.Connect's a{sv}, as (D-Bus signature, value) per key: exactly what is set."""
        props: dict[str, tuple[str, object]] = {}
        if self.apn is not None:
            props["apn"] = ("s", self.apn)
        if self.ip_type is not None:
            props["ip-type"] = ("u", IP_TYPES[self.ip_type])
        if self.user is not None:
            props["user"] = ("s", self.user)
        if password is not None:
            props["password"] = ("s", password)
        if self.allowed_auth:
            mask = 0
            for auth in self.allowed_auth:
                mask |= AUTH_BITS[auth]
            props["allowed-auth"] = ("u", mask)
        if self.allow_roaming is not None:
            props["allow-roaming"] = ("b", self.allow_roaming)
        return props


# MMBearerIpFamily and MMBearerAllowedAuth (ModemManager-enums.h)
IP_TYPES: dict[str, int] = {"ipv4": 1 << 0, "ipv6": 1 << 1, "ipv4v6": 1 << 2}
AUTH_BITS: dict[str, int] = {
    "none": 1 << 0,
    "pap": 1 << 1,
    "chap": 1 << 2,
    "mschap": 1 << 3,
    "mschapv2": 1 << 4,
    "eap": 1 << 5,
}
