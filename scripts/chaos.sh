#!/usr/bin/env bash
# The chaos suite (tests/chaos/README.md): faults under load against the real stack, then an audit.
#
#   scripts/chaos.sh                    every scenario, about 5 minutes
#   scripts/chaos.sh --smoke            a few seconds of load around each fault (CI: .ci/run)
#   scripts/chaos.sh --only redis-stop  one scenario (or several, comma-separated)
#
# It starts a PostgreSQL cluster and a Redis server of its own (ports 55432 and 56379), so
# stopping them touches nothing else, and kyc-sandbox, kyc-service and kyc-edge on 59100, 58080
# and 58000/58001. Prints one row per scenario; exits 1 when a request is lost or stuck or a check
# fails. Every process's output stays in .tmp/chaos/out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
command -v redis-server >/dev/null || { echo "chaos.sh: redis-server is missing (scripts/setup.sh installs it)" >&2; exit 1; }
bash scripts/build-filters.sh
# The tests' own build (every target of the workspace): a subset of packages would resolve other
# dependency features and rebuild them, so after scripts/test.sh (as in CI) nothing is rebuilt.
cargo build --quiet --workspace --all-targets
exec target/debug/kyc-chaos "$@"
