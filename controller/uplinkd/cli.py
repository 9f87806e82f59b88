"""uplinkctl: talk to uplinkd, or act on the kernel directly where that makes sense.

Exit codes: 0 success; 1 `plan` found changes / a command failed or was refused; 2 bad input (an invalid
config for `check`, a wrong argument, an unknown uplink); 3 the daemon is unreachable.

`--json` output is stable: the objects documented in the README ("uplinkctl --json").
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from uplinkd import console, control, instance
from uplinkd.audit import audit
from uplinkd.config import Config, ConfigError, load, schema
from uplinkd.console import age as _age
from uplinkd.console import table as _table
from uplinkd.kernel import explain as explain_mod
from uplinkd.kernel.nft import NftError
from uplinkd.kernel.state import Kernel
from uplinkd.plan import Facts, desired, diff

DEFAULT_CONFIG = Path("/etc/uplinkd/config.json")
EXIT_OK, EXIT_CHANGES, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class UsageError(Exception):
    pass


class Refused(Exception):
    """The command would be unsafe now; nothing was changed (exit 1)."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except control.ControlError as e:
        print(f"uplinkctl: {e}", file=sys.stderr)
        unreachable = "cannot reach" in str(e)
        return EXIT_UNREACHABLE if unreachable else EXIT_USAGE
    except (UsageError, ConfigError) as e:
        print(f"uplinkctl: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Refused as e:
        print(f"uplinkctl: {e}", file=sys.stderr)
        return EXIT_CHANGES
    except BrokenPipeError:
        return EXIT_OK
    except (NftError, NetlinkError, OSError) as e:  # acting on the kernel without the daemon
        hint = " (run as root)" if isinstance(e, PermissionError) or "not permitted" in str(e) else ""
        print(f"uplinkctl: {args.command}: {e}{hint}", file=sys.stderr)
        return EXIT_CHANGES
    return code


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uplinkctl", description="inspect and steer uplinkd")
    p.add_argument("--socket", type=Path, default=None, help="control socket of the daemon")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("status", help="each uplink: state, device, address, gateway, table, weight")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("watch", help="a live view: states, RTT/loss sparklines, recent events")
    s.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (%(default)s)")
    s.add_argument("--count", type=int, help="stop after this many refreshes (default: until Ctrl-C)")
    s.set_defaults(func=cmd_watch)

    s = sub.add_parser("plan", help="what would change (exit 1 if anything would)")
    s.add_argument("--config", type=Path, help="compute locally from this config, without the daemon")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser(
        "audit",
        help="can a LAN reach an uplink in a way its config does not allow (around a full tunnel, "
        "or LAN IPv6 its mode forbids)? (exit 1)",
    )
    s.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the daemon's config file")
    s.set_defaults(func=cmd_audit)

    s = sub.add_parser("explain", help="the rule, table, route and uplink the kernel picks")
    s.add_argument("dst", help="destination address")
    s.add_argument("--from", dest="src", help="source address")
    s.add_argument("--iif", help="incoming interface (as if forwarded from it)")
    s.add_argument("--mark", help="fwmark, e.g. 0x6500")
    s.add_argument("--ipproto", choices=["tcp", "udp", "icmp"])
    s.add_argument("--sport", type=int)
    s.add_argument("--dport", type=int)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_explain)

    for name, text in (("drain", "take an uplink out of the balance group"), ("undrain", "put it back")):
        s = sub.add_parser(name, help=text)
        s.add_argument("uplink")
        s.set_defaults(func=cmd_drain)

    s = sub.add_parser(
        "flush",
        help="remove everything uplinkd owns from the kernel",
        description="Remove everything uplinkd owns from the kernel, nothing else. With the daemon "
        "running, it does the flush and pauses until `resume` or a restart. With no daemon "
        "running, uplinkctl flushes the kernel itself, as FILE says what uplinkd owns. If the "
        "daemon does not answer at the socket but is running (it holds STATE_DIR/uplinkd.lock "
        "while it runs, STATE_DIR from FILE; or it answers at FILE's control.socket), flush "
        "refuses and changes nothing: a daemon would put everything back. Stop it first "
        "(systemctl stop uplinkd) or give the right --socket.",
    )
    s.add_argument(
        "--config",
        type=Path,
        help=f"the daemon's config: its socket; what to flush when it is stopped (default: {DEFAULT_CONFIG})",
    )
    s.set_defaults(func=cmd_flush)

    s = sub.add_parser("resume", help="after flush: let the daemon manage the kernel again")
    s.set_defaults(func=cmd_simple, request="resume")
    s = sub.add_parser("reload", help="re-read the config file (like SIGHUP)")
    s.set_defaults(func=cmd_simple, request="reload")

    s = sub.add_parser("check", help="validate a config file (exit 0 valid, 2 invalid)")
    s.add_argument("file", type=Path)
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("schema", help="print the config's JSON Schema")
    s.set_defaults(func=cmd_schema)
    return p


