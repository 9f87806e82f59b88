# Pure helpers shared by the uplinkd module's parts: rendering the settings, telling how an
# uplink is matched and what it is renamed to, and the address and mask checks of the types.
# Computes only; nothing here reads `config`.
{ lib }:
let
  inherit (lib)
    filterAttrs
    hasInfix
    isAttrs
    isList
    mapAttrs
    optional
    ;
in
rec {
  # The systemd sandbox both units share (the controller and uplinkd-exporter): no new
  # privileges, a read-only system, no kernel tunables, modules, logs or clock, no namespaces.
  # Each unit adds its capabilities, address families and system-call filter.
  sandbox = {
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    # PrivateUsers stays off: capabilities inside a user namespace do not reach the host's
    # network namespace, and the exporter's socket group must be the host's uplinkd group.
    PrivateUsers = false;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    RemoveIPC = true;
    SystemCallArchitectures = "native";
  };

  # What the controller reads: the settings without their nulls, also inside lists of sections
  # (rules.steer, a tunnel's peers). Every nullable field of the controller's config defaults
  # to null, so dropping them changes nothing but the noise.
  render = settings: dropNulls (withCredentials settings);
  dropNulls =
    value:
    if isAttrs value then
      mapAttrs (_: dropNulls) (filterAttrs (_: v: v != null) value)
    else if isList value then
      map dropNulls value
    else
      value;

  # Tunnel key files reach the service as systemd credentials (LoadCredential): the unit
  # reads them as root, the controller (user uplinkd) reads the copies systemd makes in its
  # credentials directory. `credentials` lists them (id and the admin's path), `withCredentials`
  # points the rendered config at the copies.
  credentialDir = "/run/credentials/uplinkd.service";
  keyIds =
    name: tunnel:
    [
      {
        id = "tunnel-${name}.key";
        path = tunnel.private_key_file;
      }
    ]
    ++ lib.concatLists (
      lib.imap0 (
        i: peer:
        optional (peer.preshared_key_file != null) {
          id = "tunnel-${name}-peer${toString i}.psk";
          path = peer.preshared_key_file;
        }
      ) tunnel.peers
    );
  credentials =
    settings: lib.concatLists (lib.mapAttrsToList keyIds (settings.tunnels or { }));
  withCredentials =
    settings:
    settings
    // lib.optionalAttrs (settings ? tunnels) {
      tunnels = lib.mapAttrs (
        name: tunnel:
        tunnel
        // {
          private_key_file = "${credentialDir}/tunnel-${name}.key";
          peers = lib.imap0 (
            i: peer:
            peer
            // lib.optionalAttrs (peer.preshared_key_file != null) {
              preshared_key_file = "${credentialDir}/tunnel-${name}-peer${toString i}.psk";
            }
          ) tunnel.peers;
        }
      ) settings.tunnels;
    };

  # A USB-matched uplink is renamed to its attribute name by a systemd .link file, so its
  # interface name is known whatever port or order it was plugged in.
  isUsb = uplink: uplink.match.usb != null;

  isGlob = name: hasInfix "*" name || hasInfix "?" name || hasInfix "[" name;

  # The controller runs DHCP or sets the address itself: nobody else may configure the link.
  controllerAddresses = uplink: uplink.address.mode != "external";

  # Renamed to its attribute name by a .link file: a USB-matched uplink, and an uplink whose
  # address the controller owns that has no name to tell the other network managers (matched
  # by driver or path only). A name glob already is such a pattern.
  isRenamed = uplink: isUsb uplink || (controllerAddresses uplink && uplink.match.name == null);

  # The interface name an uplink will have, when the config tells it; null for uplinks matched
  # by a name glob, and for `external` ones matched by driver or path.
  ifnameOf =
    name: uplink:
    if isRenamed uplink then
      name
    else if uplink.match.name != null && !isGlob uplink.match.name then
      uplink.match.name
    else
      null;

  # A name pattern for tools that take globs (dhcpcd, NetworkManager); null when unknown.
  namePatternOf = name: uplink: if isRenamed uplink then name else uplink.match.name;

  # udev property matches for a USB identity, as .link/.network [Match] Property= takes them.
  usbProperties =
    usb:
    optional (usb.vendor != null) "ID_VENDOR_ID=${usb.vendor}"
    ++ optional (usb.product != null) "ID_MODEL_ID=${usb.product}"
    ++ optional (usb.serial != null) "ID_SERIAL_SHORT=${usb.serial}";

  # The same identity as a udev rule's match keys.
  usbRuleKeys =
    usb:
    optional (usb.vendor != null) ''ENV{ID_VENDOR_ID}=="${usb.vendor}"''
    ++ optional (usb.product != null) ''ENV{ID_MODEL_ID}=="${usb.product}"''
    ++ optional (usb.serial != null) ''ENV{ID_SERIAL_SHORT}=="${usb.serial}"'';

  # [Match] for the .link file that renames an uplink: its USB identity, narrowed by driver and
  # path when given (one stick can expose several interfaces). The controller's `name`
  # criterion is about the name after the rename, so it has no place here.
  linkMatch =
    uplink:
    let
      m = uplink.match;
    in
    lib.optionalAttrs (isUsb uplink) { Property = usbProperties m.usb; }
    // lib.optionalAttrs (m.driver != [ ]) { Driver = m.driver; }
    // lib.optionalAttrs (m.path != null) { Path = m.path; };

  # [Match] for the .network file that keeps networkd off an uplink. Every criterion must hold
  # and Driver= is any-of, as in the controller's `match`.
  networkMatch =
    name: uplink:
    let
      m = uplink.match;
    in
    if isRenamed uplink then
      { Name = name; }
    else
      lib.optionalAttrs (m.name != null) { Name = m.name; }
      // lib.optionalAttrs (m.driver != [ ]) { Driver = m.driver; }
      // lib.optionalAttrs (m.path != null) { Path = m.path; };

  # The sysctl key net.ipv6.conf.<ifname>.<key>; names with dots need the slash form.
  ipv6ConfKey =
    ifname: key:
    if hasInfix "." ifname then
      "net/ipv6/conf/${ifname}/${key}"
    else
      "net.ipv6.conf.${ifname}.${key}";

  # --- addresses -----------------------------------------------------------------------------

  ipv4Pattern =
    let
      octet = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
    in
    "${octet}\\.${octet}\\.${octet}\\.${octet}";

  # lib.network parses IPv6 fully where this nixpkgs has it; the shape check is the fallback.
  isIPv6 =
    text:
    builtins.match "[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*" text != null
    && (
      !(lib ? network)
      || (builtins.tryEval (builtins.deepSeq (lib.network.ipv6.fromString text) true)).success
    );

  # --- numbers -------------------------------------------------------------------------------

  lowestBit = v: builtins.bitAnd v (0 - v);

  isContiguousMask =
    v:
    let
      run = v / lowestBit v;
    in
    v > 0 && builtins.bitAnd run (run + 1) == 0;

  # `name` if it needs quoting as an attribute in a message.
  attr =
    name: if builtins.match "[A-Za-z_][A-Za-z0-9_'-]*" name != null then name else ''"${name}"'';
}
