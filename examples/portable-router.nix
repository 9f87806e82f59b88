# A travel router: one uplink of whatever kind the place offers, and a LAN for your own devices.
#
# The uplink is whatever USB network device is plugged in: a USB Ethernet adapter into the
# hotel's wall socket, a phone sharing its connection over USB, or an LTE stick. Another kind
# is a small change, shown below (Wi-Fi). The home tunnel is WireGuard over whichever uplink is
# healthy: all LAN traffic, IPv4 and IPv6, goes through it, and nothing leaves by the uplink
# while it is down (the kill switch). A second LAN port is the home LAN itself, carried over
# VXLAN inside the tunnel (examples/home-endpoint.nix is the other end).
#
# Import it from your configuration next to your hardware-configuration.nix, with uplinkd's
# NixOS module (the flake's nixosModules.default).
{ pkgs, ... }:
{
  networking.hostName = "portable-router";

  networking.useNetworkd = true;
  networking.useDHCP = false;

  services.uplinkd = {
    enable = true;
    # Probed through the uplink itself, so a network that lets the router on but nothing
    # through (a captive portal, a dead LTE cell) is seen as down.
    settings.probe.targets = [
      "1.1.1.1"
      "9.9.9.9"
    ];
    settings.uplinks.wan = {
      # USB Ethernet adapters (cdc_ether, cdc_ncm, r8152, ax88179_178a, asix), phones in USB
      # tethering mode (rndis_host, cdc_ncm) and LTE sticks in HiLink/NDIS mode (cdc_ether).
      # Matched by driver, the device is renamed `wan` (a .link file), so dhcpcd, NetworkManager
      # and networkd leave it to the controller. If the LAN port is a USB adapter with one of
      # these drivers too, add `match.path` (udevadm info /sys/class/net/<if> | grep ID_PATH).
      match.driver = [
        "cdc_ether"
        "cdc_ncm"
        "rndis_host"
        "r8152"
        "ax88179_178a"
        "asix"
      ];
      address.mode = "dhcp";
      table = 101;
    };
    # The tunnel home. The private key stays outside the Nix store (`wg genkey > /etc/secrets/
    # wg-home.key; chmod 600`); the service gets it as a systemd credential. The home end
    # needs this router's public key (`wg pubkey < /etc/secrets/wg-home.key`) and a route for
    # 192.168.77.0/24 into its tunnel.
    settings.tunnels.home = {
      interface = "wg-home";
      private_key_file = "/etc/secrets/wg-home.key";
      listen_port = 51820;
      addresses = [ "10.99.0.2/24" ];
      peers = [
        {
          public_key = "GW7cTEnbLLp+3AJ8jqYLWmH1Ed1p3ZMhUiqFs6rEOGI="; # home's
          endpoint = "192.0.2.1:51820"; # home's public address
          allowed_ips = [ "0.0.0.0/0" ];
        }
      ];
      underlay = [ "wan" ];
      route = "full"; # kill switch on by default: LAN IPv6 is refused too (a v4-only tunnel)
      table = 150;
    };
    # Without the full tunnel, the LAN can have IPv6 on the stick's own /64: an LTE network
    # routes the /64 it advertises to the router, and uplinkd moves it to the LAN and advertises
    # it there with router advertisements of its own (a renumbered or lost stick is deprecated
    # on the LAN within a second). Beside the full tunnel the tunnel still takes it (its route
    # band comes first), so the kill switch holds and the LAN's IPv6 goes nowhere.
    #
    #   settings.lan.br-lan.ipv6 = { mode = "extend"; uplink = "wan"; };
    #
    # The home LAN on the second port: a VXLAN segment over the tunnel's inner addresses, in
    # the bridge br-l2 below. MTU 1500 at both ends: devices plugged in keep 1500 (a DF packet
    # too large for the tunnel gets "fragmentation needed", one without DF is carried in
    # fragments inside the tunnel). With `mtu = "auto"` (tunnel MTU - 50) every device on the
    # segment must use that MTU (the home LAN's DHCP option 26), or larger frames are dropped
    # without a word.
    settings.vxlan.home = {
      tunnel = "home";
      interface = "vx-home";
      vni = 42;
      remotes = [ "10.99.0.1" ];
      bridge = "br-l2";
      mtu = 1500;
    };
    # A Wi-Fi uplink instead: iwd joins the network and networkd takes the lease, uplinkd
    # learns address and gateway from the kernel.
    #
    #   settings.uplinks.wan = {
    #     match.name = "wlan0";
    #     address.mode = "external";
    #     table = 101;
    #   };
    #   networking.wireless.iwd.enable = true;
    #   systemd.network.networks."50-wlan0" = {
    #     matchConfig.Name = "wlan0";
    #     networkConfig.DHCP = "ipv4";
    #     linkConfig.RequiredForOnline = "no";
    #   };
  };

  # The built-in port is the LAN; the second port (a USB adapter, say) is the home LAN, in
  # br-l2 with uplinkd's VXLAN interface (the router takes no address there: it is a switch).
  systemd.network = {
    netdevs."20-br-lan".netdevConfig = {
      Kind = "bridge";
      Name = "br-lan";
    };
    netdevs."20-br-l2".netdevConfig = {
      Kind = "bridge";
      Name = "br-l2";
    };
    networks = {
      "30-lan-port" = {
        matchConfig.Name = "enp1s0";
        networkConfig.Bridge = "br-lan";
        linkConfig.RequiredForOnline = "enslaved";
      };
      "30-l2-port" = {
        matchConfig.Name = "enp2s0";
        networkConfig.Bridge = "br-l2";
        linkConfig.RequiredForOnline = "no";
      };
      "40-br-l2" = {
        matchConfig.Name = "br-l2";
        networkConfig = {
          ConfigureWithoutCarrier = true;
          LinkLocalAddressing = "no";
        };
        linkConfig.RequiredForOnline = "no";
      };
      "40-br-lan" = {
        matchConfig.Name = "br-lan";
        address = [ "192.168.77.1/24" ];
        networkConfig = {
          DHCPServer = true;
          ConfigureWithoutCarrier = true;
        };
        dhcpServerConfig = {
          PoolOffset = 100;
          PoolSize = 100;
          EmitDNS = true;
          DNS = [ "192.168.77.1" ];
        };
        linkConfig.RequiredForOnline = "routable";
      };
    };
  };

  # DNS for the LAN and the router itself, from a local recursive resolver. (Networks that
  # allow only their own resolver need a forward-zone to it instead.)
  services.resolved.enable = false;
  services.unbound = {
    enable = true;
    settings.server = {
      interface = [
        "127.0.0.1"
        "::1"
        "192.168.77.1"
      ];
      access-control = [
        "127.0.0.0/8 allow"
        "::1/128 allow"
        "192.168.77.0/24 allow"
      ];
    };
  };

  networking.nftables.enable = true;
  networking.firewall = {
    enable = true;
    trustedInterfaces = [ "br-lan" ];
    # The tunnel's packets from home are not connection-tracked (so the router's own packet
    # always makes the NAT entry of the uplink it leaves by): open its listen port.
    allowedUDPPorts = [ 51820 ];
    interfaces.wg-home.allowedUDPPorts = [ 4789 ]; # VXLAN from home, inside the tunnel only
    filterForward = true;
    extraForwardRules = ''
      iifname "br-lan" accept
    '';
  };

  environment.systemPackages = with pkgs; [
    conntrack-tools
    tcpdump
  ];

  system.stateVersion = "26.05";
}
