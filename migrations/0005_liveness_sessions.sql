-- A liveness session is single-use, bound to one client, with a TTL and a server-chosen challenge.
CREATE TABLE liveness_sessions (
    id                UUID PRIMARY KEY,
    client_id         TEXT NOT NULL REFERENCES api_clients (client_id),
    status            TEXT NOT NULL CHECK (status IN ('created', 'active', 'passed', 'failed', 'expired')),
    actions           TEXT[] NOT NULL,
    nonce             TEXT NOT NULL,
    score             DOUBLE PRECISION,
    request_id        UUID REFERENCES kyc_requests (id),
    consumed_by       UUID REFERENCES kyc_requests (id),
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at        TIMESTAMPTZ NOT NULL,
    consumed_at       TIMESTAMPTZ
);
CREATE INDEX liveness_sessions_client_idx ON liveness_sessions (client_id, created_at DESC);
