# The controller's probe profiles (controller/uplinkd/config.py, PROFILES): the timings an
# uplink's probes use when a field is left unset. The option descriptions in options.nix are
# written from this table; tests/nix/test_module_eval.py holds it against the controller's own,
# so the two cannot drift apart.
{
  probeProfiles = {
    default = {
      interval = 20.0;
      fast_interval = 0.5;
      down_interval = 2.0;
      timeout = 1.0;
      suspect_after = 1.0;
      down_after = 3;
      up_after = 3;
    };
    fast = {
      interval = 10.0;
      fast_interval = 0.1;
      down_interval = 0.5;
      timeout = 0.2;
      suspect_after = 0.2;
      down_after = 2;
      up_after = 3;
    };
  };
}
