# Failover on NixOS: a router with two ISPs (each its own VLAN and upstream), the internet
# behind them, and a LAN client whose flows run through it. One ISP fails three ways: the
# router's cable is pulled (carrier loss), the ISP's end of the cable is cut (`block()`: the
# router keeps carrier), and the ISP silently drops everything (the lab's blackhole fault).
# Each time the failed ISP's flows resume on the other one, the other ISP's flows are not
# disturbed at all, and the ISP is back in the balance group once it is restored. Then the
# ruleset is flushed (`nft flush ruleset`, and a firewall that flushes on every reload) and the
# config changed under running traffic.
#
# The assertions are the netns tier's (tests/netns/test_failover.py), on the same lab tools.
# Needs KVM: `nix flake check` or `nix build .#checks.x86_64-linux.failover`.
{ lib, ... }:
let
  lab = import ./lab.nix { inherit lib; };

  uplink = n: {
    match.name = "isp${toString n}";
    address.mode = "dhcp";
    table = 100 + n;
    probe.targets = [
      lab.server
      (lab.upstream n)
    ];
  };
in
{
  name = "uplinkd-failover";
  globalTimeout = 1200;

  nodes = {
    isp1 = lab.isp 1;
    isp2 = lab.isp 2;
    server = lab.internet;
    client = lab.client;
    router = {
      imports = [
        (lab.router {
          uplinks = {
            isp1 = 1;
            isp2 = 2;
          };
        })
      ];
      services.uplinkd.settings.uplinks = {
        isp1 = uplink 1;
        isp2 = uplink 2;
      };
      # The same router with isp1 weighted 3: switching to it must reload, not restart.
      specialisation.reweighted.configuration.services.uplinkd.settings.uplinks.isp1.weight = 3;
      # The same router with a firewall whose every reload flushes the whole ruleset (NixOS's
      # behaviour before stateVersion 23.11, or with a hand-written ruleset).
      specialisation.flushing.configuration.networking.nftables.flushRuleset = true;
    };
  };

  testScript = ''
    import time

    ${lab.scriptHelpers}

    NAMES = {"${lab.upstream 1}": "isp1", "${lab.upstream 2}": "isp2"}
    BOTH = {"isp1", "isp2"}


    def fail_isp1(name, cut, restore):
        """Flows run while `cut` takes isp1 out and `restore` brings it back."""
        wait_group(router, BOTH)
        start_flows(client, name, duration=24)
        time.sleep(3)
        cut()
        wait_group(router, {"isp2"}, timeout=30)
        time.sleep(6)
        restore()
        wait_group(router, BOTH, timeout=60)
        flows = flow_report(client, name)
        failed_flows_resumed(flows, "isp1", {"isp2"}, NAMES)
        healthy_flows_undisturbed(flows, {"isp2"}, NAMES)


    start_all()
    server.wait_for_unit("lab-traffic-server.service")
    for isp in (isp1, isp2):
        isp.wait_for_unit("lab-isp.service")
        isp.wait_for_unit("dnsmasq.service")
    router.wait_for_unit("uplinkd.service")
    # the system as booted: switching to a specialisation repoints /run/current-system
    BASE = router.succeed("readlink -f /run/current-system").strip()

    with subtest("both uplinks lease an address and join the balance group"):
        wait_group(router, BOTH)
        router.succeed("ip route show table isp1 | grep -q 'default via ${lab.gateway 1} dev isp1 proto uplinkd'")
        router.succeed("ip route show table isp2 | grep -q 'default via ${lab.gateway 2} dev isp2 proto uplinkd'")
        router.succeed("ip rule show | grep -q 'lookup balance proto uplinkd'")
        router.succeed("nft list table inet uplinkd")
        for uplink in BOTH:
            # networkd leaves them to the controller's DHCP client
            router.succeed(f"networkctl list {uplink} --no-legend | grep -q unmanaged")
        router.succeed("test $(sysctl -n net.ipv4.fib_multipath_hash_policy) = 1")
        router.succeed("test $(sysctl -n net.ipv4.conf.all.rp_filter) = 0")
        router.succeed("test $(sysctl -n net.ipv4.conf.isp1.rp_filter) = 0")  # systemd's glob lost
        router.succeed("test $(sysctl -n net.ipv4.conf.all.accept_local) = 1")
        client.wait_until_succeeds("ping -c1 -W1 ${lab.server}", timeout=30)

    with subtest("new connections use both uplinks"):
        start_flows(client, "spread", duration=3)
        flows = flow_report(client, "spread")
        used = {uplink_of(f["runs"][0][2], NAMES) for f in flows if f["runs"]}
        assert used == BOTH, used

    with subtest("carrier loss on the router's cable to isp1"):
        # the router's NICs: virtio-net-pci.0 is the test driver's, then isp1, isp2, lan
        fail_isp1(
            "carrier",
            cut=lambda: monitor(router, "set_link virtio-net-pci.1 off"),
            restore=lambda: monitor(router, "set_link virtio-net-pci.1 on"),
        )

    with subtest("isp1's end of the cable is cut: the router keeps carrier"):
        fail_isp1("cut", cut=isp1.block, restore=isp1.unblock)

    with subtest("isp1 silently drops everything"):
        fail_isp1(
            "blackhole",
            cut=lambda: isp1.succeed("lab-isp blackhole"),
            restore=lambda: isp1.succeed("lab-isp none"),
        )

    def table_restored_under_traffic(name, flush):
        """`flush` removes uplinkd's table; the controller restores it, flows keep answering."""
        wait_group(router, BOTH)
        start_flows(client, name, duration=10)
        time.sleep(2)
        flush()
        router.wait_until_succeeds("nft list table inet uplinkd", timeout=5)
        every_flow_answered_at_the_end(flow_report(client, name))
        wait_group(router, BOTH)


    with subtest("a firewall reload leaves uplinkd's table alone (flushRuleset is off)"):
        wait_group(router, BOTH)
        handle = router.succeed("nft -a list table inet uplinkd | head -1")
        router.succeed("systemctl reload nftables.service")
        assert router.succeed("nft -a list table inet uplinkd | head -1") == handle

    with subtest("`nft flush ruleset`: the controller restores its table"):
        table_restored_under_traffic("flush", lambda: router.succeed("nft flush ruleset"))

    with subtest("a firewall that flushes the ruleset on reload: the controller restores its table"):
        router.succeed(f"{BASE}/specialisation/flushing/bin/switch-to-configuration test")
        table_restored_under_traffic(
            "reload", lambda: router.succeed("systemctl reload nftables.service")
        )
        router.succeed(f"{BASE}/bin/switch-to-configuration test")

    with subtest("a config change reloads the controller: no restart, no flow disturbed"):
        pid = router.succeed("systemctl show -p MainPID --value uplinkd.service").strip()
        start_flows(client, "switch", duration=12)
        time.sleep(2)
        router.succeed(f"{BASE}/specialisation/reweighted/bin/switch-to-configuration test")
        router.wait_until_succeeds(
            "uplinkctl status --json | jq -e '.uplinks[] | select(.name == \"isp1\") | .weight == 3'",
            timeout=30,
        )
        assert router.succeed("systemctl show -p MainPID --value uplinkd.service").strip() == pid
        flows = flow_report(client, "switch")
        healthy_flows_undisturbed(flows, BOTH, NAMES)
        router.succeed("uplinkctl plan")  # the kernel is as planned: nothing left to do
  '';
}
