"""pyroute2 message classes for Linux nexthop objects and for routes with ``RTA_NH_ID``.

pyroute2 0.9 has no message class for nexthop objects (``RTM_*NEXTHOP``,
``include/uapi/linux/nexthop.h``) and its ``rtmsg`` stops at ``RTA_EXPIRES``,
so it can neither write nor decode ``RTA_NH_ID``.  The two classes here fill
that gap in pyroute2's own style (``fields`` and ``nla_map``):

* :class:`nhmsg` -- ``struct nhmsg`` and the ``NHA_*`` attributes;
* :class:`rtmsg_ext` -- pyroute2's ``rtmsg`` plus ``RTA_PAD`` .. ``RTA_FLOWLABEL``.

This module imports only the standard library and pyroute2, so that it can be
offered upstream as it is; the wire numbers it needs are defined here.
"""

from __future__ import annotations

import struct
import sys
from typing import Any, Final

from pyroute2.netlink import nla, nla_string, nlmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg, rtmsg_base

__all__ = [
    "MAX_WEIGHT",
    "MAX_WEIGHT_U8",
    "NEXTHOP_GRP_TYPE_MPATH",
    "NEXTHOP_GRP_TYPE_RES",
    "RTA_NH_ID",
    "RTM_DELNEXTHOP",
    "RTM_GETNEXTHOP",
    "RTM_NEWNEXTHOP",
    "nhmsg",
    "rtmsg_ext",
]

# -- wire numbers (include/uapi/linux/rtnetlink.h, nexthop.h) ----------------

RTM_NEWNEXTHOP: Final = 104
RTM_DELNEXTHOP: Final = 105
RTM_GETNEXTHOP: Final = 106

#: NHA_GROUP_TYPE values
NEXTHOP_GRP_TYPE_MPATH: Final = 0
NEXTHOP_GRP_TYPE_RES: Final = 1

RTA_NH_ID: Final = 30

#: nexthop_grp weights: ``weight`` holds (weight - 1) & 0xff, ``weight_high``
#: (Linux >= 6.12) holds (weight - 1) >> 8.  Older kernels reject weights > 256.
MAX_WEIGHT: Final = 65536
MAX_WEIGHT_U8: Final = 256

_LWTUNNEL_ENCAP_TYPE_NHA: Final = 7  # NHA_ENCAP_TYPE

_NEXTHOP_EVENTS: Final[dict[int, str]] = {
    RTM_NEWNEXTHOP: "RTM_NEWNEXTHOP",
    RTM_DELNEXTHOP: "RTM_DELNEXTHOP",
    RTM_GETNEXTHOP: "RTM_GETNEXTHOP",
}


