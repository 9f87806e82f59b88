# A home router with three uplinks used at once: a wired ISP and two USB LTE sticks.
# New connections are spread over the healthy uplinks by weight (the fibre gets 4 of 6); a
# connection stays on the uplink it started on; a dead uplink is out within a second; either
# stick can be unplugged and plugged into any USB port at any time.
#
# Policies: VoIP (the phone, and SIP from any softphone) and the admin's workstation go by the
# wired ISP only; the guest Wi-Fi's IPv4 goes by the LTE sticks only; everything else is
# balanced over all three; the router's own updates (root's traffic: nix-daemon,
# nixos-upgrade) never use LTE.
#
# LAN: two ports bridged as br-lan, 192.168.1.0/24, DHCP from networkd, DNS from a local
# recursive resolver (so names resolve over whichever uplinks are up), and a firewall that lets
# the LAN out and nothing in. Guest Wi-Fi: an access point on enp4s0, 192.168.2.0/24, which
# may go out but not reach the LAN.
#
# IPv6: the LAN gets a /64 of the prefix the fibre ISP delegates by DHCPv6-PD (uplinkd's own
# client asks for it) and its IPv6 goes out by the fibre only, untranslated; when the
# delegation ends, the LAN's prefix goes with it. The guest network keeps a stable internal
# /64 that is prefix-translated to whichever uplink carries a connection: its IPv6 is balanced
# over the fibre and both sticks (each translated to that uplink's /64, the fibre's from its
# RA), while its IPv4 stays on the sticks. dnsmasq only advertises (RA, SLAAC) whatever /64
# uplinkd puts on each LAN interface; it follows a new delegated prefix by itself.
#
# Import it from your configuration next to your hardware-configuration.nix, with uplinkd's
# NixOS module (the flake's nixosModules.default). Adjust the interface names and the sticks'
# identities: `ip link` and `udevadm info /sys/class/net/<if>` (ID_VENDOR_ID, ID_MODEL_ID,
# ID_SERIAL_SHORT) tell them.
{ pkgs, ... }:
{
  networking.hostName = "home-router";

  # networkd configures the LAN; uplinkd configures the uplinks and all routing to them.
  networking.useNetworkd = true;
  networking.useDHCP = false;

  services.uplinkd = {
    enable = true;
    # Each uplink is probed through itself (ICMP echo to these, all at once); one answer a
    # round is enough. The default profile costs an idle LTE stick about 0.6 MB a day, and
    # probes fast as soon as traffic goes out without anything coming back.
    settings.probe.targets = [
      "1.1.1.1"
      "9.9.9.9"
      "8.8.8.8"
    ];
    settings.uplinks = {
      # The fibre box on the first built-in port.
      wan = {
        match.name = "enp1s0";
        address.mode = "dhcp";
        table = 101;
        weight = 4;
      };
      # Two LTE sticks in "HiLink" mode: each is a small router with its own DHCP server.
      # Matched by USB identity, they are renamed lte1 and lte2 whichever port they are in.
      # Two sticks of the same model also need `serial` to be told apart, and each its own
      # LAN subnet (set in the stick's web page) since both would hand out 192.168.8.0/24.
      lte1 = {
        match.usb = {
          vendor = "12d1"; # Huawei
          product = "14dc"; # E3372h in HiLink mode
          serial = "0123456789ABCDEF";
        };
        address.mode = "dhcp";
        table = 102;
      };
      lte2 = {
        match.usb = {
          vendor = "19d2"; # ZTE
          product = "1405"; # MF79U / MF833V in NDIS mode
        };
        address.mode = "dhcp";
        table = 103;
      };
    };

    # LAN IPv6 (see the top). The guest prefix is a placeholder: use a global (non-ULA) /64 of
    # your own, or clients prefer IPv4 over it.
    settings.lan = {
      br-lan.ipv6 = {
        mode = "delegate";
        uplink = "wan";
        subnet = 0;
      };
      enp4s0.ipv6 = {
        mode = "translate";
        prefix = "2001:db8:ff::/64";
      };
    };

    # Which traffic may use which uplinks. A policy is a list of tiers (the first with a
    # healthy member is used); `last_resort = "unreachable"` means "only these, or nothing".
    settings.policies = {
      wired = {
        tiers = [ { wan = 1; } ];
        table = 150;
        last_resort = "unreachable";
      };
      lte = {
        tiers = [
          {
            lte1 = 1;
            lte2 = 1;
          }
        ];
        table = 151;
        last_resort = "unreachable";
      };
    };
    # New connections, first match wins; what matches no rule is balanced over every uplink.
    # A connection stays on the uplink it started on either way.
    settings.rules.steer = [
      {
        # the VoIP phone and the admin's workstation
        src = [
          "192.168.1.20/32"
          "192.168.1.10/32"
        ];
        policy = "wired";
      }
      {
        # SIP from any softphone
        protocol = "udp";
        dport = [ 5060 ];
        policy = "wired";
      }
      {
        src = [ "192.168.2.0/24" ];
        policy = "lte";
      }
      {
        # the router's own traffic as root: updates and the nix daemon, never over LTE
        # (unbound runs as its own user, so DNS keeps using every uplink)
        local = true;
        uid = 0;
        policy = "wired";
      }
    ];
  };

  systemd.network = {
    netdevs."20-br-lan".netdevConfig = {
      Kind = "bridge";
      Name = "br-lan";
    };
    networks = {
      "30-lan-ports" = {
        matchConfig.Name = [
          "enp2s0"
          "enp3s0"
        ];
        networkConfig.Bridge = "br-lan";
        linkConfig.RequiredForOnline = "enslaved";
      };
      "40-br-lan" = {
        matchConfig.Name = "br-lan";
        address = [ "192.168.1.1/24" ];
        networkConfig = {
          DHCPServer = true;
          ConfigureWithoutCarrier = true;
        };
        dhcpServerConfig = {
          PoolOffset = 100;
          PoolSize = 100;
          EmitDNS = true;
          DNS = [ "192.168.1.1" ];
        };
        linkConfig.RequiredForOnline = "routable";
      };
      "40-guest" = {
        matchConfig.Name = "enp4s0";
        address = [ "192.168.2.1/24" ];
        networkConfig.DHCPServer = true;
        dhcpServerConfig = {
          PoolOffset = 100;
          PoolSize = 100;
          EmitDNS = true;
          DNS = [ "192.168.2.1" ];
        };
        linkConfig.RequiredForOnline = "no";
      };
    };
  };

  # DNS for the LAN and the router itself, from a local recursive resolver: names resolve over
  # whichever uplinks are up, whatever DNS each ISP would hand out.
  services.resolved.enable = false;
  services.unbound = {
    enable = true;
    settings.server = {
      interface = [
        "127.0.0.1"
        "::1"
        "192.168.1.1"
        "192.168.2.1"
      ];
      access-control = [
        "127.0.0.0/8 allow"
        "::1/128 allow"
        "192.168.1.0/24 allow"
        "192.168.2.0/24 allow"
      ];
    };
  };

  # Router advertisements on both LANs for the /64 uplinkd puts there (`constructor:`), SLAAC
  # only (no DHCPv6, no DNS: unbound and networkd do those).
  services.dnsmasq = {
    enable = true;
    resolveLocalQueries = false;
    settings = {
      port = 0;
      enable-ra = true;
      dhcp-range = [
        "::,constructor:br-lan,ra-only"
        "::,constructor:enp4s0,ra-only"
      ];
    };
  };

  # The LAN may reach the router and go out through any uplink; nothing comes in unasked.
  # uplinkd adds masquerading and MSS clamping on the uplinks in its own nftables table, and
  # sets reverse-path filtering to "loose", which ECMP needs.
  networking.nftables.enable = true;
  networking.firewall = {
    enable = true;
    trustedInterfaces = [ "br-lan" ];
    interfaces.enp4s0 = {
      allowedUDPPorts = [
        53
        67
      ];
      allowedTCPPorts = [ 53 ];
    };
    filterForward = true;
    extraForwardRules = ''
      iifname "br-lan" oifname { "enp1s0", "lte1", "lte2" } accept
      iifname "enp4s0" oifname { "lte1", "lte2" } accept
    '';
  };

  environment.systemPackages = with pkgs; [
    conntrack-tools
    ethtool
    tcpdump
  ];

  system.stateVersion = "26.05";
}
