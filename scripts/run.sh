#!/usr/bin/env bash
# Starts the whole local stack: PostgreSQL and Redis (installed and started when missing),
# kyc-vision on :9200 (the on-premises vendor: real OCR, face comparison and liveness, with its
# models from scripts/install-vision.sh) with fixtures for the seed's flow, the vendor sandbox on
# :9100 (for fault injection), kyc-service on :8080 with the seed's config.yaml (its vendor URLs
# pointed at kyc-vision), and the gateway on :8000 (admin :8001): kyc-edge running the built Kong
# filters with declarative/kong.yaml and kong/kong.conf. Ctrl-C stops them all.
#   scripts/run.sh            release build (the first build takes several minutes on 2 cores)
#   scripts/run.sh --debug    debug build, faster to compile
# A vendor URL already set in the environment (KYC__THIRD_PARTY__OCR_SERVICE__URL,
# ..._FACE_SERVICE__URL, ..._LIVENESS_SERVICE__URL) is kept, e.g. http://127.0.0.1:9100 to send
# that vendor's calls to the sandbox and its faults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# kyc-vision's packages and models: a no-op when all are present and verified.
bash scripts/install-vision.sh

profile=release
[ "${1:-}" = "--debug" ] && profile=debug
echo "[run] building the gateway filters (wasm32-wasip1)"
bash scripts/build-filters.sh
echo "[run] building the liveness demo page (web/dist; installs wasm-bindgen-cli on first use)"
bash scripts/build-web.sh
echo "[run] building kyc-service, kyc-vision, kyc-sandbox and kyc-edge ($profile)"
if [ "$profile" = release ]; then
  cargo build --release -p kyc-service -p kyc-vision -p kyc-sandbox -p kyc-edge
else
  cargo build -p kyc-service -p kyc-vision -p kyc-sandbox -p kyc-edge
fi
bin="target/$profile"

# The seed's person on a card kyc-vision reads, with a selfie of the card's portrait and another
# person; the sandbox's own synthetic set (which only the sandbox reads) beside it.
fixtures=.tmp/fixtures
rm -rf "$fixtures"
"$bin/kyc-vision" fixtures --name 张三 --id 11010519491231002X --out "$fixtures" >/dev/null
"$bin/kyc-sandbox" fixtures --name 张三 --id 11010519491231002X --out "$fixtures/sandbox" >/dev/null
# The body of the seed's section 6.1 `ab -T 'multipart/form-data' -p ocr_request.txt` (the service
# reads the boundary from the body's first line, since ab sends no boundary parameter).
{ printf -- '--kycboundary\r\nContent-Disposition: form-data; name="image"; filename="idcard.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
  cat "$fixtures/idcard.jpg"; printf -- '\r\n--kycboundary--\r\n'; } > "$fixtures/ocr_request.txt"
# kyc-vision loads its models (a few seconds) before it listens; /ready answers once it does.
# The seed's three API keys, so the service's liveness calls are accepted too. One worker reads
# one image at a time (2 cores); a queue of 16 lets the seed's `ab -c 10` wait its turn instead
# of being refused with 429 (which the service reports as VENDOR_UNAVAILABLE).
"$bin/kyc-vision" serve --listen 127.0.0.1:9200 --queue 16 \
  --api-key ocr-api-key --api-key face-api-key --api-key liveness-api-key \
  > .tmp/kyc-vision.log 2>&1 &
vision=$!
"$bin/kyc-sandbox" serve --listen 127.0.0.1:9100 > .tmp/kyc-sandbox.log 2>&1 &
sandbox=$!
edge=
trap 'kill $vision $sandbox ${edge:-} 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do curl -fs http://127.0.0.1:9100/health >/dev/null && break; sleep 0.1; done

# The gateway. declarative/kong.yaml names the service by its compose name and takes the JWT secret
# from DECK_KYC_JWT_SECRET (decK's env templating); locally that is config.yaml's jwt_secret.
export DECK_KYC_JWT_SECRET=${DECK_KYC_JWT_SECRET:-$(sed -n 's/^ *jwt_secret: *"\(.*\)".*/\1/p' config.yaml | head -1)}
"$bin/kyc-edge" --conf kong/kong.conf --declarative declarative/kong.yaml --filters target/filters \
  --proxy-listen 0.0.0.0:8000 --admin-listen 127.0.0.1:8001 --resolve kyc-service=127.0.0.1 \
  --access-log logs/kyc-edge-access.log \
  > .tmp/kyc-edge.log 2>&1 &
