-- +goose Up
-- The relay side (smtpcreds milter): per-login sender policy and sending
-- limits, usage, message counters shared by every milter process, and the
-- message log.

-- allowed_senders narrows what a login may send as: exact addresses or
-- '*@domain' (NULL: no narrowing beyond the account's verified domains).
-- The limits override the server's defaults per login: NULL uses the
-- default, 0 means no limit.
ALTER TABLE credentials
    ADD COLUMN allowed_senders  text[],
    ADD COLUMN limit_per_minute integer CHECK (limit_per_minute >= 0),
    ADD COLUMN limit_per_hour   integer CHECK (limit_per_hour >= 0),
    ADD COLUMN limit_per_day    integer CHECK (limit_per_day >= 0);

-- What a login did, updated once per message the milter decides on. Kept
-- apart from credentials so that a busy login's writes touch neither the
-- credential row nor its indexes (and announce nothing to caches).
CREATE TABLE credential_usage (
    credential_id    bigint      PRIMARY KEY REFERENCES credentials (id) ON DELETE CASCADE,
    last_used_at     timestamptz NOT NULL,
    last_used_ip     inet,
    messages_queued  bigint      NOT NULL DEFAULT 0,
    messages_refused bigint      NOT NULL DEFAULT 0
);

-- Fixed windows of sent messages, shared by every milter process. key is
-- 'c<credential id>' or 'a<account id>' followed by the window's unit
-- ('m', 'h', 'd'); window_start is the window's start in Unix seconds.
CREATE TABLE send_counters (
    key          text    PRIMARY KEY,
    window_start bigint  NOT NULL,
    hits         integer NOT NULL
);

-- send_count counts one message against each key's window, all or
-- nothing: when any key is at its limit (limits[i] > 0 and hits >= limit),
-- nothing is counted and the index (1-based) of the first such key is
-- returned; otherwise every key is counted and 0 is returned. Rows are
-- locked in key order, so concurrent messages of one login queue on their
-- rows and never deadlock; the limit is exact across processes.
-- +goose StatementBegin
CREATE FUNCTION send_count(keys text[], windows bigint[], limits integer[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    h integer;
BEGIN
    FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
        INSERT INTO send_counters AS c (key, window_start, hits) VALUES (keys[i], windows[i], 0)
        ON CONFLICT (key) DO UPDATE
            SET window_start = excluded.window_start,
                hits = CASE WHEN c.window_start = excluded.window_start THEN c.hits ELSE 0 END
        RETURNING c.hits INTO h;
        IF limits[i] > 0 AND h >= limits[i] THEN
            RETURN i;
        END IF;
    END LOOP;
    UPDATE send_counters SET hits = hits + 1 WHERE key = ANY (keys);
    RETURN 0;
END $$;
-- +goose StatementEnd

-- One row per authenticated message the milter decided on. domain_id is
-- the login's domain (the log is served per domain); login is kept when
-- the credential is gone.
CREATE TABLE message_log (
    id              bigserial   PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    account_id      bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    domain_id       bigint      NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    credential_id   bigint      REFERENCES credentials (id) ON DELETE SET NULL,
    login           text        NOT NULL,
    queue_id        text        NOT NULL DEFAULT '',
    client_ip       inet,
    envelope_sender text        NOT NULL,
    recipients      text[]      NOT NULL,
    header_from     text        NOT NULL DEFAULT '',
    subject         text,
    size            bigint      NOT NULL DEFAULT 0,
    dkim_signed     boolean     NOT NULL DEFAULT false,
    event_type      text        NOT NULL CHECK (event_type IN ('queued', 'permanent_fail', 'temporary_fail')),
    reason          text        NOT NULL DEFAULT ''
);
CREATE INDEX message_log_domain_at_idx ON message_log (domain_id, at, id);
CREATE INDEX message_log_at_idx ON message_log (at);

-- Announcements for the milter's cache on channel smtpcreds_relay: 'c<id>'
-- when a credential changes or goes, '*' (forget everything) when a domain
-- is added, changes or goes, or when one statement changes more than 100
-- credentials (a domain added matters to a cache that remembers its absence).
-- Triggers, not the statements, announce, so that a change made anywhere
-- (an operator's SQL, an import) takes effect on the next message.
-- +goose StatementBegin
CREATE FUNCTION relay_notify_credentials() RETURNS trigger LANGUAGE plpgsql AS $$
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

-- +goose StatementBegin
CREATE FUNCTION relay_notify_all() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('smtpcreds_relay', '*');
    RETURN NULL;
END $$;
-- +goose StatementEnd

CREATE TRIGGER credentials_relay_update AFTER UPDATE ON credentials
    REFERENCING OLD TABLE AS relay_old NEW TABLE AS relay_new
    FOR EACH STATEMENT EXECUTE FUNCTION relay_notify_credentials();
CREATE TRIGGER credentials_relay_delete AFTER DELETE ON credentials
    REFERENCING OLD TABLE AS relay_old
    FOR EACH STATEMENT EXECUTE FUNCTION relay_notify_credentials();
CREATE TRIGGER domains_relay AFTER INSERT OR UPDATE OR DELETE ON domains
    FOR EACH STATEMENT EXECUTE FUNCTION relay_notify_all();
CREATE TRIGGER accounts_relay AFTER DELETE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION relay_notify_all();

-- +goose Down
DROP TRIGGER accounts_relay ON accounts;
DROP TRIGGER domains_relay ON domains;
DROP TRIGGER credentials_relay_delete ON credentials;
DROP TRIGGER credentials_relay_update ON credentials;
DROP FUNCTION relay_notify_all();
DROP FUNCTION relay_notify_credentials();
DROP TABLE message_log;
DROP FUNCTION send_count(text[], bigint[], integer[]);
DROP TABLE send_counters;
DROP TABLE credential_usage;
ALTER TABLE credentials
    DROP COLUMN allowed_senders, DROP COLUMN limit_per_minute,
    DROP COLUMN limit_per_hour, DROP COLUMN limit_per_day;
