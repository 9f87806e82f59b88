# What the rest of the system must do so the controller can route: kernel settings, names for
# its tables and protocol, stable names for USB sticks, and networkd, dhcpcd, NetworkManager and
# the firewall kept out of its way.
{ config, lib, ... }:
let
  cfg = config.services.uplinkd;
  helpers = import ./lib.nix { inherit lib; };

  inherit (cfg.settings) uplinks balance kernel;

  usbUplinks = lib.filterAttrs (_: helpers.isUsb) uplinks;
  renamedUplinks = lib.filterAttrs (_: helpers.isRenamed) uplinks;

  # NixOS always has it; the fallback keeps the module evaluable without NixOS (tests/nix).
  systemdVersion = lib.attrByPath [ "systemd" "package" "version" ] "0" config;

  # Uplinks whose address the controller sets (static) or leases (dhcp).
  ownedUplinks = lib.filterAttrs (_: helpers.controllerAddresses) uplinks;

  # Interface names (and name globs) of the owned uplinks, where the config tells them.
  # NixOS defines some of these keys itself at mkDefault (network-interfaces.nix: forwarding
  # false) and users write them at normal priority (a sysctl key takes one definition): above
  # NixOS's defaults, below anything a user or networking.nat (mkOverride 99) writes.
  routerDefault = lib.mkOverride 900;

  ownedNames = lib.filter (n: n != null) (lib.mapAttrsToList helpers.ifnameOf ownedUplinks);
  ownedPatterns = lib.filter (n: n != null) (lib.mapAttrsToList helpers.namePatternOf ownedUplinks);
  # Tunnels on kernel WireGuard: the unit may not load modules (ProtectKernelModules), so the
  # module is loaded at boot; `auto` finds it there.
  kernelTunnels = lib.filterAttrs (_: t: (t.backend or "auto") != "wireguard-go") (
    cfg.settings.tunnels or { }
  );

  dhcpNames = lib.filter (n: n != null) (
    lib.mapAttrsToList helpers.ifnameOf (lib.filterAttrs (_: u: u.address.mode == "dhcp") uplinks)
  );
  # Uplinks a `delegate` LAN asks a prefix of (the controller's DHCPv6-PD client listens on 546).
  delegating = lib.unique (
    lib.filter (n: n != null && uplinks ? ${n}) (
      lib.mapAttrsToList (_: lan: if lan.ipv6.mode == "delegate" then lan.ipv6.uplink else null) (
        cfg.settings.lan
      )
    )
  );
  # ... and `dhcp` uplinks that may ask for their own address by DHCPv6 (address.dhcp6).
  dhcp6Uplinks = lib.filter (
    n: uplinks.${n}.address.mode == "dhcp" && uplinks.${n}.address.dhcp6 != "never"
  ) (lib.attrNames uplinks);
  pdNames = lib.filter (n: n != null) (
    map (n: helpers.ifnameOf n uplinks.${n}) (lib.unique (delegating ++ dhcp6Uplinks))
  );
  # Uplinks whose /64 a LAN extends (lan.<if>.ipv6 = { mode = "extend"; uplink = ...; }).
  extendedUplinks = lib.unique (
    lib.filter (u: u != null && uplinks ? ${u}) (
      lib.mapAttrsToList (
        _: lan: if lan.ipv6.mode == "extend" then lan.ipv6.uplink else null
      ) cfg.settings.lan
    )
  );
  extendedNames = lib.filter (n: n != null) (
    map (u: helpers.ifnameOf u uplinks.${u}) (
      lib.filter (u: uplinks.${u}.address.mode != "external") extendedUplinks
    )
  );
