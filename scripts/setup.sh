#!/usr/bin/env bash
# Prepares a machine to run and test kyc-service: the Rust toolchain pieces, PostgreSQL and Redis
# (installed from Debian's packages when absent, started when not running), and the seed's
# database, user and password (kyc_db / kyc_user / kyc_password). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
REDIS_PORT=${REDIS_PORT:-6379}
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- Rust -------------------------------------------------------------------------------------
command -v cargo >/dev/null || { echo "cargo is missing: install Rust with rustup first (https://rustup.rs)" >&2; exit 1; }
if command -v rustup >/dev/null && ! rustup target list --installed | grep -q '^wasm32-wasip1$'; then
  say "adding the wasm32-wasip1 target (for the gateway filters)"
  rustup target add wasm32-wasip1 >/dev/null
fi

# --- PostgreSQL -------------------------------------------------------------------------------
if ! command -v pg_isready >/dev/null || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  if ! pg_isready -q -h "$PGHOST" -p "$PGPORT" 2>/dev/null; then
    as_root true && apt_install postgresql postgresql-client
  fi
fi
if ! pg_isready -q -h "$PGHOST" -p "$PGPORT"; then
  say "starting PostgreSQL"
  ver=$(ls /etc/postgresql | sort -V | tail -n1)
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null || as_root pg_ctlcluster "$ver" main start
  for _ in $(seq 1 30); do pg_isready -q -h "$PGHOST" -p "$PGPORT" && break; sleep 1; done
fi
pg_isready -q -h "$PGHOST" -p "$PGPORT" || { echo "PostgreSQL is not answering on $PGHOST:$PGPORT" >&2; exit 1; }

# Run SQL as a superuser: over TCP as postgres (trust setups), else through the local socket.
pg_super() {
  if psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
    psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtAc "$1"
  else
    as_root runuser -u postgres -- psql -p "$PGPORT" -d postgres -v ON_ERROR_STOP=1 -qtAc "$1"
  fi
}
if [ "$(pg_super "SELECT 1 FROM pg_roles WHERE rolname = 'kyc_user'")" != 1 ]; then
  say "creating role kyc_user"
  pg_super "CREATE ROLE kyc_user LOGIN PASSWORD 'kyc_password' CREATEDB"
else
  # Tests create a database each, so the role needs CREATEDB.
  pg_super "ALTER ROLE kyc_user LOGIN CREATEDB" >/dev/null
fi
if [ "$(pg_super "SELECT 1 FROM pg_database WHERE datname = 'kyc_db'")" != 1 ]; then
  say "creating database kyc_db"
  pg_super "CREATE DATABASE kyc_db OWNER kyc_user"
fi
PGPASSWORD=kyc_password psql -h "$PGHOST" -p "$PGPORT" -U kyc_user -d kyc_db -tAc 'SELECT 1' >/dev/null \
  || { echo "kyc_user cannot log in to kyc_db with its password: check pg_hba.conf" >&2; exit 1; }

# --- Redis ------------------------------------------------------------------------------------
command -v redis-server >/dev/null || apt_install redis-server
if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  say "starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/kyc.log
  for _ in $(seq 1 20); do redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.5; done
fi
redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null || { echo "Redis is not answering on 127.0.0.1:$REDIS_PORT" >&2; exit 1; }

say "PostgreSQL $PGHOST:$PGPORT (kyc_db as kyc_user) and Redis 127.0.0.1:$REDIS_PORT are ready"
