# A stand-in for nixpkgs, enough to evaluate this repository's flake.nix without nixpkgs: the real
# `lib` (passed in), and packages that build nothing. `nix flake check --no-build` and
# tests/nix/test_nixos.py use it to check the flake's outputs and the attributes the package and
# the devShell ask nixpkgs for.
#
# The Python package set holds exactly the attributes the pinned release (nixos-26.05) has for
# what uplinkd needs: a name nixpkgs does not have (e.g. python3Packages.systemd, renamed to
# systemd-python in late 2025 without an alias) fails here as "called without required
# argument", as it would on nixpkgs. Versions are the newest nixpkgs expressions in the
# project's source index (the 2025-26 `buildPythonPackage (finalAttrs: ...)` style), not read
# from the nixos-26.05 branch itself, which is not reachable here; "x" marks a part not read:
#   pkgs/development/python-modules/pyroute2/default.nix        0.9.6
#   pkgs/development/python-modules/pyudev/default.nix          0.24.4
#   pkgs/development/python-modules/systemd-python/default.nix  235 (read at 5670f37295da)
#   pkgs/development/python-modules/pydantic/default.nix        2.x
#   pkgs/development/python-modules/cryptography/default.nix    40.0.1 (the only expression in the
#     index, from 2023; nixos-26.05 has a newer one, not read)
#   pkgs/development/python-modules/prometheus-client/default.nix  0.x (the attribute name only)
#   pkgs/development/python-modules/dbus-fast/default.nix       4.0.0 (read at 005ab72f9cf5)
# The test tools' versions are not checked ("0").
{ lib }:
let
  systems = [
    "x86_64-linux"
    "aarch64-linux"
  ];

  # A derivation that is never built (`nix flake check --no-build` only instantiates it).
  fake =
    system: name: extra:
    derivation {
      inherit name system;
      builder = "/bin/sh";
      args = [
        "-c"
        "exit 1"
      ];
    }
    // extra;

  pkgsFor =
    system:
    let
      drv = name: fake system name { };
      pythonPackage = pname: version: {
        inherit pname version;
        name = "${pname}-${version}";
      };
      python3Packages = {
        inherit lib;
        callPackage =
          fn: overrides:
          let
            f = if lib.isFunction fn then fn else import fn;
          in
          f (builtins.intersectAttrs (builtins.functionArgs f) python3Packages // overrides);
        buildPythonApplication =
          args:
          fake system "${args.pname}-${args.version}" {
            inherit (args)
              pname
              version
              src
              dependencies
              meta
              ;
          };
        setuptools = pythonPackage "setuptools" "0";
        cryptography = pythonPackage "cryptography" "40.0.1";
        pydantic = pythonPackage "pydantic" "2.x";
        pyroute2 = pythonPackage "pyroute2" "0.9.6";
        pyudev = pythonPackage "pyudev" "0.24.4";
        dbus-fast = pythonPackage "dbus-fast" "4.0.0";
        python-dbusmock = pythonPackage "python-dbusmock" "0";
        systemd-python = pythonPackage "systemd-python" "235";
        prometheus-client = pythonPackage "prometheus-client" "0.x";
        pytest = pythonPackage "pytest" "0";
        pytestCheckHook = pythonPackage "pytest-check-hook" "0";
        pytest-timeout = pythonPackage "pytest-timeout" "0";
        hypothesis = pythonPackage "hypothesis" "0";
        pytest-benchmark = pythonPackage "pytest-benchmark" "0";
        mypy = pythonPackage "mypy" "0";
      };
      pkgs = {
        inherit lib python3Packages;
        stdenv.hostPlatform.system = system;
        stdenv.buildPlatform.system = system;
        buildPackages = pkgs;
        python3 = drv "python3" // {
          pkgs = python3Packages;
          withPackages = f: fake system "python3-env" { packages = f python3Packages; };
        };
        writeShellScriptBin = name: text: fake system name { inherit text; };
        mkShell = args: fake system "shell" { inherit (args) packages shellHook; };
        testers.runNixOSTest = args: fake system "vm-test" { inherit args; };
      }
      // lib.genAttrs [
        "ruff"
        "import-linter"
        "nixfmt"
        "nixfmt-tree"
        "iproute2"
        "nftables"
        "conntrack-tools"
        "dnsmasq"
        "iputils"
        "wireguard-tools"
        "wireguard-go"
        "qemu"
        "virtme-ng"
      ] drv;
    in
    pkgs;
in
{
  lib = lib // {
    # What `nix flake check` reads of a NixOS configuration; the module itself is evaluated by
    # tests/nix/eval.nix with NixOS's option types.
    nixosSystem =
      { modules, ... }:
      {
        inherit modules;
        config.system.build.toplevel = fake "x86_64-linux" "nixos-system" { };
      };
  };
  legacyPackages = lib.genAttrs systems pkgsFor;
  outPath = ./.;
}
