"""An ISP's DHCPv6 prefix delegation server: ISC Kea (kea-dhcp6) in the ISP's namespace;
optionally also handing out the router's own address (IA_NA) from a range of the link's /64.

Why Kea: dnsmasq (the lab's DHCPv4 and RA server) has no prefix delegation; of the servers
Debian 12 ships, Kea is ISC's current one and the strictest about RFC 8415 (it checks the
client's DUID and IAID, answers Rebind only for bindings it holds, and keeps leases in a
memfile across its own restarts), so it stands for a real ISP better than wide-dhcpv6 (from
2008) or isc-dhcp-server (end of life).

The ISP routes its whole pool to the router's address on the link (as a BNG routes the
prefixes it delegated), the server's side routes the pool back through the ISP, and the
ISP's "foreign source" counter counts the pool as the ISP's own.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from ipaddress import IPv6Network
from pathlib import Path

from uplinkd.lab.isp import DOWN, Isp
from uplinkd.lab.netns import LabError, Runner

KEA = "kea-dhcp6"
READY_S = 10.0


@dataclass(frozen=True)
class PdTimes:
    """The lifetimes the server hands out, in seconds."""

    t1: int = 30
    t2: int = 48
    preferred: int = 60
    valid: int = 90


class PdServer:
    """kea-dhcp6 delegating `delegated_len` prefixes of `pool` on one ISP's router link."""

    def __init__(
        self,
        isp: Isp,
        *,
        runner: Runner,
        inet_netns: str,
        workdir: Path,
        pool: IPv6Network,
        delegated_len: int = 56,
        times: PdTimes = PdTimes(),
        addresses: tuple[str, str] | None = None,
    ) -> None:
        self.isp = isp
        self.runner = runner
        self.inet_netns = inet_netns
        self.workdir = workdir
        self.pool = pool
        self.delegated_len = delegated_len
        self.times = times
        self.addresses = addresses  # first and last address of an IA_NA pool, if any
        self.proc: subprocess.Popen[str] | None = None
        self.lease_file = workdir / f"kea-{isp.name}.leases6"

    def config(self) -> dict[str, object]:
        a = self.isp.addresses
        t = self.times
        return {
            "Dhcp6": {
                "interfaces-config": {"interfaces": [DOWN]},
                "lease-database": {
                    "type": "memfile",
                    "persist": True,
                    "name": str(self.lease_file),
                    "lfc-interval": 0,
                },
                "server-id": {
                    "type": "EN",
                    "enterprise-id": 2495,
                    "identifier": "0a0b0c0d",
                    "persist": False,
                },
                "renew-timer": t.t1,
                "rebind-timer": t.t2,
                "preferred-lifetime": t.preferred,
                "valid-lifetime": t.valid,
                "subnet6": [
                    {
                        "id": a.index,
                        "subnet": str(a.gateway6.network),
                        "interface": DOWN,
                        "pools": [{"pool": "-".join(self.addresses)}] if self.addresses else [],
                        "pd-pools": [
                            {
                                "prefix": str(self.pool.network_address),
                                "prefix-len": self.pool.prefixlen,
                                "delegated-len": self.delegated_len,
                            }
                        ],
                    }
                ],
                "loggers": [
                    {
                        "name": KEA,
                        "output_options": [{"output": str(self.workdir / f"kea-{self.isp.name}.log")}],
                        "severity": "DEBUG",
                        "debuglevel": 40,
                    }
                ],
            }
        }

    def route(self, via: str | None = None) -> None:
        """The ISP routes the pool to the router (its address on the link, or `via`: the
        router's link-local address when its WAN is unnumbered); the server's side routes it
        to the ISP."""
        a = self.isp.addresses
        self.runner.ip(
            self.isp.netns, "-6", "route", "replace", str(self.pool),
            "via", via or str(a.router6.ip), "dev", DOWN, "onlink",
        )  # fmt: skip
        self.runner.ip(self.inet_netns, "-6", "route", "replace", str(self.pool), "via", str(a.upstream6.ip))
        self.isp.own_prefix6(str(self.pool))

    def start(self) -> None:
        if self.proc is not None:
            return
        conf = self.workdir / f"kea-{self.isp.name}.json"
        conf.write_text(json.dumps(self.config(), indent=1))
        env = {"KEA_PIDFILE_DIR": str(self.workdir), "KEA_LOCKFILE_DIR": str(self.workdir)}
        proc = self.runner.popen(self.isp.netns, [KEA, "-c", str(conf)], stderr=subprocess.PIPE, env=env)
        self.proc = proc
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else ""
                self.proc = None
                raise LabError(f"{KEA} for {self.isp.name} exited {proc.returncode}: {err}")
            out = self.runner.run(self.isp.netns, ["ss", "-H", "-u", "-l", "-n", "-p", "sport = :547"])
            if f"pid={proc.pid}," in out.stdout:
                return
            time.sleep(0.05)
        raise LabError(f"{KEA} for {self.isp.name} is not listening after {READY_S} s")

    def stop(self) -> None:
        if self.proc is not None:
            self.runner.stop(self.proc)
            self.proc = None

    def rows(self) -> list[dict[str, str]]:
        """Every prefix lease record in Kea's memfile (CSV), oldest first: Kea appends one
        each time it grants or extends a lease (Request, Renew, Rebind)."""
        if not self.lease_file.exists():
            return []
        lines = self.lease_file.read_text().splitlines()
        if not lines:
            return []
        head = lines[0].split(",")
        found = [dict(zip(head, line.split(","), strict=False)) for line in lines[1:]]
        return [row for row in found if row.get("lease_type") == "2"]  # IA_PD

    def address_rows(self) -> list[dict[str, str]]:
        """Every address lease record (IA_NA, lease_type 0) in Kea's memfile, oldest first."""
        if not self.lease_file.exists():
            return []
        lines = self.lease_file.read_text().splitlines()
        head = lines[0].split(",") if lines else []
        found = [dict(zip(head, line.split(","), strict=False)) for line in lines[1:]]
        return [row for row in found if row.get("lease_type") == "0"]

    def leases(self) -> list[str]:
        """The prefixes Kea has delegated (each once)."""
        return list(dict.fromkeys(f"{row.get('address')}/{row.get('prefix_len')}" for row in self.rows()))
