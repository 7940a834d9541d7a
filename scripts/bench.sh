#!/usr/bin/env bash
# The benchmarks of bench/README.md in one command: installs the load tools (pinned), builds in
# release mode, runs the criterion filter benchmark, then `kyc-bench run`, which starts the stack
# and its references (nginx, pgbench), prints one row per figure and writes bench/results/.
#   scripts/bench.sh            every figure at full length (about 15 minutes on 2 cores)
#   scripts/bench.sh --quick    a few seconds per figure on the debug build (CI runs this; it
#                               asserts no timing and writes target/bench/, not bench/results/)
#   scripts/bench.sh --only 1,2 some figures
set -euo pipefail
cd "$(dirname "$0")/.."
WRK_VERSION=4.1.0-3+b2           # Debian bookworm
NGINX_VERSION=1.22.1-9+deb12u11  # Debian bookworm-security, nginx-light
OHA_VERSION=1.16.0               # crates.io

quick=
for a in "$@"; do [ "$a" = --quick ] && quick=1; done
bash scripts/setup.sh

apt_install() {
  if command -v apt-get >/dev/null; then
    [ "$(id -u)" = 0 ] && sudo= || sudo=sudo
    $sudo apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null \
      || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${@%%=*}" >/dev/null
  else
    echo "[bench] install $* (Debian package names)" >&2; exit 1
  fi
}
command -v wrk >/dev/null || { echo "[bench] installing wrk $WRK_VERSION"; apt_install "wrk=$WRK_VERSION"; }
command -v nginx >/dev/null || { echo "[bench] installing nginx-light $NGINX_VERSION"; apt_install "nginx-light=$NGINX_VERSION"; }
command -v pgbench >/dev/null || { echo "[bench] installing pgbench"; apt_install postgresql-contrib; }
if ! oha --version 2>/dev/null | grep -q " $OHA_VERSION"; then
  echo "[bench] installing oha $OHA_VERSION (crates.io; a few minutes the first time)"
  cargo install oha --version "$OHA_VERSION" --locked --quiet
fi
# Debian starts nginx on :80 when it installs it; the benchmark runs its own.
{ service nginx stop || true; } >/dev/null 2>&1

# Figure 4 runs pgbench and the status load with 400 clients each.
maxconn=$(psql -h 127.0.0.1 -U postgres -tAc 'SHOW max_connections' 2>/dev/null || echo 0)
if [ "${maxconn:-0}" -lt 500 ]; then
  echo "[bench] PostgreSQL max_connections is ${maxconn:-unknown}; setting 600 and restarting it (figure 4 needs 400 clients)"
  psql -h 127.0.0.1 -U postgres -qc 'ALTER SYSTEM SET max_connections = 600'
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster "$(pg_lsclusters -h | awk 'NR==1{print $1}')" "$(pg_lsclusters -h | awk 'NR==1{print $2}')" restart
  else
    service postgresql restart
  fi
  for _ in $(seq 1 50); do pg_isready -h 127.0.0.1 -q && break; sleep 0.2; done
fi
if ! PGPASSWORD=kyc_password psql -h 127.0.0.1 -U kyc_user -d kyc_pgbench -tAc 'SELECT 1 FROM pgbench_accounts LIMIT 1' >/dev/null 2>&1; then
  echo "[bench] preparing the pgbench database kyc_pgbench (scale 10)"
  PGPASSWORD=kyc_password psql -h 127.0.0.1 -U kyc_user -d kyc_db -qc 'CREATE DATABASE kyc_pgbench' 2>/dev/null || true
  PGPASSWORD=kyc_password pgbench -h 127.0.0.1 -U kyc_user -i -s 10 -q kyc_pgbench >/dev/null
fi

bash scripts/build-filters.sh
if [ -n "$quick" ]; then
  # Quick mode says nothing about speed, so it reuses the debug build the tests made: the same
  # command, since a subset of packages would resolve other dependency features and rebuild them.
  echo "[bench] building (debug: --quick measures nothing)"
  cargo build --workspace --all-targets
  echo "[bench] figure 3: criterion, each filter through the edge's host (--quick)"
  cargo bench --profile dev --workspace --bench filters -- --quick
  bin_dir=target/debug
else
  echo "[bench] building (release)"
  cargo build --release -p kyc-service -p kyc-sandbox -p kyc-edge -p kyc-bench
  echo "[bench] figure 3: criterion, each filter through the edge's host"
  cargo bench -p kyc-edge --bench filters
  bin_dir=target/release
fi

# Figure 6 holds 10,000 sockets in the client, 20,000 in the edge and 10,000 in the service.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
"$bin_dir/kyc-bench" run --bin-dir "$bin_dir" "$@"
