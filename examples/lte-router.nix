# A router on one USB LTE stick, with native IPv6 on the LAN.
#
# An LTE network gives the stick one /64 by router advertisement and routes all of it to the
# device; there is no DHCPv6 prefix delegation. uplinkd moves that /64 to the LAN (`extend`):
# it stops the stick's interface from taking the prefix, puts `<prefix>::1/64` on br-lan,
# routes the prefix's sources out of the stick only, and advertises the prefix on the LAN with
# router advertisements of its own (the stick's lifetimes, MTU and DNS servers). Clients get
# global addresses by SLAAC that the far end sees unchanged (no NAT66). When the network
# renumbers the stick, the old prefix is deprecated on the LAN within a second; when the stick
# is unplugged or its network dies, the LAN hears router lifetime 0 and stops using IPv6 until
# it returns. An Ethernet-style stick that looks hosts up by neighbour discovery is answered
# for the /64 by uplinkd.
#
# IPv4 is masqueraded as usual. The stick may be unplugged and plugged into any USB port.
#
# Import it from your configuration next to your hardware-configuration.nix, with uplinkd's
# NixOS module (the flake's nixosModules.default).
{ pkgs, ... }:
{
  networking.hostName = "lte-router";

  networking.useNetworkd = true;
  networking.useDHCP = false;

  services.uplinkd = {
    enable = true;
    # Probed through the stick itself, so a dead cell is seen as down.
    settings.probe.targets = [
      "1.1.1.1"
      "2606:4700:4700::1111"
    ];
    settings.uplinks.lte1 = {
      # HiLink/NDIS-mode LTE sticks present a USB Ethernet interface (cdc_ether, cdc_ncm);
      # matched by driver and renamed `lte1` (a .link file), so nothing else configures it.
      match.driver = [
        "cdc_ether"
        "cdc_ncm"
      ];
      address.mode = "dhcp"; # IPv4 by DHCP; IPv6 by the network's router advertisements
      table = 101;
    };
    settings.lan.br-lan.ipv6 = {
      mode = "extend";
      uplink = "lte1";
    };
  };

  # The LAN: the built-in port in a bridge, IPv4 from networkd's DHCP server. networkd sends
  # no router advertisements here (uplinkd does) and leaves uplinkd's address on br-lan alone.
  systemd.network = {
    netdevs."20-br-lan".netdevConfig = {
      Kind = "bridge";
      Name = "br-lan";
    };
    networks = {
      "30-lan-port" = {
        matchConfig.Name = "enp1s0";
        networkConfig.Bridge = "br-lan";
        linkConfig.RequiredForOnline = "enslaved";
      };
      "40-br-lan" = {
        matchConfig.Name = "br-lan";
        address = [ "192.168.8.1/24" ];
        networkConfig = {
          DHCPServer = true;
          IPv6SendRA = false;
          ConfigureWithoutCarrier = true;
          KeepConfiguration = "static";
        };
        dhcpServerConfig = {
          PoolOffset = 100;
          PoolSize = 100;
          EmitDNS = true;
          DNS = [ "192.168.8.1" ];
        };
        linkConfig.RequiredForOnline = "routable";
      };
    };
  };

  # DNS for the LAN and the router itself, from a local recursive resolver.
  services.resolved.enable = false;
  services.unbound = {
    enable = true;
    settings.server = {
      interface = [
        "127.0.0.1"
        "::1"
        "192.168.8.1"
      ];
      access-control = [
        "127.0.0.0/8 allow"
        "::1/128 allow"
        "192.168.8.0/24 allow"
      ];
    };
  };

  networking.nftables.enable = true;
  networking.firewall = {
    enable = true;
    trustedInterfaces = [ "br-lan" ];
    filterForward = true;
    extraForwardRules = ''
      iifname "br-lan" oifname "lte1" accept
    '';
  };

  environment.systemPackages = with pkgs; [
    conntrack-tools
    tcpdump
  ];

  system.stateVersion = "26.05";
}
