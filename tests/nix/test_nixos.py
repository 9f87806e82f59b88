"""The module as a NixOS user meets it: next to the settings real configurations carry, on the
nixpkgs the flake pins, built for another platform, and in the VM tests' wiring.

Each test here stands for a defect of issue 10 (named in its docstring) and failed before the
fix. The NixOS options are tests/nix/nixos/'s declarations (nixpkgs' types and merge rules), so a
clash or an unknown key fails here as it fails `nixos-rebuild`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from nixeval import (
    REPO,
    EvalError,
    combined,
    evaluate,
    needs_lib,
    nix_eval,
    nixpkgs_lib,
    vm_router,
)

from uplinkd.config import parse
from uplinkd.tunnel.wireguard import PrivateKey, PublicKey, decode_key

# The routers (uplinkd enabled); examples/home-endpoint.nix is the far end of a tunnel, plain
# NixOS without uplinkd, evaluated on its own.
ALL_EXAMPLES = sorted((REPO / "examples").glob("*.nix"))
EXAMPLES = [p for p in ALL_EXAMPLES if "services.uplinkd" in p.read_text()]
VM_TESTS = sorted(t for t in (REPO / "nixos-tests").glob("*.nix") if t.stem != "lab")
SYSTEMS = [*EXAMPLES, *VM_TESTS]

pytestmark = needs_lib


def system(path: Path) -> str:
    """An example or a VM test's router, as a Nix expression for `combined`."""
    return vm_router(path) if path.parent.name == "nixos-tests" else str(path)


def system_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


# --- 1. sysctls: the user's own settings beside the module's ----------------------------------

USER_ADDITIONS = {
    "forwarding": '{ boot.kernel.sysctl."net.ipv4.conf.all.forwarding" = true; }',
    "forwarding-as-1": '{ boot.kernel.sysctl."net.ipv6.conf.all.forwarding" = 1; }',
    "rp-filter": '{ boot.kernel.sysctl."net.ipv4.conf.all.rp_filter" = 2; }',
    "nat": "{ networking.nat = { enable = true; enableIPv6 = true; }; }",
    "firewall": "{ networking.firewall.enable = true; networking.firewall.allowedTCPPorts = [ 22 ]; }",
    "nftables": "{ networking.nftables.enable = true; }",
    "all": """{
      boot.kernel.sysctl."net.ipv4.conf.all.forwarding" = true;
      networking.nat.enable = true;
      networking.firewall.enable = true;
      networking.nftables.enable = true;
    }""",
}


@pytest.mark.parametrize("addition", sorted(USER_ADDITIONS))
@pytest.mark.parametrize("path", SYSTEMS, ids=system_id)
def test_usual_user_additions_evaluate(path: Path, addition: str, tmp_path: Path) -> None:
    """Defect 1: the module's sysctls clashed with the user's (mergeOneOption)."""
    config = combined(tmp_path, system(path), USER_ADDITIONS[addition])
    result = evaluate(config, show=("boot.kernel.sysctl",))
    assert result["failedAssertions"] == []
    sysctl = result["config"]["boot.kernel.sysctl"]
    assert sysctl["net.ipv4.conf.all.forwarding"] is True
    assert sysctl["net.ipv6.conf.all.forwarding"] in (True, 1)


