"""Configs the unit tests share."""

from __future__ import annotations

from typing import Any

# The config from issue 2, verbatim.
ISSUE_EXAMPLE: dict[str, Any] = {
    "uplinks": {
        "wan": {"match": {"name": "eth1"}, "address": {"mode": "external"}, "table": 101, "weight": 3},
        "lte1": {
            "match": {"usb": {"vendor": "12d1", "product": "14db"}},
            "address": {"mode": "dhcp"},
            "table": 102,
            "weight": 1,
        },
        "lte2": {
            "match": {"name": "wwan*", "driver": ["qmi_wwan", "cdc_mbim"]},
            "address": {"mode": "static", "cidr": "10.64.0.2/30", "gateway": None},
            "table": 103,
        },
    },
    "balance": {"table": 200, "last_resort": "carrier"},
    "rules": {"priority": 10000},
}
