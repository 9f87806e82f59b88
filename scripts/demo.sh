#!/usr/bin/env bash
# The lab demo: three uplinks in network namespaces, the real controller, flows, a drain
# and a failure. Needs root; no hardware; cleans up after itself.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup.sh"
exec python3 -m uplinkd.entry lab "$@"
