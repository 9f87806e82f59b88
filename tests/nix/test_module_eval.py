"""The NixOS module, evaluated with nixpkgs' `lib` and held against the controller.

- every example evaluates with no failed assertion, and the controller accepts the config file
  it renders (`uplinkctl check`, run as ``python -m uplinkd.cli`` so it is the code under test);
- the rendered file is exactly what the controller reads: no value renamed, coerced or dropped,
  and every field the controller has is written out (probe settings excepted: the controller
  layers those itself);
- each bad config in fixtures/bad fails its one assertion, with a message that says how to fix
  it; where the controller would also refuse it, it does;
- values the controller refuses, the module's types refuse too, at the same option;
- the option tree under services.uplinkd.settings has the names and defaults of the
  controller's JSON Schema, so a field added on one side only fails here.

Needs `nix-instantiate` and nixpkgs' lib (see nixeval.py: CI finds it beside the clone);
tests/nix/nixos/ declares the NixOS options the module uses with nixpkgs' types.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from nixeval import (
    REPO,
    EvalError,
    combined,
    evaluate,
    needs_lib,
    settings_module,
    uplinkctl_check,
)

from uplinkd.config import ConfigError, parse, schema

HERE = Path(__file__).resolve().parent
# The routers (uplinkd enabled); examples/home-endpoint.nix is the far end of a tunnel, plain
# NixOS without uplinkd, evaluated on its own.
ALL_EXAMPLES = sorted((REPO / "examples").glob("*.nix"))
EXAMPLES = [p for p in ALL_EXAMPLES if "services.uplinkd" in p.read_text()]
BAD = HERE / "fixtures" / "bad"
GOOD = HERE / "fixtures" / "good"
OPTION = "services.uplinkd.settings"

pytestmark = needs_lib


# --- the examples and the good fixtures --------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_evaluates_and_the_controller_accepts_it(example: Path, tmp_path: Path) -> None:
    result = evaluate(example)
    assert result["failedAssertions"] == []
    assert result["warnings"] == []
    assert result["settings"] is not None, "the example does not enable services.uplinkd"
    done = uplinkctl_check(result["settings"], tmp_path)
    assert done.returncode == 0, done.stderr


VM_TESTS = sorted((REPO / "nixos-tests").glob("*.nix"))


@pytest.mark.parametrize(
    "test", [t for t in VM_TESTS if t.stem != "lab"], ids=lambda p: f"nixos-tests/{p.stem}"
)
def test_vm_test_router_config_is_valid(test: Path, tmp_path: Path) -> None:
    """The VM tests need KVM; their router's config is checked here, where they cannot run."""
    router = tmp_path / "router.nix"
    router.write_text(
        f"{{ lib, ... }}: {{ imports = [ (import {test} {{ inherit lib; }}).nodes.router ]; }}\n"
    )
    result = evaluate(router)
    assert result["failedAssertions"] == []
    done = uplinkctl_check(result["settings"], tmp_path)
    assert done.returncode == 0, done.stderr


def differences(rendered: Any, kept: Any, path: str = "") -> list[str]:
    """Where the rendered file says something other than what the controller keeps."""
    if isinstance(rendered, dict) and isinstance(kept, dict):
        out = []
        for key, value in rendered.items():
            where = f"{path}.{key}" if path else key
            out += (
                [f"{where}: dropped by the controller"]
                if key not in kept
                else differences(value, kept[key], where)
            )
        return out
    return [] if rendered == kept else [f"{path}: rendered {rendered!r}, the controller keeps {kept!r}"]


def missing(rendered: Any, kept: Any, path: str = "") -> list[str]:
    """Fields the controller has that the file does not write out (probe sections excepted)."""
    layered = path == "probe" or path.endswith(".probe")
    if layered or not (isinstance(rendered, dict) and isinstance(kept, dict)):
        return []
    out = []
    for key, value in kept.items():
        where = f"{path}.{key}" if path else key
        out += [where] if key not in rendered else missing(rendered[key], value, where)
    return out


