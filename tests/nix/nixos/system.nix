# The NixOS options of the system at large that uplinkd's module sets or reads (see default.nix).
{ lib, pkgs, standIn }:
let
  inherit (lib) mkOption types;

  # --- nixos/modules/system/etc/etc.nix -----------------------------------------------------------
  etcEntry = types.submodule (
    { config, ... }:
    {
      options = {
        enable = mkOption {
          type = types.bool;
          default = true;
        };
        text = mkOption {
          type = types.nullOr types.lines;
          default = null;
        };
        source = mkOption {
          type = types.path;
        };
        mode = mkOption {
          type = types.str;
          default = "symlink";
        };
      };
      config.source = lib.mkIf (config.text != null) (lib.mkDefault (pkgs.writeText "etc" config.text));
    }
  );

in
[
  # nixos/modules/misc/assertions.nix
  {
    options.assertions = mkOption {
      type = types.listOf types.unspecified;
      internal = true;
      default = [ ];
    };
    options.warnings = mkOption {
      type = types.listOf types.str;
      internal = true;
      default = [ ];
    };
  }

  # nixos/modules/misc/version.nix
  {
    options.system.stateVersion = mkOption {
      type = types.str;
      default = "26.05";
    };
  }

  # nixos/modules/system/activation/top-level.nix (system.checks)
  {
    options.system.checks = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
  }

  # nixos/modules/config/sysctl.nix (read at 05924f714f31ff83bd10ed1710638688999c3725): a value
  # is a bool, string, int or null; one key has ONE definition (mergeOneOption after overrides
  # are filtered), so two definitions at the same priority fail even when they agree.
  (
    let
      sysctlValue = lib.mkOptionType {
        name = "sysctl option value";
        check =
          value:
          let
            ok = x: lib.isBool x || lib.isString x || lib.isInt x || x == null;
          in
          ok value || (value._type or "" == "override" && ok value.content);
        merge = loc: defs: lib.mergeOneOption loc (lib.filterOverrides defs);
      };
    in
    {
      options.boot.kernel.sysctl = mkOption {
        type = types.submodule { freeformType = types.attrsOf sysctlValue; };
        default = { };
      };
    }
  )

  # nixos/modules/system/boot/kernel.nix: modules loaded at boot (a list; definitions concatenate)
  {
    options.boot.kernelModules = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
  }

  # nixos/modules/config/iproute2.nix
  {
    options.networking.iproute2 = {
      enable = mkOption {
        type = types.bool;
        default = false;
      };
      rttablesExtraConfig = mkOption {
        type = types.lines;
        default = "";
      };
    };
  }

  # nixos/modules/system/etc/etc.nix
  {
    options.environment.etc = mkOption {
      type = types.attrsOf etcEntry;
      default = { };
    };
  }

  # nixos/modules/config/system-path.nix
  {
    options.environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
  }

  # nixos/modules/config/users-groups.nix (the fields the module sets)
  {
    options.users.users = mkOption {
      type = types.attrsOf (
        types.submodule {
          options = {
            isSystemUser = mkOption {
              type = types.bool;
              default = false;
            };
            isNormalUser = mkOption {
              type = types.bool;
              default = false;
            };
            group = mkOption {
              type = types.str;
              default = "";
            };
            extraGroups = mkOption {
              type = types.listOf types.str;
              default = [ ];
            };
            description = mkOption {
              type = types.passwdEntry types.str;
              default = "";
            };
          };
        }
      );
      default = { };
    };
    options.users.groups = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.members = mkOption {
            type = types.listOf types.str;
            default = [ ];
          };
        }
      );
      default = { };
    };
  }

  # nixos/modules/services/hardware/udev.nix
  {
    options.services.udev = {
      extraRules = mkOption {
        type = types.lines;
        default = "";
      };
      packages = mkOption {
        type = types.listOf types.path;
        default = [ ];
      };
    };
  }

  # What the examples and the VM tests' router set that the module does not touch.
  {
    options.services.resolved.enable = mkOption {
      type = types.bool;
      default = true;
    };
    options.services.unbound = standIn "services.unbound";
    options.services.dnsmasq = standIn "services.dnsmasq";
    options.virtualisation = standIn "virtualisation.* (nixos/modules/virtualisation/qemu-vm.nix)";
    # nixos/modules/system/activation/specialisation.nix
    options.specialisation = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.configuration = mkOption {
            type = types.deferredModule;
            default = { };
          };
          options.inheritParentConfig = mkOption {
            type = types.bool;
            default = true;
          };
        }
      );
      default = { };
    };
  }
]
