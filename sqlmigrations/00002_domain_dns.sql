-- +goose Up
-- DKIM keys, DNS verification state, tracking flags, auth (return-path) and
-- link-tracking domains. Private keys are stored sealed with AES-256-GCM
-- under a key that is not in the database. Check details are the last
-- outcome per record, as shown to users.
ALTER TABLE domains
    ADD COLUMN dkim_selector        text        NOT NULL DEFAULT '',
    ADD COLUMN dkim_key_bits        integer     NOT NULL DEFAULT 2048 CHECK (dkim_key_bits IN (1024, 2048)),
    ADD COLUMN dkim_public_key      text        NOT NULL DEFAULT '',
    ADD COLUMN dkim_private_key     bytea,
    ADD COLUMN dkim_verified        boolean     NOT NULL DEFAULT false,
    ADD COLUMN spf_verified         boolean     NOT NULL DEFAULT false,
    ADD COLUMN mx_verified          boolean     NOT NULL DEFAULT false,
    ADD COLUMN checked_at           timestamptz,
    ADD COLUMN checks               jsonb,
    ADD COLUMN open_track           boolean     NOT NULL DEFAULT false,
    ADD COLUMN click_track          boolean     NOT NULL DEFAULT false,
    ADD COLUMN unsub_track          boolean     NOT NULL DEFAULT false,
    ADD COLUMN auth_domain          text        NOT NULL DEFAULT '',
    ADD COLUMN auth_dkim_selector   text        NOT NULL DEFAULT '',
    ADD COLUMN auth_dkim_public_key text        NOT NULL DEFAULT '',
    ADD COLUMN auth_dkim_private_key bytea,
    ADD COLUMN auth_verified        boolean     NOT NULL DEFAULT false,
    ADD COLUMN auth_checked_at      timestamptz,
    ADD COLUMN auth_checks          jsonb,
    ADD COLUMN tracking_domain      text        NOT NULL DEFAULT '',
    ADD COLUMN tracking_verified    boolean     NOT NULL DEFAULT false,
    ADD COLUMN tracking_checked_at  timestamptz,
    ADD COLUMN tracking_checks      jsonb;

-- +goose Down
ALTER TABLE domains
    DROP COLUMN dkim_selector, DROP COLUMN dkim_key_bits, DROP COLUMN dkim_public_key,
    DROP COLUMN dkim_private_key, DROP COLUMN dkim_verified, DROP COLUMN spf_verified,
    DROP COLUMN mx_verified, DROP COLUMN checked_at, DROP COLUMN checks,
    DROP COLUMN open_track, DROP COLUMN click_track, DROP COLUMN unsub_track,
    DROP COLUMN auth_domain, DROP COLUMN auth_dkim_selector, DROP COLUMN auth_dkim_public_key,
    DROP COLUMN auth_dkim_private_key, DROP COLUMN auth_verified, DROP COLUMN auth_checked_at,
    DROP COLUMN auth_checks, DROP COLUMN tracking_domain, DROP COLUMN tracking_verified,
    DROP COLUMN tracking_checked_at, DROP COLUMN tracking_checks;
