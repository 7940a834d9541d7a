#!/usr/bin/env bash
# The real check: Debian's Prometheus scrapes the running local stack (scripts/run.sh: kyc-service
# on :8080, the gateway on :8000 with its Admin API on :8001) with observability/prometheus.yml,
# traffic goes through the gateway, and the seed's four PromQL queries (section 4.1) are evaluated
# through the HTTP API. Fails if any of them returns nothing, if a target is down, or if a rule
# does not evaluate. Prometheus runs on a free port with a temporary storage directory and is
# stopped on exit.
#
#   observability/scripts/prometheus-check.sh
#
# The seed's 5xx query has a series only once kyc-service has answered a 5xx. When it never has,
# this provokes one 503 through the vendor sandbox (:9100): the next OCR calls fail (`fail_first`,
# exactly the attempts one request makes), then the sandbox's faults are put back as they were.
set -euo pipefail
cd "$(dirname "$0")/../.."

service=http://localhost:8080
gateway=http://localhost:8000
admin=http://localhost:8001
sandbox=http://127.0.0.1:9100
say() { echo "[prometheus-check] $*"; }
die() { echo "[prometheus-check] FAIL: $*" >&2; exit 1; }

if ! command -v prometheus >/dev/null 2>&1; then
  say "prometheus missing: installing Debian's prometheus package"
  sudo=
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

curl -fsS -m 5 "$service/health" >/dev/null || die "kyc-service is not answering $service/health; start scripts/run.sh"
curl -fsS -m 5 "$admin/status" >/dev/null || die "the gateway is not answering $admin/status; start scripts/run.sh"

tmp=$(mktemp -d)
prom_pid=
faults_saved=
cleanup() {
  if [ -n "$faults_saved" ]; then
    curl -fsS -m 5 -X PUT "$sandbox/sandbox/faults" -H 'Content-Type: application/json' \
      --data-binary "@$tmp/faults.json" >/dev/null || echo "[prometheus-check] could not restore the sandbox faults" >&2
  fi
  if [ -n "$prom_pid" ]; then
    kill "$prom_pid" 2>/dev/null || true
    wait "$prom_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# The operator's file with 1 s scrapes and evaluations, so a few seconds of traffic fill [5m] rates.
sed -E 's/^( *)(scrape_interval|evaluation_interval): .*/\1\2: 1s/' observability/prometheus.yml > "$tmp/prometheus.yml"
cp -r observability/rules "$tmp/rules"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
prom=http://127.0.0.1:$port
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
  --web.listen-address="127.0.0.1:$port" --log.level=warn > "$tmp/prometheus.log" 2>&1 &
prom_pid=$!
for _ in $(seq 1 100); do curl -fsS -m 1 "$prom/-/ready" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS -m 2 "$prom/-/ready" >/dev/null 2>&1 || { cat "$tmp/prometheus.log" >&2; die "prometheus did not start"; }
say "$(prometheus --version 2>&1 | head -1) on $prom, scraping localhost:8080 and localhost:8001 every 1s"
# New targets start within Prometheus' 5 s reload tick; traffic counts once both have a first scrape.
up_count() {
  curl -fsS -m 2 "$prom/api/v1/query" --data-urlencode 'query=count(up{job=~"kyc-service|kong"} == 1)' \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)'
}
for _ in $(seq 1 60); do [ "$(up_count)" = 2 ] && break; sleep 0.5; done
[ "$(up_count)" = 2 ] || say "not both targets are up yet; the results below say which"

# --- traffic through the gateway ---------------------------------------------------------------
token=$(curl -fsS -m 10 -X POST "$gateway/api/v1/auth/token" -H 'Content-Type: application/json' \
  -d '{"client_id":"kyc-client","client_secret":"kyc-client-secret","grant_type":"client_credentials","scope":"kyc:read kyc:write"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])') || die "no token from $gateway/api/v1/auth/token"
say "token issued through the gateway"

