# The options of the `policies` section and of `rules.steer` (services.uplinkd.settings), as
# the controller's Policy and Steer have them (controller/uplinkd/config/policies.py). What
# needs the whole config (an unknown uplink in a tier, a rule naming no policy, a rule shadowed
# by an earlier one) the controller checks in the rendered file at build time.
{
  lib,
  withDescription,
  tableId,
}:
let
  inherit (lib) mkOption types;

  portRange = withDescription ''port or port range, e.g. 5060 or "10000-20000"'' (
    types.either (types.ints.between 1 65535) (types.strMatching "[0-9]+(-[0-9]+)?")
  );

  # Rendered as the controller keeps them: [low, high].
  asRange =
    p:
    if builtins.isInt p then
      [
        p
        p
      ]
    else
      let
        parts = map lib.toInt (lib.splitString "-" p);
      in
      [
        (lib.head parts)
        (lib.last parts)
      ];

  prefixes = types.coercedTo types.str lib.toList (types.listOf types.str);
in
{
  # An uplink's `metered` and `budget` (merged into the uplink's options).
  meteringOptions = {
    metered = mkOption {
      type = types.bool;
      default = false;
      description = "Paid by volume: in the default policy only when no unmetered uplink is healthy.";
    };
    budget = mkOption {
      type = types.nullOr types.ints.positive;
      default = null;
      example = 5000000000;
      description = "Bytes per calendar month (UTC); when spent the uplink is used only as a last tier.";
    };
  };

  policySubmodule = {
    options = {
      tiers = mkOption {
        type = types.listOf (types.attrsOf (types.ints.between 1 256));
        example = [
          { wan = 3; }
          { lte1 = 1; }
        ];
        description = ''
          Ordered tiers; each maps uplink names to weights (1-256). New connections use the
          first tier with a healthy member, balanced by weight.
        '';
      };
      table = mkOption {
        type = tableId;
        example = 150;
        description = "The policy's routing table; unique among uplinks, policies and balance.";
      };
      mark = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "Policy mark under `kernel.policy_mask`; null means `table` mod 256.";
      };
      last_resort = mkOption {
        type = types.str;
        default = "carrier";
        description = ''
          When no tier has a healthy member: `carrier` (its uplinks with carrier),
          `unreachable`, or another policy's name (`default` is the balance over all uplinks).
        '';
      };
      flush_on_recovery = mkOption {
        type = types.bool;
        default = false;
        description = ''
          When a higher tier comes back, delete this policy's connections on lower tiers so
          they reconnect through it. Off: existing connections stay where they are.
        '';
      };
    };
  };

  steerSubmodule = {
    options = {
      policy = mkOption {
        type = types.str;
        description = "The policy of new connections this rule matches (`default`: the balance).";
      };
      src = mkOption {
        type = prefixes;
        default = [ ];
        description = "Source prefix(es), any of.";
      };
      dst = mkOption {
        type = prefixes;
        default = [ ];
        description = "Destination prefix(es), any of.";
      };
      protocol = mkOption {
        type = types.nullOr (
          types.enum [
            "tcp"
            "udp"
            "sctp"
            "icmp"
            "icmpv6"
          ]
        );
        default = null;
        description = "Transport protocol; ports without it mean tcp, udp or sctp.";
      };
      sport = mkOption {
        type = types.listOf portRange;
        default = [ ];
        apply = map asRange;
        description = "Source port(s) or ranges.";
      };
      dport = mkOption {
        type = types.listOf portRange;
        default = [ ];
        apply = map asRange;
        description = "Destination port(s) or ranges.";
      };
      iif = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Input interface of forwarded traffic; a `*` at the end is a glob.";
      };
      dscp = mkOption {
        type = types.nullOr (types.ints.between 0 63);
        default = null;
        description = "DSCP value.";
      };
      local = mkOption {
        type = types.bool;
        default = false;
        description = "Match the router's own traffic instead of forwarded traffic.";
      };
      uid = mkOption {
        type = types.nullOr types.ints.unsigned;
        default = null;
        description = "With `local`: only sockets of this uid.";
      };
    };
  };
}
