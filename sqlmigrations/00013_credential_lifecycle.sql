-- +goose Up
-- Credentials can be disabled (status false, since 00001) and can expire:
-- a login authenticates while status is true and expires_at is NULL or
-- later than now. Expiry needs no cron: the view below compares with
-- now() at each lookup (dovecot-sql), and the outbox carries a job due at
-- expires_at to the targets that hold a copy (passwd-file, webhook).
ALTER TABLE credentials ADD COLUMN expires_at timestamptz;

-- Rotation with a grace period: after a reset with one, the replaced
-- password keeps authenticating until expires_at. The targets hold it
-- apart from the current one (a second passdb in Dovecot's chain), and a
-- job due at the end of the grace removes it; the housekeeping deletes the
-- row some time after. A table of its own: few credentials have one, and
-- two more columns on credentials made the planner's generic plans of the
-- sync's hot statements probe a whole domain instead of the unique key.
CREATE TABLE credential_previous_passwords (
    credential_id bigint      PRIMARY KEY REFERENCES credentials (id) ON DELETE CASCADE,
    password_hash text        NOT NULL,
    expires_at    timestamptz NOT NULL
);

-- Disabled credentials are few and listed by status=false: found without
-- reading a domain's active ones.
CREATE INDEX credentials_disabled_idx ON credentials (domain_id, id) WHERE NOT status;

-- A job scheduled for later (not_before, e.g. a credential's expiry) is
-- not due, and not claimed with its scope's other jobs, before then.
ALTER TABLE sync_jobs ADD COLUMN not_before timestamptz;

CREATE OR REPLACE VIEW dovecot_passdb AS
SELECT c.username || '@' || d.name AS login,
       c.username,
       d.name AS domain,
       c.password_hash AS password,
       p.password_hash AS previous_password
FROM credentials c
JOIN domains d ON d.id = c.domain_id
LEFT JOIN credential_previous_passwords p ON p.credential_id = c.id AND p.expires_at > now()
WHERE c.status AND (c.expires_at IS NULL OR c.expires_at > now());

-- The relay's cache also forgets a login whose expiry changes.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION relay_notify_credentials() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    IF TG_OP = 'DELETE' THEN
        SELECT count(*) INTO n FROM relay_old;
        IF n > 100 THEN
            PERFORM pg_notify('smtpcreds_relay', '*');
        ELSE
            PERFORM pg_notify('smtpcreds_relay', 'c' || id) FROM relay_old;
        END IF;
        RETURN NULL;
    END IF;
    SELECT count(*) INTO n FROM relay_new;
    IF n > 100 THEN
        PERFORM pg_notify('smtpcreds_relay', '*');
    ELSE
        PERFORM pg_notify('smtpcreds_relay', 'c' || o.id)
        FROM relay_old o JOIN relay_new n USING (id)
        WHERE (o.username, o.domain_id, o.password_hash, o.status, o.password_changed_at,
               o.allowed_senders, o.limit_per_minute, o.limit_per_hour, o.limit_per_day, o.expires_at)
              IS DISTINCT FROM
              (n.username, n.domain_id, n.password_hash, n.status, n.password_changed_at,
               n.allowed_senders, n.limit_per_minute, n.limit_per_hour, n.limit_per_day, n.expires_at);
    END IF;
    RETURN NULL;
END $$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION relay_notify_credentials() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    IF TG_OP = 'DELETE' THEN
        SELECT count(*) INTO n FROM relay_old;
        IF n > 100 THEN
            PERFORM pg_notify('smtpcreds_relay', '*');
        ELSE
            PERFORM pg_notify('smtpcreds_relay', 'c' || id) FROM relay_old;
        END IF;
        RETURN NULL;
    END IF;
    SELECT count(*) INTO n FROM relay_new;
    IF n > 100 THEN
        PERFORM pg_notify('smtpcreds_relay', '*');
    ELSE
        PERFORM pg_notify('smtpcreds_relay', 'c' || o.id)
        FROM relay_old o JOIN relay_new n USING (id)
        WHERE (o.username, o.domain_id, o.password_hash, o.status, o.password_changed_at,
               o.allowed_senders, o.limit_per_minute, o.limit_per_hour, o.limit_per_day)
              IS DISTINCT FROM
              (n.username, n.domain_id, n.password_hash, n.status, n.password_changed_at,
               n.allowed_senders, n.limit_per_minute, n.limit_per_hour, n.limit_per_day);
    END IF;
    RETURN NULL;
END $$;
-- +goose StatementEnd
-- Dropping the view's last column takes a new view, and its grants go with
-- it: re-grant SELECT to Dovecot's role after going down.
DROP VIEW dovecot_passdb;
CREATE VIEW dovecot_passdb AS
SELECT c.username || '@' || d.name AS login,
       c.username,
       d.name AS domain,
       c.password_hash AS password
FROM credentials c
JOIN domains d ON d.id = c.domain_id
WHERE c.status;
ALTER TABLE sync_jobs DROP COLUMN not_before;
DROP TABLE credential_previous_passwords;
DROP INDEX credentials_disabled_idx;
ALTER TABLE credentials DROP COLUMN expires_at;