fixtures=.tmp/fixtures
if [ ! -f "$fixtures/idcard.jpg" ]; then
  fixtures=$tmp/fixtures
  bin=$(ls target/release/kyc-sandbox target/debug/kyc-sandbox 2>/dev/null | head -1 || true)
  [ -n "$bin" ] && "$bin" fixtures --name 张三 --id 11010519491231002X --out "$fixtures" >/dev/null
fi
ocr() {  # prints the status code; the body goes to $tmp/ocr.json
  curl -sS -m 60 -o "$tmp/ocr.json" -w '%{http_code}' -X POST "$gateway/api/v1/kyc/ocr" \
    -H "Authorization: Bearer $token" -F "image=@$fixtures/idcard.jpg" -F "language=auto"
}

if [ -f "$fixtures/idcard.jpg" ]; then
  if ! curl -fsS -m 5 "$service/metrics" | grep -Eq '^http_requests_total\{.*status="5[0-9][0-9]"'; then
    # One request makes 1 + retry_count attempts (config.yaml, third_party.ocr_service).
    retries=$(sed -n '/ocr_service:/,/retry_count:/s/^ *retry_count: *\([0-9]*\).*/\1/p' config.yaml | head -1)
    attempts=$(( ${retries:-3} + 1 ))
    if curl -fsS -m 5 "$sandbox/sandbox/faults" -o "$tmp/faults.json"; then
      faults_saved=1
      python3 - "$tmp/faults.json" "$attempts" > "$tmp/faults-fail.json" <<'PY'
import json, sys
faults = json.load(open(sys.argv[1]))
faults["ocr"]["fail_first"] = int(sys.argv[2])
print(json.dumps(faults))
PY
      curl -fsS -m 5 -X PUT "$sandbox/sandbox/faults" -H 'Content-Type: application/json' \
        --data-binary "@$tmp/faults-fail.json" >/dev/null
      code=$(ocr)
      curl -fsS -m 5 -X PUT "$sandbox/sandbox/faults" -H 'Content-Type: application/json' \
        --data-binary "@$tmp/faults.json" >/dev/null && faults_saved=
      say "kyc-service had answered no 5xx yet: OCR with the vendor failing $attempts times answered $code"
    else
      say "kyc-service has answered no 5xx and the sandbox at $sandbox is not reachable to provoke one"
    fi
  fi
  code=$(ocr)
  kyc_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("request_id", ""))' "$tmp/ocr.json" 2>/dev/null || true)
  say "OCR through the gateway answered $code${kyc_id:+ (KYC request $kyc_id)}"
else
  say "no fixtures (run scripts/run.sh once, or build kyc-sandbox): no OCR request, so no KYC outcome"
fi

# Status queries: the OCR request's own (200) and unknown ids (404).
codes=""
for i in $(seq 1 8); do
  id=${kyc_id:-00000000-0000-0000-0000-00000000000$i}
  [ "$i" -gt 4 ] && id=00000000-0000-0000-0000-00000000000$i
  codes+="$(curl -sS -m 10 -o /dev/null -w '%{http_code}' "$gateway/api/v1/kyc/status/$id" -H "Authorization: Bearer $token") "
done
# Two the kyc_jwt filter refuses: no token, and a token that is not a JWT.
codes+="| without a valid token: $(curl -sS -m 10 -o /dev/null -w '%{http_code}' "$gateway/api/v1/kyc/status/00000000-0000-0000-0000-000000000009") "
codes+="$(curl -sS -m 10 -o /dev/null -w '%{http_code}' "$gateway/api/v1/kyc/status/00000000-0000-0000-0000-000000000009" -H 'Authorization: Bearer not-a-token')"
say "status queries through the gateway answered: $codes"

# A few scrapes after the traffic, so every rate() has two samples that differ; the queries below
# are retried for a while in case a scrape lags.
sleep 3