in
{
  config = lib.mkIf cfg.enable {
    boot.kernelModules = lib.optional (kernelTunnels != { }) "wireguard";

    boot.kernel.sysctl = lib.mapAttrs (_: routerDefault) {
      # A router forwards.
      "net.ipv4.conf.all.forwarding" = true;
      "net.ipv6.conf.all.forwarding" = true;
      # Hash on the 5-tuple, so the flows of one client spread over the uplinks.
      "net.ipv4.fib_multipath_hash_policy" = 1;
      "net.ipv6.fib_multipath_hash_policy" = 1;
      # No reverse-path check by the kernel. Strict mode breaks multi-uplink routing (the
      # reverse route of a packet from one uplink may point out of another), and loose mode,
      # once policy rules exist, walks every rule band again for each packet's source (with
      # accept_local the kernel skips that walk: bench/forwarding.py measured it at 4-8 % of
      # forwarding). What loose mode caught, a packet from outside claiming one of the
      # router's own addresses, the controller's nft table drops for every connection.
      # systemd's 50-default.conf sets rp_filter = 2 on each interface by a glob; the glob
      # here comes later and wins.
      "net.ipv4.conf.all.rp_filter" = 0;
      "net.ipv4.conf.default.rp_filter" = 0;
      "net.ipv4.conf.*.rp_filter" = 0;
      "net.ipv4.conf.all.accept_local" = true;
      # A DHCP lease that moves within its subnet: the new address is added before the old
      # (primary) one goes, and must survive it (systemd's own defaults say the same; the
      # controller cannot set it per interface under ProtectKernelTunables).
      "net.ipv4.conf.all.promote_secondaries" = true;
    }
    # With forwarding on, the kernel ignores router advertisements unless accept_ra is 2. The
    # uplinks networkd manages learn by RA in networkd itself; the ones the controller owns
    # rely on the kernel. systemd applies these again when a stick is plugged in
    # (99-systemd.rules runs systemd-sysctl for each new interface).
    // lib.listToAttrs (
      map (ifname: lib.nameValuePair (helpers.ipv6ConfKey ifname "accept_ra") (routerDefault 2)) ownedNames
    )
    # The controller takes the RA's router into the uplink's own table itself (never main) and,
    # for an uplink whose /64 a LAN extends, the prefix goes to the LAN, not onto the uplink. It
    # writes these too, but cannot under the unit's ProtectKernelTunables: set them here.
    // lib.listToAttrs (
      map (ifname: lib.nameValuePair (helpers.ipv6ConfKey ifname "accept_ra_defrtr") (routerDefault 0)) (
        lib.unique (dhcpNames ++ extendedNames)
      )
    )
    // lib.listToAttrs (
      map (ifname: lib.nameValuePair (helpers.ipv6ConfKey ifname "accept_ra_pinfo") (routerDefault 0)) extendedNames
    )
    // lib.listToAttrs (
      map (ifname: lib.nameValuePair (helpers.ipv6ConfKey ifname "accept_ra") (routerDefault 2)) extendedNames
    );

    # `ip route show table lte1`, `ip rule` showing `proto uplinkd`.
    networking.iproute2 = {
      enable = true;
      rttablesExtraConfig = lib.concatStrings (
        lib.mapAttrsToList (name: uplink: "${toString uplink.table} ${name}\n") uplinks
        ++ [ "${toString balance.table} balance\n" ]
      );
    };
    environment.etc."iproute2/rt_protos.d/uplinkd.conf".text = ''
      ${toString kernel.protocol} uplinkd
    '';

    # Stable names: a USB-matched uplink, and one whose address the controller owns that is
    # matched by driver or path alone, is renamed to its attribute name, whatever port or order
    # it was plugged in, so dhcpcd, NetworkManager and networkd can be told to leave exactly
    # that interface alone. udev applies .link files with or without networkd; only the first
    # matching file counts, and 10- sorts before NixOS's and systemd's own.
    systemd.network.links = lib.mapAttrs' (
      name: uplink:
      lib.nameValuePair "10-uplinkd-${name}" {
        matchConfig = helpers.linkMatch uplink;
        linkConfig.Name = name;
      }
    ) renamedUplinks;

    # networkd must not configure what the controller configures, and must not delete routes,
    # rules and nexthops it did not make. Both only take effect where networkd runs.
    systemd.network.networks = lib.mapAttrs' (
      name: uplink:
      lib.nameValuePair "10-uplinkd-${name}" {
        matchConfig = helpers.networkMatch name uplink;
        linkConfig.Unmanaged = true;
      }
    ) ownedUplinks;
    systemd.network.config.networkConfig = {
      ManageForeignRoutes = false;
      ManageForeignRoutingPolicyRules = false;
    }
    // lib.optionalAttrs (lib.versionAtLeast systemdVersion "256") {
      ManageForeignNextHops = false;
    };
    # A stick that is plugged in but has no signal must not hold up network-online.target.
    # (Absent sticks never do: wait-online only waits for links that exist.)
    systemd.network.wait-online.ignoredInterfaces = lib.attrNames usbUplinks;

    # The same for the other network managers, where they run.
    networking.dhcpcd.denyInterfaces = ownedPatterns;
    networking.networkmanager.unmanaged = map (pattern: "interface-name:${pattern}") ownedPatterns;

    # Replies on one uplink to connections the balance table sent out of another are fine.
    networking.firewall.checkReversePath = lib.mkIf (lib.length (lib.attrNames uplinks) > 1) (
      lib.mkDefault "loose"
    );
    # DHCP replies to the controller's client; harmless when it reads a packet socket.
    # DHCPv6 replies to the DHCPv6 client (unicast to its link-local address, port 546).
    networking.firewall.interfaces = lib.genAttrs (lib.unique (dhcpNames ++ pdNames)) (name: {
      allowedUDPPorts =
        lib.optional (lib.elem name dhcpNames) 68 ++ lib.optional (lib.elem name pdNames) 546;
    });
  };
}
