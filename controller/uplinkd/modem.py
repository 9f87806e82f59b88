"""Modems driven through ModemManager, for uplinks in `modem` mode: one watcher per present
uplink, over the system D-Bus (dbus-fast: asyncio-native, typed, packaged in Debian and
nixpkgs; no GLib main loop to run beside ours).

The watcher never touches the kernel. Like a DHCP client's lease, a connected bearer's IP
configuration is a fact: it is recorded (`Runtime.bearers`) and wakes the loop, and the
planner puts the address and MTU on the data interface, `default dev X` (raw IP) or via the
gateway into the uplink's own table — never into main — and accept_ra = 2 for IPv6 by RA
(the `link-tuning` kind; plan/modems.py).

Any signal from ModemManager means "look again" (like the netlink listener): a look reads the
modems (ObjectManager), picks the one whose ports include the uplink's interface (and, if
configured, whose IMEI and SIM ICCID match), and does at most one thing:

- SIM locked with a PIN: send the PIN from `pin_file` once. A refusal is remembered in the
  state directory (with a digest of the SIM and the PIN), so neither a restart nor a retry
  sends the same wrong PIN again and pushes the SIM towards its PUK;
- no connected bearer: `Simple.Connect` with exactly the configured properties, at once the
  first time and then with backoff (1 s doubling to 60 s; back to 1 s after a minute up);
- a connected bearer: record its IP configuration.

A bearer that disconnects, a modem that leaves registration or is removed: the fact is
dropped at once, so the pass that follows takes the uplink down without waiting for probes
(and the failover path flushes its connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from uplinkd.config import ModemAddress
from uplinkd.model import Bearer
from uplinkd.modemmanager import (
    AUTH_ERRORS,
    BEARER,
    DBUS,
    DBUS_PATH,
    LOCK_SIM_PIN,
    LOCK_SIM_PUK,
    MM,
    MM_PATH,
    MODEM,
    MODEM_3GPP,
    OBJECT_MANAGER,
    POLKIT_FIX,
    PROPS,
    REGISTERED_3GPP,
    REGISTRATION,
    SIM,
    SIMPLE,
    STATE_LOCKED,
    STATE_REGISTERED,
    STATES,
    WRONG_PIN,
    access_technology,
    bearer_ip,
    bearer_json,
    pin_digest,
    stored_bearer,
    unwrap,
)
from uplinkd.plan import Intent
from uplinkd.runtime import Runtime
from uplinkd.workers import WorkerKind

log = logging.getLogger("uplinkd.modem")

RECONNECT_MIN, RECONNECT_MAX = 1.0, 60.0
CALL_TIMEOUT, CONNECT_TIMEOUT = 30.0, 180.0  # registering and connecting can take a while
PIN_WRONG_RECHECK = 10.0  # how often a refused PIN's file is read again for a corrected PIN
WATCHED = frozenset({PROPS, OBJECT_MANAGER, DBUS})  # signals that mean "look again"


class Problem(enum.StrEnum):
    """What stops a modem uplink, as `status` names it (each with its fix)."""

    NO_BUS = "dbus-unavailable"
    NO_MODEMMANAGER = "modemmanager-not-running"
    NO_MODEM = "no-modem"
    NOT_AUTHORIZED = "not-authorized"
    SIM_PIN_REQUIRED = "sim-pin-required"
    SIM_PIN_WRONG = "sim-pin-wrong"
    SIM_PUK = "sim-puk-required"
    CONNECT_FAILED = "connect-failed"
    UNSUPPORTED = "unsupported-bearer"


@dataclass(frozen=True)
class ModemReport:
    """What `status` shows about an uplink's modem."""

    state: str = "looking"  # ModemManager's modem state, or a Problem
    problem: str | None = None
    fix: str | None = None
    path: str | None = None
    imei: str | None = None
    iccid: str | None = None
    signal_pct: int | None = None
    access_technology: str | None = None
    operator: str | None = None
    registration: str | None = None
    connect_attempts: int = 0
    next_attempt_in_s: float | None = None
    dns: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


class DBusCallError(Exception):
    def __init__(self, name: str, text: str) -> None:
        super().__init__(f"{name}: {text}")
        self.name = name
        self.text = text