@pytest.mark.parametrize("path", SYSTEMS, ids=system_id)
def test_router_forwards_over_nixos_own_default(path: Path, tmp_path: Path) -> None:
    """NixOS defines forwarding = mkDefault false (network-interfaces.nix): the module must win
    over it without clashing, and lose to anything the user writes."""
    result = evaluate(combined(tmp_path, system(path)), show=("boot.kernel.sysctl",))
    sysctl = result["config"]["boot.kernel.sysctl"]
    assert sysctl["net.ipv4.conf.all.forwarding"] is True
    assert sysctl["net.ipv4.conf.all.rp_filter"] == 0
    assert sysctl["net.ipv4.conf.*.rp_filter"] == 0  # after systemd's own glob, so it wins
    assert sysctl["net.ipv4.conf.all.accept_local"] is True
    assert sysctl["net.ipv4.fib_multipath_hash_policy"] == 1
    assert sysctl["net.ipv4.conf.all.promote_secondaries"] is True

    mine = (
        '{ boot.kernel.sysctl = { "net.ipv4.conf.all.rp_filter" = 1;'
        ' "net.ipv4.conf.all.forwarding" = false; }; }'
    )
    result = evaluate(combined(tmp_path, system(path), mine), show=("boot.kernel.sysctl",))
    sysctl = result["config"]["boot.kernel.sysctl"]
    assert sysctl["net.ipv4.conf.all.rp_filter"] == 1
    assert sysctl["net.ipv4.conf.all.forwarding"] is False


def test_an_unknown_networkd_key_fails(tmp_path: Path) -> None:
    """The harness itself: tests/nix/nixos/ refuses what NixOS refuses (no catch-all stand-in)."""
    bad = '{ systemd.network.links."10-x" = { matchConfig.Driver = "r8152"; linkConfig.Nmae = "x"; }; }'
    with pytest.raises(EvalError, match=r"systemd\.network\.links"):
        evaluate(combined(tmp_path, str(EXAMPLES[0]), bad))
    with pytest.raises(EvalError, match="does not exist"):
        evaluate(combined(tmp_path, str(EXAMPLES[0]), "{ networking.dhcpcd.denyInterface = [ ]; }"))


@pytest.mark.parametrize("path", SYSTEMS, ids=system_id)
def test_module_defines_only_typed_options(path: Path, tmp_path: Path) -> None:
    """Every NixOS option the module writes has nixpkgs' type in the harness, none a stand-in."""
    result = evaluate(combined(tmp_path, system(path)))
    assert result["standInsDefinedByModule"] == []
    assert "boot.kernel.sysctl" in result["optionsDefinedByModule"]


# --- 2. one nixpkgs: the flake, its lock, the docs, the package's attributes --------------------

NIXPKGS = re.compile(r"github:NixOS/nixpkgs/(nixos-[0-9.]+|nixos-unstable)")


def named_nixpkgs(path: Path) -> set[str]:
    return set(NIXPKGS.findall(path.read_text()))


def test_flake_docs_and_readme_name_one_nixpkgs() -> None:
    """Defect 2: README said nixos-25.05, flake.nix and docs/nix.md 26.05."""
    flake = named_nixpkgs(REPO / "flake.nix")
    assert len(flake) == 1, flake
    # (the lock's own pin is test_flake.py's)
    for doc in ("docs/nix.md", "README.md"):
        assert named_nixpkgs(REPO / doc) == flake, doc
    release = next(iter(flake)).removeprefix("nixos-")
    for example in ALL_EXAMPLES:
        assert f'system.stateVersion = "{release}";' in example.read_text(), example


def flake_outputs(expression: str) -> Any:
    """`expression` over the flake's outputs (`self`), evaluated against tests/nix/stub-nixpkgs."""
    return nix_eval(
        f"""let
          flake = import (repo + "/flake.nix");
          nixpkgs = import (repo + "/tests/nix/stub-nixpkgs") {{ inherit lib; }};
          self = flake.outputs {{ inherit self nixpkgs; }} // {{ outPath = repo; }};
        in {expression}"""
    )