class nhmsg(nlmsg):  # type: ignore[misc]
    """
    Nexthop object message

    C structure::

        struct nhmsg {
            unsigned char nh_family;
            unsigned char nh_scope;     /* return only */
            unsigned char nh_protocol;  /* Routing protocol that installed nh */
            unsigned char resvd;
            unsigned int  nh_flags;     /* RTNH_F flags */
        };

    ``NHA_GROUP`` is encoded from / decoded to a list of
    ``{'id': int, 'weight': int}`` with the real weight (1 .. 65536); the
    kernel's ``weight - 1`` / ``weight_high`` split is handled here.
    """

    __slots__ = ()

    prefix = "NHA_"

    fields = (
        ("family", "B"),
        ("scope", "B"),
        ("protocol", "B"),
        ("resvd", "B"),
        ("flags", "I"),
    )

    nla_map = (
        (0, "NHA_UNSPEC", "none"),
        (1, "NHA_ID", "uint32"),
        (2, "NHA_GROUP", "nh_grp"),
        (3, "NHA_GROUP_TYPE", "uint16"),
        (4, "NHA_BLACKHOLE", "flag"),
        (5, "NHA_OIF", "uint32"),
        (6, "NHA_GATEWAY", "target"),
        (7, "NHA_ENCAP_TYPE", "uint16"),
        (8, "NHA_ENCAP", "encap_info"),
        (9, "NHA_GROUPS", "flag"),
        (10, "NHA_MASTER", "uint32"),
        (11, "NHA_FDB", "flag"),
        (12, "NHA_RES_GROUP", "res_group|nested"),
        (13, "NHA_RES_BUCKET", "res_bucket|nested"),
        (14, "NHA_OP_FLAGS", "uint32"),
        (15, "NHA_GROUP_STATS", "group_stats|nested"),
        (16, "NHA_HW_STATS_ENABLE", "uint32"),
        (17, "NHA_HW_STATS_USED", "uint32"),
    )

    def decode(self) -> None:
        super().decode()
        event = _NEXTHOP_EVENTS.get(self["header"].get("type"))
        if event is not None:
            # pyroute2's MarshalRtnl.fix_message() only knows RTM_VALUES
            self["event"] = event

    class nh_grp(nla_string):  # type: ignore[misc]
        """Array of ``struct nexthop_grp {u32 id; u8 weight; u8 weight_high;
        u16 resvd2}``."""

        __slots__ = ()
        _fmt = "=IBBH"

        def encode(self) -> None:
            data = b""
            for entry in self.value:
                if isinstance(entry, dict):
                    nh_id, weight = entry["id"], entry.get("weight", 1)
                else:
                    nh_id, weight = entry
                if not 1 <= weight <= MAX_WEIGHT:
                    raise ValueError(f"nexthop weight {weight} out of 1..{MAX_WEIGHT}")
                raw = weight - 1
                data += struct.pack(self._fmt, nh_id, raw & 0xFF, raw >> 8, 0)
            self["value"] = data
            nla_string.encode(self)

        def decode(self) -> None:
            nla_string.decode(self)
            size = struct.calcsize(self._fmt)
            data = self["value"]
            entries = []
            for offset in range(0, len(data) - size + 1, size):
                nh_id, low, high, _ = struct.unpack_from(self._fmt, data, offset)
                entries.append({"id": nh_id, "weight": ((high << 8) | low) + 1})
            self.setvalue(entries)

    class res_group(nla):  # type: ignore[misc]
        __slots__ = ()
        prefix = "NHA_RES_GROUP_"
        nla_map = (
            (0, "NHA_RES_GROUP_PAD", "none"),
            (1, "NHA_RES_GROUP_BUCKETS", "uint16"),
            (2, "NHA_RES_GROUP_IDLE_TIMER", "uint32"),  # clock_t
            (3, "NHA_RES_GROUP_UNBALANCED_TIMER", "uint32"),  # clock_t
            (4, "NHA_RES_GROUP_UNBALANCED_TIME", "uint64"),  # clock_t, output only
        )

    class res_bucket(nla):  # type: ignore[misc]
        __slots__ = ()
        prefix = "NHA_RES_BUCKET_"
        nla_map = (
            (0, "NHA_RES_BUCKET_PAD", "none"),
            (1, "NHA_RES_BUCKET_INDEX", "uint16"),
            (2, "NHA_RES_BUCKET_IDLE_TIME", "uint64"),  # clock_t
            (3, "NHA_RES_BUCKET_NH_ID", "uint32"),
        )

    class group_stats(nla):  # type: ignore[misc]
        __slots__ = ()
        prefix = "NHA_GROUP_STATS_"
        nla_map = (
            (0, "NHA_GROUP_STATS_UNSPEC", "none"),
            (1, "NHA_GROUP_STATS_ENTRY", "entry|nested"),
        )

        class entry(nla):  # type: ignore[misc]
            __slots__ = ()
            prefix = "NHA_GROUP_STATS_ENTRY_"
            nla_map = (
                (0, "NHA_GROUP_STATS_ENTRY_UNSPEC", "none"),
                (1, "NHA_GROUP_STATS_ENTRY_ID", "uint32"),
                (2, "NHA_GROUP_STATS_ENTRY_PACKETS", "uint"),
                (3, "NHA_GROUP_STATS_ENTRY_PACKETS_HW", "uint"),
            )

            class uint(nla_string):  # type: ignore[misc]
                """NLA_UINT: u32 or u64, by payload length."""

                __slots__ = ()

                def decode(self) -> None:
                    nla_string.decode(self)
                    self.setvalue(int.from_bytes(self["value"], sys.byteorder))

    @staticmethod
    def encap_info(msg: Any, *argv: Any, **kwarg: Any) -> Any:
        """Pick the lwtunnel class for NHA_ENCAP by NHA_ENCAP_TYPE.

        The kernel emits NHA_ENCAP *before* NHA_ENCAP_TYPE, so on decode the
        rest of the chain is scanned (as pyroute2's rtmsg does for RTA_ENCAP).
        """
        encap_type = None
        for name, value in msg["attrs"]:
            if name == "NHA_ENCAP_TYPE":
                encap_type = value
                break
        else:
            data = kwarg.get("data")
            offset = kwarg.get("offset")
            if data is not None and offset is not None:
                while offset + 4 <= len(data):
                    length, nla_type = struct.unpack_from("HH", data, offset)
                    if length < 4:
                        break
                    if nla_type == _LWTUNNEL_ENCAP_TYPE_NHA and length >= 6:
                        (encap_type,) = struct.unpack_from("H", data, offset + 4)
                        break
                    offset += (length + 3) & ~3
        return rtmsg_base.encaps.get(encap_type, msg.hex)


class rtmsg_ext(rtmsg):  # type: ignore[misc]
    """
    pyroute2's ``rtmsg`` with the route attributes after RTA_EXPIRES::

        RTA_PAD           24
        RTA_UID           25  u32
        RTA_TTL_PROPAGATE 26  u8
        RTA_IP_PROTO      27  u8
        RTA_SPORT         28  be16
        RTA_DPORT         29  be16
        RTA_NH_ID         30  u32
        RTA_FLOWLABEL     31  be32

    (``RTA_EXPIRES`` is kept as pyroute2 declares it.)
    """

    __slots__ = ()

    # pyroute2 marks an nla_map compiled with a class attribute that a subclass
    # inherits: without this reset, a subclass created after the first rtmsg()
    # instance would silently use rtmsg's compiled tables (no RTA_NH_ID).
    _nlmsg_base__compiled_nla = False

    nla_map = tuple(
        (key, name, spec)
        for key, (name, spec) in sorted(
            {
                **{i: tuple(item[:2]) for i, item in enumerate(rtmsg.nla_map)},
                24: ("RTA_PAD", "none"),
                25: ("RTA_UID", "uint32"),
                26: ("RTA_TTL_PROPAGATE", "uint8"),
                27: ("RTA_IP_PROTO", "uint8"),
                28: ("RTA_SPORT", "be16"),
                29: ("RTA_DPORT", "be16"),
                30: ("RTA_NH_ID", "uint32"),
                31: ("RTA_FLOWLABEL", "be32"),
            }.items()
        )
    )
