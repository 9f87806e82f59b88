# The options of a `services.uplinkd.settings.tunnels.<name>` section: a WireGuard tunnel
# that rides the healthy uplinks (controller/uplinkd/config/tunnels.py has the same names and
# defaults). Keys are files, never values: `private_key_file` and `preshared_key_file` are
# strings (a Nix path would copy the key into the store), handed to the service with systemd
# credentials (service.nix), and assertions.nix refuses a key file inside the Nix store.
{ lib, probeSubmodule }:
let
  inherit (lib) mkOption types;

  keyFile = description: types.strMatching "/.+" // {
    description = "absolute path of a key file (a string, not a Nix path)";
  };

  peerSubmodule = {
    options = {
      public_key = mkOption {
        type = types.strMatching "[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=";
        description = "The peer's public key, base64 as `wg pubkey` writes it.";
      };
      preshared_key_file = mkOption {
        type = types.nullOr (keyFile "preshared key");
        default = null;
        description = "File holding a preshared key (passed to the service as a credential).";
      };
      endpoint = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "home.example.org:51820";
        description = ''
          The peer's address:port, or name:port: a name is resolved through the tunnel's
          underlay (the question carries the tunnel's mark) and again while the tunnel stays down.
        '';
      };
      allowed_ips = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Prefixes this peer may send from (and that are routed to it).";
      };
      keepalive = mkOption {
        type = types.ints.between 0 65535;
        default = 25;
        description = "Persistent keepalive, seconds; 0 = off.";
      };
    };
  };
in
{
  options = {
    interface = mkOption {
      type = types.strMatching "[^/ *?[]{1,15}";
      description = "The WireGuard interface the controller creates and owns.";
    };
    backend = mkOption {
      type = types.enum [
        "auto"
        "kernel"
        "wireguard-go"
      ];
      default = "auto";
      description = ''
        How the interface is made: `kernel` (the controller creates a `wireguard` link and
        configures it over WireGuard's generic netlink API), `wireguard-go` (it runs
        wireguard-go and speaks its userspace API), or `auto`: the kernel's when a `wireguard`
        link can be created, else wireguard-go.
      '';
    };
    private_key_file = mkOption {
      type = keyFile "private key";
      example = "/etc/secrets/wg-home.key";
      description = ''
        File holding the tunnel's private key (`wg genkey`), outside the Nix store. The service
        reads it as a systemd credential; the controller sees only the credential's path.
      '';
    };
    listen_port = mkOption {
      type = types.nullOr types.port;
      default = null;
      description = "UDP port; null = any.";
    };
    addresses = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "10.99.0.2/24" ];
      description = "The tunnel's inner addresses (IPv4 and/or IPv6, with prefix length).";
    };
    mtu = mkOption {
      type = types.either (types.enum [ "auto" ]) (types.ints.between 576 9000);
      default = "auto";
      description = ''
        `auto`: the smallest MTU among the uplinks that may carry the tunnel, minus WireGuard's
        overhead (60 over IPv4, 80 over IPv6); or a number.
      '';
    };
    peers = mkOption {
      type = types.nonEmptyListOf (types.submodule peerSubmodule);
      description = "The other end(s).";
    };
    underlay = mkOption {
      type = types.oneOf [
        (types.enum [ "balance" ])
        (types.nonEmptyListOf types.str)
        (types.submodule {
          options.policy = mkOption {
            type = types.str;
            description = "A name from `policies` (`default`: the balance group).";
          };
        })
      ];
      default = "balance";
      example = [
        "wan"
        "lte1"
      ];
      description = ''
        Which uplinks carry the tunnel's encrypted packets: `balance` (the weighted group),
        uplink names in order of preference (the next only while the ones before are down, or
        while the tunnel cannot pass the ones before: a network that drops UDP), or
        `{ policy = "name"; }`: that policy's choice of uplinks (its tiers).
      '';
    };
    route = mkOption {
      type = types.either (types.enum [ "full" ]) (types.listOf types.str);
      default = [ ];
      description = "`full`: all LAN traffic, IPv4 and IPv6, goes into the tunnel; or prefixes.";
    };
    kill_switch = mkOption {
      type = types.nullOr types.bool;
      default = null;
      description = ''
        While the tunnel is down, what the route sends into it is unreachable, never sent out of
        an uplink. Default (null): on for `route = "full"`.
      '';
    };
    fail_back = mkOption {
      type = types.either (types.enum [
        "immediate"
        "never"
      ]) (types.submodule {
        options.hold = mkOption {
          type = types.addCheck types.number (v: v >= 0 && v <= 86400);
          description = "Seconds a more preferred uplink must stay healthy before the tunnel moves back.";
        };
      });
      default = "immediate";
      example = { hold = 60; };
      description = ''
        After a failover along the underlay list: back to the more preferred uplink as soon as
        it is healthy, after it has stayed healthy `hold` seconds, or never (the tunnel stays
        while its uplink is healthy).
      '';
    };
    probe = mkOption {
      type = types.submodule probeSubmodule;
      default = { };
      description = ''
        Health checks sent through the tunnel to targets inside it (the uplinks' fields and
        profiles; timings default from the top-level `probe`, never its targets). No targets:
        the tunnel is up while its last handshake is under 180 s old.
      '';
    };
    resolvers = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "DNS servers asked for endpoint names, through the underlay (default: resolv.conf's, not loopback).";
    };
    table = mkOption {
      type = types.ints.between 1 16777215;
      description = "The tunnel's underlay table (where its encrypted packets are routed).";
    };
    route_table = mkOption {
      type = types.nullOr (types.ints.between 1 16777215);
      default = null;
      description = "Where LAN traffic meets the tunnel; default: `table` + 1.";
    };
    fwmark = mkOption {
      type = types.nullOr types.ints.unsigned;
      default = null;
      description = "Mark on the tunnel's UDP packets, outside `kernel.mark_mask` and `kernel.policy_mask`; default: a single bit of its own (bit 31, 30, ... by tunnel name).";
    };
  };
}
