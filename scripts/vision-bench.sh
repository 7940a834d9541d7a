#!/usr/bin/env bash
# OCR latency per card: kyc-vision (release build) against the Python reference it reproduces,
# rapidocr-onnxruntime 1.4.4 on the same ONNX Runtime 1.31.1 and the same models, on the same
# generated cards, at 1 and 2 threads, each pair run a moment apart; and how many cards both read
# line for line alike. Then face comparison per pair (on one thread, and on two as `serve` reads
# a pair) and landmarks per liveness frame (with OPENBLAS_NUM_THREADS=1, `kyc-vision bench-face`),
# and the resident memory of `kyc-vision serve` with every model loaded and after a card, a
# comparison and a liveness check.
#
#   scripts/vision-bench.sh              10 cards, 3 alternating rounds of each OCR
#   scripts/vision-bench.sh --cards 30 --rounds 5
#   scripts/vision-bench.sh --quick      3 cards, 1 round (CI: the script runs, nothing is asserted on time)
#
# The reference lives in a venv of its own (.tmp/vision-ref, pinned versions from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
cards=10
ocr_rounds=3
while [[ $# -gt 0 ]]; do
    case "$1" in
        --cards) cards="${2:?--cards needs a number}"; shift ;;
        --rounds) ocr_rounds="${2:?--rounds needs a number}"; shift ;;
        --quick) cards=3 ocr_rounds=1 ;;
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

# Rounds alternate the two (kyc-vision, reference, kyc-vision, ...), so that a slow minute of the
# machine falls on both; a card's time is its median over the rounds.
for t in 1 2; do
    for r in $(seq 1 "$ocr_rounds"); do
        echo "== $t thread(s), round $r of $ocr_rounds: kyc-vision, then the reference"
        target/release/kyc-vision bench --threads "$t" "${files[@]}" > "$out/rust-$t-$r.json"
        reference "$t" "${files[@]}" > "$out/python-$t-$r.json"
    done
done

python3 - "$out" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
print()
print(f"{'threads':>7} {'cards':>5} {'kyc-vision ms':>14} {'reference ms':>13} {'ratio':>6} {'same lines':>11}")
for t in (1, 2):
    def runs(name):
        files = sorted(glob.glob(f"{out}/{name}-{t}-*.json"))
        rounds = [json.load(open(f))["results"] for f in files]
        # the first round's lines; each card's time, the median over the rounds
        return len(files), [dict(card, ms=statistics.median(r[i]["ms"] for r in rounds))
                            for i, card in enumerate(rounds[0])]
    n, rust = runs("rust")
    _, ref = runs("python")
    r = statistics.median(x["ms"] for x in rust)
    p = statistics.median(x["ms"] for x in ref)
    same = sum(a["lines"] == b["lines"] for a, b in zip(rust, ref))
    print(f"{t:>7} {len(rust):>5} {r:>14.0f} {p:>13.0f} {r / p:>6.2f} {same:>5}/{len(rust)}")
    for a, b in zip(rust, ref):
        if a["lines"] != b["lines"]:
            diff = [(x, y) for x, y in zip(a["lines"], b["lines"]) if x != y]
            print(f"        {a['image']}: {len(a['lines'])} vs {len(b['lines'])} lines; first differences: {diff[:2]}")
print(f"\nmedian over the cards of each card's median over {n} alternating round(s); ratio = kyc-vision / reference (target <= 1.0)")
PY

echo
echo "== face comparison and landmarks (kyc-vision bench-face, OPENBLAS_NUM_THREADS=1)"
rounds=5
[[ $cards -le 3 ]] && rounds=1
OPENBLAS_NUM_THREADS=1 target/release/kyc-vision bench-face --rounds "$rounds" > "$out/face.json"
python3 - "$out/face.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"face comparison per pair   {r['compare_ms']:7.1f} ms  (median of {r['pairs']} pairs, one thread; target <= 100)")
print(f"  both images at once        {r['compare_2_threads_ms']:5.1f} ms  (two threads: what serve does with --threads 2, its default)")
print(f"landmarks per frame        {r['landmarks_ms']:7.1f} ms  (median of {r['frames']} frames of {r['frame_size'][0]}x{r['frame_size'][1]}; target <= 60)")
print(f"  the same frames at 320x240 {r['landmarks_320x240_ms']:5.1f} ms  (the liveness page's frame size, web/liveness.js)")
PY

echo
echo "== resident memory of kyc-vision serve (1 worker)"
port=19299
target/release/kyc-vision serve --listen 127.0.0.1:$port > "$out/serve.log" 2>&1 &
serve_pid=$!
trap 'kill $serve_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
    sleep 0.1
done
# serve re-executes itself in place (exec, allocator settings): the same process id.
pid=$serve_pid
rss() { awk '/^(VmRSS|VmHWM)/{printf "%s %d MiB  ", $1, $2/1024}' "/proc/$pid/status"; }
echo "loaded:            $(rss)"
python3 - "$port" "$out" <<'PY'
import base64, glob, json, sys, urllib.request
port, out = sys.argv[1], sys.argv[2]
b64 = lambda p: base64.b64encode(open(p, "rb").read()).decode()
def post(path, key, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(),
                                 {"Content-Type": "application/json", "X-Api-Key": key})
    return json.load(urllib.request.urlopen(req, timeout=120))
card = sorted(glob.glob(f"{out}/cards/*/front.jpg"))[0]
frames = sorted(glob.glob(f"{out}/cards/liveness/0/blink_*.jpg"))
post("/v1/idcard/ocr", "ocr-api-key", {"image": b64(card)})
post("/v1/face/compare", "face-api-key", {"image_a": b64(card), "image_b": b64(frames[0])})
r = post("/v1/liveness/check", "liveness-api-key", {"action": "blink", "frames": [b64(f) for f in frames]})
print(f"liveness check on {len(frames)} frames: passed={r['passed']} score={r['score']}")
PY
echo "after the calls:   $(rss)   (target: VmRSS <= 400 MiB)"