def _socket(args: argparse.Namespace, config: Config | None = None) -> Path:
    if args.socket is not None:
        return Path(args.socket)
    return (config or Config()).control.socket


def _call(args: argparse.Namespace, request: dict[str, Any]) -> Any:
    return control.call(_socket(args), request)


# --- commands ---------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    status = _call(args, {"command": "status"})
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    print(status["summary"])
    rows = [("UPLINK", "STATE", "FOR", "DEV", "ADDRESS", "GATEWAY", "TABLE", "WEIGHT", "GROUP", "WHY")]
    for u in status["uplinks"]:
        rows.append(
            (
                u["name"] + (" (drained)" if u["drained"] else ""),
                u["state"],
                _age(u["since_s"]),
                u["dev"] or "-",
                ",".join(u["addresses"]) or "-",
                u["gateway4"]
                or u["gateway6"]  # an IPv6-only uplink's router
                or ("dev" if u["state"] in ("up", "down", "degraded", "probing") else "-"),
                str(u["table"]),
                str(u["weight"] or "-"),
                console.group_text(u),
                u["reason"],
            )
        )
    print(_table(rows))
    if status.get("tunnels"):
        print()
        print(_table(_tunnel_rows(status["tunnels"])))
    if status.get("vxlan"):
        print()
        print(_table(_vxlan_rows(status["vxlan"])))
    for u in status["uplinks"]:
        if u.get("also_matches"):
            print(
                f"ambiguous: {u['name']} uses {u['dev']}, but {', '.join(u['also_matches'])} match it too;"
                " make its match more specific (USB serial, match.path or an exact name)"
            )
        usage = u.get("usage")
        if usage:
            budget = f" of {usage['budget']}" if usage["budget"] else ""
            state = " (budget spent: last tier only)" if usage["spent"] else ""
            print(f"{u['name']}: {usage['bytes']}{budget} bytes in {usage['month']}{state}")
        if u.get("modem"):
            print(_modem_line(u["name"], u["modem"]))
    for name, p in (status.get("policies") or {}).items():
        tiers = ", ".join(
            f"{fam} {'tier ' + str(v['tier']) if v['tier'] is not None else (v['why'] or '-')}"
            for fam, v in (("ipv4", p["ipv4"]), ("ipv6", p["ipv6"]))
        )
        print(f"policy {name} (table {p['table']}): {tiers}")
    for u in status["uplinks"]:
        if u.get("prefixes6"):
            print(f"ipv6: {u['name']} has {', '.join(u['prefixes6'])}")
        if u.get("delegated6"):
            d = u["delegated6"]
            left = "for ever" if d["valid_s"] is None else f"valid {d['valid_s']:.0f} s more"
            print(f"ipv6: {u['name']} delegates {d['prefix']} (DHCPv6-PD, {left})")
        if d := u.get("dhcp6"):
            left = "for ever" if d["valid_s"] is None else f"valid {d['valid_s']:.0f} s more"
            print(f"ipv6: {u['name']} has {d['address']} by DHCPv6 ({left})")
        if ra := u.get("ra"):
            heard = ", ".join(f"{p['prefix']} (preferred {p['preferred']} s)" for p in ra["prefixes"])
            heard = heard or "no prefix"
            mtu = f", MTU {ra['mtu']}" if ra.get("mtu") else ""
            print(f"ra: {u['name']} router {ra['router']} for {ra['lifetime']} s; {heard}{mtu}")
    for lan in status.get("lan", []):
        prefixes = ", ".join(lan["prefixes"]) or "no prefix"
        if lan.get("deprecated"):
            prefixes += "; deprecated " + ", ".join(lan["deprecated"])
        if lan.get("router_lifetime") is not None:
            prefixes += f"; router lifetime {lan['router_lifetime']} s"
        print(f"lan {lan['name']}: ipv6 {lan['mode']} ({prefixes}); {lan['reason'] or '-'}")
    for f in status["failures"]:
        print(f"failing: {f['op']}: {f['error']}")
    return EXIT_OK


def _tunnel_rows(tunnels: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("TUNNEL", "STATE", "DEV", "UNDERLAY", "HANDSHAKE", "RX", "TX", "WHY")]
    for t in tunnels:
        age = t["handshake_age_s"]
        rows.append(
            (
                t["name"],
                t["state"],
                t["interface"],
                t["underlay4"] or t["underlay6"] or "-",
                "never" if age is None else _age(age) + " ago",
                str(t["rx_bytes"]),
                str(t["tx_bytes"]),
                t["reason"],
            )
        )
    return rows


