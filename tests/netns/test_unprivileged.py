"""The daemon as the NixOS unit runs it: an unprivileged user with CAP_NET_ADMIN and
CAP_NET_RAW only (issue 9, "How it is checked": the unit's hardening exercised).

modules/service.nix runs uplinkd as User=uplinkd with AmbientCapabilities and
CapabilityBoundingSet = CAP_NET_ADMIN CAP_NET_RAW, NoNewPrivileges, UMask 0007, its control
socket in a RuntimeDirectory and its leases in a StateDirectory owned by that user. There
is no systemd here, so the test does what those settings do with `setpriv`: user and group
`nobody`, no supplementary groups, the two capabilities inheritable, ambient and the whole
bounding set, no new privileges, umask 0007; the work directory (socket) and the state
directory belong to that user, mode 0750. The config file is root's and only readable.

Then, against the real kernel of a lab: probes (an uplink blackholed at its ISP is taken out
and comes back), DHCP (a lease from the ISP's dnsmasq, kept in the state directory), nft (the
table loaded, and restored after `nft flush ruleset`) and conntrack (the failed uplink's
connections deleted by mark, so its UDP flows resume elsewhere; the other uplink's are left
alone). Run twice: with ICMP ping sockets allowed for the daemon's group
(`net.ipv4.ping_group_range`, as systemd's default sysctl allows every group) and without
(the prober falls back to raw sockets, which CAP_NET_RAW allows).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from uplinkd.lab import FlowReport, Lab, LabDaemon

from harness.readback import group_members, nft_tables, wait_until

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0
        or shutil.which("setpriv") is None
        or shutil.which("dnsmasq") is None
        or shutil.which("conntrack") is None,
        reason="needs root, setpriv, dnsmasq and conntrack",
    ),
    pytest.mark.timeout(180),
]

USER = pwd.getpwnam("nobody")
GROUP = grp.getgrgid(USER.pw_gid)
CAPS = "-all,+net_admin,+net_raw"  # the only ones, in every set that has a say
CAP_NET_ADMIN, CAP_NET_RAW = 12, 13
ONLY_OURS = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)
SERVER = "198.51.100.100"
TABLES = {101: "wan", 102: "lte"}
WAIT = 30.0


# --- running the daemon as the unit does --------------------------------------------------------


def closed_ancestor(path: Path) -> Path | None:
    """The top-most directory on the way to `path` that others may not search (/root, say)."""
    for parent in reversed(path.parents):
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return parent
    return None


def exposing(paths: Iterable[Path], stage: Path) -> list[str]:
    """Shell commands that make `paths` reachable for any user in the current mount namespace
    only: a world-searchable tmpfs over each closed ancestor, `paths` bound back under it.

    The test machine's Python may live under /root (mode 0700), where a service user could
    not start it; on a NixOS router everything is in the world-readable /nix/store. `ip
    netns exec` gives the daemon a mount namespace of its own, so nothing changes for the
    rest of the machine."""
    hidden: dict[Path, list[Path]] = {}
    for path in dict.fromkeys(p.resolve() for p in paths if p.is_dir()):
        if (top := closed_ancestor(path)) is not None:
            hidden.setdefault(top, []).append(path)
    commands: list[str] = []
    for i, (top, under) in enumerate(hidden.items()):
        staged = [(path, stage / f"{i}.{j}") for j, path in enumerate(under)]
        for path, at in staged:
            commands += [f"mkdir -p {shlex.quote(str(at))}", f"mount --bind {shlex.quote(str(path))} {at}"]
        commands.append(f"mount -t tmpfs -o mode=0755,size=1m uplinkd-test {shlex.quote(str(top))}")
        for path, at in staged:
            commands += [f"mkdir -p {shlex.quote(str(path))}", f"mount --move {at} {shlex.quote(str(path))}"]
    return commands


class UnitDaemon(LabDaemon):
    """The real daemon in the lab's router namespace, started as the unit would start it."""

    def command(self) -> list[str]:
        python = [Path(sys.prefix), Path(sys.base_prefix), *(Path(p) for p in sys.path if p)]
        setpriv = [
            "setpriv", f"--reuid={USER.pw_uid}", f"--regid={GROUP.gr_gid}", "--clear-groups",
            f"--inh-caps={CAPS}", f"--ambient-caps={CAPS}", f"--bounding-set={CAPS}",
            "--no-new-privs", "--", *super().command(),
        ]  # fmt: skip
        commands = [*exposing(python, self.workdir / "stage"), "umask 0007", "exec " + shlex.join(setpriv)]
        return ["sh", "-c", " && ".join(commands)]


def credentials(pid: int) -> dict[str, str]:
    """Uid, Gid, Groups, the capability sets and NoNewPrivs of a process, from /proc."""
    keys = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines) if k in keys}


@pytest.fixture
def workdir() -> Iterator[Path]:
    """The unit's RuntimeDirectory (the socket; here also the config and the log, root's) and
    StateDirectory, owned by the service user, mode 0750. Outside pytest's tmp_path, which
    only root may enter."""
    path = Path(tempfile.mkdtemp(prefix="uplinkd-unit-"))
    try:
        (path / "state").mkdir()
        for d in (path, path / "state"):
            os.chown(d, USER.pw_uid, GROUP.gr_gid)
            d.chmod(0o750)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        lab.add_isp("wan", address="dhcp")  # the lab's dnsmasq serves it
        lab.add_isp("lte", address="none")
        lab.add_client()
        yield lab


