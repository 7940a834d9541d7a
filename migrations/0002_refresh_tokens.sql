-- Refresh tokens rotate on every use. Each belongs to a family (one chain of rotations);
-- presenting a spent token revokes the whole family (RFC 6819 5.2.2.3, OAuth 2.1 4.3.1).
-- Only the SHA-256 of the token is stored.
CREATE TABLE refresh_tokens (
    id          UUID PRIMARY KEY,
    family_id   UUID NOT NULL,
    client_id   TEXT NOT NULL REFERENCES api_clients (client_id),
    token_hash  BYTEA NOT NULL UNIQUE,
    scopes      TEXT[] NOT NULL,
    issued_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ,
    revoked_at  TIMESTAMPTZ,
    replaced_by UUID
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expiry_idx ON refresh_tokens (expires_at);
