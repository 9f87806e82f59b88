# The options of a `services.uplinkd.settings.vxlan.<name>` section: an Ethernet segment over
# a tunnel's inner addresses, a port of a bridge (controller/uplinkd/config/vxlan.py has the
# same names and defaults; it checks what the types cannot: the tunnel exists, `local` is one
# of its addresses, the remotes are reached through it, tables and VNIs are not taken twice).
{ lib }:
let
  inherit (lib) mkOption types;
  ifname = types.strMatching "[^/ *?:[]{1,15}";
in
{
  options = {
    tunnel = mkOption {
      type = types.str;
      example = "home";
      description = "The `tunnels.<name>` whose inner addresses carry the segment.";
    };
    interface = mkOption {
      type = ifname;
      example = "vx-home";
      description = "The VXLAN interface the controller creates and owns (a flush deletes it).";
    };
    vni = mkOption {
      type = types.ints.between 1 16777215;
      description = "VXLAN network identifier; the same at every end of the segment.";
    };
    local = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "The router's end: one of the tunnel's addresses; default: its first of the remotes' family.";
    };
    remotes = mkOption {
      type = types.nonEmptyListOf types.str;
      example = [ "10.99.0.1" ];
      description = ''
        The other ends' inner addresses. Each gets a flood entry (broadcast, unknown unicast
        and multicast go to every remote; no multicast underneath).
      '';
    };
    port = mkOption {
      type = types.port;
      default = 4789;
      description = "UDP port (the same at every end).";
    };
    bridge = mkOption {
      type = types.nullOr ifname;
      default = null;
      example = "br-home";
      description = "The bridge the interface joins (yours, e.g. a systemd.network netdev; it is joined once it exists).";
    };
    mtu = mkOption {
      type = types.either (types.enum [ "auto" ]) (types.ints.between 576 9000);
      default = "auto";
      description = ''
        `auto`: the tunnel's MTU minus 50 (IPv4 inner addresses) or 70 (IPv6): no frame is
        fragmented, but hosts on the segment must use that MTU too (the segment's DHCP option
        26), or a bridge drops their larger frames without a word. `1500` at every end: hosts
        keep 1500; a DF packet too large for the tunnel gets "fragmentation needed" from the
        VXLAN port, one without DF is carried in fragments inside the tunnel (never outside).
      '';
    };
    mac = mkOption {
      type = types.nullOr (types.strMatching "[0-9a-fA-F][02468aceACE](:[0-9a-fA-F]{2}){5}");
      default = null;
      description = "The interface's MAC; default: derived from interface and VNI (stable across reboots).";
    };
    address = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "192.168.1.250/24";
      description = ''
        The router's own address on the segment (put on the bridge), or null. Its replies
        leave the way the requests came: a rule `from <address> lookup <table>` above every
        other uplinkd band.
      '';
    };
    gateway = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "192.168.1.1";
      description = "The segment's router, for replies from `address` to beyond the segment.";
    };
    table = mkOption {
      type = types.nullOr (types.ints.between 1 16777215);
      default = null;
      description = "Table of the source rule for `address` (required with it).";
    };
  };
}