@dataclass
class ModemWatcher:
    """Drives the modem of one uplink whose data interface is `dev`."""

    name: str
    dev: str
    address: ModemAddress
    refused_file: Path  # digests of (SIM, PIN) pairs the SIM refused
    on_bearer: Callable[[str, Bearer | None, str], None]
    report: ModemReport = field(default_factory=ModemReport)
    bus_address: str | None = None  # None: the system bus (DBUS_SYSTEM_BUS_ADDRESS if set)
    _bus: MessageBus | None = None
    _poke: asyncio.Event = field(default_factory=asyncio.Event)
    _sent_pin: set[str] = field(default_factory=set)
    _delay: float = RECONNECT_MIN
    _next: float = 0.0  # monotonic time of the next connect attempt
    _up_since: float | None = None
    _checked: bool = False  # a connected bearer's settings were compared with ours
    _attempt_delay: float | None = None  # `_delay` before the last connect attempt doubled it

    async def run(self) -> None:
        try:
            bus = await MessageBus(bus_address=self.bus_address, bus_type=BusType.SYSTEM).connect()
        except (OSError, ValueError, Exception) as e:
            self._set(Problem.NO_BUS, f"cannot reach the system D-Bus ({e}); is dbus running?")
            raise
        self._bus = bus
        try:
            bus.add_message_handler(self._on_message)
            rules = [f"type='signal',sender='{MM}',interface='{i}'" for i in (PROPS, OBJECT_MANAGER)]
            rules.append(f"type='signal',interface='{DBUS}',member='NameOwnerChanged',arg0='{MM}'")
            for rule in rules:
                await self._call(DBUS_PATH, DBUS, "AddMatch", dest=DBUS, sig="s", body=[rule])
            while True:
                self._poke.clear()
                wait = await self._look()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._poke.wait(), wait)
        finally:
            self._bus = None
            bus.disconnect()

    def _on_message(self, msg: Message) -> None:
        if msg.message_type == MessageType.SIGNAL and msg.interface in WATCHED:
            self._poke.set()

    async def _call(
        self,
        path: str,
        iface: str,
        member: str,
        *,
        dest: str = MM,
        sig: str = "",
        body: list[Any] | None = None,
        timeout: float = CALL_TIMEOUT,
    ) -> list[Any]:
        assert self._bus is not None
        msg = Message(
            destination=dest, path=path, interface=iface, member=member, signature=sig, body=body or []
        )
        try:
            reply = await asyncio.wait_for(self._bus.call(msg), timeout)
        except TimeoutError:
            raise DBusCallError("timeout", f"{member} got no answer in {timeout:g} s") from None
        if reply.message_type == MessageType.ERROR:
            raise DBusCallError(reply.error_name or "?", str(reply.body[0]) if reply.body else "")
        return list(reply.body)

    async def _props(self, path: str, iface: str) -> dict[str, Any]:
        return dict((await self._call(path, PROPS, "GetAll", sig="s", body=[iface]))[0])

    def _set(self, state: str, fix: str | None = None, **fields: Any) -> None:
        problem = state if state in Problem.__members__.values() else None
        report = replace(self.report, state=state, problem=problem, fix=fix, **fields)
        if report != self.report:
            if problem is not None and problem != self.report.problem:
                log.warning("%s: modem %s: %s", self.name, problem, fix)
            self.report = report

    def _bearer(self, bearer: Bearer | None, why: str) -> None:
        now = time.monotonic()
        if bearer is None and self._up_since is not None:
            # reconnect after `_delay`, doubling; a bearer that stayed up a minute starts anew
            if now - self._up_since >= RECONNECT_MAX:
                self._delay = RECONNECT_MIN
            self._up_since = None
            self._backoff()
        elif bearer is not None and self._up_since is None:
            self._up_since = now
            if self._attempt_delay is not None:  # the attempt held: its doubling is undone
                self._delay, self._attempt_delay = self._attempt_delay, None
        self.on_bearer(self.name, bearer, why)

    async def _look(self) -> float | None:
        """Look at ModemManager once and do what follows; how long to wait before looking
        again unprompted (None: until a signal)."""
        try:
            return await self._step()
        except DBusCallError as e:
            self._bearer(None, e.name)
            if e.name in AUTH_ERRORS:
                self._set(Problem.NOT_AUTHORIZED, f"{POLKIT_FIX} ({e.text})")
                return self._backoff()
            if e.name in (f"{DBUS}.Error.ServiceUnknown", f"{DBUS}.Error.NameHasNoOwner"):
                self._set(Problem.NO_MODEMMANAGER, "start ModemManager (networking.modemmanager.enable)")
                return None  # its NameOwnerChanged wakes us
            if e.name == f"{DBUS}.Error.UnknownObject":
                return 0.1  # the modem went while we looked: look again
            if e.name == "timeout":
                self._set(Problem.CONNECT_FAILED, f"ModemManager did not answer: {e.text}; check mmcli -m 0")
                return self._backoff()
            raise

    def _backoff(self) -> float:
        wait = self._delay
        self._next = time.monotonic() + wait
        self._delay = min(self._delay * 2, RECONNECT_MAX)
        self.report = replace(self.report, next_attempt_in_s=wait)
        return wait

    async def _find(self) -> tuple[str, dict[str, Any], dict[str, Any], str | None] | None:
        """The modem whose ports include our interface (and whose IMEI/ICCID match):
        path, Modem properties, Modem3gpp properties, ICCID."""
        (objects,) = await self._call(MM_PATH, OBJECT_MANAGER, "GetManagedObjects")
        for path, ifaces in sorted(objects.items()):
            modem = ifaces.get(MODEM)
            if modem is None or self.dev not in {p[0] for p in unwrap(modem, "Ports", [])}:
                continue
            if self.address.imei is not None and unwrap(modem, "EquipmentIdentifier") != self.address.imei:
                continue
            sim_path = unwrap(modem, "Sim", "/")
            iccid = None
            if sim_path != "/":
                iccid = unwrap(await self._props(sim_path, SIM), "SimIdentifier") or None
            if self.address.iccid is not None and iccid != self.address.iccid:
                continue
            return path, modem, ifaces.get(MODEM_3GPP, {}), iccid
        return None

    async def _step(self) -> float | None:
        found = await self._find()
        if found is None:
            self._bearer(None, "no modem")
            self._set(Problem.NO_MODEM, f"no ModemManager modem has the port {self.dev} "
                      "(mmcli -L lists them; check imei/iccid in the config)")  # fmt: skip
            return None
        path, modem, g3pp, iccid = found
        state = int(unwrap(modem, "State", 0))
        quality = unwrap(modem, "SignalQuality", (None, False))
        registration = unwrap(g3pp, "RegistrationState")
        self._set(
            STATES.get(state, str(state)),
            path=path,
            imei=unwrap(modem, "EquipmentIdentifier") or unwrap(g3pp, "Imei"),
            iccid=iccid,
            signal_pct=quality[0],
            access_technology=access_technology(int(unwrap(modem, "AccessTechnologies", 0))),
            operator=unwrap(g3pp, "OperatorName") or None,
            registration=REGISTRATION.get(registration) if registration is not None else None,
        )
        if state == STATE_LOCKED or unwrap(modem, "UnlockRequired", 0) in (LOCK_SIM_PIN, LOCK_SIM_PUK):
            self._bearer(None, "SIM locked")
            return await self._unlock(path, modem, iccid or path)
        bearer = None
        for bearer_path in unwrap(modem, "Bearers", []):
            props = await self._props(bearer_path, BEARER)
            if unwrap(props, "Connected", False) and unwrap(props, "Interface") == self.dev:
                if not self._checked and self._stale(unwrap(props, "Properties", {})):
                    # connected with other settings (before a reload): connect anew, once
                    log.info("%s: bearer %s has other settings; reconnecting", self.name, bearer_path)
                    self._checked = True
                    await self._call(path, SIMPLE, "Disconnect", sig="o", body=[bearer_path])
                    return 0.0
                bearer = self._fact(props)
                break
        self._checked = True
        # registered: the modem's State, and its 3GPP registration where it has one (a modem
        # can lose the network (idle, searching, denied) before its State says so)
        in_3gpp = registration is None or int(registration) in REGISTERED_3GPP
        registered = state >= STATE_REGISTERED and in_3gpp
        if bearer is not None and registered:
            self._bearer(bearer, "bearer connected")
            self.report = replace(self.report, next_attempt_in_s=None, dns=_dns(bearer))
            return None
        self._bearer(None, "bearer disconnected" if bearer is None else "modem not registered")
        now = time.monotonic()
        if now < self._next:
            self.report = replace(self.report, next_attempt_in_s=round(self._next - now, 3))
            return self._next - now
        return await self._connect(path)

    def _stale(self, connected_with: Mapping[str, Any]) -> bool:
        """Whether a bearer connected with `connected_with` differs from what is configured
        (the password is not compared: ModemManager does not show it)."""
        wanted = self.address.connect_properties(None)
        return any(unwrap(connected_with, key) != value for key, (_, value) in wanted.items())

    def _fact(self, props: Mapping[str, Any]) -> Bearer | None:
        ip4, _ = bearer_ip(unwrap(props, "Ip4Config", {}), v6=False)
        ip6, ra6 = bearer_ip(unwrap(props, "Ip6Config", {}), v6=True)
        if ip4 is None and ip6 is None and not ra6:
            self._set(Problem.UNSUPPORTED, "the bearer gives no static or DHCP address (PPP?); "
                      "use address.mode = external with a ppp daemon")  # fmt: skip
            return None
        return Bearer(self.dev, ip4, ip6, ra6)

    async def _connect(self, path: str) -> float | None:
        password = None
        if self.address.password_file is not None:
            try:
                password = self.address.password_file.read_text().strip()
            except OSError as e:
                self._set(Problem.CONNECT_FAILED, f"cannot read password_file ({e.strerror}); fix its path")
                return self._backoff()
        props = {k: Variant(sig, v) for k, (sig, v) in self.address.connect_properties(password).items()}
        self.report = replace(self.report, connect_attempts=self.report.connect_attempts + 1)
        self._attempt_delay = self._delay
        wait = self._backoff()  # the next attempt, should this one not hold
        log.info("%s: connecting modem %s (apn %s)", self.name, path, self.address.apn or "default")
        try:
            await self._call(path, SIMPLE, "Connect", sig="a{sv}", body=[props], timeout=CONNECT_TIMEOUT)
        except DBusCallError as e:
            if e.name in AUTH_ERRORS:
                raise
            self._set(Problem.CONNECT_FAILED, f"{e.text or e.name}; check apn, user, allowed_auth "
                      f"(mmcli -m {path.rsplit('/', 1)[-1]} shows the modem)")  # fmt: skip
            return wait
        return 0.0  # look at the new bearer now

    async def _unlock(self, path: str, modem: Mapping[str, Any], sim: str) -> float | None:
        sim_path = unwrap(modem, "Sim", "/")
        retries = unwrap(modem, "UnlockRetries", {}).get(LOCK_SIM_PIN)
        left = f" ({retries} attempts left)" if retries is not None else ""
        if unwrap(modem, "UnlockRequired", 0) == LOCK_SIM_PUK:
            self._set(Problem.SIM_PUK, "the SIM wants its PUK; unlock it by hand: mmcli -i "
                      f"{sim_path} --puk=<PUK> --pin=<new PIN>; put the new PIN in pin_file")  # fmt: skip
            return None
        if self.address.pin_file is None:
            self._set(Problem.SIM_PIN_REQUIRED, "the SIM is locked; set address.pin_file to its PIN's file")
            return None
        try:
            pin = self.address.pin_file.read_text().strip()
        except OSError as e:
            self._set(Problem.SIM_PIN_REQUIRED, f"cannot read pin_file ({e.strerror}); fix its path")
            return PIN_WRONG_RECHECK
        digest = pin_digest(sim, pin)
        if digest in self._refused() or digest in self._sent_pin:
            self._set(Problem.SIM_PIN_WRONG, f"the SIM refused the PIN in {self.address.pin_file}{left}; "
                      "uplinkd will not send it again. Check the PIN (mmcli -i "
                      f"{sim_path} --pin=<PIN> by hand uses one attempt), put the right one in "
                      "pin_file: uplinkd sends a changed PIN once")  # fmt: skip
            return PIN_WRONG_RECHECK
        self._sent_pin.add(digest)  # once, even if the answer is lost
        log.info("%s: sending the SIM PIN from %s", self.name, self.address.pin_file)
        try:
            await self._call(sim_path, SIM, "SendPin", sig="s", body=[pin])
        except DBusCallError as e:
            if e.name in AUTH_ERRORS:
                self._sent_pin.discard(digest)  # not checked by the SIM: may be sent again
                raise
            if e.name == WRONG_PIN:
                self._remember_refused(digest)
                # the SIM counted the attempt: say how many are left now, not before
                modem = await self._props(path, MODEM)
            return await self._unlock(path, modem, sim)
        return 0.0

    def _refused(self) -> set[str]:
        try:
            return set(self.refused_file.read_text().split())
        except OSError:
            return set()

    def _remember_refused(self, digest: str) -> None:
        with contextlib.suppress(OSError):
            self.refused_file.parent.mkdir(parents=True, exist_ok=True)
            with self.refused_file.open("a") as f:
                f.write(digest + "\n")


