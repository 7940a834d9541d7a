-- Each claim of a key gets an owner token: only the request holding it may complete or release
-- the record, so a takeover after a lock timeout cannot be overwritten by the old holder.
ALTER TABLE idempotency_records ADD COLUMN owner UUID;
