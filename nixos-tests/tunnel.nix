# A tunnel home on NixOS, both ends: the portable router (two ISPs, a LAN client) runs a full
# WireGuard tunnel on kernel WireGuard, created and configured by the controller, over the
# preference list [isp1, isp2]; "home" is a plain NixOS WireGuard peer on the internet that
# NATs the router's LAN out to the server. Every flow of the LAN client therefore reaches the
# server from home's address, whichever ISP carries the tunnel.
#
# Checked, as the VM tier's tests/vm/tunnel_guest.py does in a guest:
# - the interface is a `wireguard` link the controller made (alias uplinkd), with the tunnel's
#   fwmark; the client's flows go through it;
# - a restart of the controller writes nothing and does not re-handshake;
# - the stuck-source trap: isp1 silently drops everything (carrier up): the flows inside the
#   tunnel keep going without a reconnect, home sees the router roam to isp2, and for 30 s no
#   encrypted packet leaves by isp1 while isp2's carry isp2's addresses (counted at both ISPs,
#   before their fault chains);
# - `uplinkctl flush` removes the tunnel's interface and nothing else.
#
# The keys are test keys, written at boot to files outside the store (the module refuses a key
# in the store; the fixture's literal is in the store, which is fine for a throwaway VM only).
# Needs KVM: `nix flake check` or `nix build .#checks.x86_64-linux.tunnel`.
{ lib, ... }:
let
  lab = import ./lab.nix { inherit lib; };

  homeAddress = "198.51.100.50";
  homePort = 51820;
  routerKey = "KB6Kfi/c4wR8XepjQkOaDUcCxZs2LV3Y/unt+ODSDXg=";
  routerPublic = "b7wCl9ifuGnRFlTW2awJdeWxi/JiCFxpUHfMmO470xA=";
  homeKey = "SBHCxzxVW4qqNqmlnRyHJ3f9RABgaUAvvqXZwJJ3p2k=";
  homePublic = "Sgwj3w/f6XQLVQ1wqTXBMycFucMIaxtqVMn4YgLc/Dw=";
  table = 150;

  uplink = n: {
    match.name = "isp${toString n}";
    address.mode = "dhcp";
    table = 100 + n;
    probe.targets = [
      lab.server
      (lab.upstream n)
    ];
  };

  # A oneshot that puts a test key where a real system keeps its secrets, before `unit`.
  testKey =
    { pkgs, path, key, unit }:
    {
      description = "the test's WireGuard key (${path})";
      wantedBy = [ unit ];
      requiredBy = [ unit ];
      before = [ unit ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
      };
      script = ''
        install -D -m 0600 ${pkgs.writeText "wireguard-test-key" key} ${path}
      '';
    };

  # Counters at an ISP, before its fault chain (raw priority): the tunnel's encrypted packets
  # from the router, and those of them whose source is in this ISP's subnet.
  ispCounters = n: ''
    table inet tuntest {
        chain c {
            type filter hook prerouting priority -400; policy accept;
            iifname "down" udp dport ${toString homePort} counter comment "encrypted"
            iifname "down" udp dport ${toString homePort} ip saddr 10.${toString (100 + n)}.0.0/24 counter comment "own_source"
        }
    }
  '';
