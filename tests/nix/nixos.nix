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
{ lib, pkgs }:
let
  inherit (lib) mkOption types;

  # --- nixos/lib/systemd-unit-options.nix: unitOption ---------------------------------------
  # A unit file value: lists from several definitions are concatenated, scalars must agree.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      let
        defs' = lib.filterOverrides defs;
      in
      if lib.any (def: lib.isList def.value) defs' then
        lib.concatMap (def: lib.toList def.value) defs'
      else
        lib.mergeEqualOption loc defs';
  };

  # --- nixos/lib/systemd-lib.nix: checkUnitConfig / assertOnlyFields --------------------------
  # A unit section with the keys networkd knows; anything else fails evaluation.
  section =
    name: keys:
    types.addCheck (types.attrsOf unitOption) (attrs: lib.all (k: lib.elem k keys) (lib.attrNames attrs))
    // {
      description = "systemd [${name}] section with keys ${lib.concatStringsSep ", " keys}";
    };

  standIn =
    what:
    mkOption {
      type = types.anything;
      default = { };
      description = "stand-in: ${what} (not set by uplinkd's module)";
    };

  fakePackageType = types.package;

  # --- nixos/modules/system/boot/networkd.nix (match/link/network sections) --------------------
  # [Link], [Network], [DHCPServer] and networkd.conf's [Network]: subsets of networkd.nix's
  # `assertOnlyFields` lists (checkUnitConfig), holding every key the module, the examples and
  # the VM tests write. [Match] is `attrsOf unitOption` in nixpkgs, unchecked; it is checked here
  # against the keys systemd.link(5) and systemd.network(5) document, since systemd ignores an
  # unknown one (a typo there would make a .link file match everything).
  linkMatchKeys = [
    "MACAddress"
    "PermanentMACAddress"
    "Path"
    "Driver"
    "Type"
    "Kind"
    "Property"
    "OriginalName"
    "Host"
    "Virtualization"
    "KernelCommandLine"
    "KernelVersion"
    "Architecture"
  ];
  linkLinkKeys = [
    "Description"
    "Alias"
    "MACAddressPolicy"
    "MACAddress"
    "NamePolicy"
    "Name"
    "AlternativeNamesPolicy"
    "AlternativeName"
    "MTUBytes"
    "BitsPerSecond"
    "Duplex"
    "AutoNegotiation"
    "WakeOnLan"
    "Port"
  ];
  networkMatchKeys = [
    "MACAddress"
    "PermanentMACAddress"
    "Path"
    "Driver"
    "Type"
    "Kind"
    "Name"
    "Property"
    "WLANInterfaceType"
    "SSID"
    "BSSID"
    "Host"
    "Virtualization"
    "KernelCommandLine"
    "KernelVersion"
    "Architecture"
  ];
  networkLinkKeys = [
    "MACAddress"
    "MTUBytes"
    "ARP"
    "Multicast"
    "AllMulticast"
    "Promiscuous"
    "Unmanaged"
    "Group"
    "RequiredForOnline"
    "RequiredFamilyForOnline"
    "ActivationPolicy"
  ];
  networkNetworkKeys = [
    "Description"
    "DHCP"
    "DHCPServer"
    "LinkLocalAddressing"
    "IPv6LinkLocalAddressGenerationMode"
    "IPv4LLRoute"
    "DefaultRouteOnDevice"
    "LLMNR"
    "MulticastDNS"
    "DNSOverTLS"
    "DNSSEC"
    "LLDP"
    "EmitLLDP"
    "BindCarrier"
    "Address"
    "Gateway"
    "DNS"
    "Domains"
    "IPv4Forwarding"
    "IPv6Forwarding"
    "IPMasquerade"
    "IPv6AcceptRA"
    "IPv6SendRA"
    "DHCPPrefixDelegation"
    "ConfigureWithoutCarrier"
    "IgnoreCarrierLoss"
    "KeepConfiguration"
    "Bridge"
    "Bond"
    "VRF"
    "VLAN"
    "MACVLAN"
    "VXLAN"
    "Tunnel"
  ];
  dhcpServerKeys = [
    "ServerAddress"
    "PoolOffset"
    "PoolSize"
    "DefaultLeaseTimeSec"
    "MaxLeaseTimeSec"
    "EmitDNS"
    "DNS"
    "EmitNTP"
    "NTP"
    "EmitRouter"
    "Router"
    "EmitTimezone"
    "Timezone"
  ];
  # networkd.conf's [Network] (networkd.nix, check.global.sectionNetwork).
  globalNetworkKeys = [
    "SpeedMeter"
    "SpeedMeterIntervalSec"
    "ManageForeignRoutingPolicyRules"
    "ManageForeignRoutes"
    "ManageForeignNextHops"
    "RouteTable"
    "IPv4Forwarding"
    "IPv6Forwarding"
    "IPv6PrivacyExtensions"
    "UseDomains"
  ];

  sectionOption =
    name: keys:
    mkOption {
      type = section name keys;
      default = { };
    };

  linkUnit = types.submodule {
    options = {
      enable = mkOption {
        type = types.bool;
        default = true;
      };
      matchConfig = sectionOption "Match" linkMatchKeys;
      linkConfig = sectionOption "Link" linkLinkKeys;
    };
  };

  networkUnit = types.submodule {
    options = {
      enable = mkOption {
        type = types.bool;
        default = true;
      };
      matchConfig = sectionOption "Match" networkMatchKeys;
      linkConfig = sectionOption "Link" networkLinkKeys;
      networkConfig = sectionOption "Network" networkNetworkKeys;
      dhcpServerConfig = sectionOption "DHCPServer" dhcpServerKeys;
      address = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
    };
  };

  netdevUnit = types.submodule {
    options = {
      enable = mkOption {
        type = types.bool;
        default = true;
      };
      netdevConfig = sectionOption "NetDev" [
        "Description"
        "Name"
        "Kind"
        "MTUBytes"
        "MACAddress"
      ];
    };
  };

  # --- nixos/lib/systemd-unit-options.nix: service units (the fields the module uses) ------------
  unitNames = types.listOf types.str;
  serviceUnit = types.submodule {
    options = {
      enable = mkOption {
        type = types.bool;
        default = true;
      };
      description = mkOption {
        type = types.singleLineStr;
        default = "";
      };
      wantedBy = mkOption {
        type = unitNames;
        default = [ ];
      };
      requiredBy = mkOption {
        type = unitNames;
        default = [ ];
      };
      before = mkOption {
        type = unitNames;
        default = [ ];
      };
      after = mkOption {
        type = unitNames;
        default = [ ];
      };
      wants = mkOption {
        type = unitNames;
        default = [ ];
      };
      requires = mkOption {
        type = unitNames;
        default = [ ];
      };
      partOf = mkOption {
        type = unitNames;
        default = [ ];
      };
      reloadTriggers = mkOption {
        type = types.listOf unitOption;
        default = [ ];
      };
      restartTriggers = mkOption {
        type = types.listOf unitOption;
        default = [ ];
      };
      stopIfChanged = mkOption {
        type = types.bool;
        default = true;
      };
      restartIfChanged = mkOption {
        type = types.bool;
        default = true;
      };
      reloadIfChanged = mkOption {
        type = types.bool;
        default = false;
      };
      path = mkOption {
        type = types.listOf (types.oneOf [
          types.package
          types.str
        ]);
        default = [ ];
      };
      environment = mkOption {
        type = types.attrsOf (types.nullOr (types.oneOf [
          types.str
          types.path
          types.package
        ]));
        default = { };
      };
      script = mkOption {
        type = types.lines;
        default = "";
      };
      # nixpkgs: types.int without a default, read only where defined; null stands for that
      # here, so the harness can force every value.
      startLimitIntervalSec = mkOption {
        type = types.nullOr types.int;
        default = null;
      };
      startLimitBurst = mkOption {
        type = types.nullOr types.int;
        default = null;
      };
      unitConfig = mkOption {
        type = types.attrsOf unitOption;
        default = { };
      };
      serviceConfig = mkOption {
        type = types.attrsOf unitOption;
        default = { };
      };
    };
  };

  # --- nixos/modules/system/etc/etc.nix -----------------------------------------------------------
  etcEntry = types.submodule (
    { config, ... }:
    {
      options = {
        enable = mkOption {
          type = types.bool;
          default = true;
        };
        text = mkOption {
          type = types.nullOr types.lines;
          default = null;
        };
        source = mkOption {
          type = types.path;
        };
        mode = mkOption {
          type = types.str;
          default = "symlink";
        };
      };
      config.source = lib.mkIf (config.text != null) (lib.mkDefault (pkgs.writeText "etc" config.text));
    }
  );

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
  # nixos/modules/misc/assertions.nix
  {
    options.assertions = mkOption {
      type = types.listOf types.unspecified;
      internal = true;
      default = [ ];
    };
    options.warnings = mkOption {
      type = types.listOf types.str;
      internal = true;
      default = [ ];
    };
  }

  # nixos/modules/misc/version.nix
  {
    options.system.stateVersion = mkOption {
      type = types.str;
      default = "26.05";
    };
  }

  # nixos/modules/system/activation/top-level.nix (system.checks)
  {
    options.system.checks = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
  }

  # nixos/modules/config/sysctl.nix (read at 05924f714f31ff83bd10ed1710638688999c3725): a value
  # is a bool, string, int or null; one key has ONE definition (mergeOneOption after overrides
  # are filtered), so two definitions at the same priority fail even when they agree.
  (
    let
      sysctlValue = lib.mkOptionType {
        name = "sysctl option value";
        check =
          value:
          let
            ok = x: lib.isBool x || lib.isString x || lib.isInt x || x == null;
          in
          ok value || (value._type or "" == "override" && ok value.content);
        merge = loc: defs: lib.mergeOneOption loc (lib.filterOverrides defs);
      };
    in
    {
      options.boot.kernel.sysctl = mkOption {
        type = types.submodule { freeformType = types.attrsOf sysctlValue; };
        default = { };
      };
    }
  )

  # nixos/modules/config/iproute2.nix
  {
    options.networking.iproute2 = {
      enable = mkOption {
        type = types.bool;
        default = false;
      };
      rttablesExtraConfig = mkOption {
        type = types.lines;
        default = "";
      };
    };
  }

  # nixos/modules/system/etc/etc.nix
  {
    options.environment.etc = mkOption {
      type = types.attrsOf etcEntry;
      default = { };
    };
  }

  # nixos/modules/config/system-path.nix
  {
    options.environment.systemPackages = mkOption {
      type = types.listOf fakePackageType;
      default = [ ];
    };
  }

  # nixos/modules/config/users-groups.nix (the fields the module sets)
  {
    options.users.users = mkOption {
      type = types.attrsOf (
        types.submodule {
          options = {
            isSystemUser = mkOption {
              type = types.bool;
              default = false;
            };
            isNormalUser = mkOption {
              type = types.bool;
              default = false;
            };
            group = mkOption {
              type = types.str;
              default = "";
            };
            extraGroups = mkOption {
              type = types.listOf types.str;
              default = [ ];
            };
            description = mkOption {
              type = types.passwdEntry types.str;
              default = "";
            };
          };
        }
      );
      default = { };
    };
    options.users.groups = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.members = mkOption {
            type = types.listOf types.str;
            default = [ ];
          };
        }
      );
      default = { };
    };
  }

  # nixos/modules/services/hardware/udev.nix
  {
    options.services.udev = {
      extraRules = mkOption {
        type = types.lines;
        default = "";
      };
      packages = mkOption {
        type = types.listOf types.path;
        default = [ ];
      };
    };
  }

  # nixos/modules/system/boot/systemd.nix (systemd.package, systemd.services) and networkd.nix
  {
    options.systemd = {
      package = mkOption {
        type = types.package;
        default = pkgs.systemd;
      };
      services = mkOption {
        type = types.attrsOf serviceUnit;
        default = { };
      };
      network = {
        enable = mkOption {
          type = types.bool;
          default = false;
        };
        links = mkOption {
          type = types.attrsOf linkUnit;
          default = { };
        };
        networks = mkOption {
          type = types.attrsOf networkUnit;
          default = { };
        };
        netdevs = mkOption {
          type = types.attrsOf netdevUnit;
          default = { };
        };
        config = {
          networkConfig = mkOption {
            type = section "Network" globalNetworkKeys;
            default = { };
          };
          routeTables = mkOption {
            type = types.attrsOf types.int;
            default = { };
          };
        };
        wait-online = {
          enable = mkOption {
            type = types.bool;
            default = true;
          };
          anyInterface = mkOption {
            type = types.bool;
            default = false;
          };
          ignoredInterfaces = mkOption {
            type = types.listOf types.str;
            default = [ ];
          };
        };
      };
    };
  }

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

  # What the examples and the VM tests' router set that the module does not touch.
  {
    options.services.resolved.enable = mkOption {
      type = types.bool;
      default = true;
    };
    options.services.unbound = standIn "services.unbound";
    options.services.dnsmasq = standIn "services.dnsmasq";
    options.virtualisation = standIn "virtualisation.* (nixos/modules/virtualisation/qemu-vm.nix)";
    # nixos/modules/system/activation/specialisation.nix
    options.specialisation = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.configuration = mkOption {
            type = types.deferredModule;
            default = { };
          };
          options.inheritParentConfig = mkOption {
            type = types.bool;
            default = true;
          };
        }
      );
      default = { };
    };
  }
]
