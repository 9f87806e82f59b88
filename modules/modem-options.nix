# The `modem` address mode's options (part of an uplink's `address`; options.nix imports it):
# ModemManager connects the modem, the controller routes by the bearer. Mirrors the
# controller's config/modem.py; `uplinkctl check` validates the values at build time.
{ lib, ... }:
let
  inherit (lib) mkOption types;
  nullOr = type: description: mkOption {
    type = types.nullOr type;
    default = null;
    inherit description;
  };
in
{
  options = {
    apn = nullOr types.str "Mode `modem`: the access point name; null: the modem's default.";
    ip_type = nullOr (types.enum [
      "ipv4"
      "ipv6"
      "ipv4v6"
    ]) "Mode `modem`: the bearer's IP family.";
    user = nullOr types.str "Mode `modem`: the APN user name.";
    password_file = nullOr types.str ''
      Mode `modem`: a file holding the APN password (kept out of the Nix store: give a path
      such as /run/secrets/apn-password, readable by the `uplinkd` user).'';
    allowed_auth = mkOption {
      type = types.nullOr (
        types.listOf (
          types.enum [
          "none"
          "pap"
          "chap"
          "mschap"
          "mschapv2"
          "eap"
          ]
        )
      );
      default = null;
      description = "Mode `modem`: the authentication methods the APN may use; null: ModemManager's choice.";
    };
    allow_roaming = nullOr types.bool "Mode `modem`: connect while roaming; null: ModemManager's default.";
    pin_file = nullOr types.str ''
      Mode `modem`: a file holding the SIM PIN. It is sent once; a PIN the SIM refuses is not
      sent again (status shows `sim-pin-wrong`), so a wrong file cannot lock the SIM.'';
    imei = nullOr types.str "Mode `modem`: use only the modem with this IMEI.";
    iccid = nullOr types.str "Mode `modem`: use only the modem holding the SIM with this ICCID.";
  };
}
