package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// SyncJobRow is a claimed row of sync_jobs.
type SyncJobRow struct {
	ID     int64  `db:"id"`
	Target string `db:"target"`
	Scope  string `db:"scope"`
	Event  []byte `db:"event"`
	// Attempts counts the attempts made on the job's own account: its
	// request's apply (Fail) and each worker's claim (ClaimDue). A request
	// whose apply takes the job along with its own does not count.
	Attempts int `db:"attempts"`
}

// SnapshotRow is one credential as a backend stores it.
type SnapshotRow struct {
	CredentialID  int64  `db:"id"`
	Version       int64  `db:"version"`
	SyncedVersion int64  `db:"synced_version"`
	Login         string `db:"login"`
	Hash          string `db:"password_hash"`
}

// SyncRepo is the transactional outbox of sync jobs. A job is claimed
// either by a worker setting a lease (locked_until; a job whose lease ran
// out, its worker having crashed, is claimable again) or, by a request, with
// a row lock in the transaction of the apply.
type SyncRepo struct{}

// Insert adds a job; call it in the transaction of the change it carries.
func (SyncRepo) Insert(ctx context.Context, q sqlx.QueryerContext, target, scope string, event []byte) (int64, error) {
	var id int64
	err := sqlx.GetContext(ctx, q, &id,
		`INSERT INTO sync_jobs (target, scope, event) VALUES ($1, $2, $3) RETURNING id`, target, scope, jsonArg(event))
	if err != nil {
		return 0, fmt.Errorf("insert sync job: %w", translate(err))
	}
	return id, nil
}

// InsertScheduled adds a job that is not due before at (a credential's
// expiry): it is claimed neither alone nor with its scope's other jobs
// until then. Call it in the transaction of the change that schedules it.
func (SyncRepo) InsertScheduled(ctx context.Context, q sqlx.QueryerContext, target, scope string, event []byte, at time.Time) (int64, error) {
	var id int64
	err := sqlx.GetContext(ctx, q, &id, `
		INSERT INTO sync_jobs (target, scope, event, available_at, not_before) VALUES ($1, $2, $3, $4, $4) RETURNING id`,
		target, scope, jsonArg(event), at)
	if err != nil {
		return 0, fmt.Errorf("insert scheduled sync job: %w", translate(err))
	}
	return id, nil
}

// ScheduledState is what decides whether a scheduled job still applies to
// its credential: its version, whether it has expired, whether a grace
// period is under way.
type ScheduledState struct {
	ID      int64 `db:"id"`
	Version int64 `db:"version"`
	Expired bool  `db:"expired"`
	InGrace bool  `db:"in_grace"`
}

// ScheduledStates returns the state of those of the credentials ids that exist.
func (SyncRepo) ScheduledStates(ctx context.Context, q sqlx.QueryerContext, ids []int64) ([]ScheduledState, error) {
	out := []ScheduledState{}
	err := sqlx.SelectContext(ctx, q, &out, `
		SELECT c.id, c.version, coalesce(c.expires_at <= now(), false) AS expired,
		       EXISTS (SELECT FROM credential_previous_passwords p WHERE p.credential_id = c.id AND p.expires_at > now()) AS in_grace
		FROM credentials c WHERE c.id = ANY($1)`, pq.Array(ids))
	if err != nil {
		return nil, fmt.Errorf("scheduled credentials: %w", translate(err))
	}
	return out, nil
}

// PreviousRow is the previous password of an active credential in a grace
// period: its login and the hash that still authenticates.
type PreviousRow struct {
	Login string `db:"login"`
	Hash  string `db:"hash"`
}

// previousFrom joins the previous passwords p that still authenticate of
// active credentials c (of domains d).
const previousFrom = `credential_previous_passwords p JOIN credentials c ON c.id = p.credential_id
		JOIN domains d ON d.id = c.domain_id
		WHERE p.expires_at > now() AND ` + activeSQL

// PreviousOf returns the previous passwords of those of the credentials ids
// in a grace period.
func (SyncRepo) PreviousOf(ctx context.Context, q sqlx.QueryerContext, ids []int64) ([]PreviousRow, error) {
	out := []PreviousRow{}
	err := sqlx.SelectContext(ctx, q, &out, `
		SELECT c.username || '@' || d.name AS login, p.password_hash AS hash
		FROM `+previousFrom+` AND p.credential_id = ANY($1)`, pq.Array(ids))
	if err != nil {
		return nil, fmt.Errorf("previous passwords: %w", translate(err))
	}
	return out, nil
}

