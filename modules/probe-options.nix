# The options of a `probe` section (services.uplinkd.settings.probe, and each uplink's), as the
# controller's Probe has them. The timings a profile gives an unset field come from
# profiles.nix, the controller's table (tests/nix holds the two against each other).
{ lib, withDescription }:
let
  inherit (lib) mkOption types;

  inherit (import ./profiles.nix) probeProfiles;

  # "20 (fast: 10)": what a profile-timed field is when unset, from the controller's profiles.
  byProfile =
    field:
    let
      shown = p: builtins.toJSON probeProfiles.${p}.${field};
    in
    if shown "default" == shown "fast" then
      shown "default"
    else
      "${shown "default"} (fast: ${shown "fast"})";

  # Probe settings are layered by the controller: a profile's timings, then the top-level
  # `probe`, then the uplink's own. So every field here is unset (null) by default and only
  # what is set is rendered; `unset` names what the controller then uses.
  probeField =
    {
      type,
      unset,
      description,
    }:
    mkOption {
      type = types.nullOr type;
      default = null;
      description = "${description} Unset: ${unset}.";
    };

  between =
    low: high: what:
    withDescription "${what} from ${toString low} to ${toString high}" (
      types.addCheck types.number (v: v >= low && v <= high)
    );
  above =
    low: high: what:
    withDescription "${what} above ${toString low}, at most ${toString high}" (
      types.addCheck types.number (v: v > low && v <= high)
    );

in
{
  options = {
    profile = probeField {
      type = types.enum [
        "default"
        "fast"
      ];
      unset = ''"default"'';
      description = ''
        Timing preset; the fields set here win over it. `fast` takes a blackholed uplink
        that carries traffic out in about 0.6 s, and probes twice as often while idle.
      '';
    };
    method = probeField {
      type = types.enum [
        "icmp"
        "tcp"
        "dns"
      ];
      unset = ''"icmp"'';
      description = "How to probe: ICMP echo, a TCP connect, or a DNS query.";
    };
    targets = probeField {
      type = withDescription "list of at most 16 targets" (
        types.addCheck (types.listOf types.str) (l: lib.length l <= 16)
      );
      unset = "no probes: the uplink is healthy while it has carrier and an address";
      description = ''
        Addresses probed through the uplink, all at once; for `tcp` each with a port
        ("198.51.100.1:443", "[2001:db8::1]:443").
      '';
    };
    dns_name = probeField {
      type = types.str;
      unset = ''"."'';
      description = "The name asked of DNS targets (type NS).";
    };
    quorum = probeField {
      type = types.ints.between 1 100;
      unset = "1";
      description = "Targets that must answer for a round to pass.";
    };
    interval = probeField {
      type = between 0.05 3600 "seconds";
      unset = byProfile "interval";
      description = "Seconds between rounds while healthy.";
    };
    fast_interval = probeField {
      type = between 0.05 3600 "seconds";
      unset = byProfile "fast_interval";
      description = "Seconds between rounds while suspicious.";
    };
    down_interval = probeField {
      type = between 0.05 3600 "seconds";
      unset = byProfile "down_interval";
      description = "Seconds between rounds while down.";
    };
    timeout = probeField {
      type = between 0.01 60 "seconds";
      unset = byProfile "timeout";
      description = "Seconds to wait for an answer.";
    };
    suspect_after = probeField {
      type = between 0.01 60 "seconds";
      unset = byProfile "suspect_after";
      description = "Traffic going out with nothing coming back for this long starts fast rounds.";
    };
    down_after = probeField {
      type = types.ints.between 1 100;
      unset = byProfile "down_after";
      description = "Failed rounds in a row before the uplink is down.";
    };
    up_after = probeField {
      type = types.ints.between 1 100;
      unset = byProfile "up_after";
      description = "Good rounds in a row before it is up again.";
    };
    loss_threshold = probeField {
      type = above 0 100 "percentage";
      unset = "20";
      description = "Loss (EWMA, percent) that makes the uplink degraded.";
    };
    rtt_threshold = probeField {
      type = between 1 60000 "milliseconds";
      unset = "500";
      description = "Round-trip time (EWMA, milliseconds) that makes it degraded.";
    };
    degraded_weight = probeField {
      type = above 0 1 "factor";
      unset = "0.5";
      description = "Factor on the weight of a degraded uplink.";
    };
  };
}
