#!/usr/bin/env bash
# OCR latency per card: kyc-vision (release build) against the Python reference it reproduces,
# rapidocr-onnxruntime 1.4.4 on the same ONNX Runtime 1.31.1 and the same models, on the same
# generated cards, at 1 and 2 threads, each pair run a moment apart; and how many cards both read
# line for line alike.
#
#   scripts/vision-bench.sh              10 cards
#   scripts/vision-bench.sh --cards 30
#   scripts/vision-bench.sh --quick      3 cards (CI: the script runs, nothing is asserted on time)
#
# The reference lives in a venv of its own (.tmp/vision-ref, pinned versions from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
cards=10
while [[ $# -gt 0 ]]; do
    case "$1" in
        --cards) cards="${2:?--cards needs a number}"; shift ;;
        --quick) cards=3 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "vision-bench.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

bash scripts/install-vision.sh >/dev/null
venv=.tmp/vision-ref
if ! "$venv/bin/python" -c "import rapidocr_onnxruntime, onnxruntime" 2>/dev/null; then
    echo "== installing the Python reference into $venv (rapidocr-onnxruntime 1.4.4, onnxruntime 1.31.1)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q rapidocr-onnxruntime==1.4.4 onnxruntime==1.31.1
fi
echo "== cargo build --release -p kyc-vision"
cargo build --release -q -p kyc-vision
out=.tmp/vision-bench
rm -rf "$out"
target/release/kyc-vision fixtures --out "$out/cards" --count "$cards" --seed 7 2>/dev/null
mapfile -t files < <(ls "$out"/cards/*/front.jpg)

reference() {
    "$venv/bin/python" - "$@" <<'PY'
import json, sys, time
import cv2
from rapidocr_onnxruntime import RapidOCR
threads, files = int(sys.argv[1]), sys.argv[2:]
engine = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)
images = [cv2.imread(f) for f in files]
engine(images[0])  # warm-up, as kyc-vision bench does
results = []
for f, im in zip(files, images):
    start = time.perf_counter()
    found, _ = engine(im)
    ms = (time.perf_counter() - start) * 1000
    results.append({"image": f, "ms": ms, "lines": [r[1] for r in (found or [])]})
print(json.dumps({"threads": threads, "results": results}, ensure_ascii=False))
PY
}

for t in 1 2; do
    echo "== $t thread(s): kyc-vision, then the reference"
    target/release/kyc-vision bench --threads "$t" "${files[@]}" > "$out/rust-$t.json"
    reference "$t" "${files[@]}" > "$out/python-$t.json"
done

python3 - "$out" <<'PY'
import json, statistics, sys
out = sys.argv[1]
print()
print(f"{'threads':>7} {'cards':>5} {'kyc-vision ms':>14} {'reference ms':>13} {'ratio':>6} {'same lines':>11}")
for t in (1, 2):
    rust = json.load(open(f"{out}/rust-{t}.json"))["results"]
    ref = json.load(open(f"{out}/python-{t}.json"))["results"]
    r = statistics.median(x["ms"] for x in rust)
    p = statistics.median(x["ms"] for x in ref)
    same = sum(a["lines"] == b["lines"] for a, b in zip(rust, ref))
    print(f"{t:>7} {len(rust):>5} {r:>14.0f} {p:>13.0f} {r / p:>6.2f} {same:>5}/{len(rust)}")
    for a, b in zip(rust, ref):
        if a["lines"] != b["lines"]:
            diff = [(x, y) for x, y in zip(a["lines"], b["lines"]) if x != y]
            print(f"        {a['image']}: {len(a['lines'])} vs {len(b['lines'])} lines; first differences: {diff[:2]}")
print("\nmedian per card; ratio = kyc-vision / reference (target <= 1.0)")
PY
