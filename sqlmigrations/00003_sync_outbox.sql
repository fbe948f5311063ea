-- +goose Up
-- Sync state of each credential: version grows with every change of its
-- password; synced_version is the last version the SMTP server's auth backend
-- confirmed. remote_synced = synced_version >= version.
ALTER TABLE credentials
    ADD COLUMN version        bigint NOT NULL DEFAULT 1,
    ADD COLUMN synced_version bigint NOT NULL DEFAULT 0,
    ADD COLUMN synced_at      timestamptz,
    ADD COLUMN sync_error     text;

-- Transactional outbox: a change and its sync job are written in one
-- transaction. Jobs of one (target, scope) are applied together, so a burst
-- of changes coalesces into one render. event never holds a plaintext
-- password (only the hash the backend stores).
CREATE TABLE sync_jobs (
    id           bigserial   PRIMARY KEY,
    target       text        NOT NULL,
    scope        text        NOT NULL,
    event        jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    available_at timestamptz NOT NULL DEFAULT now(),
    locked_until timestamptz,
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text,
    done_at      timestamptz
);
CREATE INDEX sync_jobs_pending_idx ON sync_jobs (target, scope, id) WHERE done_at IS NULL;
CREATE INDEX sync_jobs_due_idx ON sync_jobs (available_at, id) WHERE done_at IS NULL;
CREATE INDEX sync_jobs_done_idx ON sync_jobs (done_at) WHERE done_at IS NOT NULL;

-- +goose Down
DROP TABLE sync_jobs;
ALTER TABLE credentials
    DROP COLUMN version, DROP COLUMN synced_version, DROP COLUMN synced_at, DROP COLUMN sync_error;
