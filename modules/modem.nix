# Uplinks in `modem` mode: ModemManager runs, the `uplinkd` user may control modems (polkit),
# and no other manager may connect the same modem (two would fight over its bearer).
{ config, lib, ... }:
let
  cfg = config.services.uplinkd;
  helpers = import ./lib.nix { inherit lib; };
  modemUplinks = lib.filterAttrs (_: u: u.address.mode == "modem") cfg.settings.uplinks;
  names = lib.concatMapStringsSep ", " (n: "services.uplinkd.settings.uplinks.${helpers.attr n}") (
    lib.attrNames modemUplinks
  );

  nixos = path: fallback: lib.attrByPath path fallback config;

  # networkd (systemd 258 and later) connects ModemManager modems for a .network file with a
  # [MobileNetwork] section; NixOS has no typed option for it yet, so it is in extraConfig.
  mobileNetworks = lib.attrNames (
    lib.filterAttrs (
      _: n: (n.enable or true) && lib.hasInfix "[MobileNetwork]" (n.extraConfig or "")
    ) (nixos [ "systemd" "network" "networks" ] { })
  );
in
{
  config = lib.mkIf (cfg.enable && modemUplinks != { }) {
    networking.modemmanager.enable = true;

    # Simple.Connect, Sim.SendPin and Modem.Enable need ModemManager's Device.Control action;
    # reading a modem's state needs none. Only that action, only for uplinkd's user.
    security.polkit.enable = true;
    security.polkit.extraConfig = ''
      // uplinkd: drive the modems of its `modem` uplinks
      polkit.addRule(function(action, subject) {
        if (subject.user == "uplinkd" &&
            action.id == "org.freedesktop.ModemManager1.Device.Control") {
          return polkit.Result.YES;
        }
      });
    '';

    systemd.services.uplinkd = {
      wants = [ "ModemManager.service" ];
      after = [ "ModemManager.service" ];
    };

    assertions = [
      {
        assertion = !(nixos [ "networking" "networkmanager" "enable" ] false);
        message = "networking.networkmanager.enable: NetworkManager connects every ModemManager modem itself, so it would fight uplinkd over the bearer of ${names}; disable NetworkManager on this router, or leave the modem to it (address.mode = \"external\").";
      }
      {
        assertion = mobileNetworks == [ ];
        message = "systemd.network.networks.${helpers.attr (lib.head (mobileNetworks ++ [ "?" ]))}: its [MobileNetwork] section makes networkd connect ModemManager modems, as uplinkd does for ${names}; remove the section, or leave the modem to networkd (address.mode = \"external\").";
      }
    ];
  };
}