def _vxlan_rows(segments: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("VXLAN", "DEV", "VNI", "TUNNEL", "REMOTES", "MTU", "BRIDGE", "WHY")]
    for v in segments:
        rows.append(
            (
                v["name"],
                v["interface"],
                str(v["vni"]),
                v["tunnel"],
                ",".join(v["remotes"]),
                str(v["mtu"] or "-"),
                v["bridge"] or "-",
                v["reason"],
            )
        )
    return rows


def cmd_watch(args: argparse.Namespace) -> int:
    if args.interval < 0.1:
        raise UsageError(f"watch: --interval {args.interval:g} is too short; use 0.1 s or more")
    if args.count is not None and args.count < 1:
        raise UsageError("watch: --count must be at least 1")
    answered = console.watch(
        lambda: _call(args, {"command": "status"}), interval=args.interval, count=args.count
    )
    return EXIT_OK if answered else EXIT_UNREACHABLE


def _modem_line(name: str, m: dict[str, Any]) -> str:
    """`lte: modem connected, lte 71%, Lab Mobile (home)`, then what stops it and the fix."""
    seen = [m.get("access_technology"), f"{m['signal_pct']}%" if m.get("signal_pct") is not None else None]
    where = m.get("operator") or ""
    if m.get("registration"):
        where += f" ({m['registration']})"
    parts = (" ".join(filter(None, seen)), where)
    text = f"{name}: modem {m['state']}" + "".join(f", {w}" for w in parts if w)
    if m.get("fix"):
        text += f"\n  {m['problem']}: {m['fix']}"
    return text


def cmd_plan(args: argparse.Namespace) -> int:
    if args.config is not None:
        ops = asyncio.run(_local_plan(load(args.config)))
    else:
        ops = _call(args, {"command": "plan"})["ops"]
    if args.json:
        print(json.dumps({"ops": ops}, indent=2))
    else:
        print("\n".join(ops) if ops else "nothing to do: the kernel is as planned")
    return EXIT_CHANGES if ops else EXIT_OK


async def _local_plan(config: Config) -> list[str]:
    """Plan as the daemon would, assuming every ready uplink healthy and none drained."""
    kernel = Kernel(config)
    try:
        observed, actual = await kernel.read()
    finally:
        kernel.close()
    return [str(op) for op in diff(actual, desired(config, Facts(observed)).kernel).ops]


def cmd_audit(args: argparse.Namespace) -> int:
    problems, checked = asyncio.run(audit(load(args.config)))
    for line in checked:
        print(f"ok: {line}")
    for line in problems:
        print(f"LEAK: {line}")
    return EXIT_CHANGES if problems else EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    try:
        dst = ipaddress.ip_address(args.dst)
        src = ipaddress.ip_address(args.src) if args.src else None
        mark = int(args.mark, 0) if args.mark is not None else None
    except ValueError as e:
        raise UsageError(f"explain: {e}; give addresses like 198.51.100.1 and marks like 0x6500") from None
    if src is not None and src.version != dst.version:
        raise UsageError(
            "explain: --from and DST are of different families; give two IPv4 or two IPv6 addresses"
        )
    if mark is not None and not 0 <= mark <= 0xFFFFFFFF:
        raise UsageError(f"explain: --mark {args.mark} is not a 32-bit mark; use 0 to 0xffffffff")
    for flag in ("sport", "dport"):
        port = getattr(args, flag)
        if port is not None and not 1 <= port <= 65535:
            raise UsageError(f"explain: --{flag} {port} is not a port; use 1 to 65535")
    request = {
        "command": "explain",
        "dst": str(dst),
        "src": str(src) if src else None,
        "iif": args.iif,
        "mark": mark,
        "ipproto": args.ipproto,
        "sport": args.sport,
        "dport": args.dport,
    }
    try:
        ex = _call(args, request)
    except control.ControlError as e:
        if "cannot reach" not in str(e):
            raise
        ex = asyncio.run(_local_explain(request)).as_dict()  # the daemon is not needed for this
    if args.json:
        print(json.dumps(ex, indent=2))
        return EXIT_OK if not ex.get("error") else EXIT_CHANGES
    rows = [
        ("packet", f"{ex['src'] or '*'} → {ex['dst']}" + (f" iif {ex['iif']}" if ex["iif"] else "")),
        ("mark", f"{ex['mark']:#x}" if ex["mark"] is not None else "-"),
        ("rule", ex["rule"] or "-"),
        ("table", str(ex["table"]) if ex["table"] is not None else "-"),
        (
            "route",
            ex["type"]
            + (f" via {ex['gateway']}" if ex["gateway"] else "")
            + (f" dev {ex['dev']}" if ex["dev"] else ""),
        ),
        ("uplink", ex["uplink"] or "-"),
    ]
    steer = ex.get("steer")
    if steer is not None:
        rows.insert(0, ("steering", _steer_text(steer)))
    if ex.get("tunnel"):
        rows.append(("tunnel", ex["tunnel"]))
        via = ex.get("encrypted_via") or ex.get("encrypted_dev") or "none (unreachable)"
        rows.append(("encrypted via", via))
    rows += console.explain_rows(ex)
    if ex.get("error"):
        rows.append(("error", ex["error"]))
    print(_table(rows))
    return EXIT_OK if not ex.get("error") else EXIT_CHANGES


