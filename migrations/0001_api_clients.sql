-- API clients authenticate with client_credentials. Secrets are stored only as argon2id PHC strings.
CREATE TABLE api_clients (
    client_id    TEXT PRIMARY KEY CHECK (client_id ~ '^[A-Za-z0-9._-]{3,64}$'),
    display_name TEXT NOT NULL DEFAULT '',
    secret_hash  TEXT NOT NULL,
    scopes       TEXT[] NOT NULL DEFAULT '{}',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    disabled_at  TIMESTAMPTZ
);