def test_package_dependencies_exist_in_the_pinned_nixpkgs() -> None:
    """Defect 2: the package named `systemd-python`, absent before late 2025; the stub nixpkgs
    holds the attributes and versions of the pinned release (see its default.nix)."""
    deps = flake_outputs(
        "map (d: { inherit (d) pname version; }) self.packages.x86_64-linux.uplinkd.dependencies"
    )
    names = {dep["pname"]: dep["version"] for dep in deps}
    expected = {
        "cryptography",
        "pydantic",
        "pyroute2",
        "pyudev",
        "systemd-python",
        "prometheus-client",
        "dbus-fast",
    }
    assert set(names) == expected
    project = tomllib.loads((REPO / "controller" / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["systemd"]
    for requirement in requirements:
        name, minimum = re.fullmatch(r"([a-z0-9-]+)>=([0-9.]+)", requirement).groups()  # type: ignore[union-attr]
        assert at_least(names[name], minimum), f"{name} {names[name]} < {minimum}"


def at_least(have: str, minimum: str) -> bool:
    """`have` >= `minimum`, comparing the parts `have` states ("2.x": the major only)."""
    known = [int(part) for part in have.split(".") if part != "x"]
    wanted = [int(part) for part in minimum.split(".")]
    return known >= wanted[: len(known)] if "x" in have else known >= wanted


# --- 7. smaller: package source, devShell wrappers, cross builds ------------------------------


def test_package_source_leaves_out_the_readme() -> None:
    """Defect 7: README.md was in the package's source, so every README edit rebuilt it.
    (lib.fileset needs builtins.readFileType, Nix >= 2.14; with Debian's Nix 2.8 the test
    records what package.nix hands lib.fileset instead of building the source.)"""
    files: list[str] = nix_eval(
        f"""let
          recording = {{
            relative = p: lib.removePrefix "${{toString repo}}/" (toString p);
            toSource = {{ root, fileset }}: map recording.relative fileset;
            unions = lib.id;
            maybeMissing = lib.id;
          }};
          package = import {REPO}/controller/package.nix {{
            lib = lib // {{ fileset = recording; }};
            buildPythonApplication = lib.id;
            setuptools = null; cryptography = null; pydantic = null;
            pyroute2 = null; pyudev = null; systemd-python = null;
            prometheus-client = null; dbus-fast = null;
            pytestCheckHook = null; pytest-timeout = null; hypothesis = null;
          }};
        in package.src"""
    )
    assert "README.md" not in files
    assert sorted(files) == ["controller/pyproject.toml", "controller/uplinkd", "pytest.ini", "tests/unit"]


def test_dev_shell_commands_run_the_packaged_entry_points() -> None:
    """Defect 7: the devShell's `uplinkd` ran uplinkd.daemon, which has no `lab`."""
    scripts = tomllib.loads((REPO / "controller" / "pyproject.toml").read_text())["project"]["scripts"]
    packages = flake_outputs(
        "map (p: { inherit (p) name; text = p.text or null; }) self.devShells.x86_64-linux.default.packages"
    )
    wrappers = {p["name"]: p["text"] for p in packages if p["name"] in scripts}
    assert set(wrappers) == set(scripts)
    for name, target in scripts.items():
        module = target.split(":")[0]
        assert f"python3 -m {module} " in wrappers[name], wrappers[name]


def test_config_check_runs_on_the_build_platform(tmp_path: Path) -> None:
    """Defect 7: system.checks ran the host's package at build time, even cross-compiling."""
    example = EXAMPLES[0]
    result = evaluate(example)
    [check] = result["checks"]
    assert check["builtWith"] == "buildPackages"
    assert "uplinkctl check" in check["script"]

    cross = evaluate(example, can_execute=False)
    assert cross["checks"] == []
    assert any("services.uplinkd.checkConfig" in w for w in cross["warnings"]), cross["warnings"]


def test_flake_outputs_have_the_expected_structure() -> None:
    """The flake's outputs evaluate against the stub nixpkgs (what `nix flake check --no-build`
    looks at), for every system."""
    names = flake_outputs(
        "builtins.mapAttrs (_: v: builtins.attrNames v) "
        '(removeAttrs self [ "overlays" "nixosModules" "formatter" "outPath" ])'
    )
    assert names == {
        "checks": ["aarch64-linux", "x86_64-linux"],
        "devShells": ["aarch64-linux", "x86_64-linux"],
        "nixosConfigurations": ["home-router", "lte-router", "portable-router"],
        "packages": ["aarch64-linux", "x86_64-linux"],
    }


# --- LimitNOFILE (issue 9, item 1) -------------------------------------------------------------


def test_controller_unit_is_sandboxed_with_only_its_two_capabilities() -> None:
    unit = "systemd.services.uplinkd.serviceConfig"
    got = evaluate(EXAMPLES[0], show=(unit,))["config"][unit]
    assert got["CapabilityBoundingSet"] == got["AmbientCapabilities"] == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    for key, value in {"NoNewPrivileges": True, "ProtectSystem": "strict", "ProtectKernelTunables": True,
                       "PrivateUsers": False, "MemoryDenyWriteExecute": True}.items():  # fmt: skip
        assert got[key] == value, key


def test_unit_raises_the_open_file_limit(tmp_path: Path) -> None:
    """The unit had no LimitNOFILE: 1,024 descriptors, which a socket client could exhaust."""
    path = ("systemd.services.uplinkd.serviceConfig.LimitNOFILE",)
    limit = evaluate(EXAMPLES[0], show=path)["config"][path[0]]
    assert isinstance(limit, int) and limit >= 8192, limit

    raised = "{ systemd.services.uplinkd.serviceConfig.LimitNOFILE = 100000; }"
    limit = evaluate(combined(tmp_path, str(EXAMPLES[0]), raised), show=path)["config"][path[0]]
    assert limit == 100000


# --- 6. uplinks without a fixed name and the other DHCP clients ---------------------------------

SCRIPTED = "{ networking.useNetworkd = lib.mkForce false; networking.useDHCP = lib.mkForce true; }"


def test_driver_matched_uplink_gets_a_name_other_clients_leave_alone(tmp_path: Path) -> None:
    """Defect 6: the portable router's `match.driver` uplink got dhcpcd beside the controller."""
    example = REPO / "examples" / "portable-router.nix"
    config = tmp_path / "scripted.nix"
    config.write_text("{ lib, ... }: { imports = [ " + str(example) + " (" + SCRIPTED + ") ]; }\n")
    show = (
        "networking.dhcpcd.denyInterfaces",
        "networking.networkmanager.unmanaged",
        "systemd.network.links",
        "systemd.network.networks",
        "services.uplinkd.settings.uplinks.wan.match",
    )
    result = evaluate(config, show=show)
    assert result["failedAssertions"] == []
    got = result["config"]
    assert "wan" in got["networking.dhcpcd.denyInterfaces"]
    assert "interface-name:wan" in got["networking.networkmanager.unmanaged"]
    link = got["systemd.network.links"]["10-uplinkd-wan"]
    assert link["linkConfig"] == {"Name": "wan"}
    assert link["matchConfig"]["Driver"] == got["services.uplinkd.settings.uplinks.wan.match"]["driver"]
    # networkd's own file for it matches the name, not the driver a LAN port may share
    assert got["systemd.network.networks"]["10-uplinkd-wan"]["matchConfig"] == {"Name": "wan"}
    # the controller still matches by driver, and the renamed interface has that driver
    assert parse(result["settings"]).uplinks["wan"].match.driver


def test_renamed_uplink_name_must_be_an_interface_name(tmp_path: Path) -> None:
    long = """{ services.uplinkd = { enable = true;
      settings.uplinks.wan-on-a-usb-adapter = {
        match.driver = "r8152"; address.mode = "dhcp"; table = 101;
      }; }; }"""
    result = evaluate(combined(tmp_path, long))
    [message] = result["failedAssertions"]
    assert "wan-on-a-usb-adapter" in message and "at most 15 characters" in message


# --- 3. the hotplug test's MACs and QEMU monitor errors -----------------------------------------


def script_of(test: Path) -> str:
    text: str = nix_eval(f"(import {test} {{ inherit lib; }}).testScript")
    return text


def node_macs(test: Path, tmp_path: Path) -> dict[str, str]:
    """The MACs the NixOS test driver gives the nodes' NICs: 52:54:00:12:<vlan>:<node number>,
    nodes numbered from 1 in name order (nixos/lib/testing/network.nix, qemu-common.nix)."""
    nodes = nix_eval(f"builtins.attrNames (import {test} {{ inherit lib; }}).nodes")
    macs = {}
    for number, node in enumerate(sorted(nodes), start=1):
        module = f"(import {test} {{ lib = import {nixpkgs_lib()}; }}).nodes.{node}"
        virt = evaluate(combined(tmp_path, module), show=("virtualisation",))["config"]["virtualisation"]
        interfaces = virt.get("interfaces") or {}
        vlans = [i["vlan"] for i in interfaces.values()] or virt.get("vlans") or [1]
        for vlan in vlans:
            macs[f"52:54:00:12:{vlan:02x}:{number:02x}"] = f"{node} (vlan {vlan})"
    return macs


MAC = re.compile(r"\b[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}\b")


@pytest.mark.parametrize("test", VM_TESTS, ids=lambda p: p.stem)
def test_plugged_nics_have_macs_no_node_has(test: Path, tmp_path: Path) -> None:
    """Defect 3: the plugged stick had 52:54:00:12:02:02, the `lte` ISP's own NIC."""
    script = script_of(test)
    taken = node_macs(test, tmp_path)
    used = [m.lower() for m in MAC.findall(script)]
    assert len(used) == len(set(used)), used
    for mac in used:
        assert mac not in taken, f"{mac} is {taken[mac]}'s NIC"
        first = int(mac[:2], 16)
        assert first & 0b10 and not first & 0b01, f"{mac}: use a locally administered unicast MAC"
        assert not mac.startswith("52:54:00:"), f"{mac}: QEMU's and the test driver's range"


class FakeMachine:
    """A test-driver machine whose QEMU monitor answers with `answer`."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.sent: list[str] = []

    def send_monitor_command(self, command: str) -> str:
        self.sent.append(command)
        return f"{command}\r\n{self.answer}(qemu) "


def lab_helpers() -> dict[str, Any]:
    helpers: str = nix_eval(f"(import {REPO}/nixos-tests/lab.nix {{ inherit lib; }}).scriptHelpers")
    namespace: dict[str, Any] = {}
    exec(compile(helpers, "lab.nix scriptHelpers", "exec"), namespace)
    return namespace


def test_a_failed_monitor_command_fails_the_test() -> None:
    """Defect 3: send_monitor_command returns QEMU's error text and never raises."""
    monitor = lab_helpers()["monitor"]
    ok = FakeMachine("")
    monitor(ok, "device_add usb-net,id=stick")
    assert ok.sent == ["device_add usb-net,id=stick"]
    with pytest.raises(AssertionError, match="Duplicate device ID"):
        monitor(FakeMachine("Error: Duplicate device ID 'stick'\r\n"), "device_add usb-net,id=stick")
    with pytest.raises(AssertionError, match="not found"):
        monitor(FakeMachine("Device 'virtio-net-pci.9' not found\r\n"), "set_link virtio-net-pci.9 off")


@pytest.mark.parametrize("test", VM_TESTS, ids=lambda p: p.stem)
def test_monitor_commands_go_through_the_checking_helper(test: Path) -> None:
    script = script_of(test)
    helpers: str = nix_eval(f"(import {REPO}/nixos-tests/lab.nix {{ inherit lib; }}).scriptHelpers")
    own = script.replace(helpers, "")
    assert "send_monitor_command" not in own, "call monitor(machine, command) instead"


# --- 4. the nftables reload subtest ------------------------------------------------------------


def test_failover_test_exercises_a_real_ruleset_flush(tmp_path: Path) -> None:
    """Defect 4: NixOS's reload deletes only its own tables (flushRuleset defaults to false since
    stateVersion 23.11), so `systemctl reload nftables` never removed uplinkd's table."""
    test = REPO / "nixos-tests" / "failover.nix"
    script = script_of(test)
    assert re.search(r"router\.succeed\(\"nft flush ruleset\"\)", script), "no real `nft flush ruleset`"

    router = combined(tmp_path, vm_router(test))
    show = ("networking.nftables.flushRuleset",)
    assert evaluate(router, show=show)["config"][show[0]] is False
    flushing = evaluate(router, show=show, specialisation="flushing")
    assert flushing["config"][show[0]] is True
    assert "specialisation/flushing/bin/switch-to-configuration" in script


# --- issue 14: modem uplinks ----------------------------------------------------------------------

MODEM_ROUTER = """{ services.uplinkd = { enable = true;
  settings.uplinks.lte = {
    match.usb = { vendor = "1199"; product = "9071"; };
    address = { mode = "modem"; apn = "internet"; ip_type = "ipv4v6"; allowed_auth = [ "pap" "chap" ];
                pin_file = "/run/secrets/sim-pin"; };
    table = 110;
  }; }; }"""


def test_a_modem_uplink_enables_modemmanager_and_lets_uplinkd_control_modems(tmp_path: Path) -> None:
    show = (
        "networking.modemmanager.enable",
        "security.polkit.enable",
        "security.polkit.extraConfig",
        "systemd.services.uplinkd.after",
        "boot.kernel.sysctl",
    )
    result = evaluate(combined(tmp_path, MODEM_ROUTER), show=show)
    assert result["failedAssertions"] == []
    got = result["config"]
    assert got["networking.modemmanager.enable"] is True and got["security.polkit.enable"] is True
    rule = got["security.polkit.extraConfig"]
    assert 'subject.user == "uplinkd"' in rule and '"org.freedesktop.ModemManager1.Device.Control"' in rule
    assert "ModemManager.service" in got["systemd.services.uplinkd.after"]
    # the renamed data interface accepts RAs although the router forwards
    assert got["boot.kernel.sysctl"]["net.ipv6.conf.lte.accept_ra"] == 2
    # the controller takes the rendered settings
    address = parse(result["settings"]).uplinks["lte"].address
    assert address.mode == "modem" and address.connect_properties(None)["allowed-auth"] == ("u", 0b110)


EXTEND_ROUTER = """{ services.uplinkd = { enable = true;
  settings.uplinks.lte1 = { match.name = "lte1"; address.mode = "dhcp"; table = 101; };
  settings.uplinks.wan = { match.name = "wan"; address.mode = "dhcp"; table = 102; };
  settings.lan.br-lan.ipv6 = { mode = "extend"; uplink = "lte1"; };
}; }"""


def test_ipv6_by_ra_and_an_extended_uplink_get_their_sysctls_from_the_system(tmp_path: Path) -> None:
    """The unit cannot write /proc/sys (ProtectKernelTunables): the module sets what the
    controller would — RAs accepted while forwarding, no default route from them (the
    controller puts the router into the uplink's table), and no prefix on the extended uplink."""
    result = evaluate(combined(tmp_path, EXTEND_ROUTER), show=("boot.kernel.sysctl",))
    assert result["failedAssertions"] == []
    sysctl = result["config"]["boot.kernel.sysctl"]
    assert sysctl["net.ipv6.conf.lte1.accept_ra"] == 2 and sysctl["net.ipv6.conf.wan.accept_ra"] == 2
    assert sysctl["net.ipv6.conf.lte1.accept_ra_defrtr"] == 0
    assert sysctl["net.ipv6.conf.wan.accept_ra_defrtr"] == 0
    assert sysctl["net.ipv6.conf.lte1.accept_ra_pinfo"] == 0
    assert "net.ipv6.conf.wan.accept_ra_pinfo" not in sysctl
    lan = parse(result["settings"]).lan["br-lan"].ipv6
    assert (lan.mode, lan.uplink) == ("extend", "lte1")


def test_no_modem_uplink_leaves_modemmanager_and_polkit_alone(tmp_path: Path) -> None:
    show = ("networking.modemmanager.enable", "security.polkit.extraConfig")
    got = evaluate(EXAMPLES[0], show=show)["config"]
    assert got["networking.modemmanager.enable"] is False
    assert "uplinkd" not in got["security.polkit.extraConfig"]


@pytest.mark.parametrize(
    ("other", "names"),
    [
        ("{ networking.networkmanager.enable = true; }", "networking.networkmanager.enable"),
        (
            '{ systemd.network.networks."40-wwan".extraConfig = "[MobileNetwork]\\nAPN=internet\\n"; }',
            'systemd.network.networks."40-wwan"',
        ),
    ],
    ids=["networkmanager", "networkd"],
)
def test_a_second_manager_claiming_the_modem_fails_the_build(other: str, names: str, tmp_path: Path) -> None:
    result = evaluate(combined(tmp_path, MODEM_ROUTER, other))
    [message] = result["failedAssertions"]
    assert message.startswith(names) and "services.uplinkd.settings.uplinks.lte" in message
    assert 'address.mode = \\"external\\"' in message or 'address.mode = "external"' in message


# --- issue 11: the tunnel's nixos-test ----------------------------------------------------------


@pytest.mark.parametrize("test", VM_TESTS, ids=lambda p: p.stem)
def test_vm_test_scripts_are_python(test: Path) -> None:
    """The test scripts run only under KVM; here they must at least compile (what the driver
    prepends defines the machines, so only syntax is checked)."""
    compile(script_of(test), f"{test.name} testScript", "exec")


def test_tunnel_vm_test_router_uses_kernel_wireguard_and_keeps_its_key_out_of_the_config(
    tmp_path: Path,
) -> None:
    test = REPO / "nixos-tests" / "tunnel.nix"
    credentials = "systemd.services.uplinkd.serviceConfig.LoadCredential"
    show = ("boot.kernelModules", credentials, "systemd.services.uplinkd-test-key.before")
    result = evaluate(combined(tmp_path, vm_router(test)), show=show)
    assert result["failedAssertions"] == []
    assert "wireguard" in result["config"]["boot.kernelModules"]
    assert result["config"][credentials] == ["tunnel-home.key:/run/keys/wg-router.key"]
    assert result["config"]["systemd.services.uplinkd-test-key.before"] == ["uplinkd.service"]
    tunnel = result["settings"]["tunnels"]["home"]
    assert tunnel["backend"] == "kernel" and tunnel["route"] == "full"
    assert tunnel["private_key_file"] == "/run/credentials/uplinkd.service/tunnel-home.key"
    # the home end's peer is the router's key, and the router's peer home's (one key pair each)
    home_peer = nix_eval(
        f'(builtins.head ((import {test} {{ inherit lib; }}).nodes.home {{ pkgs = {{ writeText = _: _: ""; '
        f"wireguard-tools = null; }}; }}).networking.wireguard.interfaces.wg0.peers).publicKey"
    )
    script = script_of(test)
    assert 'backend == "kernel"' in script and "lab-isp blackhole" in script and "uplinkctl flush" in script
    text = test.read_text()
    keys = dict(re.findall(r'(\w+Key|\w+Public) = "([A-Za-z0-9+/=]{44})"', text))
    assert PrivateKey(decode_key(keys["routerKey"], what="routerKey")).public_key == PublicKey.from_base64(
        keys["routerPublic"]
    )
    assert PrivateKey(decode_key(keys["homeKey"], what="homeKey")).public_key == PublicKey.from_base64(
        keys["homePublic"]
    )
    assert home_peer == keys["routerPublic"]
    assert tunnel["peers"][0]["public_key"] == keys["homePublic"]
