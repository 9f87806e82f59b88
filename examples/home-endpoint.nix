# The home end of examples/portable-router.nix: a NixOS machine on the home LAN (a small server,
# or the home router itself) that ends the WireGuard tunnel and puts the travel router's second
# LAN port into the home LAN over VXLAN. Plain NixOS (systemd-networkd); uplinkd is not needed
# here. Both ends in one flake: nixosConfigurations.portable-router and .home-endpoint.
#
#   travel router                                      home endpoint
#   br-l2 (LAN port 2) -- vx-home ==[ wg-home ]== vx-home -- br-home -- home LAN
#   10.99.0.2 (tunnel)                                 10.99.0.1 (tunnel)
#
# The tunnel also carries the travel router's own LAN (192.168.77.0/24, route "full" there):
# this machine routes it to the internet through the home connection, masqueraded.
#
# Keys stay outside the Nix store: `wg genkey > /etc/secrets/wg-home.key`, readable by networkd
# (`chown root:systemd-network`, `chmod 640`); its public key (`wg pubkey`) is the travel
# router's peer key, and the travel router's public key goes below.
{ ... }:
{
  networking.hostName = "home-endpoint";

  networking.useNetworkd = true;
  networking.useDHCP = false;

  systemd.network = {
    enable = true;
    netdevs = {
      "10-wg-home" = {
        netdevConfig = {
          Kind = "wireguard";
          Name = "wg-home";
          MTUBytes = "1420"; # the travel router's uplinks vary; 1420 fits a 1500 IPv6 path
        };
        wireguardConfig = {
          PrivateKeyFile = "/etc/secrets/wg-home.key";
          ListenPort = 51820;
          RouteTable = "main"; # routes for the peer's AllowedIPs, into the tunnel
        };
        wireguardPeers = [
          {
            PublicKey = "2VNF76pD7bcp3jzGlDcuRV+AVIrvOvOh6WksGWwh1mc="; # the travel router's
            AllowedIPs = [
              "10.99.0.2/32"
              "192.168.77.0/24"
            ];
            # no Endpoint: the travel router calls in, from whichever uplink works
          }
        ];
      };
      # VXLAN between the tunnel's inner addresses. MTU 1500, as on the travel router
      # (`vxlan.home.mtu = 1500`): home LAN hosts keep 1500; a DF packet too large for the
      # tunnel gets "fragmentation needed" from the VXLAN port, one without DF is carried in
      # fragments inside the tunnel (never outside it).
      "20-vx-home" = {
        netdevConfig = {
          Kind = "vxlan";
          Name = "vx-home";
          MTUBytes = "1500";
        };
        vxlanConfig = {
          VNI = 42;
          Local = "10.99.0.1";
          DestinationPort = 4789;
          MacLearning = false;
        };
      };
      "20-br-home".netdevConfig = {
        Kind = "bridge";
        Name = "br-home";
      };
    };
    networks = {
      "10-wg-home" = {
        matchConfig.Name = "wg-home";
        address = [ "10.99.0.1/24" ];
        networkConfig.VXLAN = [ "vx-home" ];
        linkConfig.RequiredForOnline = "no";
      };
      "20-vx-home" = {
        matchConfig.Name = "vx-home";
        networkConfig.Bridge = "br-home";
        # one flood entry per remote (the travel router); several travel routers, several entries
        bridgeFDBs = [
          {
            MACAddress = "00:00:00:00:00:00";
            Destination = "10.99.0.2";
          }
        ];
        linkConfig.RequiredForOnline = "no";
      };
      "30-lan-port" = {
        matchConfig.Name = "enp1s0";
        networkConfig.Bridge = "br-home";
        linkConfig.RequiredForOnline = "enslaved";
      };
      # The home LAN (its router hands out addresses); this machine takes one too, and routes
      # the travel router's LAN out through it, masqueraded.
      "40-br-home" = {
        matchConfig.Name = "br-home";
        networkConfig = {
          DHCP = "ipv4";
          IPv4Forwarding = true;
          IPMasquerade = "ipv4";
        };
        linkConfig.RequiredForOnline = "routable";
      };
    };
  };

  networking.nftables.enable = true;
  networking.firewall = {
    enable = true;
    allowedUDPPorts = [ 51820 ]; # forward it on the home router to this machine
    interfaces.wg-home.allowedUDPPorts = [ 4789 ]; # VXLAN, from inside the tunnel only
  };

  system.stateVersion = "26.05";
}