def _dns(bearer: Bearer) -> tuple[str, ...]:
    return tuple(str(d) for ip in (bearer.ip4, bearer.ip6) if ip is not None for d in ip.dns)


@dataclass(frozen=True)
class ModemSpec:
    dev: str
    address: ModemAddress


class ModemWorkers(WorkerKind[ModemSpec, ModemWatcher]):
    """One watcher per present `modem` uplink (its data interface exists); it stops, and
    the bearer fact goes, when the interface goes away."""

    name = "modem"

    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt)
        for name, uplink in rt.config.uplinks.items():
            if uplink.address.mode == "modem" and (bearer := stored_bearer(self._file(name))):
                rt.bearers[name] = bearer  # adopt what the last run had: a restart changes nothing

    def _file(self, name: str) -> Path:
        return self.rt.config.control.state_dir / f"{name}.bearer.json"

    def wanted(self, intent: Intent, running: Mapping[str, ModemSpec]) -> dict[str, ModemSpec]:
        wanted: dict[str, ModemSpec] = {}
        for s in intent.uplinks:
            addr = self.rt.config.uplinks[s.name].address
            if not isinstance(addr, ModemAddress):
                continue
            if s.dev is None:
                self._forget(s.name)  # no data interface: no bearer of it is in use
            else:
                wanted[s.name] = ModemSpec(s.dev, addr)
        return wanted

    def make(self, name: str, spec: ModemSpec) -> ModemWatcher:
        log.info("%s: watching ModemManager for the modem of %s", name, spec.dev)
        return ModemWatcher(
            name=name,
            dev=spec.dev,
            address=spec.address,
            refused_file=self.rt.config.control.state_dir / f"{name}.pin-refused",
            on_bearer=self._bearer,
        )

    def stopped(self, name: str) -> None:
        """A watcher restarted with new settings (a reload) leaves the bearer in use until the
        new one has looked; one whose uplink is no longer a modem uplink takes it along."""
        uplink = self.rt.config.uplinks.get(name)
        if uplink is None or uplink.address.mode != "modem":
            self._forget(name)

    def _forget(self, name: str) -> None:
        self._file(name).unlink(missing_ok=True)
        if self.rt.bearers.pop(name, None) is not None:
            self.rt.wake.set()

    def _bearer(self, name: str, bearer: Bearer | None, why: str) -> None:
        if self.rt.bearers.get(name) == bearer:
            return
        if bearer is None:
            self.rt.bearers.pop(name, None)
            self._file(name).unlink(missing_ok=True)
            log.info("%s: no bearer (%s)", name, why)
        else:
            self.rt.bearers[name] = bearer
            with contextlib.suppress(OSError):
                self._file(name).parent.mkdir(parents=True, exist_ok=True)
                self._file(name).write_text(json.dumps(bearer_json(bearer)))
            log.info("%s: bearer on %s: %s", name, bearer.interface, bearer)
        self.rt.wake.set()
