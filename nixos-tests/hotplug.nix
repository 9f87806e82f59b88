# Hotplug on NixOS: the router boots with its wired uplink and no LTE stick. The test plugs a
# USB network adapter into the router's xHCI controller through QEMU's monitor (`usb-net`,
# which Linux drives with cdc_ether, USB id 0525:a4a2, the serial the test gives it), wired to
# a second ISP. The module's .link file must name it lte1, networkd must leave it alone, and
# the controller must take it into the balance group; unplugged it must leave nothing behind
# (rule, route, nexthop, nft element, conntrack entry); plugged again, into another port and
# with the controller stopped, udev must start the controller and the stick must join again.
# A stick with another serial is not taken for lte1.
#
# Needs KVM: `nix flake check` or `nix build .#checks.x86_64-linux.hotplug`.
{ lib, ... }:
let
  lab = import ./lab.nix { inherit lib; };

  # QEMU's usb-net identifies as NetChip 0525:a4a2.
  vendor = "0525";
  product = "a4a2";
  serial = "LTE0001";

  # mark of lte1: table 102 mod 256, under the default mask 0xff00
  lteMark = "0x6600/0xff00";

  # The plugged sticks' MACs: locally administered, outside 52:54:00:12:<vlan>:<node>, the
  # range the test driver gives the nodes' own NICs (the lte ISP's is 52:54:00:12:02:02).
  stickMac = n: "02:75:70:00:00:0${toString n}";
in
{
  name = "uplinkd-hotplug";
  globalTimeout = 900;

  nodes = {
    isp1 = lab.isp 1;
    lte = lab.isp 2;
    server = lab.internet;
    router = {
      imports = [ (lab.router { uplinks.wan = 1; }) ];
      services.uplinkd.settings.uplinks = {
        wan = {
          match.name = "wan";
          address.mode = "dhcp";
          table = 101;
          probe.targets = [
            lab.server
            (lab.upstream 1)
          ];
        };
        lte1 = {
          match.usb = { inherit vendor product serial; };
          address.mode = "dhcp";
          table = 102;
          probe.targets = [
            lab.server
            (lab.upstream 2)
          ];
        };
      };
      # An xHCI controller with nothing plugged in; the stick's network is the lte ISP's VLAN,
      # another stick's a network of its own.
      virtualisation.qemu.options = [
        "-device qemu-xhci,id=xhci"
        ''-netdev vde,id=ltenet,sock="$QEMU_VDE_SOCKET_2"''
        "-netdev user,id=othernet,restrict=on"
      ];
    };
  };

  testScript = ''
    ${lab.scriptHelpers}


    def plug(port, mac):
        monitor(
            router,
            f"device_add usb-net,id=stick,bus=xhci.0,port={port},netdev=ltenet,mac={mac},serial=${serial}",
        )
        router.wait_until_succeeds("test -e /sys/class/net/lte1", timeout=60)


    def unplug():
        monitor(router, "device_del stick")
        router.wait_until_fails("test -e /sys/class/net/lte1", timeout=60)


    def joined():
        props = router.succeed("udevadm info --query=property /sys/class/net/lte1")
        for prop in ("ID_VENDOR_ID=${vendor}", "ID_MODEL_ID=${product}", "ID_SERIAL_SHORT=${serial}"):
            assert prop in props.splitlines(), f"{prop} not in {props}"
        assert "10-uplinkd-lte1.link" in props, "lte1 was not named by the module's .link file"
        router.succeed("networkctl list lte1 --no-legend | grep -q unmanaged")
        wait_group(router, {"wan", "lte1"})
        router.succeed("ip route show table lte1 | grep -q 'default via ${lab.gateway 2} dev lte1 proto uplinkd'")
        router.succeed("ping -c1 -W2 -I lte1 ${lab.server}")
        # with forwarding on, router advertisements need accept_ra=2 (applied on hotplug)
        router.succeed("test $(sysctl -n net.ipv6.conf.lte1.accept_ra) = 2")


    def nothing_left():
        wait_group(router, {"wan"})
        router.succeed("test -z \"$(ip route show table lte1)\"")
        router.fail("ip rule show | grep -w 'lookup lte1'")
        router.fail("ip nexthop show | grep -w lte1")
        router.fail("nft list set inet uplinkd uplinks | grep -w lte1")
        router.succeed("test -z \"$(conntrack -L --mark ${lteMark} 2>/dev/null)\"")
        router.succeed("uplinkctl plan")  # the kernel is as planned: nothing stale to remove


    start_all()
    server.wait_for_unit("lab-traffic-server.service")
    for isp in (isp1, lte):
        isp.wait_for_unit("dnsmasq.service")
    router.wait_for_unit("uplinkd.service")

    with subtest("booted without the stick: online, the wired uplink in service"):
        router.wait_for_unit("network-online.target")
        router.succeed("test $(systemctl show -p Result --value systemd-networkd-wait-online.service) = success")
        router.fail("test -e /sys/class/net/lte1")
        wait_group(router, {"wan"})

    with subtest("plugged in: named lte1 by its USB identity, and in service"):
        plug(port=1, mac="${stickMac 1}")
        joined()

    with subtest("unplugged: gone cleanly"):
        unplug()
        nothing_left()

    with subtest("plugged again, in another port, the controller stopped: udev starts it"):
        router.succeed("systemctl stop uplinkd.service")
        plug(port=3, mac="${stickMac 2}")
        router.wait_for_unit("uplinkd.service")
        joined()
        unplug()
        nothing_left()

    with subtest("a stick with another serial is not lte1"):
        plug(port=2, mac="${stickMac 3}")
        monitor(
            router,
            "device_add usb-net,id=other,bus=xhci.0,port=4,netdev=othernet,mac=${stickMac 4},serial=OTHER",
        )
        other = router.wait_until_succeeds(
            "for d in /sys/class/net/*; do"
            " udevadm info --query=property $d | grep -qx ID_SERIAL_SHORT=OTHER && basename $d && exit 0;"
            " done; exit 1",
            timeout=60,
        ).strip()
        assert other != "lte1", other
        router.succeed("udevadm info --query=property /sys/class/net/lte1 | grep -qx ID_SERIAL_SHORT=${serial}")
        wait_group(router, {"wan", "lte1"})
        monitor(router, "device_del other")
        unplug()
        nothing_left()
  '';
}
