"""Prometheus metrics from the daemon's status and the kernel's interface counters.

One scrape = one `status` request on the control socket plus four sysfs reads per present
uplink; nothing is kept between scrapes, so what Prometheus sees is what the daemon and
the kernel say at that moment. Counters the daemon keeps restart from zero when it
restarts, which Prometheus' `rate()` and `increase()` handle as a counter reset.

Names (all `uplinkd_…`), labels in braces:

  up                                     1 if the daemon answered this scrape
  info{version}                          1
  uplink_state{uplink,state}             1 for the uplink's current state, 0 for the others
  uplink_state_seconds{uplink}           time in the current state
  uplink_in_group{uplink}, uplink_weight{uplink}, uplink_drained{uplink}
  probe_rtt_seconds{uplink}              smoothed RTT (absent until probed)
  probe_loss_ratio{uplink}               smoothed loss, 0-1
  probe_round_trip_seconds{uplink}       histogram of every answered probe's RTT
  probe_rounds_total, probes_sent_total, probes_answered_total, probe_sent_bytes_total {uplink}
  uplink_receive_bytes_total, uplink_transmit_bytes_total,
  uplink_receive_packets_total, uplink_transmit_packets_total {uplink,dev}   the kernel's
  transitions_total{uplink,from,to,reason}   reason: a short kind, see counters.reason_kind
  failovers_total{uplink}                left the balance group because it failed
  conntrack_flushed_total{uplink}        connection-tracking entries deleted on failover
  passes_total, writes_total, failed_writes_total, pass_duration_seconds (histogram)
  config_last_load_success, config_last_load_timestamp_seconds, config_loads_total,
  config_load_failures_total
  paused, failing_writes                 after `flush`; writes failing in the last pass
  modem_signal_ratio{uplink}             a modem uplink's signal quality, 0-1 (ModemManager's)
  modem_info{uplink,state,access_technology,operator,registration,problem}   1
  modem_connect_attempts_total{uplink}   Simple.Connect calls by the current watcher
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from uplinkd.exporter import kernel_counters
from uplinkd.model import State

STATES = tuple(str(s) for s in State)
LinkReader = Callable[[str], kernel_counters.LinkCounters | None]


def _histogram(name: str, doc: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=labels)


def _add_histogram(family: HistogramMetricFamily, values: list[str], data: Mapping[str, Any]) -> None:
    buckets = [
        (str(float(le)) if le != "+Inf" else "+Inf", n)
        for le, n in zip(data["le"], data["counts"], strict=True)
    ]
    family.add_metric(values, buckets, sum_value=data["sum"])


class StatusCollector(Collector):
    """A prometheus_client collector over `fetch()` (the daemon's status, or None when the
    daemon cannot be reached) and the kernel's interface counters."""

    def __init__(
        self,
        fetch: Callable[[], Mapping[str, Any] | None],
        *,
        read_link: LinkReader = kernel_counters.read,
    ) -> None:
        self.fetch = fetch
        self.read_link = read_link

    def collect(self) -> Iterator[Metric]:
        status = self.fetch()
        up = GaugeMetricFamily("uplinkd_up", "1 if the daemon answered on its control socket")
        up.add_metric([], 1 if status is not None else 0)
        yield up
        if status is None:
            return
        info = InfoMetricFamily("uplinkd", "the daemon's version")
        info.add_metric([], {"version": str(status.get("version", ""))})
        yield info
        yield from self._uplinks(status)
        yield from self._modems(status)
        yield from self._daemon(status)

    def _uplinks(self, status: Mapping[str, Any]) -> Iterator[Metric]:
        labels = ["uplink"]
        state = GaugeMetricFamily(
            "uplinkd_uplink_state", "1 for the uplink's current state", labels=["uplink", "state"]
        )
        since = GaugeMetricFamily("uplinkd_uplink_state_seconds", "time in the current state", labels=labels)
        in_group = GaugeMetricFamily("uplinkd_uplink_in_group", "1 if in the balance group", labels=labels)
        weight = GaugeMetricFamily("uplinkd_uplink_weight", "weight in the balance group", labels=labels)
        drained = GaugeMetricFamily("uplinkd_uplink_drained", "1 if drained by hand", labels=labels)
        rtt = GaugeMetricFamily("uplinkd_probe_rtt_seconds", "smoothed probe round-trip time", labels=labels)
        loss = GaugeMetricFamily("uplinkd_probe_loss_ratio", "smoothed probe loss, 0 to 1", labels=labels)
        link_labels = ["uplink", "dev"]
        traffic = {
            "rx_bytes": CounterMetricFamily(
                "uplinkd_uplink_receive_bytes", "bytes received (kernel)", labels=link_labels
            ),
            "tx_bytes": CounterMetricFamily(
                "uplinkd_uplink_transmit_bytes", "bytes sent (kernel)", labels=link_labels
            ),
            "rx_packets": CounterMetricFamily(
                "uplinkd_uplink_receive_packets", "packets received (kernel)", labels=link_labels
            ),
            "tx_packets": CounterMetricFamily(
                "uplinkd_uplink_transmit_packets", "packets sent (kernel)", labels=link_labels
            ),
        }
        for u in status.get("uplinks", []):
            name = str(u["name"])
            for s in STATES:
                state.add_metric([name, s], 1.0 if u.get("state") == s else 0.0)
            since.add_metric([name], float(u.get("since_s") or 0))
            in_group.add_metric([name], 1.0 if u.get("in_group") else 0.0)
            weight.add_metric([name], float(u.get("weight") or 0))
            drained.add_metric([name], 1.0 if u.get("drained") else 0.0)
            probe = u.get("probe") or {}
            if probe.get("rtt_ms") is not None:
                rtt.add_metric([name], float(probe["rtt_ms"]) / 1000)
            if probe.get("loss_pct") is not None:
                loss.add_metric([name], float(probe["loss_pct"]) / 100)
            dev = u.get("dev")
            link = self.read_link(dev) if dev else None
            if dev and link is not None:
                for field, family in traffic.items():
                    family.add_metric([name, dev], float(getattr(link, field)))
        yield from (state, since, in_group, weight, drained, rtt, loss, *traffic.values())

    def _modems(self, status: Mapping[str, Any]) -> Iterator[Metric]:
        """What ModemManager says of each modem uplink's modem (status' `modem`)."""
        signal = GaugeMetricFamily("uplinkd_modem_signal_ratio", "signal quality, 0 to 1", labels=["uplink"])
        keys = ("state", "access_technology", "operator", "registration", "problem")
        info = GaugeMetricFamily("uplinkd_modem_info", "the modem as ModemManager reports it",
                                 labels=["uplink", *keys])  # fmt: skip
        attempts = CounterMetricFamily(
            "uplinkd_modem_connect_attempts", "Simple.Connect calls by the current watcher", labels=["uplink"]
        )
        for u in status.get("uplinks", []):
            m = u.get("modem")
            if not m:
                continue
            name = str(u["name"])
            if m.get("signal_pct") is not None:
                signal.add_metric([name], float(m["signal_pct"]) / 100)
            info.add_metric([name, *(str(m.get(k) or "") for k in keys)], 1.0)
            attempts.add_metric([name], float(m.get("connect_attempts") or 0))
        yield from (signal, info, attempts)

    def _daemon(self, status: Mapping[str, Any]) -> Iterator[Metric]:
        counters = status.get("counters")
        paused = GaugeMetricFamily("uplinkd_paused", "1 after `uplinkctl flush` until `resume`")
        paused.add_metric([], 1.0 if status.get("paused") else 0.0)
        failing = GaugeMetricFamily("uplinkd_failing_writes", "kernel writes failing in the last pass")
        failing.add_metric([], float(len(status.get("failures", []))))
        yield from (paused, failing)
        if not counters:  # a daemon from before the counters: what status has is all there is
            return
        for key, name, doc in (
            ("passes", "uplinkd_passes", "controller passes (read, plan, apply)"),
            ("writes", "uplinkd_writes", "kernel writes made"),
            ("failed_writes", "uplinkd_failed_writes", "kernel writes that failed"),
        ):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], float(counters[key]))
            yield family
        passes = _histogram("uplinkd_pass_duration_seconds", "time a controller pass takes", [])
        _add_histogram(passes, [], counters["pass_seconds"])
        yield passes
        config = counters["config"]
        ok = GaugeMetricFamily("uplinkd_config_last_load_success", "1 if the last config (re)load succeeded")
        ok.add_metric([], 1.0 if config["last_ok"] else 0.0)
        at = GaugeMetricFamily(
            "uplinkd_config_last_load_timestamp_seconds", "when the config was last (re)loaded"
        )
        at.add_metric([], float(config["last_at"]))
        loads = CounterMetricFamily("uplinkd_config_loads", "config loads that succeeded")
        loads.add_metric([], float(config["loads"]))
        fails = CounterMetricFamily("uplinkd_config_load_failures", "config reloads refused")
        fails.add_metric([], float(config["load_failures"]))
        yield from (ok, at, loads, fails)

        transitions = CounterMetricFamily(
            "uplinkd_transitions", "uplink state changes", labels=["uplink", "from", "to", "reason"]
        )
        for t in counters["transitions"]:
            transitions.add_metric([t["uplink"], t["from"], t["to"], t["reason"]], float(t["count"]))
        yield transitions
        per_uplink = {
            "failovers": CounterMetricFamily(
                "uplinkd_failovers",
                "times the uplink left the balance group because it failed",
                labels=["uplink"],
            ),
            "conntrack_flushed": CounterMetricFamily(
                "uplinkd_conntrack_flushed",
                "connection-tracking entries deleted on failover",
                labels=["uplink"],
            ),
            "probe_rounds": CounterMetricFamily("uplinkd_probe_rounds", "probe rounds", labels=["uplink"]),
            "probes_sent": CounterMetricFamily("uplinkd_probes_sent", "probes sent", labels=["uplink"]),
            "probes_answered": CounterMetricFamily(
                "uplinkd_probes_answered", "probes answered", labels=["uplink"]
            ),
            "probe_bytes": CounterMetricFamily(
                "uplinkd_probe_sent_bytes",
                "bytes probing put on the wire, IP headers included",
                labels=["uplink"],
            ),
        }
        rtts = _histogram(
            "uplinkd_probe_round_trip_seconds", "every answered probe's round-trip time", ["uplink"]
        )
        for name, c in counters["uplinks"].items():
            for key, family in per_uplink.items():
                family.add_metric([name], float(c[key]))
            if c.get("probe_rtt_seconds"):
                _add_histogram(rtts, [name], c["probe_rtt_seconds"])
        yield from (*per_uplink.values(), rtts)
