"""udev as an event source: network devices appearing, going, and what udev knows of them.

With systemd-udevd running we listen to the `udev` source, whose events come after udev's
rules ran (a `.link` file renamed the stick, ID_PATH and USB identity are in the database);
without it, to the `kernel` source, which still says when a device comes and goes. Either
way the source only records facts (ifname → properties) and wakes the loop; matching an
interface to an uplink is the planner's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import pyudev

from uplinkd.model import Link, Observed

log = logging.getLogger("uplinkd.udev")

UDEV_CONTROL = Path("/run/udev/control")
# udev property → Link field; USB ids are lower-case hex like sysfs's
PROPERTIES = {
    "ID_PATH": "id_path",
    "ID_VENDOR_ID": "usb_vendor",
    "ID_MODEL_ID": "usb_product",
    "ID_SERIAL_SHORT": "usb_serial",
    "ID_NET_DRIVER": "driver",
}


class UdevWatch:
    """Keeps ifname → udev properties for network devices; calls `on_change` on events."""

    def __init__(self, on_change: Callable[[str], None]) -> None:
        self.on_change = on_change
        self.facts: dict[str, dict[str, str]] = {}
        self.source = "udev" if UDEV_CONTROL.exists() else "kernel"
        self._monitor: pyudev.Monitor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        context = pyudev.Context()
        if self.source == "udev":
            for device in context.list_devices(subsystem="net"):
                self._record(device)
        monitor = pyudev.Monitor.from_netlink(context, source=self.source)
        monitor.filter_by("net")
        monitor.start()
        self._monitor = monitor
        self._loop = loop
        loop.add_reader(monitor.fileno(), self._readable)
        log.info("listening to %s events for network devices", self.source)

    def _record(self, device: pyudev.Device) -> None:
        name = device.sys_name
        props = {key: str(device.properties[key]) for key in PROPERTIES if key in device.properties}
        self.facts[name] = props

    def _readable(self) -> None:
        assert self._monitor is not None
        while (device := self._monitor.poll(timeout=0)) is not None:
            action = device.action
            if action == "remove":
                self.facts.pop(device.sys_name, None)
            elif action == "move":
                old = (
                    device.properties.get("INTERFACE_OLD")
                    or device.properties.get("DEVPATH_OLD", "").rsplit("/", 1)[-1]
                )
                self.facts.pop(str(old), None)
                self._record(device)
            else:
                self._record(device)
            log.debug("udev %s %s", action, device.sys_name)
            self.on_change("udev")

    def stop(self) -> None:
        if self._monitor is not None and self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._monitor.fileno())
            self._monitor = None


def enrich(observed: Observed, facts: Mapping[str, Mapping[str, str]]) -> Observed:
    """Observed links with what udev knows added (sysfs facts win where both exist)."""
    links: dict[int, Link] = {}
    for index, link in observed.links.items():
        props = facts.get(link.name, {})
        extra = {
            field: props[key].lower() if field in ("usb_vendor", "usb_product") else props[key]
            for key, field in PROPERTIES.items()
            if key in props and getattr(link, field) in (None, "")
        }
        links[index] = replace(link, **extra) if extra else link  # type: ignore[arg-type]
    return replace(observed, links=links)
