# What the router shows: Prometheus metrics and the LAN status page, both served by
# uplinkd-exporter, a separate unit beside the controller. The exporter reads the controller's
# control socket (status, with the controller's counters) and the kernel's interface counters;
# the controller itself serves no HTTP, so nothing here can stall or crash the routing.
#
#   services.uplinkd.exporter    /metrics, on 127.0.0.1:9477 by default
#   services.uplinkd.statusPage  one page for the LAN, on the LAN address only; read-only
#                                unless drain is enabled with a token file
{
  config,
  lib,
  ...
}:
let
  inherit (lib) mkOption mkEnableOption types;
  helpers = import ./lib.nix { inherit lib; };
  cfg = config.services.uplinkd;
  exp = cfg.exporter;
  page = cfg.statusPage;

  # "[::1]:9477" for IPv6, "127.0.0.1:9477" for IPv4
  hostPort =
    address: port:
    if lib.hasInfix ":" address then "[${address}]:${toString port}" else "${address}:${toString port}";
  # What is served; a page without its address (or drain without a token) fails an assertion
  # below, and until then is left out here rather than rendered half.
  pageOn = page.enable && page.address != null;
  drainOn = pageOn && page.drain.enable && page.drain.tokenFile != null;
  hostLabel = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
  literalIp = types.strMatching "([0-9]{1,3}(\\.[0-9]{1,3}){3})|([0-9a-fA-F:]*:[0-9a-fA-F:.]*)";
in
{
  options.services.uplinkd = {
    exporter = {
      enable = mkEnableOption "Prometheus metrics from uplinkd (the uplinkd-exporter unit)";
      listenAddress = mkOption {
        type = literalIp;
        default = "127.0.0.1";
        description = ''
          Address `/metrics` is served on: a literal IPv4 or IPv6 address, bound alone (a
          connection to any other address of the router is refused). The default keeps the
          metrics on the router itself, for a local Prometheus.
        '';
      };
      port = mkOption {
        type = types.port;
        default = 9477;
        description = "TCP port of `/metrics`.";
      };
    };

    statusPage = {
      enable = mkEnableOption "the LAN status page (served by the uplinkd-exporter unit)";
      address = mkOption {
        type = types.nullOr literalIp;
        default = null;
        example = "192.168.1.1";
        description = ''
          The router's LAN address; the page is served on it and on nothing else. Required
          when the page is enabled.
        '';
      };
      port = mkOption {
        type = types.port;
        default = 8080;
        description = "TCP port of the status page.";
      };
      hostNames = mkOption {
        # host names (RFC 1123 labels), as uplinkd-exporter's --page-host takes them
        type = types.listOf (types.strMatching "${hostLabel}(\\.${hostLabel})*\\.?(:[0-9]{1,5})?");
        default = [ ];
        example = [ "router.lan" ];
        description = ''
          Names the page is also reached by (`NAME`, or `NAME:PORT` for another port than
          `port`, e.g. behind a reverse proxy). The page answers only requests whose Host header
          is its own `address:port` or one of these, so that a web page which points its own
          DNS name at the router (DNS rebinding) cannot read it from a LAN browser.
        '';
      };
      openFirewall = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "br-lan" ];
        description = "Interfaces on which the NixOS firewall lets the page's port in.";
      };
      sampleInterval = mkOption {
        type = types.numbers.between 1 3600;
        default = 10;
        description = "Seconds between the samples behind the page's RTT and loss history.";
      };
      drain = {
        enable = mkEnableOption "drain and undrain buttons on the status page (need the token)";
        tokenFile = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "/run/secrets/uplinkd-page-token";
          description = ''
            File holding the token (16 characters or more) the page asks for before a drain or
            undrain. Read by systemd as a credential, so it may be readable by root only; keep
            it out of the Nix store (a string path, not a Nix path).
          '';
        };
      };
    };
  };

  config = lib.mkIf (cfg.enable && (exp.enable || page.enable)) {
    assertions = [
      {
        assertion = !page.enable || page.address != null;
        message = "services.uplinkd.statusPage.address: set the router's LAN address (e.g. \"192.168.1.1\"); the page is served there only.";
      }
      {
        assertion = !page.drain.enable || page.drain.tokenFile != null;
        message = "services.uplinkd.statusPage.drain.tokenFile: drain from the page needs a token; point this at a file holding 16 or more random characters.";
      }
      {
        assertion = page.drain.tokenFile == null || !lib.hasPrefix builtins.storeDir page.drain.tokenFile;
        message = "services.uplinkd.statusPage.drain.tokenFile: the token is in the Nix store, readable by every user; give a path outside it, as a string.";
      }
    ];

    networking.firewall.interfaces = lib.genAttrs page.openFirewall (_: {
      allowedTCPPorts = [ page.port ];
    });

    systemd.services.uplinkd-exporter = {
      description = "uplinkd metrics and status page";
      wantedBy = [ "multi-user.target" ];
      after = [
        "uplinkd.service"
        "network.target"
      ];
      wants = [ "uplinkd.service" ];
      serviceConfig = helpers.sandbox // {
        Type = "notify";
        NotifyAccess = "main";
        ExecStart = lib.escapeShellArgs (
          [
            (lib.getExe' cfg.package "uplinkd-exporter")
            "--socket"
            cfg.settings.control.socket
            "--listen"
            (if exp.enable then hostPort exp.listenAddress exp.port else "")
          ]
          ++ lib.optionals pageOn [
            "--page"
            (hostPort page.address page.port)
            "--sample-interval"
            (toString page.sampleInterval)
          ]
          ++ lib.optionals pageOn (lib.concatMap (name: [ "--page-host" name ]) page.hostNames)
          ++ lib.optionals drainOn [
            "--page-token-file"
            "%d/page-token"
          ]
        );
        LoadCredential = lib.optional drainOn "page-token:${page.drain.tokenFile}";
        # The LAN address may not be there yet at boot (networkd is still configuring it):
        # the bind fails and the unit is started again a few seconds later.
        Restart = "always";
        RestartSec = "5s";

        # Reads the control socket (group uplinkd) and /sys; writes nothing, needs no capability.
        DynamicUser = true;
        SupplementaryGroups = [ "uplinkd" ];
        CapabilityBoundingSet = [ "" ];
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
        ];
        SystemCallFilter = [
          "@system-service"
          "~@privileged @resources"
        ];
        MemoryMax = "128M";
        CPUQuota = "20%";
      };
    };
  };
}
