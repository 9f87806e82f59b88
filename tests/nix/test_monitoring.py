"""examples/monitoring/ evaluated, not only parsed: the home router with uplinkd-exporter, the LAN
status page, Prometheus scraping the exporter and Grafana provisioned with the dashboard.

Prometheus' and Grafana's options are tests/nix/nixos/monitoring.nix's declarations (nixpkgs'
types and assertions), so an unknown key in a scrape config, or a Grafana setting NixOS
requires, fails here as it fails `nixos-rebuild`.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
from nixeval import REPO, EvalError, combined, evaluate, needs_lib, uplinkctl_check

pytestmark = needs_lib

EXAMPLE = REPO / "examples" / "monitoring" / "default.nix"
EXEC = "systemd.services.uplinkd-exporter.serviceConfig"
SHOW = (
    EXEC,
    "systemd.services.uplinkd-exporter.wantedBy",
    "services.uplinkd.exporter",
    "services.uplinkd.statusPage",
    "services.prometheus",
    "services.grafana.provision",
    "services.grafana.settings.security.secret_key",
    "networking.firewall.interfaces",
    "networking.firewall.allowedTCPPorts",
    "systemd.network.networks",
)


def flags(exec_start: str) -> dict[str, list[str]]:
    """ExecStart's `--flag value` pairs; a flag given more than once keeps every value."""
    argv = shlex.split(exec_start)[1:]
    out: dict[str, list[str]] = {}
    for flag, value in zip(argv[::2], argv[1::2], strict=True):
        assert flag.startswith("--"), argv
        out.setdefault(flag, []).append(value)
    return out


@pytest.fixture(scope="module")
def example() -> dict[str, Any]:
    return evaluate(EXAMPLE, show=SHOW)


def test_monitoring_example_evaluates(example: dict[str, Any], tmp_path: Path) -> None:
    """No failed assertion (Grafana's secret_key among them), no warning, only typed options
    written by the module; the controller accepts the config it renders."""
    assert example["failedAssertions"] == []
    assert example["warnings"] == []
    assert example["standInsDefinedByModule"] == []
    assert "systemd.services" in example["optionsDefinedByModule"]
    done = uplinkctl_check(example["settings"], tmp_path)
    assert done.returncode == 0, done.stderr
    # the secret stays out of the store: Grafana reads it from a file at start
    assert example["config"]["services.grafana.settings.security.secret_key"].startswith("$__file{/etc/")


def test_exporter_unit_serves_metrics_on_the_configured_address(example: dict[str, Any]) -> None:
    got = example["config"]
    exporter = got["services.uplinkd.exporter"]
    assert exporter["enable"] is True
    unit = got[EXEC]
    assert got["systemd.services.uplinkd-exporter.wantedBy"] == ["multi-user.target"]
    args = flags(unit["ExecStart"])
    assert shlex.split(unit["ExecStart"])[0].endswith("/bin/uplinkd-exporter")
    assert args["--listen"] == [f"{exporter['listenAddress']}:{exporter['port']}"] == ["127.0.0.1:9477"]
    assert unit["DynamicUser"] is True and unit["CapabilityBoundingSet"] == [""]
    for key, value in {"NoNewPrivileges": True, "ProtectSystem": "strict", "ProtectKernelTunables": True,
                       "MemoryDenyWriteExecute": True, "RestrictNamespaces": True}.items():  # fmt: skip
        assert unit[key] == value, key


def test_prometheus_scrapes_the_exporter(example: dict[str, Any]) -> None:
    got = example["config"]
    exporter = got["services.uplinkd.exporter"]
    prometheus = got["services.prometheus"]
    assert prometheus["enable"] is True
    assert (prometheus["listenAddress"], prometheus["port"]) == ("127.0.0.1", 9090)
    [job] = [c for c in prometheus["scrapeConfigs"] if c["job_name"] == "uplinkd"]
    assert job["metrics_path"] in (None, "/metrics")
    assert job["scheme"] in (None, "http")
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert targets == [f"{exporter['listenAddress']}:{exporter['port']}"]


def test_grafana_provisions_the_dashboard_and_its_datasource(example: dict[str, Any]) -> None:
    got = example["config"]
    provision = got["services.grafana.provision"]
    assert provision["enable"] is True
    [provider] = provision["dashboards"]["settings"]["providers"]
    assert provider["type"] == "file"
    folder = Path(provider["options"]["path"])
    assert folder == REPO / "contrib" / "grafana"
    dashboard = json.loads((folder / "uplinkd.json").read_text())
    assert dashboard["uid"] == "uplinkd"
    # the dashboard picks its datasource by type; one of that type is provisioned, pointing at
    # the Prometheus this example runs
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    prometheus = got["services.prometheus"]
    [source] = provision["datasources"]["settings"]["datasources"]
    assert source["type"] == variable["query"] == "prometheus"
    assert source["access"] == "proxy"
    assert source["url"] == f"http://{prometheus['listenAddress']}:{prometheus['port']}"


