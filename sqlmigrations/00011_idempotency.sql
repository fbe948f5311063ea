-- +goose Up
-- Idempotency keys (the Idempotency-Key header of the credential create and
-- reset and of the domain create): the first response to a key, kept for
-- 24 hours so that a client whose response was lost can retry and get it
-- again, its password included. The row is written in the transaction of
-- the change it answers, so that a change is never committed without the
-- response that reports it. response is sealed (AES-256-GCM under the
-- server's sealing key, bound to the account and the key): it may hold a
-- password. fingerprint is a SHA-256 of the request's meaning, to refuse
-- the key for a different request.
-- final is set once the response has been sent as stored (its
-- remote_synced is then the one the client saw).
CREATE TABLE idempotency_keys (
    account_id  bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key         text        NOT NULL,
    fingerprint bytea       NOT NULL,
    status      integer     NOT NULL DEFAULT 0,
    response    bytea       NOT NULL DEFAULT '',
    final       boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (account_id, key)
);
CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);

-- +goose Down
DROP TABLE idempotency_keys;