edge=$!
for _ in $(seq 1 300); do curl -fs http://127.0.0.1:8001/status >/dev/null && break; sleep 0.1; done
if ! kill -0 $edge 2>/dev/null; then
  echo "[run] kyc-edge did not start:" >&2; cat .tmp/kyc-edge.log >&2; exit 1
fi

for _ in $(seq 1 1200); do
  curl -fs http://127.0.0.1:9200/ready >/dev/null && break
  kill -0 $vision 2>/dev/null || break
  sleep 0.1
done
if ! curl -fs http://127.0.0.1:9200/ready >/dev/null; then
  echo "[run] kyc-vision did not become ready:" >&2; cat .tmp/kyc-vision.log >&2; exit 1
fi

export KYC__THIRD_PARTY__OCR_SERVICE__URL=${KYC__THIRD_PARTY__OCR_SERVICE__URL:-http://127.0.0.1:9200}
export KYC__THIRD_PARTY__FACE_SERVICE__URL=${KYC__THIRD_PARTY__FACE_SERVICE__URL:-http://127.0.0.1:9200}
export KYC__THIRD_PARTY__LIVENESS_SERVICE__URL=${KYC__THIRD_PARTY__LIVENESS_SERVICE__URL:-http://127.0.0.1:9200}

cat <<MSG
[run] kyc-vision (the vendor: reads the card with PP-OCRv4, compares faces with dlib) on http://127.0.0.1:9200, log .tmp/kyc-vision.log
[run] vendor URLs: OCR $KYC__THIRD_PARTY__OCR_SERVICE__URL, face $KYC__THIRD_PARTY__FACE_SERVICE__URL, liveness $KYC__THIRD_PARTY__LIVENESS_SERVICE__URL
[run] kyc-sandbox (a SANDBOX, not a real vendor) on http://127.0.0.1:9100 for fault injection, log .tmp/kyc-sandbox.log:
      the service does not call it unless a vendor URL above is set to it (e.g. start with
      KYC__THIRD_PARTY__FACE_SERVICE__URL=http://127.0.0.1:9100), then PUT /sandbox/faults; its own fixtures are in $fixtures/sandbox
[run] fixtures for 张三 / 11010519491231002X in $fixtures (kyc-vision reads them): idcard.jpg, face.jpg (a selfie of the card's portrait),
      face_other.jpg (another person), idcard_photocopy.jpg, idcard_back.jpg, README.txt
[run] kyc-edge (the gateway, in place of Kong) on http://localhost:8000, admin http://localhost:8001, log .tmp/kyc-edge.log, access log logs/kyc-edge-access.log
[run] kyc-service is starting on http://localhost:8080 (logs: stdout and logs/kyc-service.log)
[run] the liveness demo page: http://localhost:8000/demo/liveness
[run] the seed's section 3 flow, from another terminal in $fixtures:
  cd $fixtures
  TOKEN=\$(curl -s -X POST http://localhost:8000/api/v1/auth/token -H 'Content-Type: application/json' \\
    -d '{"client_id":"kyc-client","client_secret":"kyc-client-secret","grant_type":"client_credentials","scope":"kyc:read kyc:write"}' \\
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -X POST http://localhost:8000/api/v1/kyc/ocr -H "Authorization: Bearer \$TOKEN" -H "Idempotency-Key: ocr-123456" -F "image=@idcard.jpg" -F "language=auto"
  curl -X POST http://localhost:8000/api/v1/kyc/face/verify -H "Authorization: Bearer \$TOKEN" -H "Idempotency-Key: face-123456" -F "image1=@idcard.jpg" -F "image2=@face.jpg"
  curl -X POST http://localhost:8000/api/v1/kyc/verify -H "Authorization: Bearer \$TOKEN" -H "Idempotency-Key: kyc-123456" \\
    -F "idcard_image=@idcard.jpg" -F "face_image=@face.jpg" -F "name=张三" -F "idcard=11010519491231002X" -F "phone=13800138000"
  curl http://localhost:8000/api/v1/kyc/status/<request_id> -H "Authorization: Bearer \$TOKEN"
  ab -n 1000 -c 10 -T 'multipart/form-data' -H "Authorization: Bearer \$TOKEN" -p ocr_request.txt http://localhost:8080/api/v1/kyc/ocr
  (through :8000 the ocr route's rate limit, 5/s with a burst of 10, answers most of those with 429)
MSG
"$bin/kyc-service" --config config.yaml
