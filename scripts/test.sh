#!/usr/bin/env bash
# Runs every test: unit tests and integration tests against real PostgreSQL and Redis (started
# and prepared by scripts/setup.sh), including the gateway tests that run the built .wasm filters
# in kyc-edge in front of the real service. Each integration test gets its own database.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# kyc-vision's tests read real cards with the real models: install them (a no-op when verified).
bash scripts/install-vision.sh

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "[test] installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# Databases left by an interrupted earlier run.
stale=$(PGPASSWORD=kyc_password psql -h 127.0.0.1 -U kyc_user -d kyc_db -tAc \
  "SELECT datname FROM pg_database WHERE datname LIKE 'kyc\_test\_%'")
for db in $stale; do
  PGPASSWORD=kyc_password psql -h 127.0.0.1 -U kyc_user -d kyc_db -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
done

# The gateway tests (edge/tests) load the built .wasm filters from target/filters.
bash scripts/build-filters.sh
# The browser tests (edge/tests/browser.rs) drive Debian's Chromium through the edge to the
# liveness page in web/dist (built with wasm-bindgen; installs wasm-bindgen-cli on first use).
bash scripts/install-browser.sh
bash scripts/build-web.sh
cargo test --manifest-path web/quality/Cargo.toml

cargo nextest run --workspace --no-fail-fast "$@"
