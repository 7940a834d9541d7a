#!/usr/bin/env bash
# Builds the four gateway filters (kong-plugins/kyc_*) for wasm32-wasip1 in release and puts each
# <name>.wasm next to its <name>.meta.json in one directory, ready to be Kong's wasm_filters_path.
#
#   bash scripts/build-filters.sh [OUT_DIR]     # default: target/filters
#
# Each filter crate is its own Cargo workspace (the repository's workspace does not list them), so
# they are built one after the other, sharing one target directory and their committed Cargo.lock.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/target/filters}
[[ $out = /* ]] || out=$PWD/$out
filters=(kyc_jwt kyc_rate_limit kyc_idempotency kyc_pii_mask)
target=wasm32-wasip1
build_dir=$repo/target/filters-build

cd "$repo"

if command -v rustup >/dev/null 2>&1; then
  if ! rustup target list --installed | grep -qx "$target"; then
    echo "[build-filters] adding the $target target"
    rustup target add "$target"
  fi
else
  echo "[build-filters] rustup not found; assuming the toolchain already has $target" >&2
fi

for name in "${filters[@]}"; do
  echo "[build-filters] building $name"
  cargo build --release --locked --target "$target" --target-dir "$build_dir" \
    --manifest-path "kong-plugins/$name/Cargo.toml"
done

mkdir -p "$out"
for name in "${filters[@]}"; do
  wasm=$build_dir/$target/release/$name.wasm
  meta=kong-plugins/$name/$name.meta.json
  # Kong rejects a module without the proxy-wasm ABI export, and will not start on bad metadata.
  if ! grep -qa proxy_abi_version_0_2_1 "$wasm"; then
    echo "[build-filters] $wasm does not export proxy_abi_version_0_2_1" >&2
    exit 1
  fi
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$meta" <<'PY'
import json, sys
with open(sys.argv[1], encoding="utf-8") as f:
    meta = json.load(f)
if not isinstance(meta.get("config_schema"), dict):
    sys.exit(f"{sys.argv[1]}: config_schema must be a JSON object")
PY
  fi
  cp "$wasm" "$meta" "$out/"
done

echo "[build-filters] filters in $out:"
for name in "${filters[@]}"; do
  for file in "$out/$name.wasm" "$out/$name.meta.json"; do
    printf '%10d bytes  %s\n' "$(wc -c <"$file")" "$file"
  done
done
