"""udev as an event source: network devices appearing, going, and what udev knows of them.

With systemd-udevd running we listen to the `udev` source, whose events come after udev's
rules ran (a `.link` file renamed the stick, ID_PATH and USB identity are in the database);
without it, to the `kernel` source, which still says when a device comes and goes. Either
way the source only records facts (ifname → properties) and wakes the loop; matching an
interface to an uplink is the planner's job.

Where udevd handles our network devices (it runs, and we share its network namespace), a
new interface is not shown to the planner until udev has finished with it (its database
entry `/run/udev/data/n<ifindex>` exists, what sd-device calls "initialized"): udev renames
a new stick (`usb0` → `enx<mac>` by a `.link` file) and systemd-udevd refuses to rename an
interface that is already up, so raising it first would keep the kernel's name for good. An
interface udev has not finished with after `UDEV_GRACE_S` is used anyway (udevd hung or
ignores it), with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import pyudev

from uplinkd.model import Link, Observed

log = logging.getLogger("uplinkd.udev")

UDEV_CONTROL = Path("/run/udev/control")
UDEV_DB = Path("/run/udev/data")
UDEV_GRACE_S = 10.0
# udev property → Link field; USB ids are lower-case hex like sysfs's
PROPERTIES = {
    "ID_PATH": "id_path",
    "ID_VENDOR_ID": "usb_vendor",
    "ID_MODEL_ID": "usb_product",
    "ID_SERIAL_SHORT": "usb_serial",
    "ID_NET_DRIVER": "driver",
}


class UdevFacts(dict[str, dict[str, str]]):
    """ifname → udev properties, and which interfaces udev has finished with.

    `db` is udev's database directory when udevd handles our network devices (None: it does
    not, every interface is usable as soon as netlink shows it)."""

    def __init__(self, db: Path | None = None, grace: float = UDEV_GRACE_S) -> None:
        super().__init__()
        self.db = db
        self.grace = grace
        self.pending: dict[int, float] = {}  # ifindex → when first seen not initialized
        self.late: set[int] = set()  # pending for longer than `grace`: used anyway
        self.wake_later: Callable[[float], None] | None = None

    def initialized(self, ifindex: int, name: str, now: float) -> bool:
        """Whether udev is done with interface `ifindex` (or has had `grace` seconds)."""
        if self.db is None or (self.db / f"n{ifindex}").exists():
            self.pending.pop(ifindex, None)
            return True
        first = self.pending.setdefault(ifindex, now)
        if first == now:
            log.info("%s: waiting for udev to finish with it", name)
            if self.wake_later is not None:
                self.wake_later(self.grace)
        if now - first < self.grace:
            return False
        if ifindex not in self.late:
            self.late.add(ifindex)
            log.warning("%s: udev has not finished with it after %.0fs; using it anyway", name, now - first)
        return True

    def forget_except(self, ifindexes: set[int]) -> None:
        for gone in set(self.pending) - ifindexes:
            del self.pending[gone]
        self.late &= ifindexes


def _shares_netns_with_init() -> bool:
    """udevd (a child of init) sees our network devices only if we share init's namespace;
    in another one (`ip netns exec`) it never hears of them."""
    try:
        return os.readlink("/proc/self/ns/net") == os.readlink("/proc/1/ns/net")
    except OSError:
        return False


class UdevWatch:
    """Keeps ifname → udev properties for network devices; calls `on_change` on events."""

    def __init__(self, on_change: Callable[[str], None]) -> None:
        self.on_change = on_change
        self.source = "udev" if UDEV_CONTROL.exists() else "kernel"
        self.facts = UdevFacts()
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
        # only now that we hear udev's events: they say when an interface is initialized
        if self.source == "udev" and UDEV_DB.is_dir() and _shares_netns_with_init():
            self.facts.db = UDEV_DB
            self.facts.wake_later = self._wake_later
        loop.add_reader(monitor.fileno(), self._readable)
        log.info("listening to %s events for network devices", self.source)

    def _wake_later(self, delay: float) -> None:
        if self._loop is not None:
            self._loop.call_later(delay, self.on_change, "udev grace")

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
    """Observed links with what udev knows added (sysfs facts win where both exist); with
    `UdevFacts`, links udev has not finished with are left out (see the module's doc)."""
    links: dict[int, Link] = {}
    now = time.monotonic()
    if isinstance(facts, UdevFacts):
        facts.forget_except(set(observed.links))
    for index, link in observed.links.items():
        if isinstance(facts, UdevFacts) and not facts.initialized(index, link.name, now):
            continue
        props = facts.get(link.name, {})
        extra = {
            field: props[key].lower() if field in ("usb_vendor", "usb_product") else props[key]
            for key, field in PROPERTIES.items()
            if key in props and getattr(link, field) in (None, "")
        }
        links[index] = replace(link, **extra) if extra else link  # type: ignore[arg-type]
    return replace(observed, links=links)