@pytest.fixture
def start(lab: Lab, workdir: Path) -> Iterator[Callable[[dict[str, Any]], UnitDaemon]]:
    started: list[UnitDaemon] = []

    def start(cfg: dict[str, Any]) -> UnitDaemon:
        c = UnitDaemon(lab.router, cfg, workdir=workdir, env={"HOME": "/nonexistent"})
        started.append(c)
        return c.start()

    try:
        yield start
    finally:
        for c in started:
            c.stop()


# --- reading the kernel back --------------------------------------------------------------------


def conntrack_udp(lab: Lab) -> dict[str, int]:
    """UDP conntrack entries of the router: original tuple → ct mark."""
    out = lab.run("router", ["conntrack", "-L", "-p", "udp", "-o", "extended"], check=False).stdout
    entries = {}
    for line in out.splitlines():
        words = line.split()
        key = [w for w in words if w.split("=")[0] in ("src", "dst", "sport", "dport")][:4]
        entries[" ".join(key)] = next((int(w[5:]) for w in words if w.startswith("mark=")), 0)
    return entries


def config() -> dict[str, Any]:
    probe = {"targets": [SERVER]}
    return {
        "uplinks": {
            "wan": {"match": {"name": "wan"}, "address": {"mode": "dhcp"}, "table": 101, "probe": probe},
            "lte": {"match": {"name": "lte"}, "table": 102, "probe": probe,
                    "address": {"mode": "static", "cidr": "10.102.0.2/24", "gateway": "10.102.0.1"}},
        },
        "probe": {"profile": "fast"},
        "balance": {"table": 200},
    }  # fmt: skip


def in_group(lab: Lab) -> set[str]:
    return set(group_members(lab.router, TABLES))


# --- the test -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ping_sockets", [True, False], ids=["ping-sockets", "raw-sockets"])
def test_as_the_unit_runs_it_probes_dhcp_nft_and_conntrack_work(
    lab: Lab, start: Callable[[dict[str, Any]], UnitDaemon], workdir: Path, ping_sockets: bool
) -> None:
    gid = GROUP.gr_gid
    groups = f"{gid} {gid}" if ping_sockets else "1 0"  # "1 0": nobody may (the kernel's default)
    lab.run("router", ["sysctl", "-q", "-w", f"net.ipv4.ping_group_range={groups}"])
    c = start(config())

    # who it runs as: the service user, the two capabilities and nothing else
    creds = credentials(c.proc.pid)  # type: ignore[union-attr]
    assert creds["Uid"].split() == [str(USER.pw_uid)] * 4 and creds["Gid"].split() == [str(gid)] * 4
    assert creds["Groups"] == "" and creds["NoNewPrivs"] == "1"
    for capset in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(creds[capset], 16) == ONLY_OURS, (capset, creds)

    wan = c.wait_state("wan", "up", timeout=WAIT)
    c.wait_state("lte", "up", timeout=WAIT)
    wait_until(lambda: in_group(lab) == {"wan", "lte"}, timeout=WAIT, what="both uplinks in the group")

    # DHCP: the lease of the lab's dnsmasq is on the interface and kept in the state directory
    isp = lab.isp("wan")
    (address,) = wan["addresses"]
    assert address.split("/")[0] in [str(lease.address) for lease in isp.leases()], (wan, isp.leases())
    lease_file = workdir / "state" / "wan.lease.json"
    wait_until(lease_file.exists, what="the lease stored")
    owner = lease_file.stat()
    assert (owner.st_uid, owner.st_gid) == (USER.pw_uid, gid)
    assert owner.st_mode & 0o007 == 0, oct(owner.st_mode)  # UMask=0007
    assert c.socket.stat().st_uid == USER.pw_uid

    # nft: the table is there, and comes back after someone flushes the whole ruleset
    assert ("inet", "uplinkd") in nft_tables(lab.router)
    lab.run("router", ["nft", "flush", "ruleset"])
    wait_until(lambda: ("inet", "uplinkd") in nft_tables(lab.router), timeout=WAIT, what="our table restored")
    report = lab.flows(tcp=10, udp=10, duration=1.0)
    assert set(report.by_uplink()) == {"wan", "lte"} and report.lost() == 0, report.by_uplink()

    # probes and conntrack: wan blackholed at its ISP (carrier up: only probes can tell)
    marks = {name: c.uplink(name)["mark"] for name in ("wan", "lte")}
    flows = lab.start_flows(tcp=0, udp=24, interval_ms=20, duration=6.0)
    time.sleep(1.0)
    before = conntrack_udp(lab)
    on_wan = {t for t, m in before.items() if m == marks["wan"]}
    on_lte = {t for t, m in before.items() if m == marks["lte"]}
    assert on_wan and on_lte, f"flows on both uplinks needed: {before}"
    isp.blackhole()
    down = c.wait_state("wan", "down", timeout=WAIT)
    assert not down["in_group"] and in_group(lab) == {"lte"}
    # wan's connections were deleted (the same UDP sockets now have entries marked for lte)
    wait_until(lambda: not {t for t, m in conntrack_udp(lab).items() if m == marks["wan"]} & on_wan,
               timeout=5, what="wan's conntrack entries deleted")  # fmt: skip
    assert on_lte <= {t for t, m in conntrack_udp(lab).items() if m == marks["lte"]}
    done: FlowReport = flows.result()
    for f in done.started_on("wan"):
        assert done.uplink(f.last_source) == "lte", done.uplinks_of(f)
    assert not [f for f in done.started_on("lte") if f.moved or f.lost], "lte's flows were disturbed"

    isp.blackhole(False)
    c.wait_state("wan", "up", timeout=WAIT)
    wait_until(lambda: in_group(lab) == {"wan", "lte"}, timeout=WAIT, what="wan back in the group")
    refused = r"Permission denied|Operation not permitted|EPERM|EACCES|Traceback"
    assert not re.search(refused, c.log()), c.log()
    assert c.running
