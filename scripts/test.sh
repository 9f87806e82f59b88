#!/usr/bin/env bash
# The whole test suite: lint and types, Nix parsing, then every pytest tier
# (unit, nix, netns, vm). Needs root for the netns and vm tiers.
# Extra arguments go to pytest (e.g. `scripts/test.sh -m "not vm"`).
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
exec python3 -m pytest -p no:cacheprovider "$@"
