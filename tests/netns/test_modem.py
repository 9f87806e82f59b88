"""Modems through ModemManager: uplinkd drives a modem's bearer and routes by it.

ModemManager cannot run without a modem, so it is stood in for by python-dbusmock on a
private, system-like D-Bus (a real dbus-daemon started by the test; the machine's system bus
is never used; harness/modemmanager.py). Everything else is real: the controller (pointed at
that bus with DBUS_SYSTEM_BUS_ADDRESS), and a raw-IP-like data interface `wwan0` (a veth with
ARP off, like a QMI/MBIM modem's) in the router namespace towards an ISP namespace.

Assertions read the kernel back (`ip -json`, `nft -j`, `conntrack`), look at what packets
do, and at what the stand-in was asked (dbusmock records each call); timing is measured in
bench/modem.py, not asserted here (except that reconnects wait at least the backoff).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon, with_control

from harness.readback import conntrack_marks, group_members, ip_json, nexthops, nhid, wait_until

dbus = pytest.importorskip("dbus", reason="needs dbus-python (python-dbusmock's dependency)")
pytest.importorskip("dbusmock", reason="needs python-dbusmock")

from harness.modemmanager import ModemManagerStandIn  # noqa: E402 - after the skip

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("dbus-daemon") is None or shutil.which("conntrack") is None,
        reason="needs root, dbus-daemon and conntrack",
    ),
    pytest.mark.timeout(120),
]

TABLE, BALANCE = 110, 200
MARK = (TABLE % 256) << 8
PORT = "wwan0"
WAITING = "waiting for the modem's bearer"


def modem_config(**address: Any) -> dict[str, Any]:
    return {
        "uplinks": {
            "lte": {"match": {"name": PORT}, "address": {"mode": "modem", **address}, "table": TABLE}
        },
        "balance": {"table": BALANCE},
    }


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        lab.add_client()
        isp = lab.add_isp("lte", ifname=PORT, address="none")
        # raw IP: no ARP on either end, like a QMI/MBIM data interface. A NOARP Ethernet device
        # sends to its own MAC, so the ISP's end takes the same one to receive what it sends.
        lab.run("router", ["ip", "link", "set", "dev", PORT, "arp", "off"])
        mac = lab.link("router", PORT)["address"]
        lab.run(isp.netns, ["ip", "link", "set", "dev", "down", "arp", "off", "address", mac])
        yield lab


@pytest.fixture
def mm(tmp_path: Path) -> Iterator[ModemManagerStandIn]:
    with ModemManagerStandIn(tmp_path) as mm:
        yield mm


@pytest.fixture
def start(
    lab: Lab, mm: ModemManagerStandIn, tmp_path: Path
) -> Iterator[Callable[[dict[str, Any]], LabDaemon]]:
    started: list[LabDaemon] = []

    def start(cfg: dict[str, Any]) -> LabDaemon:
        c = LabDaemon(lab.router, cfg, workdir=tmp_path, env=mm.env)
        started.append(c)
        return c.start()

    try:
        yield start
    finally:
        for c in started:
            c.stop()


def bearer_options(lab: Lab) -> dict[str, Any]:
    a = lab.isp("lte").addresses
    return {"address": str(a.router4.ip), "prefix": a.router4.network.prefixlen,
            "gateway": str(a.gateway4.ip), "mtu": 1428}  # fmt: skip


def modem_json(c: LabDaemon) -> dict[str, Any]:
    return c.uplink("lte").get("modem") or {}


def wait_modem(c: LabDaemon, key: str, value: Any, timeout: float = 15.0) -> dict[str, Any]:
    return c.wait_for(
        lambda: modem_json(c) if modem_json(c).get(key) == value else None,
        timeout=timeout,
        what=f"status modem.{key} == {value!r}",
    )


def table_routes(lab: Lab, table: int, family: str = "-4") -> list[dict[str, Any]]:
    done = lab.run("router", ["ip", "-json", family, "route", "show", "table", str(table)], check=False)
    return list(json.loads(done.stdout)) if done.returncode == 0 and done.stdout.strip() else []


def ours(mark: int) -> bool:
    return mark & 0xFF00 == MARK


def leftovers(lab: Lab) -> list[str]:
    """Whatever the kernel still holds of the modem uplink, read back independently."""
    left: list[str] = []
    for family in ("-4", "-6"):
        left += [f"rule {r}" for r in ip_json(lab.router, family, "rule", "show")
                 if str(r.get("table")) == str(TABLE)]  # fmt: skip
        left += [f"route {r}" for r in table_routes(lab, TABLE, family)]
    ids = (nhid(TABLE), nhid(TABLE, True))
    left += [f"nexthop {nh}" for nh in nexthops(lab.router).values() if nh["id"] in ids]
    nft = lab.run("router", ["nft", "-j", "list", "table", "inet", "uplinkd"], check=False).stdout
    if PORT in nft:
        left.append(f"nft table names {PORT}")
    left += [f"conntrack mark {m:#x}" for m in conntrack_marks(lab.router) if ours(m)]
    return left


# --- 1. a modem registers -------------------------------------------------------------------------


def test_modem_connects_with_exactly_the_configured_properties_and_carries_the_lan(
    lab: Lab, mm: ModemManagerStandIn, start: Any, tmp_path: Path
) -> None:
    (tmp_path / "apn-password").write_text("s3cret\n")
    c = start(modem_config(apn="internet", ip_type="ipv4", user="lab",
                           password_file=str(tmp_path / "apn-password"),
                           allowed_auth=["pap", "chap"], allow_roaming=False))  # fmt: skip
    assert c.uplink("lte")["reason"] == WAITING, c.uplink("lte")
    mm.add_modem(PORT, **bearer_options(lab))
    up = c.wait_state("lte", "up")

    calls = mm.connect_calls()
    assert len(calls) == 1
    (props,) = calls
    assert {str(k): (type(v).__name__, mm.plain(v)) for k, v in props.items()} == {
        "apn": ("String", "internet"),
        "ip-type": ("UInt32", 1),  # MM_BEARER_IP_FAMILY_IPV4
        "user": ("String", "lab"),
        "password": ("String", "s3cret"),
        "allowed-auth": ("UInt32", 0b110),  # PAP | CHAP
        "allow-roaming": ("Boolean", False),
    }
    # the bearer's address and MTU on the interface, `default dev` in its own table only
    (link,) = ip_json(lab.router, "address", "show", "dev", PORT)
    assert link["mtu"] == 1428
    assert [(a["local"], a["prefixlen"]) for a in link["addr_info"] if a["family"] == "inet"] == [
        (str(lab.isp("lte").addresses.router4.ip), 24)
    ]
    (default,) = [r for r in table_routes(lab, TABLE) if r["dst"] == "default"]
    assert default["dev"] == PORT and "gateway" not in default
    assert not [r for r in table_routes(lab, 254) if r["dst"] == "default" and r.get("dev") == PORT]
    assert up["addresses"] == [str(lab.isp("lte").addresses.router4)] and up["in_group"]
    assert group_members(lab.router, {TABLE: "lte"}) == {"lte": 1}
    # status names what ModemManager says
    m = modem_json(c)
    assert (m["state"], m["signal_pct"], m["access_technology"], m["operator"], m["registration"]) == (
        "connected", 71, "lte", "Lab Mobile", "home"
    )
    assert m["problem"] is None and m["imei"] == "356789012345678"
    # LAN traffic leaves through the modem
    report = lab.flows(tcp=5, udp=5, duration=1.0)
    assert report.by_uplink() == {"lte": 10} and report.lost() == 0


def test_an_unknown_connect_key_is_refused_by_the_stand_in(mm: ModemManagerStandIn, lab: Lab) -> None:
    """The stand-in is as strict as ModemManager: what case 1 proves is not its leniency."""
    mm.add_modem(PORT, **bearer_options(lab))
    bus = dbus.bus.BusConnection(mm.address)
    try:
        modem = bus.get_object("org.freedesktop.ModemManager1", "/org/freedesktop/ModemManager1/Modems/0")
        simple = dbus.Interface(modem, "org.freedesktop.ModemManager1.Modem.Simple")
        with pytest.raises(dbus.exceptions.DBusException, match="Unexpected property 'roaming'"):
            simple.Connect(dbus.Dictionary({"roaming": dbus.Boolean(True)}, signature="sv"))
        with pytest.raises(dbus.exceptions.DBusException, match="'ip-type' is a String"):
            simple.Connect(dbus.Dictionary({"ip-type": dbus.String("ipv4")}, signature="sv"))
    finally:
        bus.close()


def test_restart_with_the_modem_connected_makes_no_kernel_writes(
    lab: Lab, mm: ModemManagerStandIn, start: Any
) -> None:
    """Fail static: the bearer a run recorded is adopted at start and confirmed by the watcher."""
    c = start(modem_config(apn="internet"))
    mm.add_modem(PORT, **bearer_options(lab))
    before = c.wait_state("lte", "up")

    def kernel() -> tuple[Any, ...]:
        addresses = ip_json(lab.router, "address", "show", "dev", PORT)
        return addresses, table_routes(lab, TABLE), nexthops(lab.router)

    held = kernel()
    assert c.stop() == 0
    c.start()
    wait_modem(c, "state", "connected")
    time.sleep(0.3)  # the watcher's first look is done; anything it changed would be written now
    assert c.status()["writes"] == 0
    assert c.uplink("lte")["addresses"] == before["addresses"] and c.uplink("lte")["state"] == "up"
    assert kernel() == held
    assert len(mm.connect_calls()) == 1  # the connected bearer was used, not connected again


def test_a_reload_with_another_apn_reconnects_with_it(lab: Lab, mm: ModemManagerStandIn, start: Any) -> None:
    c = start(modem_config(apn="internet"))
    mm.add_modem(PORT, **bearer_options(lab))
    c.wait_state("lte", "up")
    c.write_config(with_control(modem_config(apn="business.example"), socket=str(c.socket),
                                state_dir=str(c.state_dir)))  # fmt: skip
    c.signal(signal.SIGHUP)
    wait_until(lambda: len(mm.connect_calls()) == 2, timeout=15, what="a connect with the new APN")
    assert [mm.plain(props["apn"]) for props in mm.connect_calls()] == ["internet", "business.example"]
    assert mm.times("Disconnect"), "the old bearer was not disconnected first"
    c.wait_state("lte", "up")
    time.sleep(0.5)
    assert len(mm.connect_calls()) == 2  # once, not a loop


# --- 2. the bearer disconnects --------------------------------------------------------------------


def test_bearer_loss_takes_the_uplink_down_flushes_its_connections_and_reconnects_with_backoff(
    lab: Lab, mm: ModemManagerStandIn, start: Any
) -> None:
    c = start(modem_config(apn="internet"))
    mm.add_modem(PORT, **bearer_options(lab))
    c.wait_state("lte", "up")
    flows = lab.start_flows(tcp=10, udp=10, interval_ms=20, duration=6.0)
    assert any(ours(m) for m in conntrack_marks(lab.router)), "no connection went through lte"

    mm.knob("connect_error", "org.freedesktop.ModemManager1.Error.Core.Failed")  # reconnects fail
    dropped = time.time()
    mm.drop_bearer()
    down = c.wait_state("lte", "present")
    assert down["reason"] == WAITING and not down["in_group"]
    wait_until(lambda: not any(ours(m) for m in conntrack_marks(lab.router)), timeout=5,
               what="lte's connections flushed by its mark")  # fmt: skip
    assert table_routes(lab, TABLE) == []
    assert group_members(lab.router, {TABLE: "lte"}) == {}
    flows.result()

    # reconnects: 1 s after the loss, then 2 s, then 4 s (each at least that long after the last)
    wait_until(lambda: len(mm.times("Connect")) >= 4, timeout=20, what="three reconnect attempts")
    attempts = [dropped, *mm.times("Connect")[1:4]]
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert [g >= want * 0.95 for g, want in zip(gaps, (1, 2, 4), strict=True)] == [True] * 3, gaps
    assert modem_json(c)["problem"] == "connect-failed"

    mm.knob("connect_error", "")  # the network is back
    c.wait_state("lte", "up", timeout=20)
    assert default_dev(lab) == PORT


@pytest.mark.parametrize(
    ("registration", "state"),
    [(2, 11), (3, 11), (0, 7)],  # searching, denied (State still connected); idle with State searching
    ids=["searching", "denied", "state-below-registered"],
)
def test_leaving_registration_takes_the_uplink_out_at_once_and_it_returns_with_it(
    lab: Lab, mm: ModemManagerStandIn, start: Any, registration: int, state: int
) -> None:
    c = start(modem_config(apn="internet"))
    mm.add_modem(PORT, **bearer_options(lab))
    c.wait_state("lte", "up")
    flows = lab.start_flows(tcp=5, udp=5, interval_ms=20, duration=4.0)
    assert any(ours(m) for m in conntrack_marks(lab.router)), "no connection went through lte"

    mm.set_registration(registration, state)  # the bearer still says connected
    down = c.wait_state("lte", "present")
    assert not down["in_group"]
    assert group_members(lab.router, {TABLE: "lte"}) == {}
    assert default_dev(lab) is None
    wait_until(lambda: not any(ours(m) for m in conntrack_marks(lab.router)), timeout=5,
               what="lte's connections flushed by its mark")  # fmt: skip
    flows.result()

    mm.set_registration(1, 11)  # home again, the bearer connected
    up = c.wait_state("lte", "up", timeout=20)
    assert up["in_group"] and default_dev(lab) == PORT
    assert group_members(lab.router, {TABLE: "lte"}) == {"lte": 1}


def default_dev(lab: Lab) -> str | None:
    return next((r.get("dev") for r in table_routes(lab, TABLE) if r["dst"] == "default"), None)


# --- 3. the modem is removed ----------------------------------------------------------------------


def test_removed_modem_leaves_nothing_behind(lab: Lab, mm: ModemManagerStandIn, start: Any) -> None:
    c = start(modem_config(apn="internet"))
    mm.add_modem(PORT, **bearer_options(lab))
    c.wait_state("lte", "up")
    flows = lab.start_flows(tcp=5, udp=5, interval_ms=20, duration=3.0)
    assert any(ours(m) for m in conntrack_marks(lab.router)), "no connection went through lte"
    assert PORT in lab.run("router", ["nft", "list", "table", "inet", "uplinkd"]).stdout

    mm.remove_modem()  # ModemManager says it is gone (its interface goes with it right after)
    c.wait_state("lte", "present")
    lab.unplug(PORT)
    c.wait_state("lte", "absent")
    wait_until(lambda: not leftovers(lab), timeout=5, what="lte's kernel state gone")
    assert leftovers(lab) == []
    assert c.uplink("lte")["addresses"] == [] and "modem" in c.uplink("lte")
    flows.result()


# --- 4. a wrong PIN -------------------------------------------------------------------------------


def test_a_wrong_pin_is_sent_once_and_status_says_what_to_do(
    lab: Lab, mm: ModemManagerStandIn, start: Any, tmp_path: Path
) -> None:
    pin = tmp_path / "sim-pin"
    pin.write_text("0000\n")
    cfg = modem_config(apn="internet", pin_file=str(pin))
    c = start(cfg)
    mm.add_modem(PORT, locked=True, pin="1234", **bearer_options(lab))
    m = wait_modem(c, "problem", "sim-pin-wrong")
    assert str(pin) in m["fix"] and "will not send it again" in m["fix"] and "2 attempts left" in m["fix"]
    assert c.uplink("lte")["state"] == "present"

    # neither more signals nor a restart sends it again
    c.stop()
    c = start(cfg)
    wait_modem(c, "problem", "sim-pin-wrong")
    time.sleep(1.5)  # a second attempt would be immediate; this gives it time to (wrongly) happen
    assert mm.pin_calls() == ["0000"]
    assert mm.connect_calls() == []

    # the operator fixes the file: the new PIN is sent once, and the modem connects
    pin.write_text("1234\n")
    c.wait_state("lte", "up", timeout=30)
    assert mm.pin_calls() == ["0000", "1234"]


# --- 5. ModemManager refuses uplinkd --------------------------------------------------------------


def test_an_authorization_refusal_shows_in_status_with_the_polkit_fix(
    lab: Lab, mm: ModemManagerStandIn, start: Any
) -> None:
    mm.knob("connect_error", "org.freedesktop.ModemManager1.Error.Core.Unauthorized")
    mm.knob("connect_text", "Not authorized to perform operation 'Connect'")
    c = start(modem_config(apn="internet"))
    mm.add_modem(PORT, **bearer_options(lab))
    m = wait_modem(c, "problem", "not-authorized")
    assert "polkit" in m["fix"] and "uplinkd" in m["fix"] and "Not authorized" in m["fix"]
    assert c.uplink("lte")["state"] == "present" and table_routes(lab, TABLE) == []
    text = c.ctl("status").stdout
    assert "not-authorized" in text and "polkit" in text
