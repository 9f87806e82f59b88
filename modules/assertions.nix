# What only NixOS knows, checked with a message that names the option and says how to fix it:
# the names this module gives (renamed interfaces, rt_tables entries), the paths the sandbox
# allows, and the rest of the system (networkd's route tables, nftables tables, reverse-path
# filtering). What the controller itself refuses is left to `uplinkctl check`, which runs on the
# rendered file at build time (service.nix) and names the field the same way; the exceptions
# are the checks that keep a `.link` file from renaming interfaces it should not, because a
# `.link` file takes effect even where the build-time check cannot run (cross builds).
# tests/nix has one bad config per assertion, and shows the controller refuses the rest.
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
  # keep the module evaluable on its own.
  nixos = path: fallback: lib.attrByPath path fallback config;

  # Names iproute2 gives tables already; an uplink's table is named after the uplink.
  reservedTableNames = [
    "unspec"
    "default"
    "main"
    "local"
    "balance"
  ];

  renameReason =
    uplink:
    if helpers.isUsb uplink then
      "a USB-matched uplink is renamed to its attribute name"
    else
      "an uplink whose address the controller owns, matched by driver or path, is renamed to its attribute name (so other DHCP clients can be kept off it)";

  perUplink =
    name: uplink:
    let
      m = uplink.match;
      where = at name;
      renamed = helpers.isRenamed uplink;
    in
    [
      (check (!lib.elem name reservedTableNames) ''
        ${where}: the uplink's routing table is named after it in /etc/iproute2/rt_tables.d, and "${name}" is taken; rename the uplink (e.g. "${name}1").'')
      # A .link file with an empty [Match] would rename every interface of the machine.
      (check (!renamed || m.driver != [ ] || m.usb != null || m.path != null) ''
        ${where}.match: matches no interface; set at least one of match.name, match.driver, match.usb, match.path.'')
      (check (m.usb == null || m.usb.vendor != null || m.usb.product != null || m.usb.serial != null) ''
        ${where}.match.usb: would match every USB device; set at least one of vendor, product, serial (see `udevadm info /sys/class/net/<if>`).'')
      (check (!renamed || builtins.match "[A-Za-z][A-Za-z0-9_-]{0,14}" name != null) ''
        ${where}: ${renameReason uplink}, which must be an interface name of at most 15 characters; shorten it (e.g. "${
          if helpers.isUsb uplink then "lte1" else "wan"
        }").'')
      (check (m.usb == null || m.name == null || m.name == name) ''
        ${where}.match.name: a USB-matched uplink is renamed to "${name}", so ${builtins.toJSON m.name} would never match; remove match.name.'')
    ];

  # Values that must be unique, each with who holds it.
  duplicates =
    holders:
    lib.filterAttrs (_: names: lib.length names > 1) (
      lib.foldl' (acc: h: acc // { ${h.key} = (acc.${h.key} or [ ]) ++ [ h.who ]; }) { } holders
    );

  networkdTables = nixos [ "systemd" "network" "config" "routeTables" ] { };
  tableHolders = [
    {
      key = toString balance.table;
      who = "${opt}.balance.table";
    }
  ]
  ++ lib.mapAttrsToList (name: uplink: {
    key = toString uplink.table;
    who = "${at name}.table";
  }) uplinks;
  # Clashes among uplinkd's own tables are the controller's to refuse; these are with networkd's.
  networkdClashes = lib.concatLists (
    lib.mapAttrsToList (
      tableName: id:
      map (h: "${h.who} and systemd.network.config.routeTables.${attr tableName}: both use routing table ${toString id}; give every uplink, the balance table and networkd's route tables their own table id.") (
        lib.filter (h: h.key == toString id) tableHolders
      )
    ) networkdTables
  );

  # Two uplinks on one interface name, where one name comes from a rename only NixOS knows of.
  nameHolders = lib.concatLists (
    lib.mapAttrsToList (
      name: uplink:
      let
        ifname = helpers.ifnameOf name uplink;
      in
      lib.optional (ifname != null) {
        key = ifname;
        renamed = helpers.isRenamed uplink;
        who = "${at name}${lib.optionalString (helpers.isRenamed uplink) " (renamed to it)"}";
      }
    ) uplinks
  );
  nameClashes = lib.filterAttrs (
    key: _: lib.any (h: h.key == key && h.renamed) nameHolders
  ) (duplicates nameHolders);

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

  clash = what: fix: value: names: check false "${lib.concatStringsSep " and " names}: ${what value}; ${fix}.";

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
      ++ map (check false) networkdClashes
      ++ map (
        c:
        check (!lib.hasPrefix builtins.storeDir c.path) ''
          ${opt}.tunnels: the key file ${c.path} is in the Nix store, where every user can read it; keep keys outside the store (e.g. /etc/secrets, or agenix/sops-nix paths) and name the file as a string, not a Nix path.''
      ) (helpers.credentials cfg.settings)
      ++ lib.mapAttrsToList (clash (v: "both match the interface \"${v}\"")
        "an interface can be only one uplink; match the other one by another name, driver, usb or path"
      ) nameClashes
      ++ lib.mapAttrsToList (clash (v: "both match the USB device ${v}")
        "two identical sticks need their serials: set match.usb.serial on each (`udevadm info /sys/class/net/<if> | grep ID_SERIAL_SHORT`)"
      ) (duplicates usbHolders)
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
