"""Delete the conntrack entries of one uplink, and only those (kernel netlink, no binary).

When an uplink dies, the connections pinned to it (ct mark M_u) would keep being routed
into it. Deleting exactly those entries lets their next packet start a fresh connection
that the balance group sends through a live uplink — a long-lived UDP tunnel re-handshakes
at once — while every connection on a healthy uplink is left alone. Peers flush the
whole table instead.

The request is IPCTNL_MSG_CT_DELETE without a tuple, which the kernel treats as a flush
filtered by CTA_MARK/CTA_MARK_MASK; family AF_UNSPEC covers IPv4 and IPv6.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

from uplinkd.linux import NETLINK_NETFILTER

NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLMSG_ERROR = 0x2
NLMSG_DONE = 0x3
CTA_MARK = 8
CTA_MARK_MASK = 21
NFNETLINK_V0 = 0


class ConntrackError(OSError):
    pass


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def _mark_filter(mark: int, mask: int) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, NFNETLINK_V0, 0)
    return body + _attr(CTA_MARK, struct.pack("!I", mark)) + _attr(CTA_MARK_MASK, struct.pack("!I", mask))


def count_mark(mark: int, mask: int) -> int:
    """How many conntrack entries have `ct mark & mask == mark` (a filtered dump, for the
    metrics: only run before a flush, which is rare). Raises ConntrackError."""
    body = _mark_filter(mark, mask)
    seq = int.from_bytes(os.urandom(4), "little")
    msg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
    header = struct.pack("=IHHII", 16 + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    entry = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW
    count = 0
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.settimeout(5)
        sock.bind((0, 0))
        sock.send(header + body)
        while True:
            data = sock.recv(1 << 20)
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _flags, rseq, _pid = struct.unpack_from("=IHHII", data, offset)
                offset += max(length, 16)
                if rseq != seq:
                    continue
                if kind == NLMSG_DONE:
                    return count
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, offset - max(length, 16) + 16)
                    if code in (0, -errno.ENOENT):
                        return count
                    raise ConntrackError(-code, os.strerror(-code))
                count += kind == entry


def flush_mark(mark: int, mask: int) -> None:
    """Delete every conntrack entry whose `ct mark & mask == mark`. Raises ConntrackError."""
    body = _mark_filter(mark, mask)
    seq = int.from_bytes(os.urandom(4), "little")
    msg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
    header = struct.pack("=IHHII", 16 + len(body), msg_type, NLM_F_REQUEST | NLM_F_ACK, seq, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.settimeout(5)
        sock.bind((0, 0))
        sock.send(header + body)
        while True:
            data = sock.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _flags, rseq, _pid = struct.unpack_from("=IHHII", data, offset)
                if kind == NLMSG_ERROR and rseq == seq:
                    (code,) = struct.unpack_from("=i", data, offset + 16)
                    if code in (0, -errno.ENOENT):  # ENOENT: nothing carried that mark
                        return
                    raise ConntrackError(-code, os.strerror(-code))
                offset += max(length, 16)
