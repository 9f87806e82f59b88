"""A dbusmock template standing in for ModemManager in uplinkd's modem tests: dbusmock's own
`modemmanager` template (the manager and its ObjectManager), plus what it lacks and uplinkd
uses: a modem with ports, IMEI and a SIM (ICCID, PIN lock and retries), `Simple.Connect`
that checks its properties as ModemManager does (unknown keys and wrong types are refused
with Core.InvalidArgs), and the Bearer object with `Interface`, `Ip4Config`, `Ip6Config`.

Loaded by path in the dbusmock process (`python3 -m dbusmock -t <this file>`), not imported
by the tests; the tests drive it through the `org.freedesktop.DBus.Mock` methods below.
Property names, types and enum values follow ModemManager's D-Bus API reference.
"""

# ruff: noqa: N802 (D-Bus method names)
from __future__ import annotations

import time
from typing import Any

import dbus
import dbus.exceptions
from dbusmock import MOCK_IFACE, OBJECT_MANAGER_IFACE, mockobject
from dbusmock.templates import modemmanager as mm

BUS_NAME = mm.BUS_NAME
MAIN_OBJ = mm.MAIN_OBJ
MAIN_IFACE = mm.MAIN_IFACE
SYSTEM_BUS = True
IS_OBJECT_MANAGER = False

MODEM, MODEM_3GPP, SIM = mm.MODEM_IFACE, mm.MODEM_3GPP_IFACE, mm.SIM_IFACE
SIMPLE = f"{MODEM}.Simple"
BEARER = "org.freedesktop.ModemManager1.Bearer"
ERR = "org.freedesktop.ModemManager1.Error"

MODEM_PATH = "/org/freedesktop/ModemManager1/Modems/0"
SIM_PATH = "/org/freedesktop/ModemManager1/SIM/0"
BEARER_PATH = "/org/freedesktop/ModemManager1/Bearer/0"

LOCKED, REGISTERED, CONNECTED = 2, 8, 11
LOCK_NONE, LOCK_SIM_PIN = 1, 2
PORT_NET, PORT_QMI = 2, 6
METHOD_STATIC = 2

# Simple.Connect's keys and their D-Bus types (ModemManager's MMSimpleConnectProperties)
CONNECT_KEYS: dict[str, type] = {
    "apn": dbus.String, "ip-type": dbus.UInt32, "user": dbus.String, "password": dbus.String,
    "allowed-auth": dbus.UInt32, "allow-roaming": dbus.Boolean, "pin": dbus.String,
    "operator-id": dbus.String, "number": dbus.String, "rm-protocol": dbus.UInt32,
    "multiplex": dbus.UInt32,
}  # fmt: skip

KNOBS: dict[str, str] = {"connect_error": "", "connect_text": ""}
TIMES: dict[str, list[float]] = {}
MODEM_STATE: dict[str, Any] = {}


def load(mock: Any, parameters: dict[str, Any]) -> None:
    mm.load(mock, parameters)


def _stamp(name: str) -> None:
    TIMES.setdefault(name, []).append(time.time())


def _fail(name: str, text: str) -> dbus.exceptions.DBusException:
    return dbus.exceptions.DBusException(text, name=name)


