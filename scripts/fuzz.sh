#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ (cargo fuzz, libFuzzer) and prints executions and crashes per target.
#
#   scripts/fuzz.sh --smoke                 each target for 20 s, built unoptimised (CI: .ci/run)
#   scripts/fuzz.sh --seconds 600           each target for 10 minutes (local runs)
#   scripts/fuzz.sh --seconds 120 gcra      only the named targets
#   scripts/fuzz.sh --sanitizer address ... with AddressSanitizer (default: none; the code is safe Rust,
#                                           and without ASan builds and runs are several times faster)
#
# Exits non-zero when a target crashes (a panic, a failed invariant, a timeout or running out of
# memory); the input is kept in fuzz/artifacts/<target>/ and cargo fuzz prints how to replay it.
# Runs start from the committed seeds in fuzz/corpus/<target>/ and keep what they find in
# fuzz/.work/corpus/<target>/ (not committed). Installs cargo-fuzz when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.1
seconds=""
sanitizer=none
# Release builds for real runs. The smoke builds with --dev: a cold optimised build of every target
# (wasmtime included, for host_calls) cost CI about 15 minutes, and 20 seconds of fuzzing do not
# need the speed; debug assertions and overflow checks stay on either way.
profile=--release
targets=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --smoke) seconds=20; profile=--dev ;;
        --dev) profile=--dev ;;
        --seconds) seconds="${2:?--seconds needs a number}"; shift ;;
        --sanitizer) sanitizer="${2:?--sanitizer needs a name}"; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1") ;;
    esac
    shift
done
if [[ -z "$seconds" ]]; then
    echo "usage: scripts/fuzz.sh --smoke | --seconds N [--sanitizer none|address] [target...]" >&2
    exit 2
fi

# cargo fuzz needs unstable rustc flags (-Zsanitizer, sancov passes); the toolchain is stable.
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

installed=$(cargo fuzz --version 2>/dev/null | awk '{print $2}' || true)
if [[ "$installed" != "$CARGO_FUZZ_VERSION" ]]; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION (found: ${installed:-none})"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

if [[ ${#targets[@]} -eq 0 ]]; then
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

mkdir -p fuzz/.work
echo "== cargo fuzz build $profile (all targets, sanitizer: $sanitizer)"
if ! cargo fuzz build "$profile" --fuzz-dir fuzz --sanitizer "$sanitizer" >fuzz/.work/build.log 2>&1; then
    tail -n 40 fuzz/.work/build.log
    echo "fuzz.sh: the build failed (fuzz/.work/build.log)" >&2
    exit 1
fi
tail -n 1 fuzz/.work/build.log

# Inputs beyond this many bytes are not tried: uploads and images need room, the rest do not.
max_len() {
    case "$1" in
        multipart_upload|image_header) echo 16384 ;;
        *) echo 4096 ;;
    esac
}

failed=0
rows=()
for t in "${targets[@]}"; do
    seeds="fuzz/corpus/$t"
    work="fuzz/.work/corpus/$t"
    artifacts="fuzz/artifacts/$t"
    log="fuzz/.work/$t.log"
    mkdir -p "$seeds" "$work" "$artifacts"
    before=$(find "$artifacts" -type f | wc -l)
    echo "== $t: ${seconds}s"
    set +e
    cargo fuzz run "$profile" --fuzz-dir fuzz --sanitizer "$sanitizer" "$t" "$work" "$seeds" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="$(max_len "$t")" \
        -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -oE '^stat::number_of_executed_units: [0-9]+' "$log" | awk '{print $2}' | tail -n 1)
    [[ -n "$execs" ]] || execs=$(grep -oE '^Done [0-9]+ runs' "$log" | awk '{print $2}' | tail -n 1)
    [[ -n "$execs" ]] || execs=$(grep -oE '^#[0-9]+' "$log" | tr -d '#' | tail -n 1)
    crashes=$(( $(find "$artifacts" -type f | wc -l) - before ))
    if [[ $rc -ne 0 && $crashes -eq 0 ]]; then crashes=1; fi
    if [[ $rc -ne 0 ]]; then
        failed=1
        echo "!! $t failed (exit $rc); the end of its log ($log):"
        tail -n 30 "$log"
    fi
    corpus=$(find "$work" -type f | wc -l)
    rows+=("$(printf '%-18s %8ss %12s %10s %8s' "$t" "$seconds" "${execs:-?}" "$corpus" "$crashes")")
done

echo
printf '%-18s %9s %12s %10s %8s\n' target time execs corpus crashes
printf '%s\n' "${rows[@]}"
exit "$failed"
