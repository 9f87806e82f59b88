"""The DHCPv6-PD client's pure parts: the messages on the wire (RFC 8415 layouts, checked
byte by byte), what a Reply's IA_PD binds, the binding kept in state_dir, and the
retransmission timing."""

from __future__ import annotations

import ipaddress
import itertools
import random
from pathlib import Path

import pytest

from uplinkd.model import Delegation
from uplinkd.pd import binding as store
from uplinkd.pd.binding import Binding
from uplinkd.pd.client import waits
from uplinkd.pd.messages import (
    INFINITY,
    IaPd,
    IaPrefix,
    Malformed,
    Message,
    MessageType,
    Status,
    decode,
)

NET = ipaddress.IPv6Network
DUID = bytes.fromhex("0004") + bytes(range(16))
SERVER = bytes.fromhex("000200000a0b0c0d")


def test_a_solicit_is_laid_out_as_rfc_8415_says() -> None:
    msg = Message(
        MessageType.SOLICIT,
        0xABCDEF,
        client_id=DUID,
        elapsed=0,
        requested=(23, 82),
        ia_pd=(IaPd(7),),
    )
    wire = msg.encode()
    assert wire[:4] == bytes.fromhex("01abcdef")  # msg-type 1, transaction-id
    assert wire[4:8] == bytes.fromhex("00010012") and wire[8:26] == DUID  # OPTION_CLIENTID, len 18
    assert wire[26:32] == bytes.fromhex("000800020000")  # OPTION_ELAPSED_TIME 0
    assert wire[32:40] == bytes.fromhex("0006000400170052")  # OPTION_ORO: DNS servers, SOL_MAX_RT
    assert wire[40:] == bytes.fromhex("0019000c000000070000000000000000")  # IA_PD, IAID 7
    assert decode(wire) == msg


def test_a_reply_with_a_prefix_decodes_and_binds() -> None:
    ia = IaPd(7, 1800, 2880, (IaPrefix(NET("2001:db8:e1::/56"), 3600, 7200),))
    wire = Message(MessageType.REPLY, 1, client_id=DUID, server_id=SERVER, ia_pd=(ia,)).encode()
    # IA Prefix: preferred, valid, prefix-length, prefix (RFC 8415 §21.22)
    assert bytes.fromhex("001a001900000e1000001c203820010db800e1") in wire
    got = decode(wire)
    assert got.ia_pd == (ia,) and got.server_id == SERVER
    b = Binding.from_ia(got.ia_pd[0], server_id=SERVER, now=1000.0)
    assert b is not None
    assert (b.prefix, b.renew_at, b.rebind_at, b.expires_at) == (
        NET("2001:db8:e1::/56"),
        2800.0,
        3880.0,
        8200.0,
    )
    assert b.delegation() == Delegation(NET("2001:db8:e1::/56"), 8200.0)
    assert b.ia() == IaPd(7, 0, 0, (IaPrefix(NET("2001:db8:e1::/56"), 0, 0),))


@pytest.mark.parametrize(
    ("ia", "why"),
    [
        (IaPd(7, 0, 0, (), Status.NO_PREFIX_AVAIL), "no prefix available"),
        (
            IaPd(7, 10, 5, (IaPrefix(NET("2001:db8::/56"), 30, 60),)),
            "T1 > T2: discarded",
        ),
        (
            IaPd(7, 0, 0, (IaPrefix(NET("2001:db8::/56"), 0, 0),)),
            "valid lifetime 0: withdrawn",
        ),
        (
            IaPd(7, 0, 0, (IaPrefix(NET("2001:db8::/56"), 90, 60),)),
            "preferred > valid: invalid",
        ),
    ],
)
def test_an_ia_pd_that_gives_nothing_binds_nothing(ia: IaPd, why: str) -> None:
    assert Binding.from_ia(ia, server_id=SERVER, now=0.0) is None, why


def test_t1_and_t2_left_to_the_client_follow_the_preferred_lifetime() -> None:
    b = Binding.from_ia(
        IaPd(7, 0, 0, (IaPrefix(NET("2001:db8::/56"), 100, 200),)),
        server_id=SERVER,
        now=0.0,
    )
    assert b is not None and (b.t1, b.t2) == (50, 80)
    forever = Binding.from_ia(
        IaPd(7, 0, 0, (IaPrefix(NET("2001:db8::/56"), INFINITY, INFINITY),)),
        server_id=SERVER,
        now=0.0,
    )
    assert forever is not None and forever.expires_at is None and forever.renew_at is None


@pytest.mark.parametrize(
    "wire",
    [
        b"\x07\x00",  # shorter than a header
        bytes.fromhex("070000010019"),  # an option header cut short
        bytes.fromhex("07000001001900100000"),  # an option longer than what is left
        bytes.fromhex("070000010019000400000001"),  # an IA_PD without T1/T2
        bytes.fromhex("070000010019001d000000070000000000000000001a000d" + "00" * 13),  # short IAPREFIX
        bytes.fromhex("0c000001"),  # a relay message: not for a client
    ],
)
def test_malformed_messages_are_refused_whole(wire: bytes) -> None:
    with pytest.raises(Malformed):
        decode(wire)


def test_unknown_options_are_skipped_by_length() -> None:
    wire = Message(MessageType.ADVERTISE, 5, client_id=DUID, server_id=SERVER).encode() + bytes.fromhex(
        "0052000400000078"
    )
    got = decode(wire)
    assert got.server_id == SERVER and got.other == {82: bytes.fromhex("00000078")}


def test_the_binding_survives_in_state_dir_and_expires(tmp_path: Path) -> None:
    path = tmp_path / "wan.pd.json"
    b = Binding(SERVER, 7, NET("2001:db8:e1::/56"), 60, 90, 30, 48, 1000.0)
    store.save(path, b)
    assert store.load(path, now=1089.0) == b
    assert store.load(path, now=1090.0) is None  # its valid lifetime ran out
    path.write_text("{mangled")
    assert store.load(path, now=1000.0) is None
    store.save(path, None)
    assert not path.exists()


def test_retransmissions_double_within_ten_percent_up_to_the_ceiling() -> None:
    gen = waits(1.0, 30.0, first_positive=True, rng=random.Random(1))
    seq = [next(gen) for _ in range(12)]
    assert 1.0 <= seq[0] <= 1.1
    for before, after in itertools.pairwise(seq):
        assert after <= 33.0 and (after >= 27.0 or 1.9 * before <= after <= 2.1 * before)
    assert seq[-1] >= 27.0
