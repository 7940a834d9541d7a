-- One row per KYC call (ocr, face, complete, liveness). PII is stored only as AES-256-GCM
-- ciphertext (key id inside each value) plus an HMAC-SHA256 blind index for look-ups.
CREATE TABLE kyc_requests (
    id              UUID PRIMARY KEY,
    client_id       TEXT NOT NULL REFERENCES api_clients (client_id),
    user_id         TEXT NOT NULL,
    request_type    TEXT NOT NULL CHECK (request_type IN ('ocr', 'face', 'complete', 'liveness')),
    status          TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'success', 'failed', 'error')),
    reasons         TEXT[] NOT NULL DEFAULT '{}',
    name_enc        BYTEA,
    id_number_enc   BYTEA,
    phone_enc       BYTEA,
    id_number_bidx  BYTEA,
    phone_bidx      BYTEA,
    -- Non-PII outcome details (scores, thresholds, vendor flags). Never names or numbers.
    result          JSONB NOT NULL DEFAULT '{}'::jsonb,
    idempotency_key TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at    TIMESTAMPTZ,
    CHECK ((status IN ('success', 'failed', 'error')) = (completed_at IS NOT NULL))
);
CREATE INDEX kyc_requests_client_idx ON kyc_requests (client_id, created_at DESC);
CREATE INDEX kyc_requests_open_idx ON kyc_requests (status) WHERE status IN ('pending', 'processing');
CREATE INDEX kyc_requests_id_number_bidx ON kyc_requests (id_number_bidx) WHERE id_number_bidx IS NOT NULL;
CREATE INDEX kyc_requests_phone_bidx ON kyc_requests (phone_bidx) WHERE phone_bidx IS NOT NULL;