def test_status_page_binds_only_the_lan_address(example: dict[str, Any]) -> None:
    got = example["config"]
    page = got["services.uplinkd.statusPage"]
    args = flags(got[EXEC]["ExecStart"])
    assert args["--page"] == [f"{page['address']}:{page['port']}"] == ["192.168.1.1:8080"]
    assert "--page-host" not in args  # no extra names: the page answers to its address only
    # that address is the LAN bridge's, and the page's port is open there and nowhere else
    lan = got["systemd.network.networks"]["40-br-lan"]
    assert f"{page['address']}/24" in lan["address"]
    opened = {i: c["allowedTCPPorts"] for i, c in got["networking.firewall.interfaces"].items()}
    assert [i for i, ports in opened.items() if page["port"] in ports] == ["br-lan"]
    assert page["port"] not in got["networking.firewall.allowedTCPPorts"]
    # drain is on, with the token as a systemd credential rather than a path in the unit
    assert args["--page-token-file"] == ["%d/page-token"]
    assert got[EXEC]["LoadCredential"] == [f"page-token:{page['drain']['tokenFile']}"]
    assert not page["drain"]["tokenFile"].startswith("/nix/store/")


def test_page_host_names_reach_the_exporter(tmp_path: Path) -> None:
    names = '{ services.uplinkd.statusPage.hostNames = [ "router.lan" "router.lan:80" ]; }'
    result = evaluate(combined(tmp_path, str(EXAMPLE), names), show=(EXEC,))
    assert result["failedAssertions"] == []
    args = flags(result["config"][EXEC]["ExecStart"])
    assert args["--page-host"] == ["router.lan", "router.lan:80"]

    bad = '{ services.uplinkd.statusPage.hostNames = [ "http://router.lan/" ]; }'
    with pytest.raises(EvalError, match=r"statusPage\.hostNames"):
        evaluate(combined(tmp_path, str(EXAMPLE), bad, name="bad.nix"))


STORE_TOKENS = {
    # a Nix path interpolated into a string: copied to the store, world-readable
    "interpolated-path": '{ services.uplinkd.statusPage.drain.tokenFile = lib.mkForce "${./token}"; }',
    "store-path-string": (
        "{ services.uplinkd.statusPage.drain.tokenFile = lib.mkForce"
        ' "/nix/store/00000000000000000000000000000000-page-token"; }'
    ),
}


@pytest.mark.parametrize("case", sorted(STORE_TOKENS))
def test_a_token_in_the_nix_store_is_refused(case: str, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("not-a-real-token-0123456789\n")
    addition = tmp_path / "store-token.nix"
    addition.write_text("{ lib, ... }: " + STORE_TOKENS[case] + "\n")
    result = evaluate(combined(tmp_path, str(EXAMPLE), str(addition)))
    [message] = result["failedAssertions"]
    assert "services.uplinkd.statusPage.drain.tokenFile" in message
    assert "in the Nix store" in message and "outside it" in message


def test_a_token_as_a_nix_path_is_a_type_error(tmp_path: Path) -> None:
    """A bare Nix path is not a string: the option's type refuses it before it is copied."""
    (tmp_path / "token").write_text("not-a-real-token-0123456789\n")
    addition = tmp_path / "path-token.nix"
    addition.write_text(
        "{ lib, ... }: { services.uplinkd.statusPage.drain.tokenFile = lib.mkForce ./token; }\n"
    )
    with pytest.raises(EvalError, match=r"statusPage\.drain\.tokenFile"):
        evaluate(combined(tmp_path, str(EXAMPLE), str(addition)))


def test_prometheus_declarations_refuse_what_nixpkgs_refuses(tmp_path: Path) -> None:
    """The harness itself: an unknown scrape-config key fails, and so does a port in
    listenAddress (nixpkgs' assertion)."""
    typo = '{ services.prometheus.scrapeConfigs = [ { job_name = "x"; static_config = [ ]; } ]; }'
    with pytest.raises(EvalError, match="static_config"):
        evaluate(combined(tmp_path, str(EXAMPLE), typo))
    with_port = '{ lib, ... }: { services.prometheus.listenAddress = lib.mkForce "127.0.0.1:9090"; }'
    result = evaluate(combined(tmp_path, str(EXAMPLE), with_port, name="port.nix"))
    [message] = result["failedAssertions"]
    assert message == "services.prometheus.listenAddress: give the port in services.prometheus.port"


def test_grafana_without_a_secret_key_is_refused(tmp_path: Path) -> None:
    """NixOS 26.05 removed Grafana's default secret_key; the example sets one."""
    unset = "{ lib, ... }: { services.grafana.settings.security.secret_key = lib.mkForce null; }"
    result = evaluate(combined(tmp_path, str(EXAMPLE), unset))
    [message] = result["failedAssertions"]
    assert "secret_key" in message
