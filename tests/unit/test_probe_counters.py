"""uplinkd.probes.Counters on files laid out as sysfs lays out an interface's statistics (the
real thing, with an interface removed and renamed, is tests/netns/test_sysfs_counters.py)."""

from __future__ import annotations

import os
from pathlib import Path

from uplinkd.probes import Counters


def write_stats(sysfs: Path, dev: str, tx: int, rx: int, *, in_place: bool = True) -> None:
    stats = sysfs / dev / "statistics"
    stats.mkdir(parents=True, exist_ok=True)
    for name, value in (("tx_packets", tx), ("rx_packets", rx)):
        path = stats / name
        if in_place and path.exists():
            with open(path, "r+") as f:  # same inode, as sysfs answers a read anew
                f.write(f"{value}\n")
                f.truncate()
        else:
            tmp = path.with_suffix(".new")
            tmp.write_text(f"{value}\n")
            os.replace(tmp, path)  # a new inode: what a kept descriptor does not see


def test_kept_descriptors_read_the_current_values(tmp_path: Path) -> None:
    write_stats(tmp_path, "wan", 10, 7)
    c = Counters("wan", sysfs=tmp_path)
    try:
        assert c.read(0.0) == (10, 7)
        write_stats(tmp_path, "wan", 1234567, 89)
        assert c.read(0.1) == (1234567, 89)
    finally:
        c.close()


def test_a_missing_interface_reads_none_until_it_appears(tmp_path: Path) -> None:
    c = Counters("lte1", sysfs=tmp_path)
    try:
        assert c.read(0.0) is None
        write_stats(tmp_path, "lte1", 3, 4)
        assert c.read(0.05) == (3, 4)
    finally:
        c.close()


def test_the_files_are_opened_again_after_reopen_s(tmp_path: Path) -> None:
    write_stats(tmp_path, "wan", 10, 7)
    c = Counters("wan", sysfs=tmp_path, reopen_s=1.0)
    try:
        assert c.read(5.0) == (10, 7)
        write_stats(tmp_path, "wan", 0, 1, in_place=False)  # another device under the name
        assert c.read(5.5) == (10, 7), "within reopen_s the kept descriptors are read"
        assert c.read(6.0) == (0, 1), "after reopen_s the name is looked up again"
    finally:
        c.close()


def test_garbage_in_the_file_reads_none_and_nothing_leaks(tmp_path: Path) -> None:
    write_stats(tmp_path, "wan", 10, 7)
    (tmp_path / "wan" / "statistics" / "rx_packets").write_text("not a number\n")
    before = len(os.listdir("/proc/self/fd"))
    c = Counters("wan", sysfs=tmp_path)
    assert c.read(0.0) is None
    c.close()
    assert len(os.listdir("/proc/self/fd")) == before
