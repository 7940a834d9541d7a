-- Authoritative idempotency store (IETF httpapi Idempotency-Key draft): unique per client and key.
-- The stored response body can hold PII (an OCR result), so it is kept encrypted.
CREATE TABLE idempotency_records (
    client_id         TEXT NOT NULL REFERENCES api_clients (client_id),
    idempotency_key   TEXT NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    fingerprint       BYTEA NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('in_flight', 'completed')),
    request_id        UUID,
    response_status   INTEGER,
    response_headers  JSONB,
    response_body_enc BYTEA,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at      TIMESTAMPTZ,
    expires_at        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (client_id, idempotency_key)
);
CREATE INDEX idempotency_records_expiry_idx ON idempotency_records (expires_at);
