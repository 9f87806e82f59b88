# What one option's type cannot check alone. Each message names the option and says how to fix
# it; tests/nix has one bad config per assertion.
{ config, lib, ... }:
let
  cfg = config.services.uplinkd;
  helpers = import ./lib.nix { inherit lib; };
  inherit (helpers) attr;

  inherit (cfg.settings) uplinks balance kernel;

  opt = "services.uplinkd.settings";
  at = name: "${opt}.uplinks.${attr name}";

  check = assertion: message: { inherit assertion message; };

  # Other modules' options. NixOS always defines them; the fallbacks (their NixOS defaults)
  # keep the module evaluable without NixOS, as tests/nix and the shared eval tool do it.
  nixos = path: fallback: lib.attrByPath path fallback config;

  # Names iproute2 gives tables already; an uplink's table is named after the uplink.
  reservedTableNames = [
    "unspec"
    "default"
    "main"
    "local"
    "balance"
  ];

  perUplink =
    name: uplink:
    let
      m = uplink.match;
      a = uplink.address;
      where = at name;
      setFields = fields: lib.filter (f: a.${f} != null) fields;
      foreign =
        {
          external = setFields [
            "cidr"
            "gateway"
            "cidr6"
            "gateway6"
            "hostname"
          ];
          static = setFields [ "hostname" ];
          dhcp = setFields [
            "cidr"
            "gateway"
            "cidr6"
            "gateway6"
          ];
        }
        .${a.mode};
    in
    [
      (check (builtins.match "[A-Za-z][A-Za-z0-9_-]{0,31}" name != null) ''
        ${where}: ${builtins.toJSON name} is not a usable uplink name; use a letter, then letters, digits, '-' or '_' (at most 32).'')
      (check (!lib.elem name reservedTableNames) ''
        ${where}: the uplink's routing table is named after it in /etc/iproute2/rt_tables.d, and "${name}" is taken; rename the uplink (e.g. "${name}1").'')
      (check (m.name != null || m.driver != [ ] || m.usb != null || m.path != null) ''
        ${where}.match: matches no interface; set at least one of match.name, match.driver, match.usb, match.path.'')
      (check (m.usb == null || m.usb.vendor != null || m.usb.product != null || m.usb.serial != null) ''
        ${where}.match.usb: would match every USB device; set at least one of vendor, product, serial (see `udevadm info /sys/class/net/<if>`).'')
      (check (m.usb == null || builtins.match "[A-Za-z][A-Za-z0-9_-]{0,14}" name != null) ''
        ${where}: a USB-matched uplink is renamed to its attribute name, which must be an interface name of at most 15 characters; shorten it (e.g. "lte1").'')
      (check (m.usb == null || m.name == null || m.name == name) ''
        ${where}.match.name: a USB-matched uplink is renamed to "${name}", so ${builtins.toJSON m.name} would never match; remove match.name.'')
      (check (a.mode != "static" || a.cidr != null) ''
        ${where}.address.cidr: mode "static" needs the uplink's address; set address.cidr (e.g. "10.64.0.2/30"), or use mode "dhcp" or "external".'')
      (check (foreign == [ ]) ''
        ${where}.address: ${lib.concatStringsSep ", " foreign} cannot be used with mode "${a.mode}"; remove ${
          if lib.length foreign == 1 then "it" else "them"
        } or change address.mode.'')
      (check
        (a.mode != "static" || a.cidr == null || a.gateway == null || helpers.ipv4InSubnet a.cidr a.gateway)
        ''
          ${where}.address.gateway: ${toString a.gateway} is outside ${toString a.cidr}; use a gateway inside the uplink's subnet, or null for a point-to-point link.''
      )
      (check (helpers.markOf uplink <= helpers.markSlots kernel.mark_mask) ''
        ${where}.mark: ${toString (helpers.markOf uplink)}${
          lib.optionalString (uplink.mark == null) " (table mod 256)"
        } does not fit ${opt}.kernel.mark_mask (0x${lib.toLower (lib.toHexString kernel.mark_mask)}); set ${where}.mark to a value from 1 to ${toString (helpers.markSlots kernel.mark_mask)}.'')
      (check (helpers.markOf uplink >= 1) ''
        ${where}.mark: table ${toString uplink.table} mod 256 is 0, which is no mark; set ${where}.mark to a value from 1 to ${toString (helpers.markSlots kernel.mark_mask)}.'')
    ];

  # The controller layers probe settings: the top-level `probe`, then the uplink's own.
  setOnly = lib.filterAttrs (_: v: v != null);
  probeChecks =
    where: probe:
    let
      method = probe.method or "icmp";
      targets = probe.targets or [ ];
      bad = lib.filter (t: !helpers.isProbeTarget method t) targets;
      example = if method == "tcp" then ''"198.51.100.1:443"'' else ''"198.51.100.1"'';
    in
    [
      (check (bad == [ ]) ''
        ${where}.targets: ${lib.concatMapStringsSep ", " builtins.toJSON bad} ${
          if method == "tcp" then "is not address:port" else "is not an IP address"
        } (method ${method}); write targets like ${example}.'')
      (check (targets == [ ] || (probe.quorum or 1) <= lib.length targets) ''
        ${where}.quorum: ${toString probe.quorum} is more than the ${toString (lib.length targets)} targets; use 1 to ${toString (lib.length targets)}.'')
    ];
  topProbe = setOnly cfg.settings.probe;
  uplinkProbeChecks =
    name: uplink:
    let
      own = setOnly uplink.probe;
    in
    # Checked where the uplink changes what the top level already passed.
    lib.optionals (own ? method || own ? targets || own ? quorum) (
      probeChecks "${at name}.probe" (topProbe // own)
    );

  # Values that must be unique, each with who holds it.
  duplicates =
    holders:
    lib.filterAttrs (_: names: lib.length names > 1) (
      lib.foldl' (acc: h: acc // { ${h.key} = (acc.${h.key} or [ ]) ++ [ h.who ]; }) { } holders
    );

  tableHolders =
    [
      {
        key = toString balance.table;
        who = "${opt}.balance.table";
      }
    ]
    ++ lib.mapAttrsToList (name: uplink: {
      key = toString uplink.table;
      who = "${at name}.table";
    }) uplinks
    ++ lib.mapAttrsToList (tableName: id: {
      key = toString id;
      who = "systemd.network.config.routeTables.${attr tableName}";
    }) (nixos [ "systemd" "network" "config" "routeTables" ] { });

  markHolders = lib.mapAttrsToList (name: uplink: {
    key = toString (helpers.markOf uplink);
    who = "${at name}.mark${lib.optionalString (uplink.mark == null) " (table mod 256)"}";
  }) uplinks;

  exactNameHolders = lib.concatLists (
    lib.mapAttrsToList (
      name: uplink:
      let
        ifname = helpers.ifnameOf name uplink;
      in
      lib.optional (ifname != null) {
        key = ifname;
        who = "${at name}${lib.optionalString (helpers.isUsb uplink) " (renamed from its USB identity)"}";
      }
    ) uplinks
  );

  usbHolders = lib.mapAttrsToList (
    name: uplink:
    let
      inherit (uplink.match) usb;
      orAny = v: if v == null then "*" else v;
    in
    {
      key = "${orAny usb.vendor}:${orAny usb.product}${
        lib.optionalString (usb.serial != null) " serial ${usb.serial}"
      }";
      who = at name;
    }
  ) (lib.filterAttrs (_: helpers.isUsb) uplinks);

  unique =
    {
      holders,
      what,
      fix,
    }:
    lib.mapAttrsToList (
      value: names: check false "${lib.concatStringsSep " and " names}: ${what value}; ${fix}."
    ) (duplicates holders);

  nftClashes = lib.filterAttrs (
    attrName: t: (t.enable or true) && t.family == "inet" && (t.name or attrName) == kernel.nft_table
  ) (nixos [ "networking" "nftables" "tables" ] { });

  stateDir = cfg.settings.control.state_dir;

  rpStrict = lib.elem (nixos [ "networking" "firewall" "checkReversePath" ] true) [
    true
    "strict"
  ];
in
{
  config = lib.mkIf cfg.enable {
    assertions =
      lib.concatLists (lib.mapAttrsToList perUplink uplinks)
      ++ probeChecks "${opt}.probe" topProbe
      ++ lib.concatLists (lib.mapAttrsToList uplinkProbeChecks uplinks)
      ++ unique {
        holders = tableHolders;
        what = v: "both use routing table ${v}";
        fix = "give every uplink, the balance table and networkd's route tables their own table id";
      }
      ++ unique {
        holders = markHolders;
        what = v: "both use mark ${v}";
        fix = "set one of them to a free value from 1 to ${toString (helpers.markSlots kernel.mark_mask)}";
      }
      ++ unique {
        holders = exactNameHolders;
        what = v: "both match the interface \"${v}\"";
        fix = "an interface can be only one uplink; match the other one by another name, driver, usb or path";
      }
      ++ unique {
        holders = usbHolders;
        what = v: "both match the USB device ${v}";
        fix = "two identical sticks need their serials: set match.usb.serial on each (`udevadm info /sys/class/net/<if> | grep ID_SERIAL_SHORT`)";
      }
      ++ [
        (check (lib.hasPrefix "/run/uplinkd/" cfg.settings.control.socket) ''
          ${opt}.control.socket: ${cfg.settings.control.socket} is outside /run/uplinkd, the only directory the hardened service may write; use a path like /run/uplinkd/control.sock.'')
        (check (stateDir == "/var/lib/uplinkd" || lib.hasPrefix "/var/lib/uplinkd/" stateDir) ''
          ${opt}.control.state_dir: ${stateDir} is outside /var/lib/uplinkd, the service's state directory and the only one it may write; use /var/lib/uplinkd or a directory in it.'')
        (check (nftClashes == { }) ''
          networking.nftables.tables.${
            attr (lib.head (lib.attrNames nftClashes ++ [ "?" ]))
          }: the inet table "${kernel.nft_table}" belongs to uplinkd, which replaces it whole; rename that table or set ${opt}.kernel.nft_table.'')
        (check (!(rpStrict && lib.length (lib.attrNames uplinks) > 1)) ''
          networking.firewall.checkReversePath: strict reverse-path filtering drops replies that arrive on one uplink for connections another uplink's route would take; set it to "loose" (the default with uplinkd).'')
      ];
  };
}
