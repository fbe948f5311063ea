-- +goose Up
-- credential_cap_room(domain_id, cap) says whether one more credential fits
-- in the domain under cap (0: no cap), and when it does it holds, until the
-- transaction ends, the lock that keeps the answer true: the create
-- statement (postgres.InsertVerifiedSQL) calls it for the domain it found
-- and inserts the credential only on true, so a create is one statement,
-- cap or not. The caller must be in READ COMMITTED and add at most one
-- credential per call; the function refuses a second call for a domain in a
-- transaction that got the shared lock for it (see below).
--
-- Why a function: in READ COMMITTED a statement counts with the snapshot
-- taken when it started, so a count in the create statement itself, after
-- waiting for a lock, would miss the credentials committed while it waited.
-- Each statement of a VOLATILE function takes a fresh snapshot, so the
-- counts below see every commit made before them.
--
-- Locks: the advisory lock (1, domain id), shared while the domain is far
-- from its cap, exclusive near it. Every create that passes holds one of
-- them from before its count until it commits, and a commit is visible to
-- new snapshots before its locks are released.
--
-- slack is the number of transactions that can be in progress at once:
-- backends (max_connections; background workers and WAL senders, which can
-- run SQL too) and prepared transactions.
--
-- Shared path: take the shared lock, count; pass when count + slack <= cap.
-- Exclusive path: take the exclusive lock, count; pass when count < cap.
--
-- Exact: suppose the committed credentials of a domain exceed cap at some
-- moment t. Of the creates committed by t, take Z, the one whose count's
-- snapshot S was taken last. The credentials committed by t that S misses
-- were added by creates that counted no later than S and committed after
-- it: transactions in progress at S, each holding its lock then, each
-- adding one credential. If Z took the exclusive lock there are none (their
-- locks would conflict with Z's), so at t there are at most count_Z + 1 <=
-- cap. If Z took the shared lock there are fewer than slack of them
-- (besides Z itself), so at most count_Z + slack <= cap. Either way not more
-- than cap. (Deletes only lower the count.) "Each adding one credential" is
-- why a transaction that passed on the shared lock may not pass again for
-- the domain: the function refuses; on the exclusive path nothing else
-- counts concurrently, so that rule is not needed there.
--
-- No deadlock: the function waits for the shared lock holding no lock on
-- the key (a second call after a shared pass is refused before; after an
-- exclusive pass it is granted at once), and when the shared count says
-- "near" it does not upgrade (two holders waiting for each other's shared
-- lock would deadlock): the shared lock was taken in a subtransaction (the
-- BEGIN ... EXCEPTION block), whose rollback releases it, and only then it
-- waits for the exclusive one, again holding nothing on the key. A create
-- that passed waits for nothing but the unique index (another create of the
-- same username, which holds no lock it waits for).
--
-- Cost: far from the cap (the common case) one count, and the shared lock,
-- which creates of the domain share: they wait only for an exclusive holder
-- (a create within slack of the cap). At the cap, one count and no wait
-- unless a create near it holds the exclusive lock.
--
-- Sequential scans are off inside: a PL/pgSQL statement keeps, per
-- connection, the generic plan it made there, and while credential_counts
-- is small (a new deployment) that plan scans it, on every create, as it
-- grows (until an analyze invalidates it). A count reads its domain's rows
-- by key.
-- +goose StatementBegin
CREATE FUNCTION credential_cap_room(for_domain bigint, cap bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET enable_seqscan = off AS $$
DECLARE
    lock_key constant int4 := (for_domain % 2147483648)::int4;
    marks constant text := coalesce(nullif(current_setting('smtpcreds.cap_shared', true), ''), ',');
    slack bigint;
    have bigint;
BEGIN
    IF cap <= 0 THEN
        RETURN true;
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'credential_cap_room needs READ COMMITTED: its counts need fresh snapshots';
    END IF;
    IF strpos(marks, ',' || lock_key || ',') > 0 THEN
        RAISE EXCEPTION 'credential_cap_room: this transaction already passed the shared lock of domain %', for_domain;
    END IF;
    slack := current_setting('max_connections')::bigint + current_setting('max_worker_processes')::bigint
           + current_setting('max_wal_senders')::bigint + current_setting('max_prepared_transactions')::bigint;
    BEGIN
        PERFORM pg_advisory_xact_lock_shared(1, lock_key);
        have := (SELECT coalesce(sum(n), 0) FROM credential_counts WHERE domain_id = for_domain AND level = 1);
        IF have >= cap THEN
            RETURN false;
        END IF;
        IF have + slack <= cap THEN
            PERFORM set_config('smtpcreds.cap_shared', marks || lock_key || ',', true);
            RETURN true;
        END IF;
        RAISE SQLSTATE 'SCNER'; -- near the cap: give the shared lock back
    EXCEPTION WHEN SQLSTATE 'SCNER' THEN
        NULL;
    END;
    PERFORM pg_advisory_xact_lock(1, lock_key);
    have := (SELECT coalesce(sum(n), 0) FROM credential_counts WHERE domain_id = for_domain AND level = 1);
    RETURN have < cap;
END $$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION credential_cap_room(bigint, bigint);
