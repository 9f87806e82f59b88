# The lab of the netns tier (controller/uplinkd/lab) as NixOS VMs: the same address plan
# (lab/addresses.py), ISPs with the same nftables table and faults (lab/isp.py), and the same
# traffic tool and report (lab/traffic.py, lab/flows.py), run from the controller's package.
# VLANs stand in for the veths.
#
#   router ──vlan N── ispN ──vlan 100 (the internet)── server
#     └────vlan 50 (LAN)── client
{ lib }:
rec {
  internetVlan = 100;
  lanVlan = 50;

  server = "198.51.100.100";
  upstream = n: "198.51.100.${toString n}"; # ISP n's address towards the server
  gateway = n: "10.${toString (100 + n)}.0.1"; # ISP n's side of the router's uplink
  routerLan = "192.168.50.1";
  clientLan = "192.168.50.11";

  # `lab-traffic` (the traffic server and client) and `lab-isp` (an ISP's nftables table and
  # faults), from the lab package in the controller.
  labTools =
    { config, pkgs, ... }:
    let
      python = pkgs.python3.withPackages (ps: [
        (ps.toPythonModule config.services.uplinkd.package)
      ]);
    in
    {
      environment.systemPackages = [
        pkgs.nftables
        (pkgs.writeShellScriptBin "lab-traffic" ''
          exec ${python}/bin/python3 -m uplinkd.lab.traffic "$@"
        '')
        # lab-isp table | none | blackhole | loss PERCENT
        (pkgs.writeShellScriptBin "lab-isp" ''
          ${python}/bin/python3 - "$@" <<'EOF' | ${pkgs.nftables}/bin/nft -f -
          import sys
          from uplinkd.lab.isp import Faults, base_ruleset, faults_script
          what = sys.argv[1]
          if what == "table":
              print(base_ruleset(), end="")
          elif what == "none":
              print(faults_script(Faults()), end="")
          elif what == "blackhole":
              print(faults_script(Faults(blackhole=True)), end="")
          elif what == "loss":
              print(faults_script(Faults(loss_percent=int(sys.argv[2]))), end="")
          else:
              sys.exit(f"lab-isp: unknown {what!r}")
          EOF
        '')
      ];
    };

  # ISP n: DHCP for the router on `down` (vlan n), masquerade out of `up` (the internet).
  # `down` is its first NIC, so `ispN.block()` cuts the router's uplink at the ISP's end.
  isp =
    n:
    { pkgs, ... }:
    {
      imports = [ labTools ];
      virtualisation.interfaces = {
        down.vlan = n;
        up.vlan = internetVlan;
      };
      networking = {
        useDHCP = false;
        firewall.enable = false;
        interfaces.down.ipv4.addresses = [
          {
            address = gateway n;
            prefixLength = 24;
          }
        ];
        interfaces.up.ipv4.addresses = [
          {
            address = upstream n;
            prefixLength = 24;
          }
        ];
      };
      boot.kernel.sysctl."net.ipv4.conf.all.forwarding" = true;

      systemd.services.lab-isp = {
        description = "the lab ISP's nftables table (faults chain, masquerade upstream)";
        wantedBy = [ "multi-user.target" ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "/run/current-system/sw/bin/lab-isp table";
        };
      };

      # As lab/isp.py's dnsmasq_argv: the shortest lease dnsmasq allows, no ping before offers.
      services.dnsmasq = {
        enable = true;
        resolveLocalQueries = false;
        settings = {
          port = 0;
          interface = "down";
          bind-dynamic = true;
          dhcp-range = "10.${toString (100 + n)}.0.50,10.${toString (100 + n)}.0.150,255.255.255.0,2m";
          dhcp-option = "option:router,${gateway n}";
          dhcp-authoritative = true;
          no-ping = true;
        };
      };
    };

  # The internet: the traffic server, answering with the source address it saw.
  internet =
    { ... }:
    {
      imports = [ labTools ];
      virtualisation.interfaces.eth1.vlan = internetVlan;
      networking = {
        useDHCP = false;
        firewall.enable = false;
        interfaces.eth1.ipv4.addresses = [
          {
            address = server;
            prefixLength = 24;
          }
        ];
      };
      systemd.services.lab-traffic-server = {
        wantedBy = [ "multi-user.target" ];
        after = [ "network-addresses-eth1.service" ];
        requires = [ "network-addresses-eth1.service" ];
        serviceConfig = {
          ExecStart = "/run/current-system/sw/bin/lab-traffic server --bind ${server} --duration 3600";
          Restart = "always";
          RestartSec = 1;
        };
      };
    };

  # A LAN client behind the router.
  client =
    { ... }:
    {
      imports = [ labTools ];
      virtualisation.interfaces.eth1.vlan = lanVlan;
      networking = {
        useDHCP = false;
        firewall.enable = false;
        interfaces.eth1.ipv4.addresses = [
          {
            address = clientLan;
            prefixLength = 24;
          }
        ];
        defaultGateway = {
          address = routerLan;
          interface = "eth1";
        };
      };
    };

  # The router: networkd for the LAN, uplinkd for the uplinks, the NixOS nftables firewall.
  # `uplinks` maps each wired uplink's interface name to its VLAN.
  router =
    { uplinks }:
    { pkgs, ... }:
    {
      imports = [ labTools ];
      virtualisation.interfaces = lib.mapAttrs (_: vlan: { inherit vlan; }) uplinks // {
        lan.vlan = lanVlan;
      };
      networking = {
        useNetworkd = true;
        useDHCP = false;
        nftables.enable = true;
        firewall = {
          enable = true;
          trustedInterfaces = [ "lan" ];
          filterForward = true;
          extraForwardRules = ''
            iifname "lan" accept
          '';
        };
      };
      systemd.network.networks."40-lan" = {
        matchConfig.Name = "lan";
        address = [ "${routerLan}/24" ];
        linkConfig.RequiredForOnline = "routable";
      };
      services.uplinkd = {
        enable = true;
        settings.probe.profile = "fast";
      };
      environment.systemPackages = [
        pkgs.conntrack-tools
        pkgs.jq
      ];
    };

  # Python for the test scripts: waiting for the balance group, running the lab's traffic
  # client on a LAN node, and judging its flows as tests/netns/test_failover.py does.
  scriptHelpers = ''
    import json

    SERVER = "${server}"


    def monitor(machine, command):
        """A QEMU monitor command that must succeed. send_monitor_command returns QEMU's answer
        (the echoed command, then any error text) and never raises itself."""
        answer = machine.send_monitor_command(command)
        lines = [line.strip() for line in answer.replace("(qemu)", "").splitlines()]
        said = [line for line in lines if line and line != command.strip()]
        assert not said, f"QEMU monitor: {command!r} failed: {' '.join(said)}"


    def uplink_of(source, names):
        return names.get(source, f"unknown:{source}")


    def wait_group(router, names, timeout=90):
        want = json.dumps(sorted(names))
        router.wait_until_succeeds(
            "uplinkctl status --json"
            f" | jq -e '[.uplinks[] | select(.in_group) | .name] | sort == {want}'",
            timeout=timeout,
        )


    def start_flows(client, name, duration, tcp=10, udp=20):
        client.succeed(
            f"systemd-run --unit={name} --collect /bin/sh -c '"
            f"/run/current-system/sw/bin/lab-traffic client --server {SERVER}"
            f" --tcp {tcp} --udp {udp} --interval-ms 20 --duration {duration}"
            f" > /tmp/{name}.json 2> /tmp/{name}.log'"
        )
        client.wait_until_succeeds(f"grep -q established /tmp/{name}.log", timeout=30)


    def flow_report(client, name):
        client.wait_until_fails(f"systemctl is-active --quiet {name}", timeout=180)
        return json.loads(client.succeed(f"cat /tmp/{name}.json"))["flows"]


    def started_on(flows, uplink, names):
        return [f for f in flows if f["runs"] and uplink_of(f["runs"][0][2], names) == uplink]


    def healthy_flows_undisturbed(flows, healthy, names):
        mine = [f for h in healthy for f in started_on(flows, h, names)]
        assert mine, "no flow started on a healthy uplink; the test proves nothing"
        moved = [f["runs"] for f in mine if len(f["runs"]) > 1]
        assert not moved, f"flows on healthy uplinks moved: {moved}"
        lost = sum(f["lost"] for f in mine)
        assert lost == 0, f"flows on healthy uplinks lost {lost} packets"
        assert sum(f["reconnects"] for f in mine) == 0, "a TCP flow on a healthy uplink reconnected"


    def failed_flows_resumed(flows, dead, alive, names):
        mine = started_on(flows, dead, names)
        assert mine, f"no flow started on {dead}; the test proves nothing"
        for f in mine:
            last = uplink_of(f["runs"][-1][2], names)
            assert last in alive, f"a {f['proto']} flow of {dead} did not resume elsewhere: {f['runs']}"
            assert f["runs"][-1][1] - f["runs"][-1][0] >= 5, f["runs"]
            if f["proto"] == "udp":
                # the same socket, so the same 5-tuple: a VPN's session survives
                assert len(f["local_ports"]) == 1, f["local_ports"]


    def every_flow_answered_at_the_end(flows):
        silent = [f for f in flows if not f["runs"] or f["runs"][-1][1] < f["sent"] - 10]
        assert not silent, f"{len(silent)} flows got no replies at the end"
  '';
}
