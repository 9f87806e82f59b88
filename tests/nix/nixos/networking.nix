# The NixOS networking options uplinkd's module sets or reads (see default.nix).
{ lib, standIn, ... }:
let
  inherit (lib) mkOption types;

  port = types.port;
  firewallInterface = types.submodule {
    options = {
      allowedTCPPorts = mkOption {
        type = types.listOf port;
        default = [ ];
      };
      allowedUDPPorts = mkOption {
        type = types.listOf port;
        default = [ ];
      };
    };
  };

  nftTable = types.submodule (
    { name, ... }:
    {
      options = {
        enable = mkOption {
          type = types.bool;
          default = true;
        };
        name = mkOption {
          type = types.str;
          default = name;
        };
        family = mkOption {
          type = types.enum [
            "ip"
            "ip6"
            "inet"
            "arp"
            "bridge"
            "netdev"
          ];
        };
        content = mkOption {
          type = types.lines;
          default = "";
        };
      };
    }
  );
in
[
  # nixos/modules/tasks/network-interfaces.nix: useDHCP, useNetworkd, enableIPv6, hostName, and
  # the sysctl it always defines: forwarding = mkDefault (any proxyARP interface), i.e. false.
  (
    { config, ... }:
    {
      options.networking = {
        hostName = mkOption {
          type = types.str;
          default = "nixos";
        };
        useDHCP = mkOption {
          type = types.bool;
          default = true;
        };
        useNetworkd = mkOption {
          type = types.bool;
          default = false;
        };
        enableIPv6 = mkOption {
          type = types.bool;
          default = true;
        };
        interfaces = standIn "networking.interfaces";
        defaultGateway = standIn "networking.defaultGateway";
      };
      config.boot.kernel.sysctl."net.ipv4.conf.all.forwarding" = lib.mkDefault false;
      config.systemd.network.enable = lib.mkIf config.networking.useNetworkd (lib.mkDefault true);
    }
  )

  # nixos/modules/services/networking/dhcpcd.nix
  {
    options.networking.dhcpcd = {
      enable = mkOption {
        type = types.bool;
        default = true;
      };
      denyInterfaces = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      allowInterfaces = mkOption {
        type = types.nullOr (types.listOf types.str);
        default = null;
      };
    };
  }

  # nixos/modules/services/networking/networkmanager.nix
  {
    options.networking.networkmanager = {
      enable = mkOption {
        type = types.bool;
        default = false;
      };
      unmanaged = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
    };
  }

  # nixos/modules/services/networking/firewall.nix
  {
    options.networking.firewall = {
      enable = mkOption {
        type = types.bool;
        default = true;
      };
      checkReversePath = mkOption {
        type = types.either types.bool (
          types.enum [
            "strict"
            "loose"
          ]
        );
        default = true;
      };
      interfaces = mkOption {
        type = types.attrsOf firewallInterface;
        default = { };
      };
      trustedInterfaces = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      allowedTCPPorts = mkOption {
        type = types.listOf port;
        default = [ ];
      };
      allowedUDPPorts = mkOption {
        type = types.listOf port;
        default = [ ];
      };
      filterForward = mkOption {
        type = types.bool;
        default = false;
      };
      extraForwardRules = mkOption {
        type = types.lines;
        default = "";
      };
    };
  }

  # nixos/modules/services/networking/nftables.nix: flushRuleset is an enable option whose
  # default the module sets: true before stateVersion 23.11 or with a hand-written ruleset.
  (
    { config, ... }:
    {
      options.networking.nftables = {
        enable = mkOption {
          type = types.bool;
          default = false;
        };
        flushRuleset = mkOption {
          type = types.bool;
          default = false;
        };
        ruleset = mkOption {
          type = types.lines;
          default = "";
        };
        tables = mkOption {
          type = types.attrsOf nftTable;
          default = { };
        };
      };
      config.networking.nftables.flushRuleset = lib.mkDefault (
        lib.versionOlder config.system.stateVersion "23.11" || config.networking.nftables.ruleset != ""
      );
    }
  )

  # nixos/modules/services/networking/nat.nix: with enable, forwarding at mkOverride 99.
  (
    { config, ... }:
    let
      cfg = config.networking.nat;
    in
    {
      options.networking.nat = {
        enable = mkOption {
          type = types.bool;
          default = false;
        };
        enableIPv6 = mkOption {
          type = types.bool;
          default = false;
        };
        internalInterfaces = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        externalInterface = mkOption {
          type = types.nullOr types.str;
          default = null;
        };
      };
      config.boot.kernel.sysctl = lib.mkIf cfg.enable (
        {
          "net.ipv4.conf.all.forwarding" = lib.mkOverride 99 true;
          "net.ipv4.conf.default.forwarding" = lib.mkOverride 99 true;
        }
        // lib.optionalAttrs cfg.enableIPv6 {
          "net.ipv6.conf.all.accept_ra" = lib.mkOverride 99 2;
          "net.ipv6.conf.default.accept_ra" = lib.mkOverride 99 2;
          "net.ipv6.conf.all.forwarding" = lib.mkOverride 99 true;
          "net.ipv6.conf.default.forwarding" = lib.mkOverride 99 true;
        }
      );
    }
  )

  # nixos/modules/services/networking/wireguard.nix: the options nixos-tests/tunnel.nix's home
  # end sets (interfaces.<name>: ips, listenPort, privateKeyFile, peers with publicKey,
  # allowedIPs, endpoint, persistentKeepalive). Others of nixpkgs' are not declared.
  {
    options.networking.wireguard.interfaces = mkOption {
      default = { };
      type = types.attrsOf (
        types.submodule {
          options = {
            ips = mkOption {
              type = types.listOf types.str;
              default = [ ];
            };
            listenPort = mkOption {
              type = types.nullOr types.int;
              default = null;
            };
            privateKeyFile = mkOption {
              type = types.nullOr types.str;
              default = null;
            };
            peers = mkOption {
              default = [ ];
              type = types.listOf (
                types.submodule {
                  options = {
                    publicKey = mkOption { type = types.singleLineStr; };
                    allowedIPs = mkOption {
                      type = types.listOf types.str;
                      default = [ ];
                    };
                    endpoint = mkOption {
                      type = types.nullOr types.str;
                      default = null;
                    };
                    persistentKeepalive = mkOption {
                      type = types.nullOr types.int;
                      default = null;
                    };
                  };
                }
              );
            };
          };
        }
      );
    };
  }

  # nixos/modules/services/networking/modemmanager.nix (enable: bool, default false;
  # fccUnlockScripts: list of { id: str; path: path }). `package` is not declared: unused here.
  {
    options.networking.modemmanager = {
      enable = mkOption {
        type = types.bool;
        default = false;
      };
      fccUnlockScripts = mkOption {
        type = types.listOf (
          types.submodule {
            options = {
              id = mkOption { type = types.str; };
              path = mkOption { type = types.path; };
            };
          }
        );
        default = [ ];
      };
    };
  }

  # nixos/modules/security/polkit.nix (enable: bool, mkEnableOption in current nixpkgs, so
  # default false; extraConfig: lines, so definitions from several modules are concatenated)
  {
    options.security.polkit = {
      enable = mkOption {
        type = types.bool;
        default = false;
      };
      extraConfig = mkOption {
        type = types.lines;
        default = "";
      };
    };
  }
]
