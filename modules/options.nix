# The options of services.uplinkd.
#
# `settings` mirrors the controller's config file (controller/uplinkd/config.py): the same
# names, the same defaults, and types that refuse what the controller would refuse, so a bad
# value fails evaluation with the option's path instead of failing the router at boot. What one
# value cannot say alone (duplicate tables, a gateway outside its subnet, ...) the controller
# checks in the rendered file at build time (service.nix); assertions.nix adds only what needs
# NixOS knowledge. tests/nix/test_module_eval.py compares this tree with the controller's JSON
# Schema, field by field (a field added on one side only fails that test), and profiles.nix,
# which the probe descriptions are written from, with the controller's probe profiles.
{ lib, pkgs, ... }:
let
  helpers = import ./lib.nix { inherit lib; };
  inherit (lib)
    literalExpression
    mkEnableOption
    mkOption
    mkPackageOption
    types
    ;

  # --- value types -------------------------------------------------------------------------

  withDescription = description: type: type // { inherit description; };

  ipv4Address = withDescription ''IPv4 address, e.g. "10.64.0.1"'' (
    types.strMatching helpers.ipv4Pattern
  );

  ipv4Interface = withDescription ''IPv4 address with prefix length, e.g. "10.64.0.2/30"'' (
    types.strMatching "${helpers.ipv4Pattern}/(3[0-2]|[12]?[0-9])"
  );

  ipv6Address = withDescription ''IPv6 address, e.g. "2001:db8::1"'' (
    types.addCheck types.str helpers.isIPv6
  );

  ipv6Interface = withDescription ''IPv6 address with prefix length, e.g. "2001:db8::2/64"'' (
    types.addCheck types.str (
      text:
      let
        parts = builtins.match "(.*)/(12[0-8]|1[01][0-9]|[1-9]?[0-9])" text;
      in
      parts != null && helpers.isIPv6 (lib.head parts)
    )
  );

  tableId = withDescription "routing table id, 1-16777215 (253, 254 and 255 are the kernel's)" (
    types.addCheck (types.ints.between 1 16777215) (
      v:
      !lib.elem v [
        253
        254
        255
      ]
    )
  );

  # The controller takes these as numbers or as "0x…" strings; they are rendered as numbers.
  intOrHex =
    description: inner:
    withDescription description (
      types.coercedTo (types.strMatching "0x[0-9a-fA-F]{1,8}") lib.fromHexString inner
    );

  markMask = intOrHex ''contiguous bit mask, e.g. 65280 or "0xff00"'' (
    types.addCheck (types.ints.between 1 4294967295) helpers.isContiguousMask
  );

  usbId =
    what:
    withDescription ''USB ${what} id, four hex digits, e.g. "12d1"'' (
      types.strMatching "(0x)?[0-9a-fA-F]{4}"
    );

  # Lower case without "0x": what udev shows and what the controller stores.
  normalizeUsbId = v: if v == null then null else lib.toLower (lib.removePrefix "0x" v);

  seconds = max: types.numbers.between 0 max;

  # --- the config's sections, as in config.py ------------------------------------------------

  usbSubmodule = {
    options = {
      vendor = mkOption {
        type = types.nullOr (usbId "vendor");
        default = null;
        apply = normalizeUsbId;
        description = "`idVendor` of the device, as udev's `ID_VENDOR_ID` shows it.";
      };
      product = mkOption {
        type = types.nullOr (usbId "product");
        default = null;
        apply = normalizeUsbId;
        description = "`idProduct` of the device, as udev's `ID_MODEL_ID` shows it.";
      };
      serial = mkOption {
        # udev keeps only these characters in ID_SERIAL_SHORT; anything else could never match.
        type = types.nullOr (
          withDescription "USB serial as udev's ID_SERIAL_SHORT shows it" (
            types.strMatching "[A-Za-z0-9#+.:=@_-]+"
          )
        );
        default = null;
        description = ''
          `iSerial` of the device, as udev's `ID_SERIAL_SHORT` shows it
          (`udevadm info /sys/class/net/<if>`). Tells identical sticks apart.
        '';
      };
    };
  };

  matchSubmodule = {
    options = {
      name = mkOption {
        type = types.nullOr (
          withDescription "interface name or glob, 1-15 characters without '/' or spaces" (
            types.strMatching "[^/[:space:]]{1,15}"
          )
        );
        default = null;
        example = "enp1s0";
        description = ''
          Kernel interface name; shell-style globs allowed. For an uplink matched by `usb`
          leave it unset: the module renames the stick to the uplink's attribute name.
        '';
      };
      driver = mkOption {
        type = types.coercedTo types.str lib.toList (types.listOf types.str);
        default = [ ];
        example = [
          "cdc_ether"
          "rndis_host"
        ];
        description = "Kernel driver name(s); any of them matches.";
      };
      usb = mkOption {
        type = types.nullOr (types.submodule usbSubmodule);
        default = null;
        example = {
          vendor = "12d1";
          product = "14dc";
          serial = "0123456789ABCDEF";
        };
        description = ''
          USB identity of the device the interface belongs to. The module gives such an
          uplink a stable interface name, its attribute name, through a systemd `.link`
          file, and starts the controller when the device is plugged in.
        '';
      };
      path = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "pci-0000:02:00.0";
        description = "udev `ID_PATH` of the device; shell-style globs allowed.";
      };
    };
  };

  addressSubmodule = {
    imports = [ ./modem-options.nix ];
    options = {
      mode = mkOption {
        type = types.enum [
          "external"
          "static"
          "dhcp"
          "modem"
        ];
        default = "external";
        description = ''
          - `external`: someone else (networkd, ModemManager, ppp) configures the interface;
            the controller learns its address and gateway.
          - `static`: the controller puts `cidr` (and `cidr6`) on the interface.
          - `dhcp`: the controller runs a DHCPv4 client; the lease goes into the uplink's table
            only, never into `main`.
          - `modem`: ModemManager connects the modem (the module enables it); the controller
            puts the bearer's address on the data interface and routes by it (docs/modems.md).

          With `static` and `dhcp` the module keeps networkd, dhcpcd and NetworkManager off
          the interface.
        '';
      };
      cidr = mkOption {
        type = types.nullOr ipv4Interface;
        default = null;
        description = "Mode `static`: the uplink's IPv4 address.";
      };
      gateway = mkOption {
        type = types.nullOr ipv4Address;
        default = null;
        description = "Mode `static`: the IPv4 gateway, inside `cidr`; null for point-to-point links.";
      };
      cidr6 = mkOption {
        type = types.nullOr ipv6Interface;
        default = null;
        description = "Mode `static`: the uplink's IPv6 address.";
      };
      gateway6 = mkOption {
        type = types.nullOr ipv6Address;
        default = null;
        description = "Mode `static`: the IPv6 gateway.";
      };
      hostname = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Mode `dhcp`: the host name sent to the DHCP server.";
      };
      dhcp6 = mkOption {
        type = types.nullOr (
          types.enum [
            "auto"
            "always"
            "never"
          ]
        );
        default = null;
        description = ''
          Mode `dhcp`: whether the uplink gets its own IPv6 address by DHCPv6 (IA_NA), as ISPs
          that give no SLAAC require. `auto` (or null): when the router's RA sets the M
          ("managed") flag; `always`; `never` (SLAAC only). The address goes on the uplink as a
          /128 and is used like a SLAAC one (source rule, probes, `translate` LANs).
        '';
      };
    };
  };

  # The health checks' options (probe-options.nix), for the top level and each uplink.
  probeSubmodule = import ./probe-options.nix { inherit lib withDescription; };

  # Policies and steering rules (policy-options.nix).
  inherit (import ./policy-options.nix { inherit lib withDescription tableId; })
    policySubmodule
    steerSubmodule
    meteringOptions
    ;

  uplinkSubmodule = {
    options = {
      match = mkOption {
        type = types.submodule matchSubmodule;
        default = { };
        description = "Which network interface this uplink is. Every given criterion must hold.";
      };
      address = mkOption {
        type = types.submodule addressSubmodule;
        default = { };
        description = "How the uplink gets its address.";
      };
      table = mkOption {
        type = tableId;
        example = 101;
        description = ''
          The uplink's routing table. The module names it after the uplink in
          {file}`/etc/iproute2/rt_tables.d`, so `ip route show table <name>` works.
        '';
      };
      weight = mkOption {
        type = types.ints.between 1 256;
        default = 1;
        description = "Share of new connections this uplink gets while healthy.";
      };
      mark = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = ''
          fwmark value under `kernel.mark_mask` (1 to the mask's width); null means
          `table` mod 256.
        '';
      };
      probe = mkOption {
        type = types.submodule probeSubmodule;
        default = { };
        description = "Health checks for this uplink; what is unset here comes from the top-level `probe`.";
      };
      families = mkOption {
        type = types.listOf (
          types.enum [
            "ipv4"
            "ipv6"
          ]
        );
        default = [
          "ipv4"
          "ipv6"
        ];
        example = [ "ipv6" ];
        description = ''
          Address families the uplink carries. `[ "ipv6" ]`: an IPv6-only ISP (no DHCPv4 client
          on a `dhcp` uplink, only `cidr6` for a `static` one, IPv4 refused in its table, probed
          on its IPv6 targets; IPv4 goes by the other uplinks).
        '';
      };
    }
    // meteringOptions;
  };

  balanceSubmodule = {
    options = {
      table = mkOption {
        type = tableId;
        default = 200;
        description = "The table of the weighted default route that new connections take.";
      };
      last_resort = mkOption {
        type = types.enum [
          "carrier"
          "unreachable"
        ];
        default = "carrier";
        description = ''
          When no uplink is healthy: `carrier` uses every uplink that has carrier (a probe
          target outage must not take the router offline); `unreachable` refuses.
        '';
      };
      buckets = mkOption {
        type = types.ints.between 16 4096;
        default = 512;
        description = "Size of the resilient nexthop group.";
      };
      idle_timer = mkOption {
        type = seconds 3600;
        default = 10.0;
        description = "Seconds a bucket must be idle before it may move to another uplink.";
      };
      unbalanced_timer = mkOption {
        type = seconds 3600;
        default = 0.0;
        description = "Seconds after which buckets move even if busy; 0 means never.";
      };
    };
  };

  rulesSubmodule = {
    options.priority = mkOption {
      # The band base .. base+30 must stay below main's rule at 32766 (config.RULE_BAND).
      type = types.ints.between 1 (32766 - 40);
      default = 10000;
      description = "Base of the controller's rule band; it uses base+0 .. base+30.";
    };
    options.steer = mkOption {
      type = types.listOf (types.submodule steerSubmodule);
      default = [ ];
      description = "Which new connections use which policy; the first matching rule wins.";
    };
  };

  kernelSubmodule = {
    options = {
      protocol = mkOption {
        type = intOrHex "route protocol number, 5-254" (types.ints.between 5 254);
        default = 77;
        description = ''
          Protocol number on every route, rule and nexthop the controller owns. The module
          names it `uplinkd` in {file}`/etc/iproute2/rt_protos.d`.
        '';
      };
      nexthop_base = mkOption {
        type = intOrHex "nexthop id base" (types.ints.between 1 4261412863);
        default = 100000000;
        description = "First nexthop id the controller owns; ids base .. base+2^25 are reserved.";
      };
      mark_mask = mkOption {
        type = markMask;
        default = 65280;
        defaultText = literalExpression ''"0xff00"'';
        description = "The fwmark and ct mark bits the controller owns.";
      };
      policy_mask = mkOption {
        type = types.nullOr markMask;
        default = null;
        description = "Mark bits for policy marks, apart from `mark_mask`; null: the 8 bits above it.";
      };
      nft_table = mkOption {
        type = withDescription "nftables table name: letters, digits, _" (
          types.strMatching "[A-Za-z_][A-Za-z0-9_]{0,31}"
        );
        default = "uplinkd";
        description = "Name of the controller's `inet` nftables table.";
      };
    };
  };

  hooksSubmodule = {
    options = {
      on_change = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = literalExpression ''
          pkgs.writeShellScript "uplink-changed" '''
            logger -t uplinkd "$UPLINKD_UPLINK is $UPLINKD_STATE ($UPLINKD_REASON)"
          '''
        '';
        description = ''
          Program run on every uplink state change, with `UPLINKD_UPLINK`, `UPLINKD_STATE`,
          `UPLINKD_OLD_STATE`, `UPLINKD_REASON` and `UPLINKD_DEV` in its environment. It runs
          inside the service's sandbox, as user `uplinkd` with the service's capabilities.
        '';
      };
      timeout = mkOption {
        type = types.numbers.positive;
        default = 10.0;
        description = "Seconds before a hook is killed.";
      };
    };
  };

  controlSubmodule = {
    options = {
      socket = mkOption {
        type = withDescription "absolute path" (types.strMatching "/.+");
        default = "/run/uplinkd/control.sock";
        description = ''
          The control socket `uplinkctl` talks to (mode 0660, group `uplinkd`). It must stay
          inside {file}`/run/uplinkd`, the service's runtime directory.
        '';
      };
      state_dir = mkOption {
        type = withDescription "absolute path" (types.strMatching "/.+");
        default = "/var/lib/uplinkd";
        description = ''
          Where DHCP leases are kept across restarts. It must stay inside
          {file}`/var/lib/uplinkd`, the service's state directory.
        '';
      };
      resync_interval = mkOption {
        type = types.numbers.between 1 3600;
        default = 30.0;
        description = "Seconds between full reads of the kernel's state.";
      };
    };
  };

  lanSubmodule = {
    options.ipv6 = mkOption {
      default = { };
      description = "What this LAN's IPv6 may do through the uplinks.";
      type = types.submodule {
        options = {
          mode = mkOption {
            type = types.nullOr (
              types.enum [
                "off"
                "translate"
                "extend"
                "delegate"
                "tunnel"
              ]
            );
            default = null;
            description = ''
              `off`: nothing from this LAN is forwarded to an uplink over IPv6 (and nothing is
              NAT66'd). `translate`: the LAN's internal /64 (`prefix`) leaves each uplink
              prefix-translated to that uplink's /64, the interface ID kept, balanced and failed
              over like IPv4. `delegate`: the LAN gets /64 number `subnet` of the prefix `uplink`'s
              ISP delegates by DHCPv6-PD (uplinkd's own client) and leaves by that uplink only.
              `tunnel`: only through a WireGuard tunnel (`tunnel`), never an uplink. `extend`: the
              /64 that `uplink`'s router advertises (an LTE network routes it to the device)
              moves to this LAN and uplinkd advertises it with its own router advertisements;
              it is deprecated on the LAN within a second when the uplink renumbers or is lost. null: `tunnel` when a tunnel has `route = "full"`, `off` otherwise.
            '';
          };
          prefix = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "2001:db8:ff::/64";
            description = "`translate`: the LAN's internal /64; prefer a non-ULA prefix (clients prefer IPv4 over a ULA source). `tunnel`: the /64 the tunnel's far end routes to this LAN.";
          };
          uplinks = mkOption {
            type = types.nullOr (types.listOf types.str);
            default = null;
            description = "`translate`: the uplinks that carry this LAN's IPv6; null means all.";
          };
          uplink = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "wan";
            description = "`delegate`: the uplink whose DHCPv6-PD prefix this LAN takes a /64 of.";
          };
          subnet = mkOption {
            type = types.nullOr (types.ints.between 0 65535);
            default = null;
            example = 1;
            description = "`delegate`: which /64 of the delegated prefix (0, the default, is the first); each LAN on the same uplink needs its own.";
          };
          tunnel = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "home";
            description = "`tunnel`: the tunnel this LAN's IPv6 goes through; null means the one with `route = \"full\"`.";
          };
        };
      };
    };
  };

  settingsSubmodule = {
    options = {
      lan = mkOption {
        type = types.attrsOf (types.submodule lanSubmodule);
        default = { };
        example = literalExpression ''
          {
            lan0.ipv6 = { mode = "translate"; prefix = "2001:db8:ff::/64"; };
            lan1.ipv6 = { mode = "delegate"; uplink = "wan"; subnet = 1; };
          }
        '';
        description = ''
          Per LAN interface, by its kernel name: what its IPv6 may do through the uplinks.
          Without an entry a LAN's IPv6 is never NAT66'd (the masquerade is IPv4 only).
        '';
      };
      uplinks = mkOption {
        type = types.attrsOf (types.submodule uplinkSubmodule);
        default = { };
        example = literalExpression ''
          {
            wan = {
              match.name = "enp1s0";
              address.mode = "dhcp";
              table = 101;
              weight = 4;
            };
            lte1 = {
              match.usb = { vendor = "12d1"; product = "14dc"; serial = "0123456789ABCDEF"; };
              address.mode = "dhcp";
              table = 102;
            };
          }
        '';
        description = ''
          The uplinks, by name. A name is a letter, then letters, digits, `-` or `_`;
          for an uplink matched by `usb` it is also the interface name (at most 15 characters).
        '';
      };
      probe = mkOption {
        type = types.submodule probeSubmodule;
        default = { };
        example = {
          targets = [
            "1.1.1.1"
            "9.9.9.9"
          ];
          profile = "fast";
        };
        description = ''
          Health check settings every uplink starts from. Without targets there are no probes,
          and an uplink counts as healthy while it has carrier and an address.
        '';
      };
      hooks = mkOption {
        type = types.submodule hooksSubmodule;
        default = { };
        description = "Programs run on events.";
      };
      balance = mkOption {
        type = types.submodule balanceSubmodule;
        default = { };
        description = "The weighted ECMP default route for new connections.";
      };
      rules = mkOption {
        type = types.submodule rulesSubmodule;
        default = { };
        description = "The controller's policy routing rules.";
      };
      policies = mkOption {
        type = types.attrsOf (types.submodule policySubmodule);
        default = { };
        description = "Named tiers of uplinks that `rules.steer` sends new connections to.";
      };
      kernel = mkOption {
        type = types.submodule kernelSubmodule;
        default = { };
        description = "What the controller owns in the kernel; nothing outside it is touched.";
      };
      control = mkOption {
        type = types.submodule controlSubmodule;
        default = { };
        description = "The control socket, the state directory and the resync period.";
      };
      tunnels = mkOption {
        type = types.attrsOf (types.submodule (import ./tunnel-options.nix { inherit lib probeSubmodule; }));
        default = { };
        description = ''
          WireGuard tunnels that ride the healthy uplinks, by name. Key files are passed to
          the service as systemd credentials; they must not be in the Nix store.
        '';
      };
      vxlan = mkOption {
        type = types.attrsOf (types.submodule (import ./vxlan-options.nix { inherit lib; }));
        default = { };
        description = ''
          Ethernet segments carried over a tunnel, by name: a VXLAN interface in a bridge of
          yours, with flood entries to the remotes, its MTU, and source in, source out for the
          router's own address on the segment.
        '';
      };
    };
  };
in
{
  options.services.uplinkd = {
    enable = mkEnableOption "uplinkd, the multi-uplink routing controller";

    package = mkPackageOption pkgs "uplinkd" { };

    settings = mkOption {
      type = types.submodule settingsSubmodule;
      default = { };
      description = ''
        The controller's configuration, rendered to {file}`/etc/uplinkd/config.json`.
        Names and defaults are the controller's own (`uplinkctl schema` prints its JSON Schema).
      '';
    };

    checkConfig = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Validate the rendered configuration with `uplinkctl check` while building the
        system, so a configuration the controller refuses fails `nixos-rebuild`. When the
        build machine cannot run the package (cross-compiling without emulation) the check
        is skipped with a warning, and the controller refuses a bad configuration when it
        starts; set this to false to skip it silently.
      '';
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--verbose" ];
      description = "Extra command-line arguments for the `uplinkd` daemon.";
    };
  };
}
