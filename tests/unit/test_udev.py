"""udev facts: properties added to links, and links udev has not finished with held back."""

from __future__ import annotations

from pathlib import Path

from uplinkd.model import Link, Observed
from uplinkd.udev import UdevFacts, enrich


def observed(*links: Link) -> Observed:
    return Observed(links={link.index: link for link in links})


def test_plain_facts_add_usb_identity_and_hold_nothing_back() -> None:
    facts = {"enx1": {"ID_VENDOR_ID": "0525", "ID_MODEL_ID": "A4A2", "ID_SERIAL_SHORT": "S1"}}
    out = enrich(observed(Link(2, "enx1", up=False, carrier=False), Link(3, "usb0", False, False)), facts)
    enx = out.links[2]
    assert (enx.usb_vendor, enx.usb_product, enx.usb_serial) == ("0525", "a4a2", "S1")
    assert set(out.links) == {2, 3}


def test_links_udev_has_not_initialized_are_held_back_until_it_has(tmp_path: Path) -> None:
    facts = UdevFacts(tmp_path, grace=10.0)
    woken: list[float] = []
    facts.wake_later = woken.append
    (tmp_path / "n1").write_text("I:1\n")
    links = observed(Link(1, "lo", up=True, carrier=True), Link(2, "usb0", up=False, carrier=False))
    assert set(enrich(links, facts).links) == {1}  # usb0: udev has not renamed it yet
    assert woken == [10.0]  # a pass once the grace runs out
    (tmp_path / "n2").write_text("I:2\n")
    renamed = observed(Link(1, "lo", up=True, carrier=True), Link(2, "enx1", up=False, carrier=False))
    assert set(enrich(renamed, facts).links) == {1, 2}
    assert facts.pending == {}


def test_a_link_udev_never_finishes_with_is_used_after_the_grace(tmp_path: Path) -> None:
    facts = UdevFacts(tmp_path, grace=0.0)
    assert set(enrich(observed(Link(5, "usb0", up=False, carrier=False)), facts).links) == {5}


def test_without_a_udev_database_nothing_is_held_back() -> None:
    facts = UdevFacts(None)
    assert set(enrich(observed(Link(5, "usb0", up=False, carrier=False)), facts).links) == {5}
