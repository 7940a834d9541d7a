#!/usr/bin/env bash
# Installs Debian's headless browser for the browser test (edge/tests/browser.rs): `chromium` and
# its WebDriver, `chromium-driver`. Safe to run again; does nothing when both are present.
set -euo pipefail
say() { printf '\033[1m[install-browser]\033[0m %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  say "present: $(chromium --version 2>/dev/null || echo chromium), $(chromedriver --version 2>/dev/null | cut -d' ' -f1-2)"
  exit 0
fi
say "apt-get install chromium chromium-driver"
as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  chromium chromium-driver >/dev/null
say "installed: $(chromium --version), $(chromedriver --version | cut -d' ' -f1-2)"
