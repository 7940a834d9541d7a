#!/usr/bin/env bash
# Builds the liveness page into web/dist: the frame-quality module (web/quality, Rust) compiled for
# wasm32-unknown-unknown and bound with wasm-bindgen-cli (quality.js + quality_bg.wasm), next to the
# page itself (liveness.html, liveness.js, liveness.css). The service serves that directory at /demo/.
#
#   bash scripts/build-web.sh [OUT_DIR]     # default: web/dist
#
# wasm-bindgen-cli must be the same version as the wasm-bindgen crate in web/quality/Cargo.lock
# (the CLI refuses a module built by another version); it is installed from crates.io when missing,
# with its own Cargo.lock (--locked) when the registry still has every crate that lock names, and
# otherwise resolved afresh (a locked dependency can be yanked: webpki-roots 1.0.11 of 0.2.130's).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/web/dist}
[[ $out = /* ]] || out=$PWD/$out
target=wasm32-unknown-unknown
build_dir=$repo/target/web-build
say() { printf '\033[1m[build-web]\033[0m %s\n' "$*"; }

cd "$repo"

if command -v rustup >/dev/null 2>&1; then
  if ! rustup target list --installed | grep -qx "$target"; then
    say "adding the $target target"
    rustup target add "$target"
  fi
else
  say "rustup not found; assuming the toolchain already has $target" >&2
fi

# The version the lock file pins: the line after `name = "wasm-bindgen"`.
version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' \
  web/quality/Cargo.lock)
if [ -z "$version" ]; then
  echo "[build-web] no wasm-bindgen in web/quality/Cargo.lock" >&2
  exit 1
fi
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$version" ]; then
  say "installing wasm-bindgen-cli $version (found: ${have:-none})"
  if ! cargo install wasm-bindgen-cli --version "=$version" --locked; then
    say "its locked dependencies do not resolve; installing wasm-bindgen-cli $version unlocked"
    cargo install wasm-bindgen-cli --version "=$version"
  fi
fi

say "building web/quality for $target"
cargo build --release --locked --target "$target" --target-dir "$build_dir" \
  --manifest-path web/quality/Cargo.toml

mkdir -p "$out"
wasm-bindgen --target web --no-typescript --out-dir "$out" --out-name quality \
  "$build_dir/$target/release/kyc_web_quality.wasm"
cp web/liveness.html web/liveness.js web/liveness.css "$out/"

say "page in $out:"
for file in "$out"/*; do
  printf '%10d bytes  %s\n' "$(wc -c <"$file")" "$file"
done
