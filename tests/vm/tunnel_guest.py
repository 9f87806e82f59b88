"""The controller's tunnel on kernel WireGuard, run inside the VM's guest (Debian's kernel has
WireGuard; the netns tier's does not). Prints one JSON object of findings;
tests/vm/test_wireguard_kernel.py asserts on it.

The netns tier's tunnel lab (harness/tunnel_home.py), built in the guest: the router with
uplinks wan and lte1, a full tunnel home over [wan, lte1] with `backend = "kernel"`, and
"home" a kernel WireGuard link in the lab's internet namespace. Every ISP counts, before
its fault chain, the encrypted packets from the router, and those with the router's own
address on that uplink as their source. In order:

1. the tunnel comes up on wan; the interface is a `wireguard` link with uplinkd's alias;
2. restart with the same config: no kernel write, the same handshake at both ends (done first,
   while the session is young: a natural re-key comes 120 s after the handshake);
3. wan is blackholed at its ISP (carrier up): the encrypted packets then leave by lte1 with
   lte1's address, home sees the peer roam to lte1's ISP, and for HOLD_S seconds nothing
   encrypted leaves by wan (the stuck-source trap);
4. flush removes the tunnel's interface and nothing else (a foreign WireGuard link stays).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from uplinkd import control
from uplinkd.config import parse
from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon

from harness.readback import wait_until
from harness.tunnel_home import NAMES, Counted, Home, add_outside, count_at_isps, router_config, upstream

START_S = 240.0  # the daemon's start under TCG (~25-40 s of imports)
WAIT_S = 90.0
HOLD_S = float(os.environ.get("UPLINKD_VM_TUNNEL_HOLD_S", "30"))
# "0": wireguard-go at both ends (a dry run of this script in the netns tier, outside the VM)
KERNEL = os.environ.get("UPLINKD_VM_TUNNEL_KERNEL", "1") == "1"


def tunnel(daemon: LabDaemon) -> dict[str, Any]:
    return dict(control.call(daemon.socket, {"command": "status"}, timeout=10)["tunnels"][0])


def tunnel_up(daemon: LabDaemon) -> dict[str, Any] | None:
    t = tunnel(daemon)
    return t if t["state"] == "up" else None


def router_handshake(lab: Lab, ifname: str) -> int:
    out = lab.run("router", ["wg", "show", ifname, "latest-handshakes"]).stdout
    return int(out.split()[-1])


def link(lab: Lab, ifname: str) -> dict[str, Any]:
    return dict(json.loads(lab.run("router", ["ip", "-d", "-j", "link", "show", ifname]).stdout)[0])


def run(found: dict[str, Any], workdir: Path) -> None:
    if KERNEL:
        subprocess.run(["modprobe", "wireguard"], check=True)
    with Lab() as lab:
        for name in NAMES:
            lab.add_isp(name, address="none")
        lab.add_client()
        add_outside(lab)
        count_at_isps(lab)
        home = Home(lab, workdir, kernel=KERNEL)
        cfg, public = router_config(workdir, home, backend="kernel" if KERNEL else "auto")
        ifname = cfg["tunnels"]["home"]["interface"]
        daemon = LabDaemon(lab.router, cfg, workdir=workdir)
        try:
            home.start(public)
            daemon.start(timeout=START_S)
            t = daemon.wait_for(lambda: tunnel_up(daemon), timeout=WAIT_S, what="tunnel up")
            found["backend"] = t["backend"]
            found["underlay_first"] = t["underlay4"]
            info = link(lab, ifname)
            found["kind"] = info.get("linkinfo", {}).get("info_kind")
            found["alias"] = info.get("ifalias")
            found["mtu"] = info.get("mtu")
            found["fwmark"] = lab.run("router", ["wg", "show", ifname, "fwmark"]).stdout.strip()
            found["fwmark_wanted"] = hex(parse(cfg).tunnels["home"].mark)

            # 2. restart with the same config
            time.sleep(1.5)
            hs_home, hs_router = home.handshake(), router_handshake(lab, ifname)
            found["handshake_before"] = [hs_home, hs_router]
            stopped = time.time()
            daemon.stop(signal.SIGTERM)
            found["survives_stop"] = ifname in lab.run("router", ["ip", "-o", "link", "show"]).stdout
            logged = len(daemon.log())
            daemon.start(timeout=START_S)
            daemon.wait_for(lambda: tunnel(daemon)["state"] == "up" or None, timeout=WAIT_S, what="up again")
            time.sleep(2)
            found["restart_s"] = [round(stopped - hs_router, 1), round(time.time() - stopped, 1)]
            found["writes_after_restart"] = daemon.status()["writes"]  # WireGuard's writes included
            written = (" wg set ", " INFO ip ", " INFO nft ")
            after_restart = daemon.log()[logged:].splitlines()
            found["restart_log"] = [ln for ln in after_restart if any(w in ln for w in written)]
            found["handshake_after"] = [home.handshake(), router_handshake(lab, ifname)]

            # 3. the stuck-source trap
            seen = Counted(lab)
            time.sleep(3)
            found["before"] = {n: seen[n] for n in NAMES}
            found["endpoint_before"] = home.endpoint()
            lab.isp("wan").blackhole()
            cut = time.monotonic()
            daemon.wait_for(lambda: tunnel(daemon)["underlay4"] == "lte1" or None, timeout=WAIT_S,
                            what="underlay lte1")  # fmt: skip
            found["moved_s"] = round(time.monotonic() - cut, 2)
            wait_until(lambda: home.endpoint().startswith(upstream(2) + ":"), timeout=WAIT_S,
                       what="home sees the router on lte1")  # fmt: skip
            found["roamed_s"] = round(time.monotonic() - cut, 2)
            seen = Counted(lab)
            time.sleep(HOLD_S)
            found["hold_s"] = HOLD_S
            found["after"] = {n: seen[n] for n in NAMES}
            found["endpoint_after"] = home.endpoint()
            found["state_after"] = tunnel(daemon)["state"]
            ping = ["ping", "-n", "-c", "3", "-i", "0.3", "-W", "3", "10.99.0.1"]
            found["ping_inside_after"] = lab.run(lab.clients[0].netns, ping, check=False).returncode == 0

            # 4. flush: the tunnel's interface goes, nothing else does
            kind = ["wireguard"] if KERNEL else ["veth", "peer", "name", "wgforeign1"]
            foreign = ["ip", "link", "add", "wgforeign0", "type", *kind]
            lab.run("router", foreign)
            flushed = control.call(daemon.socket, {"command": "flush"}, timeout=60)
            found["flush_removed"] = [r for r in flushed["removed"] if r.startswith("ip link delete")]
            links = lab.run("router", ["ip", "-o", "link", "show"]).stdout
            found["links_after_flush"] = sorted(
                line.split(":")[1].strip().split("@")[0] for line in links.splitlines()
            )
        finally:
            found["log_tail"] = daemon.log()[-4000:] if daemon.log_path.exists() else ""
            daemon.stop()
            home.stop()


def main() -> None:
    found: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="uplinkd-vmtun-") as tmp:
            run(found, Path(tmp))
    except Exception:  # reported to the host, which asserts on it
        found["error"] = traceback.format_exc()
    json.dump(found, sys.stdout)


if __name__ == "__main__":
    main()
