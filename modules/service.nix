# The uplinkd service: its config file (checked by the controller at build time), the unit,
# its user, and the udev rule that starts it when an uplink's USB stick is plugged in.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.uplinkd;
  helpers = import ./lib.nix { inherit lib; };

  settingsFormat = pkgs.formats.json { };
  configFile = settingsFormat.generate "uplinkd.json" (helpers.render cfg.settings);
  configPath = "/etc/uplinkd/config.json";

  # The controller validates its own config: a bad one fails the system build, not the router.
  # The check runs on the build machine, so it is a derivation of the build platform's package
  # set, and it is skipped when the build machine cannot run the host's package (cross builds
  # without emulation); the controller then refuses a bad config when it starts.
  canRunPackage = pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform;
  checkedConfig =
    pkgs.buildPackages.runCommand "uplinkd-config-check"
      {
        nativeBuildInputs = [ cfg.package ];
        preferLocalBuild = true;
      }
      ''
        uplinkctl check ${configFile}
        touch $out
      '';

  usbUplinks = lib.filterAttrs (_: helpers.isUsb) cfg.settings.uplinks;

  usbWantsRule =
    name: uplink:
    lib.concatStringsSep ", " (
      [
        ''ACTION=="add"''
        ''SUBSYSTEM=="net"''
      ]
      ++ helpers.usbRuleKeys uplink.match.usb
      ++ [
        ''TAG+="systemd"''
        ''ENV{SYSTEMD_WANTS}+="uplinkd.service"''
      ]
    );
in
{
  config = lib.mkIf cfg.enable {
    # A matching stick appearing starts the controller if it is not running (after a failure,
    # or when it was stopped by hand). The rule runs after 75-net-description.rules, which
    # imports the ID_* properties, and after the .link file renamed the stick.
    services.udev.extraRules = lib.concatStrings (
      lib.mapAttrsToList (name: uplink: ''
        # uplinkd: uplink ${name}
        ${usbWantsRule name uplink}
      '') usbUplinks
    );

    environment.etc."uplinkd/config.json".source = configFile;
    system.checks = lib.optional (cfg.checkConfig && canRunPackage) checkedConfig;
    warnings = lib.optional (cfg.checkConfig && !canRunPackage) ''
      services.uplinkd.checkConfig: this build machine cannot run uplinkd built for ${pkgs.stdenv.hostPlatform.system}, so the configuration is not checked at build time (the controller refuses a bad one when it starts); set services.uplinkd.checkConfig = false to silence this.'';

    # uplinkctl for the admin; members of group uplinkd may use it without root.
    environment.systemPackages = [ cfg.package ];

    users.users.uplinkd = {
      isSystemUser = true;
      group = "uplinkd";
      description = "uplinkd routing controller";
    };
    users.groups.uplinkd = { };

    systemd.services.uplinkd = {
      description = "uplinkd multi-uplink routing controller";
      wantedBy = [ "multi-user.target" ];
      before = [ "network.target" ];
      wants = [ "network-pre.target" ];
      # After the firewall. NixOS's nftables service replaces only its own tables on a
      # reload (networking.nftables.flushRuleset is false from stateVersion 23.11 on, unless
      # a hand-written `ruleset` is set); with flushRuleset, or any `nft flush ruleset` by
      # someone else, the controller's table goes too. The controller notices (it watches
      # nftables events) and restores its table within a second; established connections
      # keep their NAT and marks in conntrack meanwhile. Starting after the boot-time load
      # avoids doing that work twice. The unit is not PartOf= nftables on purpose:
      # restarting the controller with the firewall would gain nothing.
      after = [
        "network-pre.target"
        "systemd-udevd.service"
        "systemd-networkd.service"
        "nftables.service"
        "firewall.service"
      ];

      # The config lives at a stable path, so a changed config changes no unit: the switch
      # reloads (SIGHUP) instead of restarting. The controller keeps the running config if the
      # new one were invalid. A restart (new package) drops no traffic either: on SIGTERM the
      # controller leaves the kernel as it is, and adopts it again when it starts.
      reloadTriggers = [ configFile ];
      stopIfChanged = false;

      # The controller loads its nftables table with `nft -f -`.
      path = [ pkgs.nftables ];

      # Never give up on the router's routing: back off up to a minute, retry forever.
      startLimitIntervalSec = 0;

      serviceConfig = helpers.sandbox // {
        Type = "notify";
        NotifyAccess = "main";
        ExecStart = lib.escapeShellArgs (
          [
            (lib.getExe' cfg.package "uplinkd")
            "--config"
            configPath
          ]
          ++ cfg.extraArgs
        );
        ExecReload = "${lib.getExe' pkgs.coreutils "kill"} -HUP $MAINPID";
        WatchdogSec = "20s";
        Restart = "on-failure";
        RestartSec = "1s";
        RestartSteps = 6;
        RestartMaxDelaySec = "1min";

        # tunnel key files (modules/lib.nix), never in the store
        LoadCredential = map (c: "${c.id}:${c.path}") (helpers.credentials cfg.settings);

        User = "uplinkd";
        Group = "uplinkd";
        RuntimeDirectory = "uplinkd";
        RuntimeDirectoryMode = "0750";
        StateDirectory = "uplinkd"; # DHCP leases, kept across restarts
        StateDirectoryMode = "0750";
        UMask = "0007";

        # Descriptors: netlink and nftables sockets, probe sockets per uplink and target, DHCP
        # clients, and control-socket clients (which the controller bounds). systemd's default
        # soft limit of 1,024 is too close for comfort; raise it further with a plain
        # definition if you must.
        LimitNOFILE = lib.mkDefault 16384;

        # Exactly what routing needs: netlink writes, nftables, SO_MARK (CAP_NET_ADMIN);
        # probes, SO_BINDTODEVICE and the DHCP client's packet socket (CAP_NET_RAW).
        CapabilityBoundingSet = [
          "CAP_NET_ADMIN"
          "CAP_NET_RAW"
        ];
        AmbientCapabilities = [
          "CAP_NET_ADMIN"
          "CAP_NET_RAW"
        ];
        RestrictAddressFamilies = [
          "AF_UNIX" # control socket, sd_notify, journal
          "AF_NETLINK" # rtnetlink, nfnetlink, udev
          "AF_INET"
          "AF_INET6"
          "AF_PACKET" # DHCP client
        ];
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
        ];
        SystemCallErrorNumber = "EPERM";
      };
    };
  };
}
