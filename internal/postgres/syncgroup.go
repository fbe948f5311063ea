package postgres

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// A grouped apply applies the requests' jobs of several scopes of one
// target in one transaction of five statements (BEGIN, LockScopes,
// ClaimGroup, FinishGroup, COMMIT) instead of a transaction of eight per
// scope: creates spread over many domains then share the round trips, as
// creates into one domain share one scope's apply. Only scopes whose
// backend holds what the process last gave it are grouped (their apply is
// an append of the new logins, or a merge into parts it reads back); the
// others are applied alone (LockScope, ClaimLocked, ...).

// ScopeLock is a scope locked by LockScopes: its token (the token of its
// last committed apply) and whether its sync_parts are that apply's.
type ScopeLock struct {
	Scope        string
	Token        int64
	PartsTrusted bool
}

// LockScopesSQL is LockScopes' statement, exported for the bench (which
// counts the grouped applies by its text).
const LockScopesSQL = `
		SELECT scope, token, parts_token, set_config('synchronous_commit', 'off', true), set_config('enable_seqscan', 'off', true)
		FROM sync_scopes WHERE target = $1 AND scope = ANY($2::text[])
		ORDER BY scope FOR UPDATE SKIP LOCKED`

// LockScopes locks the rows of the given scopes of target that exist and
// that no other transaction holds, until the transaction ends, and returns
// them: it never waits, so a scope another process is applying (a whole
// write of a large scope may take seconds) holds up only its own requests,
// which apply it alone, not the group; and two groups never deadlock. It
// does not stamp them: FinishGroup stamps the scopes it applied, in the
// same transaction, and a scope it did not apply keeps its token. It makes
// the commit asynchronous and turns sequential scans off, as LockScope
// does.
func (SyncRepo) LockScopes(ctx context.Context, q sqlx.QueryerContext, target string, scopes []string) ([]ScopeLock, error) {
	rows, err := queryHot(ctx, q, LockScopesSQL, target, pq.Array(scopes))
	if err != nil {
		return nil, fmt.Errorf("lock sync scopes: %w", translate(err))
	}
	defer rows.Close()
	var locks []ScopeLock
	for rows.Next() {
		var l ScopeLock
		var parts sql.NullInt64
		if err := rows.Scan(&l.Scope, &l.Token, &parts, new(string), new(string)); err != nil {
			return nil, fmt.Errorf("lock sync scopes: %w", err)
		}
		l.PartsTrusted = parts.Valid && parts.Int64 == l.Token
		locks = append(locks, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lock sync scopes: %w", translate(err))
	}
	return locks, nil
}

// ClaimGroupSQL is ClaimGroup's statement, exported for the bench. Its
// rows are of three kinds: 'j' a claimed job, with whether another job of
// its scope is pending for its login and the part its login is in; 'p' the
// stored fingerprint of such a part; 'c' a changed credential's row (as
// ClaimLocked's).
var ClaimGroupSQL = `
		WITH j AS (
			SELECT id, scope, event, attempts FROM sync_jobs
			WHERE target = $1 AND scope = ANY($2::text[]) AND done_at IS NULL AND (locked_until IS NULL OR locked_until < now())
			  AND (not_before IS NULL OR not_before <= now())
			ORDER BY id LIMIT ` + claimMaxSQL + `
			FOR UPDATE SKIP LOCKED),
		k AS (
			SELECT j.id, j.scope, CASE WHEN $5::int > 0 THEN left(md5(j.event->>$4::text), $5::int) ELSE '' END AS part FROM j),
		l AS (
			SELECT (event->>$3::text)::bigint AS id,
			       split_part(event->>$4::text, '@', 1) AS username, split_part(event->>$4::text, '@', 2) AS domain
			FROM j)
		SELECT 'j' AS kind, j.id AS job_id, j.scope, j.event, j.attempts,
		       EXISTS (SELECT 1 FROM sync_jobs o
		               WHERE o.target = $1 AND o.scope = j.scope AND o.done_at IS NULL
		                 AND o.id NOT IN (SELECT id FROM j) AND o.event->>$4::text = j.event->>$4::text) AS pending,
		       k.part, NULL::text AS fingerprint,
		       NULL::bigint, NULL::bigint, NULL::bigint, NULL::text, NULL::text
		FROM j JOIN k ON k.id = j.id
		UNION ALL
		SELECT 'p', NULL, p.scope, NULL, NULL, NULL, p.part, p.fingerprint, NULL, NULL, NULL, NULL, NULL
		FROM (SELECT DISTINCT scope, part FROM k) x
		JOIN sync_parts p ON p.target = $1 AND p.scope = x.scope AND p.part = x.part
		UNION ALL (` + changedRowsSQL("'c', NULL::bigint, NULL::text, NULL::jsonb, NULL::int, NULL::bool, NULL::text, NULL::text, ") + `)`

// GroupJob is a job ClaimGroup claimed: Pending reports that another job
// of its scope, not claimed, is pending for its login, and Part is the
// part its login is in.
type GroupJob struct {
	SyncJobRow
	Pending bool
	Part    string
}

// GroupClaim is what ClaimGroup returns.
type GroupClaim struct {
	Jobs []GroupJob
	// Prints has the stored fingerprints of the parts of the jobs'
	// logins, by scope and part: a part without one has none stored.
	Prints map[string]map[string]string
	// Changed is what ClaimLocked returns with changes, for every job.
	Changed []SnapshotRow
}

// ClaimGroup claims, in the transaction that holds the scopes' locks
// (LockScopes), the unfinished jobs of target in scopes, as ClaimLocked
// does for one scope (ClaimMax at most in all, the oldest), and reads in
// the same statement what their apply would read: the changed credentials
// (keys are the keys of the credential's id and login in the events' JSON),
// whether another job is pending for a job's login, and the stored
// fingerprints of the parts of the jobs' logins (the part of a login being
// the first md5Digits hex digits of its MD5, or "" when 0).
func (SyncRepo) ClaimGroup(ctx context.Context, q sqlx.QueryerContext, target string, scopes []string, keys EventKeys, md5Digits int) (GroupClaim, error) {
	rows, err := queryHot(ctx, q, ClaimGroupSQL, target, pq.Array(scopes), keys.ID, keys.Login, md5Digits)
	if err != nil {
		return GroupClaim{}, fmt.Errorf("claim sync jobs: %w", translate(err))
	}
	defer rows.Close()
	c := GroupClaim{Prints: map[string]map[string]string{}}
	for rows.Next() {
		var (
			kind                               string
			job, attempts, id, version, synced sql.NullInt64
			scope, part, fp, login, hash       sql.NullString
			pending                            sql.NullBool
			event                              []byte
		)
		if err := rows.Scan(&kind, &job, &scope, &event, &attempts, &pending, &part, &fp, &id, &version, &synced, &login, &hash); err != nil {
			return GroupClaim{}, fmt.Errorf("claim sync jobs: %w", err)
		}
		switch kind {
		case "j":
			c.Jobs = append(c.Jobs, GroupJob{
				SyncJobRow: SyncJobRow{ID: job.Int64, Target: target, Scope: scope.String, Event: event, Attempts: int(attempts.Int64)},
				Pending:    pending.Bool, Part: part.String})
		case "p":
			if c.Prints[scope.String] == nil {
				c.Prints[scope.String] = map[string]string{}
			}
			c.Prints[scope.String][part.String] = fp.String
		default:
			c.Changed = append(c.Changed, SnapshotRow{CredentialID: id.Int64, Version: version.Int64,
				SyncedVersion: synced.Int64, Login: login.String, Hash: hash.String})
		}
	}
	if err := rows.Err(); err != nil {
		return GroupClaim{}, fmt.Errorf("claim sync jobs: %w", translate(err))
	}
	return c, nil
}

// GroupFinish is what a grouped apply records when it commits: the scopes
// it applied, each with its new token and whether the apply kept the
// fingerprints of its parts (KeepParts); the new fingerprints, by scope and
// part (PartScopes[i], Parts[i], Prints[i]; an empty one: the part is
// gone); the credential versions the targets confirmed; the jobs done.
type GroupFinish struct {
	Scopes                    []string
	Tokens                    []int64
	Keep                      []bool
	PartScopes, Parts, Prints []string
	IDs, Versions, Jobs       []int64
}

// FinishGroupSQL is FinishGroup's statement, exported for the bench.
const FinishGroupSQL = `
		WITH t AS (SELECT * FROM unnest($2::text[], $3::bigint[], $4::bool[]) AS t(scope, token, keep)),
		v AS (SELECT * FROM unnest($5::text[], $6::text[], $7::text[]) AS v(scope, part, fp)),
		gone AS (
			DELETE FROM sync_parts p USING v
			WHERE p.target = $1 AND p.scope = v.scope AND p.part = v.part AND v.fp = ''),
		kept AS (
			INSERT INTO sync_parts (target, scope, part, fingerprint)
			SELECT $1, scope, part, fp FROM v WHERE fp <> ''
			ON CONFLICT (target, scope, part) DO UPDATE SET fingerprint = EXCLUDED.fingerprint),
		stamped AS (
			UPDATE sync_scopes s SET prev_token = s.token, token = t.token,
			       parts_token = CASE WHEN t.keep THEN t.token ELSE s.parts_token END
			FROM t WHERE s.target = $1 AND s.scope = t.scope),
		synced AS (
			UPDATE credentials c SET synced_version = v.version, synced_at = now(), sync_error = NULL
			FROM unnest($8::bigint[], $9::bigint[]) AS v(id, version)
			WHERE c.id = v.id AND c.synced_version < v.version)
		UPDATE sync_jobs SET done_at = now(), locked_until = NULL, last_error = NULL WHERE id = ANY($10)`

// FinishGroup records a grouped apply, in the transaction that holds the
// scopes' locks, in one statement: what KeepParts and Finish record for
// each scope, and each scope stamped with its new token (as LockScope
// stamps one).
func (SyncRepo) FinishGroup(ctx context.Context, q sqlx.ExecerContext, target string, f GroupFinish) error {
	_, err := execHot(ctx, q, FinishGroupSQL, target, pq.Array(f.Scopes), pq.Array(f.Tokens), pq.Array(f.Keep),
		pq.Array(f.PartScopes), pq.Array(f.Parts), pq.Array(f.Prints), pq.Array(f.IDs), pq.Array(f.Versions), pq.Array(f.Jobs))
	if err != nil {
		return fmt.Errorf("finish sync jobs: %w", translate(err))
	}
	return nil
}