def _connect(self: Any, props: dict[str, Any]) -> str:
    _stamp("Connect")
    if KNOBS["connect_error"]:
        raise _fail(KNOBS["connect_error"], KNOBS["connect_text"] or "refused")
    for key, value in props.items():
        want = CONNECT_KEYS.get(str(key))
        if want is None:
            raise _fail(f"{ERR}.Core.InvalidArgs", f"Invalid properties: Unexpected property '{key}'")
        if type(value) is not want:
            raise _fail(
                f"{ERR}.Core.InvalidArgs",
                f"Invalid properties: '{key}' is a {type(value).__name__}, not a {want.__name__}",
            )
    if self.props[MODEM]["State"] == LOCKED:
        raise _fail(f"{ERR}.MobileEquipment.SimPin", "SIM PIN required")
    if self.props[MODEM_3GPP]["RegistrationState"] not in (1, 5) or self.props[MODEM]["State"] < REGISTERED:
        raise _fail(f"{ERR}.MobileEquipment.NoNetwork", "not registered")
    ip4 = MODEM_STATE["ip4"]
    config = dbus.Dictionary(
        {
            "method": dbus.UInt32(METHOD_STATIC),
            "address": dbus.String(ip4["address"]),
            "prefix": dbus.UInt32(ip4["prefix"]),
            "gateway": dbus.String(ip4["gateway"]),
            "dns1": dbus.String(ip4["dns"]),
            "mtu": dbus.UInt32(ip4["mtu"]),
        },
        signature="sv",
    )
    bearer_props = {
        "Connected": dbus.Boolean(True),
        "Suspended": dbus.Boolean(False),
        "Interface": dbus.String(MODEM_STATE["port"]),
        "Ip4Config": config,
        "Ip6Config": dbus.Dictionary({"method": dbus.UInt32(0)}, signature="sv"),
        "Properties": dbus.Dictionary(props, signature="sv"),
    }
    if BEARER_PATH in mockobject.objects:
        mockobject.objects[BEARER_PATH].UpdateProperties(BEARER, bearer_props)
    else:
        mockobject.objects[MAIN_OBJ].AddObject(BEARER_PATH, BEARER, bearer_props, [])
    bearers = dbus.Array([dbus.ObjectPath(BEARER_PATH)], signature="o")
    self.UpdateProperties(MODEM, {"Bearers": bearers, "State": dbus.Int32(CONNECTED)})
    return dbus.ObjectPath(BEARER_PATH)


def _disconnect(self: Any, bearer: str) -> None:
    _stamp("Disconnect")
    if str(bearer) in mockobject.objects:
        mockobject.objects[str(bearer)].UpdateProperties(BEARER, {"Connected": dbus.Boolean(False)})
    self.UpdateProperties(MODEM, {"State": dbus.Int32(REGISTERED)})


def _send_pin(self: Any, pin: str) -> None:
    _stamp("SendPin")
    modem = mockobject.objects[MODEM_PATH]
    if str(pin) != MODEM_STATE["pin"]:
        left = max(0, int(modem.props[MODEM]["UnlockRetries"].get(LOCK_SIM_PIN, 3)) - 1)
        retries = dbus.Dictionary({dbus.UInt32(LOCK_SIM_PIN): dbus.UInt32(left)}, signature="uu")
        modem.UpdateProperties(MODEM, {"UnlockRetries": retries})
        raise _fail(f"{ERR}.MobileEquipment.IncorrectPassword", "Incorrect password")
    modem.UpdateProperties(MODEM, {"State": dbus.Int32(REGISTERED), "UnlockRequired": dbus.UInt32(LOCK_NONE)})


