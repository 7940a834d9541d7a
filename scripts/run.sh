#!/usr/bin/env bash
# Starts everything built so far: PostgreSQL and Redis (installed and started when missing),
# the vendor sandbox on :9100 with fixtures for the seed's flow, and kyc-service on :8080 with
# the seed's config.yaml (its vendor URLs pointed at the sandbox). Ctrl-C stops both.
#   scripts/run.sh            release build (the first build takes several minutes on 2 cores)
#   scripts/run.sh --debug    debug build, faster to compile
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

profile=release
[ "${1:-}" = "--debug" ] && profile=debug
echo "[run] building kyc-service and kyc-sandbox ($profile)"
if [ "$profile" = release ]; then
  cargo build --release -p kyc-service -p kyc-sandbox
else
  cargo build -p kyc-service -p kyc-sandbox
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
trap 'kill $sandbox 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do curl -fs http://127.0.0.1:9100/health >/dev/null && break; sleep 0.1; done

export KYC__THIRD_PARTY__OCR_SERVICE__URL=http://127.0.0.1:9100
export KYC__THIRD_PARTY__FACE_SERVICE__URL=http://127.0.0.1:9100
export KYC__THIRD_PARTY__LIVENESS_SERVICE__URL=http://127.0.0.1:9100

cat <<MSG
[run] kyc-sandbox (a SANDBOX, not a real vendor) on http://127.0.0.1:9100, log .tmp/kyc-sandbox.log
[run] fixtures for 张三 / 11010519491231002X in $fixtures: idcard.jpg, face.jpg, face_other.jpg, idcard_photocopy.jpg
[run] kyc-service is starting on http://localhost:8080 (logs: stdout and logs/kyc-service.log)
[run] the seed's section 3 flow, from another terminal in $fixtures:
  cd $fixtures
  TOKEN=\$(curl -s -X POST http://localhost:8080/api/v1/auth/token -H 'Content-Type: application/json' \\
    -d '{"client_id":"kyc-client","client_secret":"kyc-client-secret","grant_type":"client_credentials","scope":"kyc:read kyc:write"}' \\
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -X POST http://localhost:8080/api/v1/kyc/ocr -H "Authorization: Bearer \$TOKEN" -H "Idempotency-Key: ocr-123456" -F "image=@idcard.jpg" -F "language=auto"
  curl -X POST http://localhost:8080/api/v1/kyc/face/verify -H "Authorization: Bearer \$TOKEN" -H "Idempotency-Key: face-123456" -F "image1=@idcard.jpg" -F "image2=@face.jpg"
  curl -X POST http://localhost:8080/api/v1/kyc/verify -H "Authorization: Bearer \$TOKEN" -H "Idempotency-Key: kyc-123456" \\
    -F "idcard_image=@idcard.jpg" -F "face_image=@face.jpg" -F "name=张三" -F "idcard=11010519491231002X" -F "phone=13800138000"
  curl http://localhost:8080/api/v1/kyc/status/<request_id> -H "Authorization: Bearer \$TOKEN"
  ab -n 1000 -c 10 -T 'multipart/form-data' -H "Authorization: Bearer \$TOKEN" -p ocr_request.txt http://localhost:8080/api/v1/kyc/ocr
MSG
"$bin/kyc-service" --config config.yaml
