"""uplinkd: multi-uplink policy routing controller."""

__version__ = "0.1.0"
