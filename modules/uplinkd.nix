# services.uplinkd: a multi-uplink router's routing controller, and what NixOS must do around
# it. docs/nix.md describes the options; the parts:
#
#   options.nix     the options; `settings` mirrors the controller's config file
#   probe-options.nix, profiles.nix   a `probe` section's options; the controller's profiles
#   service.nix     the config file (checked at build time), the hardened unit, the udev rule
#   networking.nix  sysctls, table and protocol names, stable names, networkd & co. kept away
#   assertions.nix  what only NixOS knows (the rest: `uplinkctl check` at build time)
#   metrics.nix     the exporter (Prometheus metrics) and the LAN status page, a unit of their own
#   modem.nix       `modem` uplinks: ModemManager, its polkit rule, no second manager
#   modem-options.nix  the `modem` address mode's options
{
  imports = [
    ./options.nix
    ./service.nix
    ./networking.nix
    ./assertions.nix
    ./metrics.nix
    ./modem.nix
  ];
}
