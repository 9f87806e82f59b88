{
  description = "uplinkd: a multi-uplink router for NixOS";

  # The one nixpkgs uplinkd supports (README and docs/nix.md name the same); tests/nix checks
  # the attributes the package takes from it against tests/nix/stub-nixpkgs.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      uplinkdFor = pkgs: pkgs.python3Packages.callPackage ./controller/package.nix { };

      # An example as a whole system: the example, uplinkd's module, and the few lines a real
      # machine has in its hardware-configuration.nix.
      exampleSystem =
        name:
        lib.nixosSystem {
          modules = [
            self.nixosModules.default
            (./examples + "/${name}.nix")
            {
              nixpkgs.hostPlatform = "x86_64-linux";
              boot.loader.systemd-boot.enable = true;
              boot.loader.efi.canTouchEfiVariables = true;
              fileSystems."/" = {
                device = "/dev/disk/by-label/nixos";
                fsType = "ext4";
              };
              fileSystems."/boot" = {
                device = "/dev/disk/by-label/ESP";
                fsType = "vfat";
              };
            }
          ];
        };
    in
    {
      packages = forAllSystems (
        pkgs:
        let
          uplinkd = uplinkdFor pkgs;
        in
        {
          inherit uplinkd;
          default = uplinkd;
        }
      );

      overlays.default = final: _prev: { uplinkd = uplinkdFor final; };

      # services.uplinkd. Its package defaults to one built with the system's own nixpkgs,
      # so the overlay is not needed.
      nixosModules = {
        uplinkd =
          { lib, pkgs, ... }:
          {
            imports = [ ./modules/uplinkd.nix ];
            services.uplinkd.package = lib.mkDefault (uplinkdFor pkgs);
          };
        default = self.nixosModules.uplinkd;
      };

      nixosConfigurations = {
        home-router = exampleSystem "home-router";
        portable-router = exampleSystem "portable-router";
        lte-router = exampleSystem "lte-router";
      };

      # `nix flake check`: the package (with its unit tests) and the NixOS VM tests, which
      # need KVM.
      checks = forAllSystems (
        pkgs:
        let
          vmTest =
            file:
            pkgs.testers.runNixOSTest {
              imports = [ file ];
              defaults.imports = [ self.nixosModules.default ];
            };
        in
        {
          uplinkd = self.packages.${pkgs.stdenv.hostPlatform.system}.uplinkd;
          failover = vmTest ./nixos-tests/failover.nix;
          hotplug = vmTest ./nixos-tests/hotplug.nix;
          tunnel = vmTest ./nixos-tests/tunnel.nix;
        }
      );

      # Everything the README's commands need: the tests of every tier, the lab, the linters.
      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            (pkgs.python3.withPackages (
              ps: with ps; [
                cryptography
                pydantic
                pyroute2
                pyudev
                dbus-fast
                systemd-python
                prometheus-client
                python-dbusmock
                pytest
                pytest-timeout
                pytest-benchmark
                hypothesis
                mypy
              ]
            ))
            # `uplinkd`, `uplinkctl` and `uplinkd-exporter` run the controller from this checkout, through the same
            # entry points as the package's (pyproject's [project.scripts]).
            (pkgs.writeShellScriptBin "uplinkd" ''exec python3 -m uplinkd.entry "$@"'')
            (pkgs.writeShellScriptBin "uplinkctl" ''exec python3 -m uplinkd.cli "$@"'')
            (pkgs.writeShellScriptBin "uplinkd-exporter" ''exec python3 -m uplinkd.exporter.server "$@"'')
            pkgs.ruff
            pkgs.import-linter
            pkgs.nixfmt
            # the lab and the netns tier
            pkgs.iproute2
            pkgs.nftables
            pkgs.conntrack-tools
            pkgs.dnsmasq
            pkgs.iputils
            pkgs.wireguard-tools
            pkgs.wireguard-go
            # the VM tier
            pkgs.qemu
            pkgs.virtme-ng
          ];
          # tests/nix evaluates the module with the flake's own nixpkgs lib.
          shellHook = ''
            export PYTHONPATH="$PWD/controller''${PYTHONPATH:+:$PYTHONPATH}"
            export UPLINKD_NIXPKGS_LIB=${nixpkgs}
          '';
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree);
    };
}
