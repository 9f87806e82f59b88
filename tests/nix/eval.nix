# Evaluates modules/uplinkd.nix without NixOS, for test_module_eval.py: nixpkgs' `lib` (the
# module system and its types) plus stand-ins for the NixOS options the module writes and
# reads, and for the packages it names. It checks the module's options, types, defaults and
# assertions, and shows what the module hands to NixOS. It cannot tell whether a NixOS option
# the module sets really exists: the NixOS VM tests (nixos-tests/) do.
#
#   nix-instantiate --eval --strict --json tests/nix/eval.nix \
#     --arg lib 'import /path/to/nixpkgs.lib/lib' \
#     --arg module ./modules/uplinkd.nix --arg config ./examples/home-router.nix \
#     --argstr show 'systemd.services.uplinkd,systemd.network'
#
# Prints {failedAssertions, warnings, settings (the rendered config.json), config (the option
# paths in `show`), options (the settings' option tree: names, types, defaults)}.
{
  lib,
  module,
  config,
  show ? "",
}:
let
  inherit (lib) mkOption types;

  # Like types.anything, but lists from several definitions are concatenated, as NixOS's list
  # options do, instead of having to be equal.
  stubAny = lib.mkOptionType {
    name = "stubAny";
    description = "anything (stand-in for a NixOS option)";
    check = _: true;
    merge =
      loc: defs:
      let
        values = map (d: d.value) defs;
      in
      if lib.all builtins.isList values then
        lib.concatLists values
      else if lib.all (v: builtins.isAttrs v && !(lib.isStringLike v)) values then
        (types.attrsOf stubAny).merge loc defs
      else
        types.anything.merge loc defs;
  };

  fakePackage = name: {
    type = "derivation";
    inherit name;
    pname = name;
    version = "0";
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    meta.mainProgram = name;
    passthru = { };
  };

  writer = name: _: fakePackage name;
  format = _: {
    type = stubAny;
    generate = name: _: fakePackage name;
  };

  pkgs =
    lib.genAttrs [
      "bash"
      "conntrack-tools"
      "coreutils"
      "dnsmasq"
      "ethtool"
      "iperf3"
      "iproute2"
      "iputils"
      "jq"
      "nftables"
      "python3"
      "systemd"
      "tcpdump"
      "uplinkd"
      "util-linux"
    ] fakePackage
    // {
      inherit lib;
      system = "x86_64-linux";
      stdenv.hostPlatform.system = "x86_64-linux";
      writeText = writer;
      writeTextDir = writer;
      writeShellScript = writer;
      writeTextFile = { name, ... }: fakePackage name;
      writeShellApplication = { name, ... }: fakePackage name;
      # Builds nothing: the build-time `uplinkctl check` is run by the test itself instead.
      runCommand = name: _: _: fakePackage name;
      formats = {
        # JSON is rendered for real, as the file's text beside the stand-in package, so the
        # test can read what the service gets without writing to the store.
        json = _: {
          type = stubAny;
          generate = name: value: fakePackage name // { text = builtins.toJSON value; };
        };
        toml = format;
        ini = format;
      };
    };

  nixosStandIn = {
    options = {
      assertions = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
      warnings = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
    };
    config = {
      _module.freeformType = types.lazyAttrsOf stubAny;
      _module.args = {
        inherit pkgs;
        utils = { };
      };

      # The NixOS options the module reads, at NixOS's defaults (an option's own default has
      # mkOptionDefault's priority).
      networking.firewall.checkReversePath = lib.mkOptionDefault true;
      networking.nftables.tables = lib.mkOptionDefault { };
      systemd.network.config.routeTables = lib.mkOptionDefault { };
      systemd.package = lib.mkOptionDefault (fakePackage "systemd" // { version = "258"; });
    };
  };

  evaluated = lib.evalModules {
    modules = [
      nixosStandIn
      module
      config
    ];
  };
  cfg = evaluated.config;

  # The option tree below an option: for each name its type and, for leaves, its default.
  optionTree =
    opts:
    lib.mapAttrs (
      _: o:
      if lib.isOption o then
        let
          sub = removeAttrs (o.type.getSubOptions o.loc) [ "_module" ];
        in
        { type = o.type.name; }
        // (
          if sub != { } then
            { children = optionTree sub; }
          else
            lib.optionalAttrs (o ? default) { inherit (o) default; }
        )
      else
        optionTree o
    ) (removeAttrs opts [ "_module" ]);

  paths = lib.filter (p: p != "") (lib.splitString "," show);
  etc =
    let
      defined = builtins.tryEval cfg.environment.etc;
    in
    if defined.success then defined.value else { };
in
{
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) cfg.assertions);
  inherit (cfg) warnings;
  settings =
    if etc ? "uplinkd/config.json" then
      builtins.fromJSON etc."uplinkd/config.json".source.text
    else
      null;
  # An option path nothing defines (all under a false mkIf, say) shows as null.
  config = lib.genAttrs paths (
    p:
    let
      shown = builtins.tryEval (
        let
          v = lib.attrByPath (lib.splitString "." p) null cfg;
        in
        builtins.deepSeq v v
      );
    in
    if shown.success then shown.value else null
  );
  options = optionTree { inherit (evaluated.options.services.uplinkd) settings; };
}
