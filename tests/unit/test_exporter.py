"""The daemon's counters, the exporter's collector and history, the journal fields and the
console view: pure code, table-driven."""

from __future__ import annotations

import datetime
import io
import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from uplinkd import console, journal
from uplinkd.counters import Counters, Histogram, reason_kind
from uplinkd.exporter.collector import StatusCollector
from uplinkd.exporter.history import History, Today
from uplinkd.exporter.kernel_counters import LinkCounters
from uplinkd.exporter.server import UsageError, host_key, page_hosts, parse_address
from uplinkd.exporter.server import main as server_main
from uplinkd.health import RoundResult


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("no interface matches", "unplugged"),
        ("no carrier", "no_carrier"),
        ("interface is administratively down", "admin_down"),
        ("waiting for a DHCP lease", "no_address"),
        ("no default gateway learned", "no_gateway"),
        ("0/2 targets answered, 3 rounds in a row", "probes_failed"),
        ("2/2 targets answered, rtt 1.2 ms", "probes_ok"),
        ("loss 40% over 20%", "loss"),
        ("rtt 900 ms over 500 ms", "rtt"),
        ("recovered: loss 0%, rtt 3.0 ms", "recovered"),
        ("not probed yet", "not_probed"),
        ("in service when uplinkd started; probing", "adopted"),
        ("something new", "other"),
    ],
)
def test_reason_kinds_are_bounded(reason: str, kind: str) -> None:
    assert reason_kind(reason) == kind


def test_histogram_is_cumulative_with_inf_last() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(v)
    assert h.as_json() == {"le": [0.1, 1.0, "+Inf"], "counts": [2, 3, 4], "sum": 3.65, "count": 4}


def status_with_counters() -> dict[str, Any]:
    c = Counters()
    c.pass_done(seconds=0.008, writes=14, failed=0)
    c.pass_done(seconds=0.2, writes=1, failed=1)
    c.transition(
        uplink="lte1", old="up", new="down", reason="0/2 targets answered, 2 rounds in a row", failover=True
    )
    c.probe_round("lte1", RoundResult(started=0.0, sent=2, answered=1, rtts=(0.02,), bytes=92))
    c.config_loaded(False, at=1000.0)
    c.conntrack_flushed[0x6600] = 7
    return {
        "version": "0.1.0",
        "paused": False,
        "summary": "1/2 uplinks in service (wan)",
        "failures": [],
        "events": [{"at": 1000.0, "uplink": "lte1", "from": "up", "to": "down", "reason": "probes"}],
        "uplinks": [
            {"name": "wan", "state": "up", "since_s": 30.0, "dev": "eth1", "in_group": True, "weight": 3,
             "drained": False, "probe": {"rtt_ms": 12.5, "loss_pct": 0.0}},
            {"name": "lte1", "state": "down", "since_s": 2.0, "dev": "wwan0", "in_group": False, "weight": 1,
             "drained": False, "probe": {"rtt_ms": None, "loss_pct": 100.0}},
        ],
        "counters": c.as_json(marks={0x6600: "lte1"}),
    }  # fmt: skip


def exposition(status: dict[str, Any] | None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    links = {"eth1": LinkCounters(1000, 2000, 10, 20)}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(lambda: status, read_link=links.get))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_collector_turns_status_into_parseable_metrics() -> None:
    m = exposition(status_with_counters())
    assert m[("uplinkd_up", ())] == 1
    assert m[("uplinkd_uplink_state", (("state", "down"), ("uplink", "lte1")))] == 1
    assert m[("uplinkd_uplink_state", (("state", "up"), ("uplink", "lte1")))] == 0
    assert m[("uplinkd_uplink_weight", (("uplink", "wan"),))] == 3
    assert m[("uplinkd_probe_rtt_seconds", (("uplink", "wan"),))] == 0.0125
    assert ("uplinkd_probe_rtt_seconds", (("uplink", "lte1"),)) not in m
    assert m[("uplinkd_probe_loss_ratio", (("uplink", "lte1"),))] == 1.0
    assert m[("uplinkd_uplink_transmit_bytes_total", (("dev", "eth1"), ("uplink", "wan")))] == 2000
    assert ("uplinkd_uplink_transmit_bytes_total", (("dev", "wwan0"), ("uplink", "lte1"))) not in m  # gone
    key = (("from", "up"), ("reason", "probes_failed"), ("to", "down"), ("uplink", "lte1"))
    assert m[("uplinkd_transitions_total", key)] == 1
    assert m[("uplinkd_failovers_total", (("uplink", "lte1"),))] == 1
    assert m[("uplinkd_conntrack_flushed_total", (("uplink", "lte1"),))] == 7
    assert m[("uplinkd_probe_sent_bytes_total", (("uplink", "lte1"),))] == 92
    assert m[("uplinkd_probe_round_trip_seconds_bucket", (("le", "0.025"), ("uplink", "lte1")))] == 1
    assert m[("uplinkd_probe_round_trip_seconds_bucket", (("le", "0.01"), ("uplink", "lte1")))] == 0
    assert m[("uplinkd_passes_total", ())] == 2
    assert m[("uplinkd_writes_total", ())] == 15
    assert m[("uplinkd_failed_writes_total", ())] == 1
    assert m[("uplinkd_pass_duration_seconds_count", ())] == 2
    assert m[("uplinkd_pass_duration_seconds_bucket", (("le", "0.01"),))] == 1
    assert m[("uplinkd_config_last_load_success", ())] == 0
    assert m[("uplinkd_config_load_failures_total", ())] == 1


