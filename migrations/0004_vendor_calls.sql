-- Every attempt at a vendor (OCR, face comparison, liveness) becomes one row: retries are separate rows.
CREATE TABLE vendor_calls (
    id          BIGSERIAL PRIMARY KEY,
    request_id  UUID REFERENCES kyc_requests (id),
    vendor      TEXT NOT NULL CHECK (vendor IN ('ocr', 'face', 'liveness')),
    attempt     INTEGER NOT NULL CHECK (attempt >= 1),
    outcome     TEXT NOT NULL,
    http_status INTEGER,
    error_code  TEXT,
    latency_ms  INTEGER NOT NULL CHECK (latency_ms >= 0),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX vendor_calls_request_idx ON vendor_calls (request_id);
