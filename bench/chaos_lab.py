"""The chaos soak's lab side: the daemon's config, the one place the daemon is launched (the
shared launcher, `uplinkd.lab.launcher.LabDaemon`), the new-flow poller.  See bench/chaos.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from uplinkd.lab import Lab
from uplinkd.lab.addresses import SERVER4
from uplinkd.lab.launcher import LabDaemon, with_control

ROOT = Path(__file__).resolve().parents[1]

SERVER = str(SERVER4.ip)
TABLES = {"wan": 101, "lte1": 102, "stick": 103}


def config(weights: dict[str, int]) -> dict[str, Any]:
    def probe(index: int) -> dict[str, Any]:  # the server, and the ISP's own upstream address
        return {"targets": [SERVER, f"198.51.100.{index}"]}

    return {
        "uplinks": {
            "wan": {"match": {"name": "wan"}, "address": {"mode": "external"}, "table": TABLES["wan"],
                    "weight": weights["wan"], "probe": probe(1)},
            "lte1": {"match": {"name": "lte1"},
                     "address": {"mode": "static", "cidr": "10.102.0.2/24", "gateway": "10.102.0.1"},
                     "table": TABLES["lte1"], "weight": weights["lte1"], "probe": probe(2)},
            "stick": {"match": {"name": "usb*"}, "address": {"mode": "dhcp"}, "table": TABLES["stick"],
                      "weight": weights["stick"], "probe": probe(3)},
        },
        "probe": {"profile": "fast"},
        "balance": {"table": 200},
    }  # fmt: skip


# --- the daemon: the one place this soak launches it ---------------------------------------------


def launch(lab: Lab, cfg: dict[str, Any], workdir: Path) -> LabDaemon:
    """The daemon for `lab`'s router with `cfg` (not started yet): the shared launcher."""
    return LabDaemon(lab.router, cfg, workdir=workdir)


def config_file(daemon: LabDaemon, cfg: dict[str, Any] | str) -> None:
    """Write `cfg` as the daemon's config file (keeping its socket and state directory)."""
    if isinstance(cfg, str):
        daemon.write_config(cfg)
    else:
        daemon.write_config(with_control(cfg, socket=str(daemon.socket), state_dir=str(daemon.state_dir)))


def exit_status(daemon: LabDaemon) -> int | None:
    """None while it runs (or was never started)."""
    return None if daemon.proc is None else daemon.proc.poll()


# --- the poller: new flows, each its own UDP socket ---------------------------------------------

# Runs in the LAN client: every `every` s a new UDP socket sends one request to the server, for
# `limit` s; prints the number sent, then one line per reply: the wall-clock send time and the
# source the server saw (which names the uplink).  Bounded: exits 1 s after `limit`.
POLLER = r"""
import select, socket, sys, time
server, port, limit, every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
start = time.monotonic()
end, nxt, seq, socks, out = start + limit, start, 0, {}, []
while time.monotonic() < end or socks:
    now = time.monotonic()
    if now >= nxt and now < end:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.connect((server, port))
        socks[s] = (now, time.time())
        try:
            s.send(b"%d" % seq)
        except OSError:
            pass
        seq += 1
        nxt = max(nxt + every, now)
    for s in select.select(list(socks), [], [], max(0.0, min(nxt - time.monotonic(), 0.05)))[0]:
        try:
            words = s.recv(100).split()
        except OSError:
            words = []
        if len(words) == 3:
            out.append("%.6f %s" % (socks[s][1], words[1].decode()))
            del socks[s]
            s.close()
    now = time.monotonic()
    for s, (t, _) in list(socks.items()):
        if now - t > 1.0:
            del socks[s]
            s.close()
print(seq)
print("\n".join(out))
"""