def test_a_modem_uplink_has_its_signal_and_registration_as_metrics() -> None:
    status = status_with_counters()
    status["uplinks"][1]["modem"] = {
        "state": "connected", "problem": None, "signal_pct": 71, "access_technology": "lte",
        "operator": "Lab Mobile", "registration": "home", "connect_attempts": 2,
    }  # fmt: skip
    m = exposition(status)
    assert m[("uplinkd_modem_signal_ratio", (("uplink", "lte1"),))] == 0.71
    labels = (("access_technology", "lte"), ("operator", "Lab Mobile"), ("problem", ""),
              ("registration", "home"), ("state", "connected"), ("uplink", "lte1"))  # fmt: skip
    assert m[("uplinkd_modem_info", labels)] == 1
    assert m[("uplinkd_modem_connect_attempts_total", (("uplink", "lte1"),))] == 2
    assert ("uplinkd_modem_signal_ratio", (("uplink", "wan"),)) not in m


def test_collector_says_down_when_the_daemon_does_not_answer() -> None:
    assert exposition(None) == {("uplinkd_up", ()): 0}


def test_todays_bytes_survive_a_replug_and_restart_at_midnight() -> None:
    t = Today(day=datetime.date(2026, 1, 1))
    t.add("wwan0", 100, 50)
    t.add("wwan0", 400, 80)  # +300 / +30
    t.add("wwan1", 10, 5)  # replugged under a new name: a new baseline
    t.add("wwan1", 20, 15)
    t.add("wwan1", 5, 1)  # counters reset: a new baseline
    assert (t.rx, t.tx) == (310, 40)


def test_history_keeps_an_hour_and_forgets_removed_uplinks() -> None:
    h = History(read_link=lambda dev: LinkCounters(100, 100, 1, 1))
    status = status_with_counters()
    for i in range(5):
        h.add(status, now=1000.0 + i * 2000)
    page = h.page_json(drain_enabled=False, now=9000.0)
    wan = next(u for u in page["uplinks"] if u["name"] == "wan")
    assert wan["history"]["at"] == [-2000.0, 0.0]  # older than an hour is gone
    status["uplinks"] = status["uplinks"][:1]
    h.add(status, now=9001.0)
    assert set(h.samples) == {"wan"}
    assert h.page_json(drain_enabled=True, now=9001.0)["drain_enabled"] is True


@pytest.mark.parametrize(
    ("text", "ok"),
    [("127.0.0.1:9477", ("127.0.0.1", 9477)), ("[::1]:9477", ("::1", 9477)), ("localhost:9477", None),
     ("192.168.1.1", None), ("192.168.1.1:0", None), ("192.168.1.1:70000", None)],
)  # fmt: skip
def test_listen_addresses_are_literal(text: str, ok: tuple[str, int] | None) -> None:
    if ok is None:
        with pytest.raises(UsageError, match="--listen"):
            parse_address(text, what="--listen")
    else:
        assert parse_address(text, what="--listen") == ok


def test_journal_fields_name_every_fact() -> None:
    fields = journal.state_change_fields(
        uplink="lte1", old="up", new="down", reason="no carrier", dev="wwan0"
    )
    assert fields == {
        "MESSAGE": "uplink lte1: up → down (no carrier)",
        "PRIORITY": "6",
        "SYSLOG_IDENTIFIER": "uplinkd",
        "UPLINKD_KIND": "uplink",
        "UPLINKD_UPLINK": "lte1",
        "UPLINKD_STATE": "down",
        "UPLINKD_OLD_STATE": "up",
        "UPLINKD_REASON": "no carrier",
        "UPLINKD_DEV": "wwan0",
    }
    first = journal.state_change_fields(uplink="wan", old=None, new="probing", reason="x", dev=None)
    assert (first["UPLINKD_OLD_STATE"], first["UPLINKD_DEV"]) == ("", "")


