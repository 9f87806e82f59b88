#!/usr/bin/env bash
# The whole test suite: lint and types, Nix parsing, then every pytest tier
# (unit, nix, netns, vm). Needs root for the netns and vm tiers.
# Extra arguments go to pytest (e.g. `scripts/test.sh -m "not vm"`); without any, the vm tier
# runs beside the others (see below).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
"$here/scripts/setup.sh"

echo "== ruff"
python3 -m ruff check --config controller/pyproject.toml controller harness tests bench
echo "== mypy --strict"
(cd controller && python3 -m mypy --strict uplinkd ../harness)
echo "== import layers"
(cd controller && lint-imports --no-cache)
echo "== nix-instantiate --parse"
find . -name '*.nix' -not -path './.git/*' -print0 | while IFS= read -r -d '' f; do
  nix-instantiate --parse "$f" >/dev/null || { echo "parse error: $f"; exit 1; }
done
echo "== pytest"
if (($#)); then
  exec python3 -m pytest -p no:cacheprovider "$@"
fi
# The vm tier keeps one core busy in QEMU (TCG) while the netns tier mostly waits on timers
# and packets, so the two run side by side: the suite takes about as long as its longest tier
# instead of their sum (CI must stay under 30 minutes).
vm_log=$(mktemp /tmp/uplinkd-vm-tier.XXXXXX.log)
python3 -m pytest -p no:cacheprovider -m vm tests/vm >"$vm_log" 2>&1 &
vm_pid=$!
status=0
python3 -m pytest -p no:cacheprovider -m "not vm" || status=$?
vm_status=0
wait "$vm_pid" || vm_status=$?
echo "== pytest, vm tier (ran beside the others)"
cat "$vm_log"
rm -f "$vm_log"
# pytest exits 5 when it collected nothing (no vm tests here): that is not a failure
if ((vm_status == 5)); then vm_status=0; fi
exit $((status != 0 ? status : vm_status))