# --- the seed's queries through the HTTP API ------------------------------------------------------
python3 observability/scripts/dashboard_queries.py exprs > "$tmp/panel-queries.jsonl"
python3 - "$prom" "$tmp/panel-queries.jsonl" <<'PY'
import json, math, sys, time, urllib.parse, urllib.request

prom = sys.argv[1]

def get(path, **params):
    url = f"{prom}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise SystemExit(f"FAIL {path} {params}: {body}")
    return body["data"]

def query(expr):
    return get("/api/v1/query", query=expr)["result"]

def show(series):
    labels = {k: v for k, v in series["metric"].items() if k not in ("job", "instance", "__name__")}
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{{{inner}}} {series['value'][1]}"

SEED = [
    ("HTTP请求速率 (request rate)", "rate(http_requests_total[5m])", True),
    ("错误率 (5xx rate)", 'rate(http_requests_total{status=~"5.."}[5m])', False),
    ("P95响应时间 (P95 latency)", "histogram_quantile(0.95, rate(http_request_duration_seconds_bucket[5m]))", True),
    ("KYC成功率 (KYC success rate)", 'rate(kyc_requests_total{status="success"}[5m]) / rate(kyc_requests_total[5m])', False),
]

def finite(result):
    return [s for s in result if not math.isnan(float(s["value"][1]))]

def complete():
    for _, expr, needs_number in SEED:
        result = query(expr)
        if not result or (needs_number and not finite(result)):
            return False
    return True

deadline = time.monotonic() + 20
while not complete() and time.monotonic() < deadline:
    time.sleep(1)

failures = []
for s in query('up{job=~"kyc-service|kong"}'):
    print(f"  up{{job=\"{s['metric']['job']}\",instance=\"{s['metric']['instance']}\"}} = {s['value'][1]}")
    if s["value"][1] != "1":
        failures.append(f"target {s['metric']['job']} is down")

for title, expr, needs_number in SEED:
    result = query(expr)
    numbers = finite(result)
    print(f"\n{title}: {expr}\n  {len(result)} series, {len(numbers)} with a number")
    def order(s):
        v = float(s["value"][1])
        return (math.isnan(v), -v if not math.isnan(v) else 0)
    for s in sorted(result, key=order)[:12]:
        print(f"  {show(s)}")
    if len(result) > 12:
        print(f"  ... and {len(result) - 12} more")
    if not result:
        failures.append(f"the seed's query returned no series: {expr}")
    elif needs_number and not numbers:
        failures.append(f"the seed's query returned only NaN although traffic just went through: {expr}")

expr = "instance_type:kyc_requests_success:ratio_rate5m"
print(f"\nKYC success rate as recorded (rules/recording.yml, the status summed away): {expr}")
for s in query(expr):
    print(f"  {show(s)}")

# Every dashboard query against the same data: informational, since some panels are empty on a
# quiet stack (no liveness session, no idempotency conflict yet).
print("\ndashboard panel queries (series returned):")
with open(sys.argv[2], encoding="utf-8") as f:
    panel_queries = [json.loads(line) for line in f if line.strip()]
for q in panel_queries:
    n = len(query(q["expr"]))
    print(f"  {n:3d}  {q['panel']}: {q['legend'] or q['expr']}" + ("" if n else "  (no data)"))

groups = get("/api/v1/rules")["groups"]
rules = [r for g in groups for r in g["rules"]]
bad = [f"{r['name']}: {r.get('lastError', '')}" for r in rules if r.get("health") != "ok"]
firing = [r["name"] for r in rules if r.get("type") == "alerting" and r.get("state") != "inactive"]
print(f"\nrules: {len(groups)} groups, {len(rules)} rules loaded, {len(rules) - len(bad)} evaluated ok;"
      f" alerts pending or firing: {', '.join(firing) or 'none'}")
failures += [f"rule not healthy: {b}" for b in bad]

if failures:
    for f in failures:
        print(f"[prometheus-check] FAIL: {f}", file=sys.stderr)
    sys.exit(1)
print("\n[prometheus-check] the seed's four queries each returned a non-empty result")
PY
