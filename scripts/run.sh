#!/usr/bin/env bash
# Starts the whole local stack: PostgreSQL and Redis (installed and started when missing), the
# vendor sandbox on :9100 with fixtures for the seed's flow, kyc-service on :8080 with the seed's
# config.yaml (its vendor URLs pointed at the sandbox), and the gateway on :8000 (admin :8001):
# kyc-edge running the built Kong filters with declarative/kong.yaml and kong/kong.conf.
# Ctrl-C stops them all.
#   scripts/run.sh            release build (the first build takes several minutes on 2 cores)
#   scripts/run.sh --debug    debug build, faster to compile
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

profile=release
[ "${1:-}" = "--debug" ] && profile=debug
echo "[run] building the gateway filters (wasm32-wasip1)"
bash scripts/build-filters.sh
echo "[run] building the liveness demo page (web/dist; installs wasm-bindgen-cli on first use)"
bash scripts/build-web.sh
echo "[run] building kyc-service, kyc-sandbox and kyc-edge ($profile)"
if [ "$profile" = release ]; then
  cargo build --release -p kyc-service -p kyc-sandbox -p kyc-edge
else
  cargo build -p kyc-service -p kyc-sandbox -p kyc-edge
fi
bin="target/$profile"

fixtures=.tmp/fixtures
"$bin/kyc-sandbox" fixtures --name 张三 --id 11010519491231002X --out "$fixtures" >/dev/null
# The body of the seed's section 6.1 `ab -T 'multipart/form-data' -p ocr_request.txt` (the service
# reads the boundary from the body's first line, since ab sends no boundary parameter).
{ printf -- '--kycboundary\r\nContent-Disposition: form-data; name="image"; filename="idcard.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
  cat "$fixtures/idcard.jpg"; printf -- '\r\n--kycboundary--\r\n'; } > "$fixtures/ocr_request.txt"
"$bin/kyc-sandbox" serve --listen 127.0.0.1:9100 > .tmp/kyc-sandbox.log 2>&1 &
sandbox=$!
edge=
trap 'kill $sandbox ${edge:-} 2>/dev/null || true' EXIT
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

export KYC__THIRD_PARTY__OCR_SERVICE__URL=http://127.0.0.1:9100
export KYC__THIRD_PARTY__FACE_SERVICE__URL=http://127.0.0.1:9100
export KYC__THIRD_PARTY__LIVENESS_SERVICE__URL=http://127.0.0.1:9100

cat <<MSG
[run] kyc-sandbox (a SANDBOX, not a real vendor) on http://127.0.0.1:9100, log .tmp/kyc-sandbox.log
[run] fixtures for 张三 / 11010519491231002X in $fixtures: idcard.jpg, face.jpg, face_other.jpg, idcard_photocopy.jpg
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
