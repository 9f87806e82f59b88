"""Kernel.apply against a real kernel when a device changes under it.

udev renames a new USB NIC (``usb0`` → its configured or predictable name) while the controller
may already be planning for it. A write planned for the old name then meets a kernel that no
longer has it: for netlink that is ENODEV, for /proc/sys/net/ipv6/conf/<old name> it is
ENOENT. Both must be a failed op that the next pass retries, never an exception out of
`apply` (in CI that exception once stopped the daemon in the VM tier).

The apply runs in a child process inside a namespace the test made, because the IPv6
settings are files in the writer's own network namespace.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

SCRIPT = r"""
import asyncio, json, socket, sys
from pathlib import Path
from uplinkd.config import parse
from uplinkd.kernel.state import Kernel
from uplinkd.model import Op
from uplinkd.model.kinds.tuning import LinkTuning
from uplinkd.plan import Plan

renamed, kept = int(sys.argv[1]), int(sys.argv[2])
config = parse({"uplinks": {"lte1": {"match": {"name": "lte1"}, "table": 101}}})

async def main():
    kernel = Kernel(config)
    try:
        plan = Plan((
            Op("replace", LinkTuning(renamed, accept_ra=2, dev="usb0")),  # planned before the rename
            Op("replace", LinkTuning(kept, accept_ra=2, dev="a0")),
        ))
        result = await kernel.apply(plan)
    finally:
        kernel.close()
    print(json.dumps({
        "done": [str(op.obj.dev) for op in result.done],
        "failed": [[f.op.obj.dev, f.error, f.transient] for f in result.failed],
        "a0": Path("/proc/sys/net/ipv6/conf/a0/accept_ra").read_text().strip(),
        "lte9": Path("/proc/sys/net/ipv6/conf/lte9/accept_ra").read_text().strip(),
    }))

asyncio.run(main())
"""


@pytest.fixture
def ns() -> Iterator[str]:
    name = f"apply-{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True).stdout


def ifindex(ns: str, dev: str) -> int:
    (link,) = json.loads(ip(ns, "-json", "link", "show", "dev", dev))
    return int(link["ifindex"])


def test_a_setting_planned_for_a_device_udev_renamed_fails_that_op_and_the_rest_still_run(ns: str) -> None:
    ip(ns, "link", "add", "usb0", "type", "veth", "peer", "name", "a0")
    renamed, kept = ifindex(ns, "usb0"), ifindex(ns, "a0")
    ip(ns, "link", "set", "dev", "usb0", "name", "lte9")  # what udev does after the plan was made
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", SCRIPT, str(renamed), str(kept)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["failed"] == [["usb0", "No such file or directory (errno 2)", True]]  # retried next pass
    assert got["done"] == ["a0"] and got["a0"] == "2"  # the op after it was still written
    assert got["lte9"] != "2"  # and nothing was written to the renamed device by its old name
