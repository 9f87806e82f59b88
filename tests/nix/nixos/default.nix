# The NixOS options uplinkd's module sets or reads, declared with the types and merge semantics
# nixpkgs gives them, so that tests/nix catches what a real NixOS evaluation would refuse: two
# definitions of one sysctl key, an unknown key in a networkd section, a string where a list
# goes. Written for this harness from nixpkgs' own declarations (no nixpkgs code copied); each
# block names the nixpkgs file it follows. Revision: NixOS/nixpkgs as of nixos-26.05 (the
# release the flake pins), read through the project's source index; where a file was read at a
# known commit it is named. Only the options and keys the module, the examples and the VM tests'
# router use are declared; anything else is an unknown option here, as in NixOS.
#
# Options the module never touches but the examples and VM tests set (unbound, resolved, VM
# wiring) are `standIn`: declared, loosely typed. tests/nix checks that the module itself
# defines no stand-in, so every option the module writes is one of the typed ones.
#
# One file per area: system.nix (assertions, sysctl, etc, users, udev, iproute2, stand-ins),
# networking.nix (network-interfaces, dhcpcd, NetworkManager, firewall, nftables, nat),
# systemd.nix (units, networkd) and monitoring.nix (Prometheus and Grafana, for
# examples/monitoring/).
{ lib, pkgs }:
let
  args = {
    inherit lib pkgs;
    # An option only the examples and VM tests set, declared loosely (see above).
    standIn =
      what:
      lib.mkOption {
        type = lib.types.anything;
        default = { };
        description = "stand-in: ${what} (not set by uplinkd's module)";
      };
  };
in
import ./system.nix args
++ import ./networking.nix args
++ import ./systemd.nix args
++ import ./monitoring.nix args
