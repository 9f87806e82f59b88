# Evaluates modules/uplinkd.nix without nixpkgs' NixOS tree, for test_module_eval.py: nixpkgs'
# `lib` (the module system and its types), the NixOS options the module sets and reads declared
# with nixpkgs' types and merge semantics (nixos/), and stand-ins for the packages it names.
# There is no catch-all: an option path nothing declares fails, as it does on NixOS.
#
#   nix-instantiate --eval --strict --json tests/nix/eval.nix \
#     --arg lib 'import /path/to/nixpkgs.lib/lib' \
#     --arg module ./modules/uplinkd.nix --arg config ./examples/home-router.nix \
#     --argstr show 'systemd.services.uplinkd,systemd.network'
#
# Prints {failedAssertions, warnings, settings (the rendered config.json), config (the option
# paths in `show`), options (the settings' option tree: names, types, defaults), profiles (the
# probe profile defaults the options' descriptions name), checks (system.checks' scripts),
# standInsDefinedByModule,
# optionsDefinedByModule}. With `specialisation`, the system is that specialisation of config.
{
  lib,
  module,
  config,
  show ? "",
  specialisation ? "",
  # false: the build machine cannot run the host's binaries (cross-compiling)
  canExecute ? true,
}:
let
  fakePackage = name: {
    type = "derivation";
    inherit name;
    pname = name;
    version = "0";
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    drvPath = "/nix/store/00000000000000000000000000000000-${name}.drv";
    outputs = [ "out" ];
    meta.mainProgram = name;
    passthru = { };
  };

  writer = name: text: fakePackage name // { inherit text; };
  format = _: {
    type = lib.types.anything;
    generate = name: _: fakePackage name;
  };

  platform = {
    system = "x86_64-linux";
    canExecute = _: canExecute;
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
      "tcpdump"
      "uplinkd"
      "util-linux"
      "wireguard-tools"
    ] fakePackage
    // {
      inherit lib;
      system = "x86_64-linux";
      # NixOS always has a systemd new enough for ManageForeignNextHops (256)
      systemd = fakePackage "systemd" // {
        version = "258";
      };
      python3 = fakePackage "python3" // {
        withPackages = _: fakePackage "python3-env";
      };
      stdenv = {
        hostPlatform = platform;
        buildPlatform = platform;
      };
      # The build platform's package set: what it builds says so, for the tests to see.
      buildPackages = pkgs // {
        runCommand = name: env: script: pkgs.runCommand name env script // { builtWith = "buildPackages"; };
      };
      writeText = writer;
      writeTextDir = writer;
      writeShellScript = writer;
      writeShellScriptBin = writer;
      writeTextFile = { name, ... }: fakePackage name;
      writeShellApplication = { name, ... }: fakePackage name;
      # Builds nothing: the build-time `uplinkctl check` is run by the test itself instead. The
      # stand-in keeps what the check's derivation was given, for the tests to read.
      runCommand =
        name: env: script:
        fakePackage name
        // {
          inherit env script;
          builtWith = "pkgs";
        };
      formats = {
        # JSON is rendered for real, as the file's text beside the stand-in package, so the
        # test can read what the service gets without writing to the store.
        json = _: {
          type = lib.types.anything;
          generate = name: value: fakePackage name // { text = builtins.toJSON value; };
        };
        toml = format;
        ini = format;
        yaml = format;
      };
    };

  nixos = import ./nixos { inherit lib pkgs; };

  base = lib.evalModules {
    modules = nixos ++ [
      {
        _module.args = {
          inherit pkgs;
          utils = { };
        };
      }
      module
      config
    ];
  };
  evaluated =
    if specialisation == "" then
      base
    else
      base.extendModules {
        modules = [ base.config.specialisation.${specialisation}.configuration ];
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

  plain =
    v:
    if builtins.isPath v then
      toString v
    else if lib.isDerivation v then
      v
    else if builtins.isAttrs v then
      lib.mapAttrs (_: plain) v
    else if builtins.isList v then
      map plain v
    else
      v;

  paths = lib.filter (p: p != "") (lib.splitString "," show);
  etc = cfg.environment.etc;

  # Which options outside services.uplinkd the module's own files define.
  moduleDir = toString (dirOf module);
  fromModule = file: lib.hasPrefix "${moduleDir}/" (toString file);
  allOptions = lib.filter (o: lib.take 2 o.loc != [
    "services"
    "uplinkd"
  ]) (lib.collect lib.isOption (removeAttrs evaluated.options [ "_module" ]));
  definedByModule = lib.filter (o: lib.any fromModule o.files) allOptions;
  isStandIn = o: lib.hasPrefix "stand-in" (o.description or "");

  # Every typed option's value, as building the system would force it: a type check or a merge
  # that fails (two definitions of a sysctl, an unknown networkd key) fails the evaluation.
  # (NixOS reads only a failed assertion's message, so assertions are left to `failedAssertions`.)
  typed = lib.filter (o: !isStandIn o && o.isDefined && o.loc != [ "assertions" ]) allOptions;
  forced = builtins.deepSeq (map (o: o.value) typed) true;
in
assert forced;
{
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) cfg.assertions);
  inherit (cfg) warnings;
  settings =
    if etc ? "uplinkd/config.json" then
      builtins.fromJSON etc."uplinkd/config.json".source.text
    else
      null;
  # An option path nothing defines shows as null; a Nix path shows as its string (JSON would
  # copy it to the store).
  config = lib.genAttrs paths (
    p:
    let
      v = plain (lib.attrByPath (lib.splitString "." p) null cfg);
    in
    builtins.deepSeq v v
  );
  # The build-time checks' stand-ins (JSON would show a derivation as its path only).
  checks = map (c: { inherit (c) name script builtWith; }) cfg.system.checks;
  options = optionTree { inherit (evaluated.options.services.uplinkd) settings; };
  profiles = (import ../../modules/profiles.nix).probeProfiles;
  optionsDefinedByModule = map (o: lib.showOption o.loc) definedByModule;
  standInsDefinedByModule = map (o: lib.showOption o.loc) (lib.filter isStandIn definedByModule);
}
