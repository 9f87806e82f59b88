# The home router (home-router.nix) watched: Prometheus scrapes uplinkd's metrics, Grafana
# shows them on the provisioned uplinkd dashboard (contrib/grafana/uplinkd.json), and the LAN
# gets the status page at http://192.168.1.1:8080 (drain/undrain with a token).
#
# Everything listens on the router itself except the status page, which listens on the LAN
# address only. Reach Grafana with `ssh -L 3000:127.0.0.1:3000 router`.
{ ... }:
{
  imports = [ ../home-router.nix ];

  services.uplinkd.exporter.enable = true; # 127.0.0.1:9477/metrics

  services.uplinkd.statusPage = {
    enable = true;
    address = "192.168.1.1";
    openFirewall = [ "br-lan" ];
    drain = {
      enable = true;
      # 16+ random characters, e.g. `head -c 24 /dev/urandom | base64 > /etc/uplinkd/page-token`;
      # kept out of the Nix store, read by systemd as a credential.
      tokenFile = "/etc/uplinkd/page-token";
    };
  };

  services.prometheus = {
    enable = true;
    listenAddress = "127.0.0.1";
    retentionTime = "90d";
    scrapeConfigs = [
      {
        job_name = "uplinkd";
        scrape_interval = "15s";
        static_configs = [ { targets = [ "127.0.0.1:9477" ]; } ];
      }
    ];
  };

  services.grafana = {
    enable = true;
    settings.server = {
      http_addr = "127.0.0.1";
      http_port = 3000;
    };
    # Required since NixOS 26.05 (no default). Grafana reads it from the file at start, so it
    # stays out of the Nix store: `openssl rand -hex 32 > /etc/grafana/secret-key`, readable by
    # the grafana user only.
    settings.security.secret_key = "$__file{/etc/grafana/secret-key}";
    provision = {
      enable = true;
      datasources.settings.datasources = [
        {
          name = "Prometheus";
          type = "prometheus";
          uid = "prometheus";
          url = "http://127.0.0.1:9090";
          isDefault = true;
        }
      ];
      dashboards.settings.providers = [
        {
          name = "uplinkd";
          folder = "Routers";
          options.path = ../../contrib/grafana; # holds uplinkd.json
        }
      ];
    };
  };
}