@pytest.mark.parametrize(
    "config", [*EXAMPLES, *sorted(GOOD.glob("*.nix"))], ids=lambda p: f"{p.parent.name}/{p.stem}"
)
def test_rendered_file_is_what_the_controller_reads(config: Path) -> None:
    rendered = evaluate(config)["settings"]
    kept = parse(rendered).model_dump(mode="json", exclude_none=True)
    assert differences(rendered, kept) == []
    assert missing(rendered, kept) == []


def test_disabled_module_adds_nothing(tmp_path: Path) -> None:
    """Disabled, the module defines no NixOS option at all (not even an empty udev rule)."""
    path = tmp_path / "disabled.nix"
    path.write_text('{ services.uplinkd.settings.uplinks.wan = { match.name = "eth1"; table = 101; }; }\n')
    result = evaluate(path)
    assert result["settings"] is None
    assert result["failedAssertions"] == []
    assert result["optionsDefinedByModule"] == []


def test_all_fields_fixture_sets_every_option() -> None:
    """fixtures/good/all-fields.nix must keep up with the options, or rendering goes untested.
    (An uplink's and a tunnel's `probe` are the top-level `probe`'s type: setting the latter
    covers them.)"""
    result = evaluate(GOOD / "all-fields.nix")
    leaves = leaf_paths(result["options"]["settings"]["children"])
    probes = (("uplinks", "<name>", "probe"), ("tunnels", "<name>", "probe"))
    unset = [p for p in leaves if p[:3] not in probes and not is_set(result["settings"], p)]
    assert unset == [], f"set these in {GOOD / 'all-fields.nix'}"