@dbus.service.method(MOCK_IFACE, in_signature="sa{sv}", out_signature="s")
def AddUplinkModem(self: Any, port: str, options: dict[str, Any]) -> str:
    """A registered (or PIN-locked) LTE modem whose data port is `port`. Options: imei,
    iccid, pin (the SIM's PIN), locked (bool), address, prefix, gateway, mtu, dns."""
    locked = bool(options.get("locked", False))
    MODEM_STATE.clear()
    MODEM_STATE.update(
        port=str(port),
        pin=str(options.get("pin", "1234")),
        ip4={
            "address": str(options.get("address", "10.64.0.2")),
            "prefix": int(options.get("prefix", 30)),
            "gateway": str(options.get("gateway", "10.64.0.1")),
            "mtu": int(options.get("mtu", 1428)),
            "dns": str(options.get("dns", "10.64.0.53")),
        },
    )
    modem_props = {
        "State": dbus.Int32(LOCKED if locked else REGISTERED),
        "StateFailedReason": dbus.UInt32(0),
        "Model": dbus.String("EM7455"),
        "Manufacturer": dbus.String("Sierra Wireless, Incorporated"),
        "Device": dbus.String("/sys/devices/pci0000:00/0000:00:14.0/usb1/1-3"),
        "Drivers": dbus.Array([dbus.String("qmi_wwan"), dbus.String("qcserial")], signature="s"),
        "Plugin": dbus.String("sierra"),
        "PrimaryPort": dbus.String("cdc-wdm0"),
        "Ports": dbus.Array(
            [
                dbus.Struct((dbus.String("cdc-wdm0"), dbus.UInt32(PORT_QMI))),
                dbus.Struct((dbus.String(port), dbus.UInt32(PORT_NET))),
            ],
            signature="(su)",
        ),
        "EquipmentIdentifier": dbus.String(options.get("imei", "356789012345678")),
        "UnlockRequired": dbus.UInt32(LOCK_SIM_PIN if locked else LOCK_NONE),
        "UnlockRetries": dbus.Dictionary({dbus.UInt32(LOCK_SIM_PIN): dbus.UInt32(3)}, signature="uu"),
        "AccessTechnologies": dbus.UInt32(1 << 14),  # lte
        "SignalQuality": dbus.Struct((dbus.UInt32(71), dbus.Boolean(True)), signature="(ub)"),
        "PowerState": dbus.UInt32(3),
        "Sim": dbus.ObjectPath(SIM_PATH),
        "Bearers": dbus.Array([], signature="o"),
    }
    g3pp_props = {
        "Imei": dbus.String(options.get("imei", "356789012345678")),
        "RegistrationState": dbus.UInt32(1),  # home
        "OperatorName": dbus.String("Lab Mobile"),
        "OperatorCode": dbus.String("00101"),
    }
    self.AddObject(SIM_PATH, SIM, {
        "Active": dbus.Boolean(True),
        "SimIdentifier": dbus.String(options.get("iccid", "8944500102030405067")),
        "Imsi": dbus.String("001010123456789"),
    }, [("SendPin", "s", "", _send_pin)])  # fmt: skip
    self.AddObject(MODEM_PATH, MODEM, modem_props, [])
    modem = mockobject.objects[MODEM_PATH]
    modem.AddProperties(MODEM_3GPP, g3pp_props)
    modem.AddMethods(SIMPLE, [("Connect", "a{sv}", "o", _connect), ("Disconnect", "o", "", _disconnect)])
    self.EmitSignal(
        OBJECT_MANAGER_IFACE, "InterfacesAdded", "oa{sa{sv}}",
        [dbus.ObjectPath(MODEM_PATH), {MODEM: modem_props, MODEM_3GPP: g3pp_props}],
    )  # fmt: skip
    return MODEM_PATH


@dbus.service.method(MOCK_IFACE, in_signature="", out_signature="")
def DropBearer(self: Any) -> None:
    """The network tears the bearer down: Connected false, the modem back to registered."""
    mockobject.objects[BEARER_PATH].UpdateProperties(BEARER, {"Connected": dbus.Boolean(False)})
    mockobject.objects[MODEM_PATH].UpdateProperties(MODEM, {"State": dbus.Int32(REGISTERED)})


@dbus.service.method(MOCK_IFACE, in_signature="ui", out_signature="")
def SetRegistration(self: Any, registration: int, state: int) -> None:
    """The network comes or goes: the 3GPP RegistrationState (0 idle, 1 home, 2 searching,
    3 denied, 5 roaming) and the modem State (8 registered, 11 connected, below: not)."""
    mockobject.objects[MODEM_PATH].UpdateProperties(
        MODEM_3GPP, {"RegistrationState": dbus.UInt32(registration)}
    )
    mockobject.objects[MODEM_PATH].UpdateProperties(MODEM, {"State": dbus.Int32(state)})


@dbus.service.method(MOCK_IFACE, in_signature="", out_signature="")
def RemoveUplinkModem(self: Any) -> None:
    """The modem is unplugged: InterfacesRemoved, then its objects go."""
    self.EmitSignal(
        OBJECT_MANAGER_IFACE, "InterfacesRemoved", "oas",
        [dbus.ObjectPath(MODEM_PATH), dbus.Array([MODEM, MODEM_3GPP, SIMPLE], signature="s")],
    )  # fmt: skip
    for path in (BEARER_PATH, MODEM_PATH, SIM_PATH):
        if path in mockobject.objects:
            self.RemoveObject(path)


@dbus.service.method(MOCK_IFACE, in_signature="ss", out_signature="")
def SetKnob(self: Any, name: str, value: str) -> None:
    KNOBS[str(name)] = str(value)


@dbus.service.method(MOCK_IFACE, in_signature="s", out_signature="ad")
def CallTimes(self: Any, name: str) -> list[float]:
    """Wall-clock times of each call of `name` (Connect, SendPin), to the microsecond."""
    return TIMES.get(str(name), [])
