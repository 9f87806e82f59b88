"""ModemManager stood in for on a private, system-like D-Bus: a real `dbus-daemon` started
with a config written here (never the machine's system bus), and python-dbusmock serving
`mm_template.py` on it. uplinkd is pointed at it with DBUS_SYSTEM_BUS_ADDRESS.

    with ModemManagerStandIn(tmp_path) as mm:
        daemon = LabDaemon(..., env=mm.env)
        mm.add_modem("wwan0", imei="356789012345678")
        mm.connect_calls()      # the a{sv} of each Simple.Connect, as Python values

Both processes are stopped by pid.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import dbus

from uplinkd.lab.netns import stop_process, wait_until

TEMPLATE = Path(__file__).with_name("mm_template.py")
MM = "org.freedesktop.ModemManager1"
MM_PATH = "/org/freedesktop/ModemManager1"
MODEM_PATH = "/org/freedesktop/ModemManager1/Modems/0"
SIM_PATH = "/org/freedesktop/ModemManager1/SIM/0"
MOCK = "org.freedesktop.DBus.Mock"

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


def _plain(value: Any) -> Any:
    """dbus-python's values as plain Python ones (keeping bool apart from int)."""
    if isinstance(value, dbus.Boolean):
        return bool(value)
    if isinstance(value, (dbus.Dictionary, dict)):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (dbus.Array, dbus.Struct, list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (dbus.String, dbus.ObjectPath)):
        return str(value)
    if isinstance(value, int):
        return int(value)
    return value


def dbus_type(value: Any) -> str:
    """The D-Bus type name dbus-python decoded a variant's value as (UInt32, String, ...)."""
    return type(value).__name__


class ModemManagerStandIn:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket = workdir / "system_bus_socket"
        self.address = f"unix:path={self.socket}"
        self._bus_proc: subprocess.Popen[str] | None = None
        self._mock_proc: subprocess.Popen[str] | None = None
        self._bus: dbus.bus.BusConnection | None = None

    @property
    def env(self) -> dict[str, str]:
        return {"DBUS_SYSTEM_BUS_ADDRESS": self.address}

    def __enter__(self) -> ModemManagerStandIn:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        config = self.workdir / "system-bus.conf"
        config.write_text(BUS_CONFIG.format(socket=self.socket))
        self._bus_proc = subprocess.Popen(
            ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert self._bus_proc.stdout is not None
        self._bus_proc.stdout.readline()  # the address: the bus is listening
        self._mock_proc = subprocess.Popen(
            [sys.executable, "-m", "dbusmock", "--system", "-t", str(TEMPLATE),
             "-l", str(self.workdir / "modemmanager-mock.log")],
            env={**os.environ, **self.env}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self._bus = dbus.bus.BusConnection(self.address)
        wait_until(lambda: self._bus is not None and self._bus.name_has_owner(MM), timeout=15.0,
                   what="the ModemManager stand-in on the private bus")  # fmt: skip

    def stop(self) -> None:
        if self._bus is not None:
            with contextlib.suppress(Exception):
                self._bus.close()
            self._bus = None
        for proc in (self._mock_proc, self._bus_proc):
            if proc is not None:
                stop_process(proc, grace=5.0)
        self._mock_proc = self._bus_proc = None

    # --- driving the stand-in --------------------------------------------------------------

    def _mock(self, path: str = MM_PATH) -> Any:
        assert self._bus is not None
        return dbus.Interface(self._bus.get_object(MM, path), MOCK)

    def add_modem(self, port: str, **options: Any) -> str:
        return str(self._mock().AddUplinkModem(port, dbus.Dictionary(options, signature="sv")))

    def drop_bearer(self) -> None:
        self._mock().DropBearer()

    def set_registration(self, registration: int, state: int) -> None:
        self._mock().SetRegistration(registration, state)

    def remove_modem(self) -> None:
        self._mock().RemoveUplinkModem()

    def knob(self, name: str, value: str) -> None:
        self._mock().SetKnob(name, value)

    def connect_calls(self) -> list[dict[str, Any]]:
        """The properties of each Simple.Connect call, with dbus-python's types kept."""
        return [dict(args[0]) for _, args in self._mock(MODEM_PATH).GetMethodCalls("Connect")]

    def pin_calls(self) -> list[str]:
        return [str(args[0]) for _, args in self._mock(SIM_PATH).GetMethodCalls("SendPin")]

    def times(self, method: str) -> list[float]:
        return [float(t) for t in self._mock().CallTimes(method)]

    def plain(self, value: Any) -> Any:
        return _plain(value)