in
{
  name = "uplinkd-tunnel";
  globalTimeout = 1200;

  nodes = {
    isp1 =
      { ... }:
      {
        imports = [ (lab.isp 1) ];
        environment.etc."tuntest.nft".text = ispCounters 1;
      };
    isp2 =
      { ... }:
      {
        imports = [ (lab.isp 2) ];
        environment.etc."tuntest.nft".text = ispCounters 2;
      };
    server = lab.internet;
    client = lab.client;

    # The home end, with plain NixOS options: kernel WireGuard, and NAT of the tunnel's
    # traffic out to the internet.
    home =
      { pkgs, ... }:
      {
        virtualisation.interfaces.eth1.vlan = lab.internetVlan;
        networking = {
          useDHCP = false;
          firewall.enable = false;
          interfaces.eth1.ipv4.addresses = [
            {
              address = homeAddress;
              prefixLength = 24;
            }
          ];
          nat = {
            enable = true;
            externalInterface = "eth1";
            internalInterfaces = [ "wg0" ];
          };
          wireguard.interfaces.wg0 = {
            ips = [ "10.99.0.1/24" ];
            listenPort = homePort;
            privateKeyFile = "/run/keys/wg-home.key";
            peers = [
              {
                publicKey = routerPublic;
                allowedIPs = [
                  "10.99.0.2/32"
                  "${lab.routerLan}/24"
                ];
              }
            ];
          };
        };
        boot.kernel.sysctl."net.ipv4.conf.all.forwarding" = true;
        systemd.services.wireguard-test-key = testKey {
          inherit pkgs;
          path = "/run/keys/wg-home.key";
          key = homeKey;
          unit = "wireguard-wg0.service";
        };
        environment.systemPackages = [ pkgs.wireguard-tools ];
      };

    router =
      { pkgs, ... }:
      {
        imports = [
          (lab.router {
            uplinks = {
              isp1 = 1;
              isp2 = 2;
            };
          })
        ];
        services.uplinkd.settings = {
          uplinks = {
            isp1 = uplink 1;
            isp2 = uplink 2;
          };
          tunnels.home = {
            interface = "wg-home";
            backend = "kernel";
            private_key_file = "/run/keys/wg-router.key";
            addresses = [ "10.99.0.2/24" ];
            peers = [
              {
                public_key = homePublic;
                endpoint = "${homeAddress}:${toString homePort}";
                # the endpoint lies inside AllowedIPs: the tunnel's mark rule keeps it out
                allowed_ips = [ "0.0.0.0/0" ];
                keepalive = 1;
              }
            ];
            underlay = [
              "isp1"
              "isp2"
            ];
            route = "full";
            inherit table;
          };
        };
        systemd.services.uplinkd-test-key = testKey {
          inherit pkgs;
          path = "/run/keys/wg-router.key";
          key = routerKey;
          unit = "uplinkd.service";
        };
        environment.systemPackages = [ pkgs.wireguard-tools ];
      };
  };

  testScript = ''
    import time

    ${lab.scriptHelpers}

    HOME = "${homeAddress}"
    NAMES = {HOME: "home", "${lab.upstream 1}": "isp1", "${lab.upstream 2}": "isp2"}
    BOTH = {"isp1", "isp2"}


    def tunnel(field):
        return router.succeed(f"uplinkctl status --json | jq -r '.tunnels[0].{field}'").strip()


    def wait_tunnel(jq_test, timeout=60):
        router.wait_until_succeeds(f"uplinkctl status --json | jq -e '.tunnels[0] | {jq_test}'", timeout=timeout)


    def counted(isp):
        out = json.loads(isp.succeed("nft -j list chain inet tuntest c"))
        found = {}
        for item in out["nftables"]:
            rule = item.get("rule")
            if rule:
                found[rule["comment"]] = next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
        return found


    def home_handshake():
        return int(home.succeed("wg show wg0 latest-handshakes").split()[-1])


    start_all()
    server.wait_for_unit("lab-traffic-server.service")
    home.wait_for_unit("wireguard-wg0.service")
    for isp in (isp1, isp2):
        isp.wait_for_unit("lab-isp.service")
        isp.wait_for_unit("dnsmasq.service")
        isp.succeed("nft -f /etc/tuntest.nft")
    router.wait_for_unit("uplinkd.service")

    with subtest("the controller makes a kernel WireGuard link and the tunnel comes up on isp1"):
        wait_group(router, BOTH)
        wait_tunnel('.state == "up" and .backend == "kernel" and .underlay4 == "isp1"', timeout=90)
        router.succeed(
            "ip -d -j link show wg-home"
            " | jq -e '.[0].linkinfo.info_kind == \"wireguard\" and .[0].ifalias == \"uplinkd\"'"
        )
        # the device marks its packets with the mark the underlay rule (P+5) routes by
        mark = router.succeed("wg show wg-home fwmark").strip()
        assert mark != "off", mark
        router.succeed(f"ip rule show | grep -q 'fwmark {mark}/{mark} '")
        client.wait_until_succeeds("ping -c1 -W1 10.99.0.1", timeout=30)
        start_flows(client, "inside", duration=3)
        flows = flow_report(client, "inside")
        assert {uplink_of(f["runs"][0][2], NAMES) for f in flows if f["runs"]} == {"home"}, flows

    with subtest("a restart with the same config writes nothing and does not re-handshake"):
        time.sleep(2)
        before = home_handshake()
        router.succeed("systemctl restart uplinkd.service")
        wait_tunnel('.state == "up"')
        time.sleep(3)
        writes = int(router.succeed("uplinkctl status --json | jq .writes").strip())
        assert writes == 0, router.succeed("journalctl -u uplinkd.service -n 50")
        assert home_handshake() == before

    with subtest("isp1 blackholed: the tunnel leaves it, flows inside do not notice"):
        start_flows(client, "blackhole", duration=20)
        time.sleep(3)
        isp1.succeed("lab-isp blackhole")
        wait_tunnel('.underlay4 == "isp2"', timeout=30)
        home.wait_until_succeeds("wg show wg0 endpoints | grep -q '${lab.upstream 2}:'", timeout=30)
        flows = flow_report(client, "blackhole")
        assert all(uplink_of(r[2], NAMES) == "home" for f in flows for r in f["runs"]), flows
        assert sum(f["reconnects"] for f in flows) == 0, "a TCP flow inside the tunnel reconnected"
        every_flow_answered_at_the_end(flows)

    with subtest("afterwards, for 30 s, nothing encrypted leaves by isp1; isp2 carries it with its own address"):
        one, two = counted(isp1), counted(isp2)
        time.sleep(30)
        one_after, two_after = counted(isp1), counted(isp2)
        assert one_after["encrypted"] == one["encrypted"], (one, one_after)
        sent = two_after["encrypted"] - two["encrypted"]
        assert sent > 0, (two, two_after)
        assert two_after["own_source"] - two["own_source"] == sent, (two, two_after)
        isp1.succeed("lab-isp none")
        wait_tunnel('.underlay4 == "isp1"', timeout=60)

    with subtest("flush removes the tunnel's interface and nothing else"):
        router.succeed("ip link add wg-other type wireguard")
        router.succeed("uplinkctl flush")
        router.fail("ip link show wg-home")
        for name in ("wg-other", "isp1", "isp2", "lan"):
            router.succeed(f"ip link show {name}")
  '';
}
