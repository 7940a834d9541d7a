-- Disabling a client revokes its refresh tokens; this keeps that from scanning the table.
CREATE INDEX refresh_tokens_client_idx ON refresh_tokens (client_id) WHERE revoked_at IS NULL;
