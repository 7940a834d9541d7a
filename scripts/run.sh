#!/usr/bin/env bash
# Starts everything built so far: PostgreSQL and Redis (installed and started when missing),
# then kyc-service on :8080 with the seed's config.yaml. Ctrl-C stops it.
#   scripts/run.sh            release build (first build takes several minutes on 2 cores)
#   scripts/run.sh --debug    debug build, faster to compile
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

profile=release
[ "${1:-}" = "--debug" ] && profile=debug
echo "[run] building kyc-service ($profile)"
if [ "$profile" = release ]; then cargo build --release -p kyc-service; else cargo build -p kyc-service; fi

cat <<'MSG'
[run] kyc-service is starting on http://localhost:8080 (logs: stdout and logs/kyc-service.log)
[run] try the seed's flow in another terminal:
  curl -s -X POST http://localhost:8080/api/v1/auth/token -H 'Content-Type: application/json' \
    -d '{"client_id":"kyc-client","client_secret":"kyc-client-secret","grant_type":"client_credentials","scope":"kyc:read kyc:write"}'
  curl -s http://localhost:8080/api/v1/kyc/status/550e8400-e29b-41d4-a716-446655440000 -H "Authorization: Bearer $TOKEN"
  curl -s http://localhost:8080/health ; curl -s http://localhost:8080/ready
MSG
exec "target/$profile/kyc-service" --config config.yaml