def leaf_paths(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, node in tree.items():
        if "children" in node:
            named = ("<name>",) if "attrsOf" in node["type"] else ("*",) if "list" in node["type"] else ()
            out += leaf_paths(node["children"], (*prefix, name, *named))
        else:
            out.append((*prefix, name))
    return out


def is_set(settings: Any, path: tuple[str, ...]) -> bool:
    """Whether some value sits at `path` ("<name>" stands for any attribute, "*" for any
    element of a list)."""
    if not path:
        return True
    if path[0] == "*":
        return isinstance(settings, list) and any(is_set(v, path[1:]) for v in settings)
    if not isinstance(settings, dict):
        return False
    head, rest = path[0], path[1:]
    if head == "<name>":
        return any(is_set(v, rest) for v in settings.values())
    return head in settings and is_set(settings[head], rest)


# --- assertions: one bad config each -----------------------------------------------------------

U = f"{OPTION}.uplinks"

# fixture → what its one failed assertion must say. The controller accepts all of these: they are
# about the system around it (names the module gives, networkd, the firewall, the sandbox), which
# only the module can see; or, for the renaming ones, the module would otherwise write a `.link`
# file that renames the wrong interfaces even where the build-time check cannot run.
BAD_CASES: dict[str, tuple[str, ...]] = {
    "page-without-address": ("services.uplinkd.statusPage.address", "set the router's LAN address"),
    "page-drain-without-token": ("statusPage.drain.tokenFile", "needs a token", "16 or more random"),
    "reserved-table-name": (f"{U}.main", '"main" is taken', "rename the uplink"),
    "no-match-renamed": (f"{U}.wan.match", "matches no interface", "set at least one of"),
    "empty-usb": (f"{U}.lte1.match.usb", "every USB device", "set at least one of vendor"),
    "usb-long-name": (f"{U}.lte-in-the-attic", "at most 15 characters", "shorten it"),
    "usb-with-name": (f"{U}.lte1.match.name", "would never match", "remove match.name"),
    "renamed-name-taken": (
        f"{U}.lte1 (renamed to it) and {U}.wan",
        'both match the interface "lte1"',
        "only one uplink",
    ),
    "duplicate-table-networkd": (
        f"{U}.wan.table and systemd.network.config.routeTables.vpn",
        "routing table 101",
        "own table id",
    ),
    "duplicate-usb": (f"{U}.lte1 and {U}.lte2", "12d1:14dc", "set match.usb.serial on each"),
    "socket-outside-runtime-dir": (f"{OPTION}.control.socket", "outside /run/uplinkd", "use a path"),
    "state-dir-outside": (f"{OPTION}.control.state_dir", "outside /var/lib/uplinkd", "use /var/lib"),
    "nft-table-taken": ("networking.nftables.tables.uplinkd", "belongs to uplinkd", "rename that table"),
    "strict-reverse-path": ("networking.firewall.checkReversePath", 'set it to "loose"'),
    "tunnel-key-in-store": (f"{OPTION}.tunnels", "is in the Nix store", "keep keys outside the store"),
}

# Of those, the ones the controller refuses too: the module must say so before it writes the
# `.link` file (which takes effect where the build-time check is skipped: cross builds).
ALSO_REFUSED_BY_THE_CONTROLLER = {"empty-usb", "no-match-renamed"}

# fixture → the field `uplinkctl check` names. The module does not check these itself: the
# controller refuses them at build time (service.nix), with the same field.
CONTROLLER_CASES: dict[str, str] = {
    "bad-uplink-name": "1wan",
    "no-match": "uplinks.wan.match",
    "static-without-cidr": "uplinks.wan.address",
    "field-of-other-mode": "uplinks.wan.address",
    "gateway-outside-subnet": "uplinks.wan.address",
    "mark-outside-mask": "uplinks.wan.mark",
    "mark-zero": "uplinks.wan",
    "duplicate-table": "uplinks.wan.table",
    "duplicate-mark": "uplinks",
    "duplicate-interface": "uplinks",
    "probe-target-not-an-address": "probe.targets",
    "probe-tcp-target-without-port": "uplinks.wan.probe",
    "probe-quorum-above-targets": "probe",
}


def test_every_bad_fixture_has_a_case() -> None:
    assert sorted(p.stem for p in BAD.glob("*.nix")) == sorted([*BAD_CASES, *CONTROLLER_CASES])


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_bad_config_fails_with_a_message_that_says_how_to_fix(name: str, tmp_path: Path) -> None:
    result = evaluate(BAD / f"{name}.nix")
    assert len(result["failedAssertions"]) == 1, result["failedAssertions"]
    message = result["failedAssertions"][0]
    for text in BAD_CASES[name]:
        assert text in message, f"{text!r} not in {message!r}"
    done = uplinkctl_check(result["settings"], tmp_path)
    assert done.returncode == (2 if name in ALSO_REFUSED_BY_THE_CONTROLLER else 0), done.stderr


@pytest.mark.parametrize("name", sorted(CONTROLLER_CASES))
def test_bad_config_is_refused_by_the_build_time_check(name: str, tmp_path: Path) -> None:
    """Evaluation passes; the system build fails in `uplinkctl check`, naming the field."""
    result = evaluate(BAD / f"{name}.nix")
    assert result["failedAssertions"] == []
    [check] = result["checks"]
    assert "uplinkctl check" in check["script"]
    done = uplinkctl_check(result["settings"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert CONTROLLER_CASES[name] in done.stderr + done.stdout, done.stderr


# --- types: what the controller refuses, the module refuses at the same option ----------------

BASE: dict[str, Any] = {"uplinks": {"wan": {"match": {"name": "eth1"}, "table": 101}}}

# (option path below `settings`, bad value); the controller's message names the same path.
TYPE_CASES: list[tuple[str, Any]] = [
    ("uplinks.wan.weight", 0),
    ("uplinks.wan.table", 254),
    ("uplinks.wan.mark", -1),
    ("uplinks.wan.speed", 100),
    ("uplinks.wan.match.name", "an-interface-name-too-long"),
    ("uplinks.wan.match.usb", {"vendor": "12d"}),
    ("uplinks.wan.address", {"mode": "ppp"}),
    ("uplinks.wan.address", {"mode": "static", "cidr": "10.64.0.300/30"}),
    ("uplinks.wan.address", {"mode": "static", "cidr": "10.64.0.2/30", "gateway6": "2001:db8::g"}),
    ("uplinks.wan.probe", {"degraded_weight": 0}),
    ("probe.interval", 0.01),
    ("probe.targets", [f"198.51.100.{i}" for i in range(17)]),
    ("probe.method", "http"),
    ("balance.buckets", 8),
    ("balance.last_resort", "nope"),
    ("balance.idle_timer", 3601),
    ("rules.priority", 32727),
    ("kernel.protocol", 300),
    ("kernel.mark_mask", "0xff0f"),
    ("kernel.nft_table", "bad-name"),
    ("control.resync_interval", 0),
    ("lan.lan0.ipv6", {"mode": "delegate", "uplink": "wan", "subnet": 65536}),
    ("lan.lan0.ipv6", {"mode": "nat66"}),
    ("uplinks.wan.address", {"mode": "dhcp", "dhcp6": "sometimes"}),
]


def with_value(path: str, value: Any) -> dict[str, Any]:
    settings = json.loads(json.dumps(BASE))
    *parents, last = path.split(".")
    node = settings
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return settings


@pytest.mark.parametrize(("path", "value"), TYPE_CASES, ids=[f"{p}={v!r}"[:60] for p, v in TYPE_CASES])
def test_module_refuses_what_the_controller_refuses(path: str, value: Any, tmp_path: Path) -> None:
    settings = with_value(path, value)
    with pytest.raises(ConfigError) as refused:
        parse(settings)
    assert any(problem.startswith(path) for problem in refused.value.problems), refused.value.problems
    with pytest.raises(EvalError) as error:
        evaluate(settings_module(settings, tmp_path))
    assert f"{OPTION}.{path}" in str(error.value), str(error.value)[-2000:]


# --- the option tree against the controller's schema --------------------------------------------


def test_options_mirror_the_controller_schema(tmp_path: Path) -> None:
    options = evaluate(settings_module({}, tmp_path))["options"]["settings"]["children"]
    root = schema()
    problems = compare_tree(options, properties(root, root["$defs"]), root["$defs"], prefix="")
    assert problems == [], "\n".join(problems)


Props = dict[str, list[tuple[dict[str, Any], bool]]]
"""field → [(its schema, whether required)], one entry per model (several for a union)."""


def resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "anyOf" in node:
        real = [n for n in node["anyOf"] if n.get("type") != "null"]
        if len(real) == 1:
            node = real[0]
    while "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[-1]]
    return node


def properties(model: dict[str, Any], defs: dict[str, Any]) -> Props:
    """A model's fields. A discriminated union's are those of all its variants, none of them
    required of the union as a whole."""
    union = "oneOf" in model
    variants = [resolve(v, defs) for v in model["oneOf"]] if union else [model]
    props: Props = {}
    for variant in variants:
        for name, field in variant.get("properties", {}).items():
            required = not union and name in variant.get("required", [])
            props.setdefault(name, []).append((field, required))
    return props


def compare_tree(nix: dict[str, Any], props: Props, defs: dict[str, Any], *, prefix: str) -> list[str]:
    problems = [
        f"{prefix}{name}: in the controller's schema, but no option (add it to modules/options.nix)"
        for name in sorted(set(props) - set(nix))
    ] + [
        f"{prefix}{name}: an option the controller does not know (remove it, or add it to config.py)"
        for name in sorted(set(nix) - set(props))
    ]
    for name in sorted(set(props) & set(nix)):
        problems += compare_field(name, nix[name], props[name], defs, prefix=prefix)
    return problems


def compare_field(
    name: str,
    option: dict[str, Any],
    variants: list[tuple[dict[str, Any], bool]],
    defs: dict[str, Any],
    *,
    prefix: str,
) -> list[str]:
    where = f"{prefix}{name}"
    field, required = variants[0]
    node = resolve(field, defs)
    if node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
        if "attrsOf" not in option["type"] or "children" not in option:
            return [f"{where}: a table of named entries in the controller, {option['type']} in the module"]
        value = resolve(node["additionalProperties"], defs)
        return compare_tree(option["children"], properties(value, defs), defs, prefix=f"{where}.<name>.")
    items = resolve(node.get("items") or {}, defs) if node.get("type") == "array" else {}
    if "properties" in items:  # a list of sections (rules.steer, a tunnel's peers): one entry's fields
        if "listOf" not in option["type"] or "children" not in option:
            return [f"{where}: a list of sections in the controller, {option['type']} in the module"]
        return compare_tree(option["children"], properties(items, defs), defs, prefix=f"{where}.*.")
    if "properties" in node or "oneOf" in node:
        if "children" not in option:
            return [f"{where}: a section in the controller, a single value in the module"]
        return compare_tree(option["children"], properties(node, defs), defs, prefix=f"{where}.")
    if "children" in option:
        return [f"{where}: a single value in the controller, a section in the module"]
    # Probe settings are layered by the controller (profile, top level, uplink): unset is null.
    if where.startswith("probe.") or ".probe." in where:
        return [] if option.get("default", "none") is None else [f"{where}: must default to null (unset)"]
    defaults = [f["default"] for f, _ in variants if "default" in f]
    if defaults:
        if "default" not in option:
            return [f"{where}: the controller's default is {defaults[0]!r}, the module has none"]
        if option["default"] != defaults[0]:
            return [
                f"{where}: default {option['default']!r} in the module, {defaults[0]!r} in the controller"
            ]
        return []
    if required:
        if "default" in option:
            return [
                f"{where}: required by the controller, but the module defaults it to {option['default']!r}"
            ]
        return []
    # A field of some variants of a union: unset unless one of them is chosen.
    return [] if option.get("default", "none") is None else [f"{where}: must default to null (unset)"]


# --- probe profiles: one table, the controller's -------------------------------------------------


def test_probe_profiles_are_the_controllers(tmp_path: Path) -> None:
    """modules/profiles.nix (which the option descriptions are written from) is the table the
    controller publishes in its JSON Schema (`uplinkctl schema`), and what it applies."""
    profiles = evaluate(settings_module({}, tmp_path))["profiles"]
    assert profiles == schema()["$defs"]["Probe"]["profiles"]
    for name, timings in profiles.items():
        probe = parse({"probe": {"profile": name}}).probe
        assert {field: getattr(probe, field) for field in timings} == timings, name


def test_tunnel_keys_reach_the_service_as_credentials_not_in_the_config() -> None:
    """The rendered config names the credential copies; the unit loads the admin's files."""
    credentials = "systemd.services.uplinkd.serviceConfig.LoadCredential"
    result = evaluate(GOOD / "all-fields.nix", show=(credentials,))
    assert result["config"][credentials] == [
        "tunnel-home.key:/run/keys/wg-home.key",
        "tunnel-home-peer0.psk:/run/keys/wg-home.psk",
    ]
    tunnel = result["settings"]["tunnels"]["home"]
    assert tunnel["private_key_file"] == "/run/credentials/uplinkd.service/tunnel-home.key"
    assert (
        tunnel["peers"][0]["preshared_key_file"] == "/run/credentials/uplinkd.service/tunnel-home-peer0.psk"
    )
    assert "/run/keys/wg-home.key" not in json.dumps(result["settings"])


def test_a_delegating_uplink_gets_the_dhcpv6_client_port_open() -> None:
    """examples/home-router.nix delegates the fibre's prefix to br-lan: the fibre's interface
    opens 546 (DHCPv6 replies to the controller's client) beside 68 (DHCPv4); the sticks,
    which delegate nothing, too: they are `dhcp` uplinks whose router may ask for DHCPv6
    addresses (address.dhcp6 unset: auto, by the RA's M flag)."""
    got = evaluate(REPO / "examples" / "home-router.nix", show=("networking.firewall.interfaces",))["config"]
    opened = {i: c["allowedUDPPorts"] for i, c in got["networking.firewall.interfaces"].items()}
    assert opened["enp1s0"] == [68, 546]
    assert opened["lte1"] == [68, 546] and opened["lte2"] == [68, 546]


def test_an_uplink_that_never_asks_dhcpv6_keeps_546_closed(tmp_path: Path) -> None:
    """`address.dhcp6 = "never"` and no `delegate` LAN: no DHCPv6 client on that uplink, so
    only DHCPv4's port opens."""
    settings = {
        "uplinks": {
            "wan": {"match": {"name": "eth1"}, "address": {"mode": "dhcp", "dhcp6": "never"}, "table": 101},
            "lte1": {"match": {"name": "lte1"}, "address": {"mode": "dhcp"}, "table": 102},
        }
    }
    got = evaluate(settings_module(settings, tmp_path), show=("networking.firewall.interfaces",))["config"]
    opened = {i: c["allowedUDPPorts"] for i, c in got["networking.firewall.interfaces"].items()}
    assert opened == {"eth1": [68], "lte1": [68, 546]}


def test_home_endpoint_and_portable_router_are_both_ends_of_one_segment() -> None:
    """examples/home-endpoint.nix (plain NixOS, networkd) and examples/portable-router.nix
    (uplinkd's tunnel and vxlan) agree: VNI, port, each other's inner address as the VXLAN
    remote, WireGuard port and keys, and the MTU both ends give the segment."""
    home = evaluate(REPO / "examples" / "home-endpoint.nix", show=("systemd.network", "networking.firewall"))
    assert home["failedAssertions"] == [] and home["settings"] is None  # no uplinkd at home
    net = home["config"]["systemd.network"]
    vx = net["netdevs"]["20-vx-home"]
    wg = net["netdevs"]["10-wg-home"]
    router = evaluate(REPO / "examples" / "portable-router.nix")["settings"]
    segment, tunnel = router["vxlan"]["home"], router["tunnels"]["home"]
    assert vx["vxlanConfig"]["VNI"] == segment["vni"]
    assert vx["vxlanConfig"]["DestinationPort"] == segment.get("port", 4789)
    assert int(vx["netdevConfig"]["MTUBytes"]) == segment["mtu"] == 1500
    assert net["networks"]["20-vx-home"]["bridgeFDBs"] == [
        {"MACAddress": "00:00:00:00:00:00", "Destination": tunnel["addresses"][0].split("/")[0]}
    ]
    assert segment["remotes"] == [net["networks"]["10-wg-home"]["address"][0].split("/")[0]]
    assert vx["vxlanConfig"]["Local"] == segment["remotes"][0]
    assert tunnel["peers"][0]["endpoint"].endswith(f":{wg['wireguardConfig']['ListenPort']}")
    (peer,) = wg["wireguardPeers"]
    assert "10.99.0.2/32" in peer["AllowedIPs"] and "PrivateKey" not in wg["wireguardConfig"]
    assert home["config"]["networking.firewall"]["interfaces"]["wg-home"]["allowedUDPPorts"] == [4789]


def test_a_kernel_wireguard_tunnel_loads_the_module_at_boot(tmp_path: Path) -> None:
    """The unit may not load kernel modules (ProtectKernelModules): a tunnel that may use
    kernel WireGuard (`backend` kernel or auto) has the module loaded at boot; wireguard-go
    does not need it."""
    modules = "boot.kernelModules"
    assert "wireguard" in evaluate(GOOD / "all-fields.nix", show=(modules,))["config"][modules]
    userspace = combined(
        tmp_path,
        str(GOOD / "all-fields.nix"),
        '{ lib, ... }: { services.uplinkd.settings.tunnels.home.backend = lib.mkForce "wireguard-go"; }',
    )
    assert "wireguard" not in evaluate(userspace, show=(modules,))["config"][modules]
