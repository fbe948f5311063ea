-- +goose Up
-- Accounts own domains; API tokens are stored only as an HMAC-SHA256 digest
-- under a server key that lives outside the database.
CREATE TABLE accounts (
    id           bigserial   PRIMARY KEY,
    name         text        NOT NULL UNIQUE,
    token_digest bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- A sending domain belongs to exactly one account; names are stored lowercase.
CREATE TABLE domains (
    id          bigserial   PRIMARY KEY,
    account_id  bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name        text        NOT NULL UNIQUE CHECK (name = lower(name)),
    is_verified boolean     NOT NULL DEFAULT false,
    status      boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    modified_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX domains_account_id_idx ON domains (account_id, id);

-- SMTP credentials. Only the hash the SMTP backend verifies is stored.
-- account_id is carried on every row so that each statement can be scoped
-- by the calling account without a join.
CREATE TABLE credentials (
    id                  bigserial   PRIMARY KEY,
    guid                uuid        NOT NULL UNIQUE,
    account_id          bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    domain_id           bigint      NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    username            text        NOT NULL CHECK (username = lower(username)),
    password_hash       text        NOT NULL,
    status              boolean     NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    modified_at         timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz,
    CONSTRAINT credentials_domain_username_key UNIQUE (domain_id, username)
);
CREATE INDEX credentials_domain_id_id_idx ON credentials (domain_id, id);

-- Fixed one-minute windows for rate limits shared by every server process.
-- key is 'account:<id>' or 'authfail:<ip>'; window_start is Unix minutes.
CREATE TABLE rate_counters (
    key    text    PRIMARY KEY,
    window_start bigint NOT NULL,
    hits   integer NOT NULL
);

-- +goose Down
DROP TABLE rate_counters;
DROP TABLE credentials;
DROP TABLE domains;
DROP TABLE accounts;