def _steer_text(steer: dict[str, Any]) -> str:
    """The steering rule, policy and tier, and how this was found out."""
    if steer.get("policy") is None:
        return str(steer.get("note"))
    rule = f"rules.steer.{steer['rule']}" if steer.get("rule") is not None else "no rule matched"
    tier = f", tier {steer['tier']}" if steer.get("tier") is not None else ""
    why = f" ({steer['why']})" if steer.get("why") else ""
    return f"{rule} → policy {steer['policy']}{tier}{why}; {steer.get('note')}"


async def _local_explain(request: dict[str, Any]) -> explain_mod.Explanation:
    kernel = Kernel(Config())
    try:
        return await explain_mod.explain(
            kernel.ipr,
            dst=ipaddress.ip_address(request["dst"]),
            src=ipaddress.ip_address(request["src"]) if request["src"] else None,
            iif=request["iif"],
            mark=request["mark"],
            ipproto=request["ipproto"],
            sport=request["sport"],
            dport=request["dport"],
        )
    finally:
        kernel.close()


def cmd_drain(args: argparse.Namespace) -> int:
    _call(args, {"command": args.command, "uplink": args.uplink})
    print(f"{args.uplink}: {'drained' if args.command == 'drain' else 'back in service'}")
    return EXIT_OK


def cmd_flush(args: argparse.Namespace) -> int:
    if args.config is not None and args.socket is None:
        args.socket = load(args.config).control.socket  # the daemon that file configures
    try:
        result = _call(args, {"command": "flush"})
        removed, failed = result["removed"], result["failed"]
        note = "the daemon is paused; `uplinkctl resume` or a restart hands the kernel back to it"
    except control.ControlError as e:
        if "cannot reach" not in str(e):
            raise
        path = args.config or DEFAULT_CONFIG
        config = load(path) if (args.config or path.exists()) else Config()
        _refuse_if_running(config, tried=_socket(args), error=str(e))
        removed, failed = asyncio.run(_local_flush(config))
        note = "done without the daemon"
    for line in removed:
        print(line)
    for line in failed:
        print(f"failed: {line}", file=sys.stderr)
    print(f"removed {len(removed)} objects; {note}", file=sys.stderr)
    return EXIT_OK if not failed else EXIT_CHANGES


def _refuse_if_running(config: Config, *, tried: Path, error: str) -> None:
    """:class:`Refused` if an uplinkd runs for `config` although none answered at `tried`: a
    mistyped --socket must not flush a live router (its daemon would fight back)."""
    state_dir, sock = config.control.state_dir, config.control.socket
    pid = instance.holder(state_dir)
    if pid is not None:
        who = f"uplinkd (pid {pid})" if pid else "uplinkd"
        raise Refused(
            f"flush: refused, nothing changed: {error.rstrip('?').split(';')[0]}, but {who} is running "
            f"(it holds {instance.lock_path(state_dir)}). Flush through it with --socket {sock} "
            f"(its configured socket), or stop it first (systemctl stop uplinkd)"
        )
    if sock != tried and _answers(sock):
        raise Refused(
            f"flush: refused, nothing changed: no uplinkd at {tried}, but one answers at {sock}; "
            f"flush through it with --socket {sock}, or stop it first (systemctl stop uplinkd)"
        )


def _answers(path: Path) -> bool:
    try:
        control.call(path, {"command": "status"}, timeout=2.0)
    except control.ControlError as e:
        return "cannot reach" not in str(e)  # something answered, if not well
    return True


async def _local_flush(config: Config) -> tuple[list[str], list[str]]:
    kernel = Kernel(config)
    try:
        result = await kernel.teardown()
    finally:
        kernel.close()
    return [str(op) for op in result.done], [f"{f.op}: {f.error}" for f in result.failed]


def cmd_simple(args: argparse.Namespace) -> int:
    _call(args, {"command": args.request})
    print(f"{args.request}: done")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    try:
        config = load(args.file)
    except ConfigError as e:
        print(f"{args.file}: invalid", file=sys.stderr)
        for line in e.problems:
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.file}: valid ({len(config.uplinks)} uplinks)")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(schema(), indent=2))
    return EXIT_OK


# --- formatting -------------------------------------------------------------------------------


if __name__ == "__main__":
    sys.exit(main())
