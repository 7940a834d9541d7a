#!/usr/bin/env bash
# The static checks of observability/, for CI: both Prometheus configs (with the rule files they
# load), the rules, the rules' unit tests, and every Grafana panel query. Installs Debian's
# `prometheus` package when promtool is missing. Exits non-zero on the first failure.
#   observability/scripts/check-observability.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
  echo "[observability] promtool missing: installing Debian's prometheus package"
  sudo=
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
echo "[observability] $(promtool --version 2>&1 | head -1)"

# rule_files are relative to each config file, so both configs load rules/*.yml from here
# (the compose one is mounted next to the rules directory the same way).
for config in prometheus.yml prometheus.compose.yml; do
  echo "[observability] promtool check config $config"
  promtool check config "$config"
done

echo "[observability] promtool check rules rules/*.yml"
promtool check rules rules/*.yml

echo "[observability] promtool test rules tests/*.yml"
promtool test rules tests/*.yml

echo "[observability] dashboard queries"
python3 scripts/dashboard_queries.py check

echo "[observability] all checks passed"