def test_a_tunnels_journal_entry_names_the_tunnel_and_its_underlay_not_an_uplink() -> None:
    fields = journal.state_change_fields(
        uplink="home", old="up", new="down", reason="probes: 0/1", dev="wg0", tunnel=True, underlay="lte1"
    )
    assert fields["MESSAGE"] == "tunnel home: up → down (probes: 0/1)"
    assert fields["UPLINKD_KIND"] == "tunnel"
    assert (fields["UPLINKD_TUNNEL"], fields["UPLINKD_UNDERLAY"]) == ("home", "lte1")
    assert "UPLINKD_UPLINK" not in fields  # `journalctl UPLINKD_UPLINK=lte1` is lte1's own history


def test_outside_systemd_a_state_change_is_the_usual_log_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    log = logging.getLogger("uplinkd")
    with caplog.at_level(logging.INFO, logger="uplinkd"):
        journal.state_change(
            log, logging.INFO, uplink="lte1", old="up", new="down", reason="no carrier", dev="x"
        )
    assert [r.getMessage() for r in caplog.records] == ["uplink lte1: up → down (no carrier)"]
    assert not journal.send({"MESSAGE": "m"}, environ={})
    assert journal.under_systemd({"JOURNAL_STREAM": "8:1234"})


def test_console_frame_is_plain_text_with_sparklines() -> None:
    samples = console.Samples(width=4)
    status = status_with_counters()
    for rtt in (10.0, 20.0, None, 40.0):
        status["uplinks"][0]["probe"]["rtt_ms"] = rtt
        samples.add(status)
    frame = console.render(status, samples, now=1000.0)
    assert "\x1b" not in frame
    wan = next(line for line in frame.splitlines() if line.startswith("wan "))
    assert "▃▅ █" in wan and "40.0 ms" in wan and "yes" in wan
    assert "lte1: up → down (probes)" in frame
    assert console.sparkline([0, 50, 100], top=100, glyphs="abc") == "abc"
    assert console.render(None, samples, now=0.0, error="cannot reach").startswith("uplinkd: not answering")


def test_console_in_a_pipe_writes_frames_without_escapes() -> None:
    out = io.StringIO()
    status = status_with_counters()
    answered = console.watch(lambda: status, out=out, count=2, sleep=lambda _: None)
    assert answered
    text = out.getvalue()
    assert "\x1b" not in text
    assert text.count("uplinkd 0.1.0:") == 2 and "\n\nuplinkd 0.1.0:" in text


def test_pass_duration_and_counters_json_shape() -> None:
    j = status_with_counters()["counters"]
    assert set(j) == {"passes", "writes", "failed_writes", "pass_seconds", "config", "transitions", "uplinks"}
    assert j["uplinks"]["lte1"]["conntrack_flushed"] == 7


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--listen", ""], "nothing to serve"),
        (["--listen", "localhost:9477"], "--listen: 'localhost:9477' is not ADDRESS:PORT"),
        (["--page-token-file", "/nonexistent"], "--page-token-file: the page is off"),
        (["--page", "192.0.2.1:8080", "--page-token-file", "/nonexistent/token"], "cannot read"),
        (["--page", "192.0.2.1:8080", "--sample-interval", "0.1"], "--sample-interval"),
        (["--page-host", "router.lan"], "--page-host: the page is off"),
        (["--page", "192.0.2.1:8080", "--page-host", "http://x/"], "--page-host: 'http://x/' is not"),
    ],
)
def test_exporter_refuses_bad_arguments_with_the_fix(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert server_main(argv) == 2
    assert says in capsys.readouterr().err


def test_exporter_refuses_a_short_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "token"
    token.write_text("short\n")
    assert server_main(["--page", "192.0.2.1:8080", "--page-token-file", str(token)]) == 2
    assert "use at least 16 random" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("header", "served"),
    [
        ("192.168.1.1:8080", True),
        ("router.lan:8080", True),
        ("Router.LAN.:8080", True),  # case and a trailing dot do not matter
        ("proxy.lan:443", True),  # a name given with its own port
        ("192.168.1.1", False),  # port 80 implied: not the page's
        ("router.lan", False),
        ("router.lan:8081", False),
        ("rebind.example:8080", False),  # DNS rebinding: the attacker's name
        ("192.168.1.1:8080 ", True),
        ("192.168.1.1:8080@evil", False),
        ("[::ffff:192.168.1.1]:8080", False),
        ("", False),
        ("::1", False),
    ],
)
def test_page_answers_only_its_own_host_header(header: str, served: bool) -> None:
    hosts = page_hosts(("192.168.1.1", 8080), ["router.lan", "proxy.lan:443"])
    assert (host_key(header) in hosts) is served


def test_page_on_port_80_also_answers_a_host_without_port() -> None:
    hosts = page_hosts(("fd00::1", 80), ["router.lan"])
    for header in ("[fd00::1]", "[FD00:0::1]:80", "router.lan", "router.lan:80"):
        assert host_key(header) in hosts, header
    assert host_key("[fd00::2]") not in hosts
    with pytest.raises(UsageError, match="not a host name"):
        page_hosts(("fd00::1", 80), ["bad name"])
