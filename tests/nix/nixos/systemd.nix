# The systemd and networkd options uplinkd's module sets (see default.nix).
{ lib, pkgs, ... }:
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
      bridgeFDBs = sectionList "BridgeFDB" bridgeFDBKeys;
      address = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      # nixos/lib/systemd-network-units / networkd.nix commonNetworkOptions: extraConfig, lines
      extraConfig = mkOption {
        type = types.lines;
        default = "";
      };
    };
  };

  # --- networkd.nix: check.netdev (sectionWireGuard, sectionWireGuardPeer, sectionVXLAN) and
  # check.network.sectionBridgeFDB; the list-valued ones are `mkSubsectionType` lists of plain
  # sections (each element one [WireGuardPeer] / [BridgeFDB] section). PrivateKey and
  # PresharedKey are absent on purpose in nixpkgs (a key in the store), so here too.
  wireGuardKeys = [
    "PrivateKeyFile"
    "ListenPort"
    "FirewallMark"
    "RouteTable"
    "RouteMetric"
  ];
  wireGuardPeerKeys = [
    "PublicKey"
    "PresharedKeyFile"
    "AllowedIPs"
    "Endpoint"
    "PersistentKeepalive"
    "RouteTable"
    "RouteMetric"
  ];
  vxlanKeys = [
    "VNI"
    "Remote"
    "Local"
    "Group"
    "TOS"
    "TTL"
    "MacLearning"
    "FDBAgeingSec"
    "MaximumFDBEntries"
    "ReduceARPProxy"
    "L2MissNotification"
    "L3MissNotification"
    "RouteShortCircuit"
    "UDPChecksum"
    "DestinationPort"
    "PortRange"
    "FlowLabel"
    "IPDoNotFragment"
    "Independent"
  ];
  bridgeFDBKeys = [
    "MACAddress"
    "Destination"
    "VLANId"
    "VNI"
    "AssociatedWith"
    "OutgoingInterface"
  ];
  sectionList =
    name: keys:
    mkOption {
      type = types.listOf (section name keys);
      default = [ ];
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
      wireguardConfig = sectionOption "WireGuard" wireGuardKeys;
      wireguardPeers = sectionList "WireGuardPeer" wireGuardPeerKeys;
      vxlanConfig = sectionOption "VXLAN" vxlanKeys;
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

in
[
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

]