// PreviousIn calls fn with the previous password of each credential of
// domain (every domain when domain is "") in a grace period (found through
// their own table: they are few).
func (SyncRepo) PreviousIn(ctx context.Context, q sqlx.QueryerContext, domain string, fn func(PreviousRow) error) error {
	rows, err := q.QueryxContext(ctx, `
		SELECT c.username || '@' || d.name AS login, p.password_hash AS hash
		FROM `+previousFrom+` AND ($1 = '' OR d.name = $1)`, domain)
	if err != nil {
		return fmt.Errorf("previous passwords: %w", translate(err))
	}
	defer rows.Close()
	for rows.Next() {
		var r PreviousRow
		if err := rows.StructScan(&r); err != nil {
			return fmt.Errorf("previous passwords: %w", err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("previous passwords: %w", translate(err))
	}
	return nil
}

// JobDraft is a sync job to be inserted in the statement that inserts the
// credential it is about (insertDraftedJobSQL): the credential's id is
// added to its event there.
type JobDraft struct {
	Target, Scope string
	Event         []byte // JSON, without the credential's id
	IDKey         string // the key of the credential's id in Event
}

// insertDraftedJobSQL is the statement, for a WITH clause, that inserts a
// JobDraft for each credential of the preceding CTE cte, with the
// credential's id added to the event under the key idKey: target, scope,
// event and idKey are the parameters that carry the draft's fields (target
// NULL: no job). It returns the jobs' ids.
func insertDraftedJobSQL(cte, target, scope, event, idKey string) string {
	return `
			INSERT INTO sync_jobs (target, scope, event)
			SELECT ` + target + `, ` + scope + `, ` + event + `::jsonb || jsonb_build_object(` + idKey + `::text, ` + cte + `.id)
			FROM ` + cte + ` WHERE ` + target + `::text IS NOT NULL
			RETURNING id`
}

const claimCols = `j.id, j.target, j.scope, j.event, j.attempts`

// ClaimDue claims the group (same target and scope) of the oldest due job:
// every unfinished, unleased job of that group, due or not, so that a burst
// coalesces (ClaimMax at most, the oldest). Returns nothing when no job is due. Rows locked by a concurrent
// claimer are skipped, never waited for: two claims that each wait for the
// other's rows deadlock (PostgreSQL then stalls both for deadlock_timeout).
//
// A job no attempt has counted or failed yet (attempts 0, first_failed_at
// NULL: the request that made it is applying it) is not due until grace
// after it became available: a worker that took it sooner would make that
// request wait for the worker's turn.
// Once a scope is due (a failed attempt, or a request that gave up), its
// fresh jobs are taken along all the same, so that one apply brings the
// backend up to date. Only target's jobs are claimed: those of a target
// the process does not run (its configuration changed) wait for a process
// that does, without counting attempts.
func (SyncRepo) ClaimDue(ctx context.Context, q sqlx.QueryerContext, target string, lease, grace time.Duration) ([]SyncJobRow, error) {
	rows := []SyncJobRow{}
	err := sqlx.SelectContext(ctx, q, &rows, `
		WITH first AS (
			SELECT target, scope FROM sync_jobs
			WHERE target = $3 AND done_at IS NULL AND available_at <= now() AND (locked_until IS NULL OR locked_until < now())
			  AND (attempts > 0 OR first_failed_at IS NOT NULL OR not_before IS NOT NULL
			       OR available_at <= now() - $2 * interval '1 millisecond')
			ORDER BY available_at, id LIMIT 1
			FOR UPDATE SKIP LOCKED),
		c AS (
			SELECT j.id FROM sync_jobs j, first
			WHERE j.target = first.target AND j.scope = first.scope AND j.done_at IS NULL
			  AND (j.locked_until IS NULL OR j.locked_until < now()) AND (j.not_before IS NULL OR j.not_before <= now())
			ORDER BY j.id LIMIT `+claimMaxSQL+`
			FOR UPDATE OF j SKIP LOCKED)
		UPDATE sync_jobs j SET locked_until = now() + $1 * interval '1 millisecond', attempts = j.attempts + 1
		FROM c WHERE j.id = c.id
		RETURNING `+claimCols, lease.Milliseconds(), grace.Milliseconds(), target)
	if err != nil {
		return nil, fmt.Errorf("claim sync jobs: %w", translate(err))
	}
	return rows, nil
}

// EventKeys are the keys under which a job's event JSON holds the
// credential's id and its login ("user@domain"): the syncer's Event defines
// them, and statements that read events take them as parameters.
type EventKeys struct {
	ID, Login string
}

// ClaimMax is the most jobs one claim takes (ClaimDue, ClaimLocked), the
// oldest first: a backlog of any size (a million jobs of an import for the
// webhook target, changes made during a long outage) is applied in batches
// of this many, each apply's memory and each webhook delivery bounded; the
// applies that follow take the rest.
const ClaimMax = 1000

var claimMaxSQL = strconv.Itoa(ClaimMax)

// ClaimLockedSQL is ClaimLocked's statement (one text, prepared once),
// exported for the bench, which runs the server's own SQL through pgbench.
var ClaimLockedSQL = `
		WITH j AS (
			SELECT id, event, attempts FROM sync_jobs
			WHERE target = $1 AND scope = $2 AND done_at IS NULL AND (locked_until IS NULL OR locked_until < now())
			  AND (not_before IS NULL OR not_before <= now())
			ORDER BY id LIMIT ` + claimMaxSQL + `
			FOR UPDATE SKIP LOCKED),
		l AS (
			SELECT (event->>$4::text)::bigint AS id,
			       split_part(event->>$5::text, '@', 1) AS username, split_part(event->>$5::text, '@', 2) AS domain
			FROM j WHERE $3)
		SELECT j.id AS job_id, j.event, j.attempts, NULL::bigint, NULL::bigint, NULL::bigint, NULL::text, NULL::text FROM j
		UNION ALL (` + changedRowsSQL("NULL::bigint, NULL::jsonb, NULL::int, ") + `)`

// ClaimLocked claims, in the transaction that holds the scope's lock
// (LockScope), every unfinished job of (target, scope), due or not (a
// request applying its change at once takes along whatever else is pending
// there; ClaimMax at most, the oldest): the jobs stay claimed, by their row locks, until the transaction
// ends, so a claim costs no commit of its own and an apply that fails or
// dies leaves them as they were. Jobs leased by a worker (ClaimDue), and
// rows another claim is locking at this moment, are left alone (skipped, as
// in ClaimDue).
//
// With changes (the keys of the credential's id and login in the events'
// JSON, which the syncer's Event defines), the same statement also returns
// what SnapshotOf returns for the credential ids and logins of the jobs'
// events, which saves the apply a round trip.
func (SyncRepo) ClaimLocked(ctx context.Context, q sqlx.QueryerContext, target, scope string, changes *EventKeys) ([]SyncJobRow, []SnapshotRow, error) {
	var keys EventKeys
	if changes != nil {
		keys = *changes
	}
	rows, err := queryHot(ctx, q, ClaimLockedSQL, target, scope, changes != nil, keys.ID, keys.Login)
	if err != nil {
		return nil, nil, fmt.Errorf("claim sync jobs: %w", translate(err))
	}
	defer rows.Close()
	var jobs []SyncJobRow
	var changed []SnapshotRow
	for rows.Next() {
		var (
			job, attempts, id, version, synced sql.NullInt64
			event                              []byte
			login, hash                        sql.NullString
		)
		if err := rows.Scan(&job, &event, &attempts, &id, &version, &synced, &login, &hash); err != nil {
			return nil, nil, fmt.Errorf("claim sync jobs: %w", err)
		}
		if job.Valid {
			jobs = append(jobs, SyncJobRow{ID: job.Int64, Target: target, Scope: scope, Event: event, Attempts: int(attempts.Int64)})
		} else {
			changed = append(changed, SnapshotRow{CredentialID: id.Int64, Version: version.Int64,
				SyncedVersion: synced.Int64, Login: login.String, Hash: hash.String})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("claim sync jobs: %w", translate(err))
	}
	return jobs, changed, nil
}

// AllDone reports whether every given job has been applied.
func (SyncRepo) AllDone(ctx context.Context, q sqlx.QueryerContext, ids []int64) (bool, error) {
	var pending int
	err := sqlx.GetContext(ctx, q, &pending,
		`SELECT count(*) FROM sync_jobs WHERE id = ANY($1) AND done_at IS NULL`, pq.Array(ids))
	if err != nil {
		return false, fmt.Errorf("sync jobs done: %w", translate(err))
	}
	return pending == 0, nil
}

// LockScope serialises the application of one (target, scope) across
// processes until the transaction ends (it locks the scope's row in
// sync_scopes), so that a render never overwrites a newer one. It stamps the
// scope with token and returns the token of the previous apply (0 when
// there was none).
//
// It also makes the transaction's commit asynchronous: the transaction only
// records that the backend already holds a state, and if a crash loses it
// the jobs are applied again, which is idempotent. The commit is still
// visible at once, so the next holder of the lock renders from it.
//
// And it turns sequential scans off for the rest of the transaction (a
// whole read, Snapshot, turns them on for its own read only): its other
// statements touch a few rows by key, and a prepared statement's generic
// plan, made once per connection while the tables are small (a new
// deployment, the bench's start), would otherwise keep scanning
// credentials and sync_jobs as they grow (the bench saw Finish go from
// 0.45 to 2.9 ms over 20,000 creates).
//
// partsTrusted reports whether the scope's sync_parts are what its last
// committed apply left (see KeepParts): that apply kept them true, and the
// token was not changed behind the syncer's back since.
func (SyncRepo) LockScope(ctx context.Context, q sqlx.QueryerContext, target, scope string, token int64) (prev int64, partsTrusted bool, err error) {
	var prevTok, partsTok sql.NullInt64
	err = queryRowHot(ctx, q, LockScopeSQL, target, scope, token).Scan(&prevTok, &partsTok, new(string), new(string))
	if err != nil {
		return 0, false, fmt.Errorf("lock sync scope: %w", translate(err))
	}
	return prevTok.Int64, prevTok.Valid && partsTok.Valid && partsTok.Int64 == prevTok.Int64, nil
}

// LockScopeSQL is LockScope's statement, exported for the bench.
const LockScopeSQL = `
		INSERT INTO sync_scopes (target, scope, token) VALUES ($1, $2, $3)
		ON CONFLICT (target, scope) DO UPDATE SET prev_token = sync_scopes.token, token = EXCLUDED.token
		RETURNING prev_token, parts_token, set_config('synchronous_commit', 'off', true), set_config('enable_seqscan', 'off', true)`

// PartsSQL is Parts' statement, exported for the bench.
const PartsSQL = `
		SELECT part, fingerprint FROM sync_parts
		WHERE target = $1 AND scope = $2 AND ($3::text[] IS NULL OR part = ANY($3))`

// Parts returns the fingerprints stored for the parts keys of (target,
// scope), or for all its parts when keys is nil, by part; a part without
// one has none stored (its file does not exist).
func (SyncRepo) Parts(ctx context.Context, q sqlx.QueryerContext, target, scope string, keys []string) (map[string]string, error) {
	rows, err := queryHot(ctx, q, PartsSQL, target, scope, nullArray(keys))
	if err != nil {
		return nil, fmt.Errorf("sync parts: %w", translate(err))
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var part, fp string
		if err := rows.Scan(&part, &fp); err != nil {
			return nil, fmt.Errorf("sync parts: %w", err)
		}
		out[part] = fp
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sync parts: %w", translate(err))
	}
	return out, nil
}

// nullArray is keys as a text[] parameter, NULL when keys is nil.
func nullArray(keys []string) any {
	if keys == nil {
		return nil
	}
	return pq.Array(keys)
}

// KeepPartsSQL is KeepParts' statement, exported for the bench.
const KeepPartsSQL = `
		WITH v AS (SELECT * FROM unnest($3::text[], $4::text[]) AS v(part, fp)),
		gone AS (
			DELETE FROM sync_parts p WHERE p.target = $1 AND p.scope = $2
			  AND (p.part IN (SELECT part FROM v WHERE fp = '') OR $5 AND p.part NOT IN (SELECT part FROM v))),
		kept AS (
			INSERT INTO sync_parts (target, scope, part, fingerprint)
			SELECT $1, $2, part, fp FROM v WHERE fp <> ''
			ON CONFLICT (target, scope, part) DO UPDATE SET fingerprint = EXCLUDED.fingerprint)
		UPDATE sync_scopes SET parts_token = $6 WHERE target = $1 AND scope = $2`

// KeepParts records, in the transaction of the apply that holds the
// scope's lock with token (LockScope), the fingerprints of the parts the
// apply wrote (an empty one: the part's file was removed); with whole, the
// scope's other parts have none. It stamps the scope's parts as kept by
// token, so that the next apply trusts them (LockScope's partsTrusted).
func (SyncRepo) KeepParts(ctx context.Context, q sqlx.ExecerContext, target, scope string, token int64, prints map[string]string, whole bool) error {
	parts, fps := make([]string, 0, len(prints)), make([]string, 0, len(prints))
	for k, fp := range prints {
		parts, fps = append(parts, k), append(fps, fp)
	}
	if _, err := execHot(ctx, q, KeepPartsSQL, target, scope, pq.Array(parts), pq.Array(fps), whole, token); err != nil {
		return fmt.Errorf("keep sync parts: %w", translate(err))
	}
	return nil
}

// PendingForSQL is PendingFor's statement, exported for the bench.
const PendingForSQL = `
		SELECT EXISTS (SELECT 1 FROM sync_jobs
			WHERE target = $1 AND scope = $2 AND done_at IS NULL AND id <> ALL($3) AND event->>$5::text = ANY($4))`

// PendingFor reports whether a job of (target, scope) other than the jobs
// given is pending for one of logins (the events' login under the key
// loginKey): a change of those logins the backend has not been given yet,
// e.g. a deletion a worker holds.
func (SyncRepo) PendingFor(ctx context.Context, q sqlx.QueryerContext, target, scope string, jobs []int64, logins []string, loginKey string) (bool, error) {
	var pending bool
	err := queryRowHot(ctx, q, PendingForSQL, target, scope, pq.Array(jobs), pq.Array(logins), loginKey).Scan(&pending)
	if err != nil {
		return false, fmt.Errorf("sync jobs pending: %w", translate(err))
	}
	return pending, nil
}

const snapshotCols = `c.id, c.version, c.synced_version, c.username || '@' || d.name AS login, c.password_hash`

// activeSQL is the condition on a credential c that a backend must hold
// it: every statement that reads what backends hold (a scope's whole read,
// Snapshot and ScanInOrder, and the changed credentials, changedRowsSQL)
// uses it, so that they agree.
const activeSQL = `c.status AND (c.expires_at IS NULL OR c.expires_at > now())`

// changedRowsSQL selects, for a CTE l(id, username, domain) of changed
// credentials and their logins, the changed credentials that are active
// (enabled and not expired)
// and the active credentials that hold the logins now (snapshotCols, after
// the columns pre): SnapshotOf's rows, which ClaimLocked also returns.
//
// A login's holder is looked up in a LATERAL subquery that OFFSET 0 keeps
// from being flattened into a join: planned on its own, its only sensible
// plan is one probe of the unique (domain_id, username) index per login.
// As a plain join, a generic plan made while credentials was small (each
// pooled connection keeps the one it made first) could probe by domain_id
// or by username alone and read a whole domain for every login: the bench
// caught one connection reading 25,000 rows per login, 51 ms per claim.
func changedRowsSQL(pre string) string {
	return `
		SELECT ` + pre + snapshotCols + `
		FROM credentials c JOIN domains d ON d.id = c.domain_id
		WHERE c.id IN (SELECT id FROM l) AND ` + activeSQL + `
		UNION
		SELECT ` + pre + snapshotCols + `
		FROM l JOIN domains d ON d.name = l.domain
		CROSS JOIN LATERAL (
			SELECT * FROM credentials c
			WHERE c.domain_id = d.id AND c.username = l.username AND ` + activeSQL + `
			OFFSET 0) c`
}

// ScopeScanSQL is the whole read of a scope: the active credentials of the
// domain $1 (every domain when $1 is empty), the one statement both
// whole reads run, with order (an ORDER BY clause, or "") appended. The
// domain is looked up apart, so that the planner can read the credentials
// of its id from an index in that index's order.
// Exported for the bench, which runs the server's own SQL.
func ScopeScanSQL(order string) string {
	return `
		SELECT ` + snapshotCols + `
		FROM credentials c JOIN domains d ON d.id = c.domain_id
		WHERE ` + activeSQL + ` AND ($1 = '' OR c.domain_id = (SELECT id FROM domains WHERE name = $1))` + order
}

// Snapshot calls fn with each active credential of domain (every domain
// when domain is ""), as the backend must hold them, in no particular order
// (targets order them as they need, cheaper than a collated sort here).
// Rows are streamed, not collected: a scope of a million credentials costs
// the caller only what it keeps of them. An error from fn stops the scan.
func (SyncRepo) Snapshot(ctx context.Context, q sqlx.QueryerContext, domain string, fn func(SnapshotRow) error) error {
	return scan(ctx, q, true, ScopeScanSQL(""), fn, domain)
}

// InOrderSQL is the ORDER BY of ScanInOrder: by the first $2 hex digits of
// the MD5 of the login (none when 0), then by domain, then by login,
// bytewise (the login is username || '@' || domain). For one domain and no
// digits it is the order of the index credentials_domain_login_idx, which
// the planner then reads in order, without a sort.
const InOrderSQL = `
		ORDER BY CASE WHEN $2 > 0 THEN left(md5(c.username || '@' || d.name), $2) END,
		         c.domain_id, (c.username || '@') COLLATE "C"`

// ScanInOrder is Snapshot with the credentials in order: grouped by the
// first md5Digits hex digits of the MD5 of their login ("%<k>Mu" in a
// Dovecot path, when md5Digits is k > 0), then by domain, and in login
// order (bytewise) within a domain. A writer can then stream a scope of
// any size straight into its files, one file after the other. For one
// domain (or every domain) and md5Digits 0, PostgreSQL reads the index
// credentials_domain_login_idx in order; with shards it sorts (on disk
// when large), still at no memory cost to the caller.
func (SyncRepo) ScanInOrder(ctx context.Context, q sqlx.QueryerContext, domain string, md5Digits int, fn func(SnapshotRow) error) error {
	if md5Digits > 0 {
		return scan(ctx, q, true, ScopeScanSQL(InOrderSQL), fn, domain, md5Digits)
	}
	// The planner would rather sort a bitmap scan's rows than read the
	// index in order, which costs it less only by its estimates: sorts
	// are off for this read.
	if err := q.QueryRowxContext(ctx, `SELECT set_config('enable_sort', 'off', true)`).Scan(new(string)); err != nil {
		return fmt.Errorf("sync snapshot: %w", translate(err))
	}
	if err := scan(ctx, q, false, ScopeScanSQL(InOrderSQL), fn, domain, md5Digits); err != nil {
		return err
	}
	if err := q.QueryRowxContext(ctx, `SELECT set_config('enable_sort', 'on', true)`).Scan(new(string)); err != nil {
		return fmt.Errorf("sync snapshot: %w", translate(err))
	}
	return nil
}

// scan runs a whole read, seqScan allowing sequential scans for it
// (LockScope turned them off for the keyed statements of its transaction).
func scan(ctx context.Context, q sqlx.QueryerContext, seqScan bool, query string, fn func(SnapshotRow) error, args ...any) error {
	if seqScan {
		if err := q.QueryRowxContext(ctx, `SELECT set_config('enable_seqscan', 'on', true)`).Scan(new(string)); err != nil {
			return fmt.Errorf("sync snapshot: %w", translate(err))
		}
	}
	rows, err := q.QueryxContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("sync snapshot: %w", translate(err))
	}
	defer rows.Close()
	for rows.Next() {
		var r SnapshotRow
		if err := rows.Scan(&r.CredentialID, &r.Version, &r.SyncedVersion, &r.Login, &r.Hash); err != nil {
			return fmt.Errorf("sync snapshot: %w", err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sync snapshot: %w", translate(err))
	}
	if seqScan {
		// Off again for the keyed statements that follow (Finish): a generic
		// plan first made here would keep a scan for the connection's life.
		if err := q.QueryRowxContext(ctx, `SELECT set_config('enable_seqscan', 'off', true)`).Scan(new(string)); err != nil {
			return fmt.Errorf("sync snapshot: %w", translate(err))
		}
	}
	return nil
}

// snapshotOfSQL is SnapshotOf's statement.
var snapshotOfSQL = `
		WITH l AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[]) AS l(id, username, domain))
		` + changedRowsSQL("")

// SnapshotOf returns, like Snapshot, the given credentials that are active,
// and the active credentials that hold the given logins ("user@domain")
// now: a login whose old credential changed may have passed to a new one
// meanwhile, and only a login no active credential holds is gone.
func (SyncRepo) SnapshotOf(ctx context.Context, q sqlx.QueryerContext, ids []int64, logins []string) ([]SnapshotRow, error) {
	users, domains := make([]string, 0, len(logins)), make([]string, 0, len(logins))
	for _, l := range logins {
		if u, d, ok := strings.Cut(l, "@"); ok {
			users, domains = append(users, u), append(domains, d)
		}
	}
	rows := []SnapshotRow{}
	err := sqlx.SelectContext(ctx, q, &rows, snapshotOfSQL, pq.Array(ids), pq.Array(users), pq.Array(domains))
	if err != nil {
		return nil, fmt.Errorf("sync snapshot: %w", translate(err))
	}
	return rows, nil
}

// finishSQL is Finish's statement.
const finishSQL = `
		WITH synced AS (
			UPDATE credentials c SET synced_version = v.version, synced_at = now(), sync_error = NULL
			FROM unnest($1::bigint[], $2::bigint[]) AS v(id, version)
			WHERE c.id = v.id AND c.synced_version < v.version)
		UPDATE sync_jobs SET done_at = now(), locked_until = NULL, last_error = NULL WHERE id = ANY($3)`

// Finish records a committed apply in one statement: the backend holds
// version versions[i] of credential ids[i] (a credential changed since
// keeps its newer version unconfirmed), and the jobs are done.
func (SyncRepo) Finish(ctx context.Context, q sqlx.ExecerContext, ids, versions, jobs []int64) error {
	_, err := execHot(ctx, q, finishSQL, pq.Array(ids), pq.Array(versions), pq.Array(jobs))
	if err != nil {
		return fmt.Errorf("finish sync jobs: %w", translate(err))
	}
	return nil
}

// MarkError records a failed attempt on credentials that are not yet synced.
func (SyncRepo) MarkError(ctx context.Context, q sqlx.ExecerContext, ids []int64, msg string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := q.ExecContext(ctx, `
		UPDATE credentials SET sync_error = $2 WHERE id = ANY($1) AND synced_version < version`, pq.Array(ids), msg)
	if err != nil {
		return fmt.Errorf("mark sync error: %w", translate(err))
	}
	return nil
}

// MarkAllSynced marks every active credential synced at its current
// version: for a backend that reads the database itself, where whatever is
// committed is what the backend has. It returns how many it marked.
func (SyncRepo) MarkAllSynced(ctx context.Context, q sqlx.ExecerContext) (int64, error) {
	res, err := q.ExecContext(ctx, `
		UPDATE credentials SET synced_version = version, synced_at = now(), sync_error = NULL
		WHERE status AND synced_version < version`)
	if err != nil {
		return 0, fmt.Errorf("mark all synced: %w", translate(err))
	}
	return res.RowsAffected()
}

// MarkSyncedIn marks the active credentials of the domains synced at
// their current version (MarkAllSynced for some domains: after a bulk
// insert into them, for a backend that reads the database itself).
func (SyncRepo) MarkSyncedIn(ctx context.Context, q sqlx.ExecerContext, domains []string) error {
	_, err := q.ExecContext(ctx, `
		UPDATE credentials c SET synced_version = c.version, synced_at = now(), sync_error = NULL
		FROM domains d WHERE d.id = c.domain_id AND d.name = ANY($1) AND c.status AND c.synced_version < c.version`,
		pq.Array(domains))
	if err != nil {
		return fmt.Errorf("mark synced: %w", translate(err))
	}
	return nil
}

// Failing returns how long the oldest pending job of (target, scope) has
// been failing, by the database's clock: since the first failed attempt at
// it (Release, Fail); 0 when none has failed. Read after a failed attempt,
// never on the way of one that succeeds.
func (SyncRepo) Failing(ctx context.Context, q sqlx.QueryerContext, target, scope string) (time.Duration, error) {
	var ms int64
	err := sqlx.GetContext(ctx, q, &ms, `
		SELECT coalesce((extract(epoch FROM now() - min(first_failed_at)) * 1000)::bigint, 0)
		FROM sync_jobs WHERE target = $1 AND scope = $2 AND done_at IS NULL`, target, scope)
	if err != nil {
		return 0, fmt.Errorf("sync scope failing: %w", translate(err))
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// Extend renews a worker's lease on jobs it holds (ClaimDue) for lease
// from now, while their apply is still making progress; jobs done or
// handed back meanwhile are left alone.
func (SyncRepo) Extend(ctx context.Context, q sqlx.ExecerContext, ids []int64, lease time.Duration) error {
	_, err := q.ExecContext(ctx, `
		UPDATE sync_jobs SET locked_until = now() + $2 * interval '1 millisecond'
		WHERE id = ANY($1) AND done_at IS NULL AND locked_until IS NOT NULL`,
		pq.Array(ids), lease.Milliseconds())
	if err != nil {
		return fmt.Errorf("extend sync jobs' lease: %w", translate(err))
	}
	return nil
}

// Release ends a worker's lease on jobs (ClaimDue counted the attempt):
// they are due again after delay. msg is the attempt's error, which also
// marks the jobs failing from now unless they already were; it is empty
// when the worker only hands the jobs back (it is stopping), which is no
// failure.
//
// A failed attempt also gives its time due to the scope's other failing
// jobs that are free (those requests failed while the worker held these,
// each on its own jittered delay), so that a failing scope has one
// schedule, the worker's, and is tried once per backoff.
func (SyncRepo) Release(ctx context.Context, q sqlx.ExecerContext, ids []int64, delay time.Duration, msg string) error {
	_, err := q.ExecContext(ctx, `
		WITH others AS (
			SELECT o.id FROM sync_jobs j JOIN sync_jobs o ON o.target = j.target AND o.scope = j.scope
			WHERE $3 <> '' AND j.id = ($1::bigint[])[1] AND o.done_at IS NULL AND o.first_failed_at IS NOT NULL
			  AND o.id <> ALL($1) AND (o.locked_until IS NULL OR o.locked_until < now())
			FOR UPDATE OF o SKIP LOCKED)
		UPDATE sync_jobs SET locked_until = NULL, available_at = now() + $2 * interval '1 millisecond',
		       last_error = nullif($3, ''),
		       first_failed_at = CASE WHEN $3 = '' THEN first_failed_at ELSE coalesce(first_failed_at, now()) END
		WHERE done_at IS NULL AND (id = ANY($1) OR id IN (SELECT id FROM others))`,
		pq.Array(ids), delay.Milliseconds(), msg)
	if err != nil {
		return fmt.Errorf("release sync jobs: %w", translate(err))
	}
	return nil
}

// Fail records a request's failed attempt at the jobs ids it claimed with
// ClaimLocked (the claim was rolled back with the attempt), with the error
// msg. The attempt counts against own, the request's own jobs, only: the
// jobs it took along are counted by their own requests and by workers, so
// that attempts does not grow with every request that failed meanwhile.
//
// The schedule of a failing scope is not the request's to move: jobs
// already failing keep the time they are due, and jobs failing for the
// first time join the earliest of those (or, when none was failing, are due
// after delay). However many requests fail, the worker's next attempt at
// the scope stays where the last failure's schedule put it: neither later,
// nor earlier (as the least of many jittered delays would be). Jobs a
// worker leased meanwhile are left to it.
func (SyncRepo) Fail(ctx context.Context, q sqlx.ExecerContext, ids, own []int64, delay time.Duration, msg string) error {
	_, err := q.ExecContext(ctx, `
		WITH failing AS (
			SELECT min(available_at) AS due FROM sync_jobs
			WHERE id = ANY($1) AND done_at IS NULL AND first_failed_at IS NOT NULL)
		UPDATE sync_jobs j SET last_error = nullif($4, ''),
		       available_at = CASE WHEN j.first_failed_at IS NULL
		                           THEN coalesce(failing.due, now() + $3 * interval '1 millisecond') ELSE j.available_at END,
		       first_failed_at = coalesce(j.first_failed_at, now()),
		       attempts = j.attempts + CASE WHEN j.id = ANY($2) THEN 1 ELSE 0 END
		FROM failing
		WHERE j.id = ANY($1) AND j.done_at IS NULL AND (j.locked_until IS NULL OR j.locked_until < now())`,
		pq.Array(ids), pq.Array(own), delay.Milliseconds(), msg)
	if err != nil {
		return fmt.Errorf("record failed sync attempt: %w", translate(err))
	}
	return nil
}

// Prune deletes jobs applied longer than age ago.
func (SyncRepo) Prune(ctx context.Context, q sqlx.ExecerContext, age time.Duration) (int64, error) {
	res, err := q.ExecContext(ctx,
		`DELETE FROM sync_jobs WHERE done_at < now() - $1 * interval '1 millisecond'`, age.Milliseconds())
	if err != nil {
		return 0, fmt.Errorf("prune sync jobs: %w", translate(err))
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// QueueStats is the state of the outbox, for readiness and metrics.
type QueueStats struct {
	Pending       int64      `db:"pending"`
	OldestPending *time.Time `db:"oldest"`
}

// Stats counts unfinished jobs and finds the oldest (by when it became due);
// jobs scheduled for later (an expiry) count once they are due.
func (SyncRepo) Stats(ctx context.Context, q sqlx.QueryerContext) (QueueStats, error) {
	var s QueueStats
	err := sqlx.GetContext(ctx, q, &s,
		`SELECT count(*) AS pending, min(coalesce(not_before, created_at)) AS oldest FROM sync_jobs
		 WHERE done_at IS NULL AND (not_before IS NULL OR not_before <= now())`)
	if err != nil {
		return QueueStats{}, fmt.Errorf("sync stats: %w", translate(err))
	}
	return s, nil
}
