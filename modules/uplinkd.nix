# services.uplinkd: a multi-uplink router's routing controller, and what NixOS must do around
# it. docs/nix.md describes the options; the parts:
#
#   options.nix     the options; `settings` mirrors the controller's config file
#   service.nix     the config file (checked at build time), the hardened unit, the udev rule
#   networking.nix  sysctls, table and protocol names, stable USB names, networkd & co. kept away
#   assertions.nix  what no single option's type can check, with how to fix it
{
  imports = [
    ./options.nix
    ./service.nix
    ./networking.nix
    ./assertions.nix
  ];
}
