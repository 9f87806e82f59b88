# The uplinkd controller: the `uplinkd` daemon and the `uplinkctl` CLI.
# Built from this directory (pyproject.toml); the unit tests, which need no root, run in the
# check phase. Call it with python3Packages.callPackage (the flake's overlay does).
{
  lib,
  buildPythonApplication,
  setuptools,
  cryptography,
  pydantic,
  pyroute2,
  pyudev,
  prometheus-client,
  dbus-fast,
  systemd-python,
  pytestCheckHook,
  pytest-timeout,
  hypothesis,
}:
let
  pyproject = lib.importTOML ./pyproject.toml;
in
buildPythonApplication {
  pname = "uplinkd";
  inherit (pyproject.project) version;
  pyproject = true;

  # The package, and from the repository around it what the check phase reads: pytest.ini
  # and tests/unit. Nothing else, so editing the README or the docs rebuilds nothing (and
  # restarts no service).
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ./pyproject.toml
      ./uplinkd
      (lib.fileset.maybeMissing ../pytest.ini)
      ../tests/unit
    ];
  };
  sourceRoot = "source/controller";

  build-system = [ setuptools ];

  dependencies = [
    cryptography # X25519: a WireGuard private key's public key
    pydantic
    pyroute2
    pyudev
    prometheus-client # uplinkd-exporter
    dbus-fast # ModemManager over the system bus (modem uplinks)
    systemd-python # logging to the journal (pyproject's `systemd` extra)
  ];

  nativeCheckInputs = [
    pytestCheckHook
    pytest-timeout
    hypothesis # the fake-kernel property test
  ];
  enabledTestPaths = [ "../tests/unit" ];

  pythonImportsCheck = [
    "uplinkd.cli"
    "uplinkd.daemon"
    "uplinkd.exporter.server"
  ];

  meta = {
    description = pyproject.project.description;
    license = lib.licenses.mit;
    mainProgram = "uplinkd";
    platforms = lib.platforms.linux;
  };
}
