# The Prometheus and Grafana options examples/monitoring/ sets (see default.nix). uplinkd's module
# sets none of them; they are declared with nixpkgs' types so that the example is evaluated, not
# only parsed: a key nixpkgs does not know in a scrape config or a provisioning entry, a port
# where nixpkgs wants a separate option, or a setting NixOS 26.05 requires fails here as it does
# in `nixos-rebuild`. Written for this harness (no nixpkgs code copied) from:
#
#   nixos/modules/services/monitoring/prometheus/default.nix
#   nixos/modules/services/monitoring/grafana.nix
#
# as of nixpkgs' nixos-26.05 branch (the nixfmt-formatted files with `listenAddress` and `port`
# apart, Grafana's `settings`/`provision.*.settings` and the required `security.secret_key`),
# read through the project's source index, whose copies carry no commit id. Only the options the
# example uses are declared, plus the assertions nixpkgs attaches to them.
#
# Where nixpkgs gives a submodule a freeform type from pkgs.formats (yaml for provisioning
# entries, ini for Grafana's settings), the harness's formats give `anything` (see eval.nix); the
# declared options keep their own types.
{ lib, pkgs, ... }:
let
  inherit (lib) mkOption mkEnableOption types;

  # prometheus/default.nix: most scrape-config fields are `nullOr T` defaulting to null (left out
  # of prometheus.yml when null); job_name and static targets are required.
  optional =
    type:
    mkOption {
      type = types.nullOr type;
      default = null;
    };

  staticConfig = types.submodule {
    options = {
      targets = mkOption { type = types.listOf types.str; };
      labels = mkOption {
        type = types.attrsOf types.str;
        default = { };
      };
    };
  };

  scrapeConfig = types.submodule {
    options = {
      job_name = mkOption { type = types.str; };
      scrape_interval = optional types.str;
      scrape_timeout = optional types.str;
      metrics_path = optional types.str;
      scheme = optional (
        types.enum [
          "http"
          "https"
        ]
      );
      honor_labels = optional types.bool;
      params = optional (types.attrsOf (types.listOf types.str));
      static_configs = optional (types.listOf staticConfig);
    };
  };

  # grafana.nix: grafanaTypes.datasourceConfig and grafanaTypes.dashboardConfig.
  yamlFreeform = (pkgs.formats.yaml { }).type;

  datasource = types.submodule {
    freeformType = yamlFreeform;
    options = {
      name = mkOption { type = types.str; };
      type = mkOption { type = types.str; };
      access = mkOption {
        type = types.enum [
          "proxy"
          "direct"
        ];
        default = "proxy";
      };
      uid = mkOption {
        type = types.nullOr types.str;
        default = null;
      };
      url = mkOption {
        type = types.str;
        default = "";
      };
      editable = mkOption {
        type = types.bool;
        default = false;
      };
      jsonData = mkOption {
        type = types.nullOr types.attrs;
        default = null;
      };
      secureJsonData = mkOption {
        type = types.nullOr types.attrs;
        default = null;
      };
    };
  };

  dashboardProvider = types.submodule {
    freeformType = yamlFreeform;
    options = {
      name = mkOption {
        type = types.str;
        default = "default";
      };
      type = mkOption {
        type = types.str;
        default = "file";
      };
      options.path = mkOption { type = types.path; };
    };
  };

  # provision.datasources and provision.dashboards: a YAML file (`path`) or its Nix form
  # (`settings`), not both.
  provisioned =
    settingsOptions:
    mkOption {
      default = { };
      type = types.submodule {
        options.path = mkOption {
          type = types.nullOr types.path;
          default = null;
        };
        options.settings = mkOption {
          default = null;
          type = types.nullOr (
            types.submodule {
              options = {
                apiVersion = mkOption {
                  type = types.int;
                  default = 1;
                };
              }
              // settingsOptions;
            }
          );
        };
      };
    };
in
[
  # nixos/modules/services/monitoring/prometheus/default.nix
  (
    { config, ... }:
    let
      cfg = config.services.prometheus;
    in
    {
      options.services.prometheus = {
        enable = mkEnableOption "Prometheus monitoring daemon";
        listenAddress = mkOption {
          type = types.str;
          default = "0.0.0.0";
        };
        port = mkOption {
          type = types.port;
          default = 9090;
        };
        retentionTime = mkOption {
          type = types.nullOr types.str;
          default = null;
        };
        scrapeConfigs = mkOption {
          type = types.listOf scrapeConfig;
          default = [ ];
        };
      };
      # nixpkgs refuses an address with a port (the old single-option form).
      config.assertions = lib.optional cfg.enable {
        assertion = builtins.match "(.*\\..*|.*]):([[:digit:]]+)" cfg.listenAddress == null;
        message = "services.prometheus.listenAddress: give the port in services.prometheus.port";
      };
    }
  )

  # nixos/modules/services/monitoring/grafana.nix
  (
    { config, ... }:
    let
      cfg = config.services.grafana;
      bothSet = what: cfg.provision.${what}.settings != null && cfg.provision.${what}.path != null;
    in
    {
      options.services.grafana = {
        enable = mkEnableOption "grafana";
        openFirewall = mkOption {
          type = types.bool;
          default = false;
        };
        settings = mkOption {
          default = { };
          type = types.submodule {
            freeformType = (pkgs.formats.ini { }).type;
            options = {
              server = {
                http_addr = mkOption {
                  type = types.str;
                  default = "127.0.0.1";
                };
                http_port = mkOption {
                  type = types.port;
                  default = 3000;
                };
                domain = mkOption {
                  type = types.str;
                  default = "localhost";
                };
                protocol = mkOption {
                  type = types.enum [
                    "http"
                    "https"
                    "h2"
                    "socket"
                  ];
                  default = "http";
                };
              };
              security = {
                # no default since NixOS 26.05: an assertion asks for one
                secret_key = mkOption {
                  type = types.nullOr types.str;
                  default = null;
                };
                admin_password = mkOption {
                  type = types.str;
                  default = "admin";
                };
              };
            };
          };
        };
        provision = {
          enable = mkEnableOption "provision";
          datasources = provisioned {
            datasources = mkOption {
              type = types.listOf datasource;
              default = [ ];
            };
            prune = mkOption {
              type = types.bool;
              default = false;
            };
          };
          dashboards = provisioned {
            providers = mkOption {
              type = types.listOf dashboardProvider;
              default = [ ];
            };
          };
        };
      };
      config.assertions = lib.optionals cfg.enable [
        {
          assertion = !bothSet "datasources";
          message = "services.grafana.provision.datasources: settings and path are both set";
        }
        {
          assertion = !bothSet "dashboards";
          message = "services.grafana.provision.dashboards: settings and path are both set";
        }
        {
          assertion =
            cfg.provision.datasources.settings == null
            || lib.all (d: d.type == "prometheus" -> d.access != "direct") cfg.provision.datasources.settings.datasources;
          message = "services.grafana.provision.datasources: a prometheus datasource cannot use access = \"direct\"";
        }
        {
          assertion = cfg.settings.security.secret_key != null;
          message = "services.grafana.settings.security.secret_key has no default since NixOS 26.05: set one (through Grafana's $__file{} provider)";
        }
      ];
    }
  )
]
