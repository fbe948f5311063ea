package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
)

// CredentialRow is a row of credentials joined with its domain's name.
type CredentialRow struct {
	ID                int64      `db:"id"`
	GUID              uuid.UUID  `db:"guid"`
	AccountID         int64      `db:"account_id"`
	DomainID          int64      `db:"domain_id"`
	Domain            string     `db:"domain"`
	Username          string     `db:"username"`
	Status            bool       `db:"status"`
	CreatedAt         time.Time  `db:"created_at"`
	ModifiedAt        time.Time  `db:"modified_at"`
	PasswordChangedAt *time.Time `db:"password_changed_at"`
	Version           int64      `db:"version"`
	SyncedVersion     int64      `db:"synced_version"`
	SyncedAt          *time.Time `db:"synced_at"`
	SyncError         *string    `db:"sync_error"`
	CredentialUsageRow
}

// CredentialUsageRow is what the relay recorded of a credential
// (credential_usage), zero when it has none. Get, List and SetPassword
// fill it; the other statements leave it zero.
type CredentialUsageRow struct {
	LastUsedAt      *time.Time `db:"last_used_at"`
	LastUsedIP      *string    `db:"last_used_ip"`
	MessagesQueued  int64      `db:"messages_queued"`
	MessagesRefused int64      `db:"messages_refused"`
}

// usageCols are CredentialUsageRow's columns from credential_usage u,
// joined by usageJoin (a primary-key probe per credential row).
const (
	usageCols = `u.last_used_at, host(u.last_used_ip) AS last_used_ip,
	coalesce(u.messages_queued, 0) AS messages_queued, coalesce(u.messages_refused, 0) AS messages_refused`
	usageJoin = ` LEFT JOIN credential_usage u ON u.credential_id = c.id`
	// usageReturning is usageCols for a RETURNING list, which cannot join.
	usageReturning = `(SELECT last_used_at FROM credential_usage WHERE credential_id = c.id) AS last_used_at,
	(SELECT host(last_used_ip) FROM credential_usage WHERE credential_id = c.id) AS last_used_ip,
	coalesce((SELECT messages_queued FROM credential_usage WHERE credential_id = c.id), 0) AS messages_queued,
	coalesce((SELECT messages_refused FROM credential_usage WHERE credential_id = c.id), 0) AS messages_refused`
)

// NewCredential is what InsertVerified writes.
type NewCredential struct {
	GUID         uuid.UUID
	AccountID    int64
	Username     string
	PasswordHash string
}

var (
	// ErrNotVerified: InsertVerified found the domain, not verified.
	ErrNotVerified = errors.New("postgres: domain not verified")
	// ErrAtCap: InsertVerified found the domain at its credential cap.
	ErrAtCap = errors.New("postgres: domain at its credential cap")
)

// CredentialDomainRow is what the credential routes need of a domain.
type CredentialDomainRow struct {
	ID         int64  `db:"id"`
	Name       string `db:"name"`
	IsVerified bool   `db:"is_verified"`
}

// CredentialRepo reads and writes credentials; every statement is scoped by
// the account that owns the rows.
type CredentialRepo struct{}

const credentialCols = `c.id, c.guid, c.account_id, c.domain_id, d.name AS domain, c.username,
	c.status, c.created_at, c.modified_at, c.password_changed_at,
	c.version, c.synced_version, c.synced_at, c.sync_error`

// Domain returns the domain called name if accountID owns it, else ErrNotFound.
func (CredentialRepo) Domain(ctx context.Context, q sqlx.QueryerContext, accountID int64, name string) (CredentialDomainRow, error) {
	var r CredentialDomainRow
	err := sqlx.GetContext(ctx, q, &r,
		`SELECT id, name, is_verified FROM domains WHERE account_id = $1 AND name = $2`, accountID, name)
	if err != nil {
		return CredentialDomainRow{}, fmt.Errorf("credential domain: %w", translate(err))
	}
	return r, nil
}

// Count returns the number of credentials of domainID (a domain's
// credentials all belong to its account), from credential_counts: it reads
// about count/65536 rows, and is exact within the caller's snapshot.
func (CredentialRepo) Count(ctx context.Context, q sqlx.QueryerContext, domainID int64) (int64, error) {
	var n int64
	err := sqlx.GetContext(ctx, q, &n,
		`SELECT coalesce(sum(n), 0)::bigint FROM credential_counts WHERE domain_id = $1 AND level = 1`, domainID)
	if err != nil {
		return 0, fmt.Errorf("count credentials: %w", translate(err))
	}
	return n, nil
}

// InsertVerified adds a credential to the verified domain called domain
// owned by c.AccountID, if the domain has fewer than limit credentials (0:
// no limit), and with it job (when not nil) with the new credential's id
// in its event. One statement, so one round trip and, outside a
// transaction, one commit; the limit holds exactly under concurrent
// creates (see credential_cap_room in sqlmigrations), and concurrent
// inserts of one username wait for each other on the unique index: one
// adds it, the others get ErrConflict. Run it outside a transaction or in
// a READ COMMITTED one that creates no other credential in the domain.
//
// It returns the credential and the job's id, or, adding nothing,
// ErrNotFound when accountID owns no domain called domain, ErrNotVerified
// when the domain is not verified, ErrAtCap when it has limit credentials,
// ErrConflict when it has the username. A negative limit is an error.
func (CredentialRepo) InsertVerified(ctx context.Context, q sqlx.QueryerContext, c NewCredential, domain string, limit int64, job *JobDraft) (CredentialRow, int64, error) {
	if limit < 0 {
		return CredentialRow{}, 0, fmt.Errorf("insert credential: negative limit %d", limit)
	}
	var r struct {
		Outcome string `db:"outcome"`
		CredentialRow
		JobID *int64 `db:"job_id"`
	}
	var target, scope, event, idKey any // NULL: no job
	if job != nil {
		target, scope, event, idKey = job.Target, job.Scope, jsonArg(job.Event), job.IDKey
	}
	err := getHot(ctx, q, &r, InsertVerifiedSQL, c.GUID, c.AccountID, domain, c.Username, c.PasswordHash, limit, target, scope, event, idKey)
	if err == nil {
		err = outcomeErrs[r.Outcome]
	}
	if err != nil {
		return CredentialRow{}, 0, fmt.Errorf("insert credential: %w", translate(err))
	}
	var id int64
	if r.JobID != nil {
		id = *r.JobID
	}
	return r.CredentialRow, id, nil
}

// outcomeErrs are the errors of InsertVerifiedSQL's outcomes ("created":
// none).
var outcomeErrs = map[string]error{
	"no domain":    ErrNotFound,
	"not verified": ErrNotVerified,
	"at cap":       ErrAtCap,
	"taken":        ErrConflict,
}

// InsertVerifiedSQL is InsertVerified's statement (exported for the bench,
// which runs it through pgbench). It returns one row: its outcome, then
// the credential when one was added (zero values otherwise, so that the
// row always scans).
//
// The domain is found by its name alone, in a subquery that OFFSET 0 keeps
// the ownership test out of: a generic plan (made once per pooled
// connection) chose to scan the account's domains for the name instead, on
// every create. credential_cap_room runs once, for a verified domain,
// before the insert, which adds the credential only when it returned true
// (and then holds the cap's lock until the commit).
var InsertVerifiedSQL = `
		WITH d AS MATERIALIZED (
			SELECT d.id, d.name, d.is_verified,
			       CASE WHEN d.is_verified THEN credential_cap_room(d.id, $6) END AS room
			FROM (SELECT * FROM domains WHERE name = $3 OFFSET 0) d
			WHERE d.account_id = $2),
		c AS (
			INSERT INTO credentials (guid, account_id, domain_id, username, password_hash)
			SELECT $1, $2, d.id, $4, $5 FROM d WHERE d.room
			ON CONFLICT (domain_id, username) DO NOTHING
			RETURNING *),
		j AS (` + insertDraftedJobSQL("c", "$7", "$8", "$9", "$10") + `)
		SELECT CASE WHEN c.id IS NOT NULL THEN 'created' WHEN d.id IS NULL THEN 'no domain'
		            WHEN NOT d.is_verified THEN 'not verified' WHEN NOT d.room THEN 'at cap' ELSE 'taken' END AS outcome,
		       coalesce(c.id, 0) AS id, coalesce(c.guid, '00000000-0000-0000-0000-000000000000') AS guid,
		       coalesce(c.account_id, 0) AS account_id, coalesce(c.domain_id, 0) AS domain_id,
		       coalesce(d.name, '') AS domain, coalesce(c.username, '') AS username, coalesce(c.status, false) AS status,
		       coalesce(c.created_at, 'epoch') AS created_at, coalesce(c.modified_at, 'epoch') AS modified_at,
		       c.password_changed_at, coalesce(c.version, 0) AS version, coalesce(c.synced_version, 0) AS synced_version,
		       c.synced_at, c.sync_error, (SELECT id FROM j) AS job_id
		FROM (SELECT) one LEFT JOIN d ON true LEFT JOIN c ON true`

// Get returns the credential guid of the domain called domain, owned by
// accountID. ErrNotFound when there is none.
func (CredentialRepo) Get(ctx context.Context, q sqlx.QueryerContext, accountID int64, domain string, guid uuid.UUID) (CredentialRow, error) {
	var r CredentialRow
	err := sqlx.GetContext(ctx, q, &r, `
		SELECT `+credentialCols+`, `+usageCols+`
		FROM credentials c JOIN domains d ON d.id = c.domain_id`+usageJoin+`
		WHERE c.account_id = $1 AND d.name = $2 AND c.guid = $3`, accountID, domain, guid)
	if err != nil {
		return CredentialRow{}, fmt.Errorf("get credential: %w", translate(err))
	}
	return r, nil
}

// List returns up to limit credentials of domainID owned by accountID, in
// creation (id) order, skipping offset. It does not skip offset rows: the
// running sums of the level-1 counts find the range of 65536 ids holding the
// first row wanted, those of its (at most 64) buckets the bucket, and the
// scan starts at the bucket's first id (keyset), skipping fewer than 1024
// rows: a page deep in a million credentials costs about what the first
// one does. Usage is joined to the page's rows only.
func (CredentialRepo) List(ctx context.Context, q sqlx.QueryerContext, accountID, domainID int64, limit int, offset int64) ([]CredentialRow, error) {
	rows := []CredentialRow{}
	err := sqlx.SelectContext(ctx, q, &rows, `
		WITH r AS (
			SELECT bucket, sum(n)::bigint AS n FROM credential_counts
			WHERE domain_id = $2 AND level = 1 GROUP BY bucket),
		rc AS (
			SELECT bucket, n, (sum(n) OVER (ORDER BY bucket))::bigint - n AS before FROM r),
		range AS (
			SELECT bucket, before FROM rc WHERE before + n > $4 ORDER BY bucket LIMIT 1),
		b AS (
			SELECT bucket, sum(n)::bigint AS n FROM credential_counts
			WHERE domain_id = $2 AND level = 0
			  AND bucket >= (SELECT bucket << 6 FROM range) AND bucket < (SELECT (bucket + 1) << 6 FROM range)
			GROUP BY bucket),
		bc AS (
			SELECT bucket, n, (sum(n) OVER (ORDER BY bucket))::bigint - n + (SELECT before FROM range) AS before FROM b),
		start AS (
			SELECT bucket, before FROM bc WHERE before + n > $4 ORDER BY bucket LIMIT 1)
		SELECT `+credentialCols+`, `+usageCols+`
		FROM (SELECT * FROM credentials c
		      WHERE c.account_id = $1 AND c.domain_id = $2 AND c.id >= (SELECT bucket << 10 FROM start)
		      ORDER BY c.id
		      LIMIT $3 OFFSET $4 - (SELECT before FROM start)) c
		JOIN domains d ON d.id = c.domain_id`+usageJoin+`
		ORDER BY c.id`, accountID, domainID, limit, offset)
	if err != nil {
		return nil, fmt.Errorf("list credentials: %w", translate(err))
	}
	return rows, nil
}

// CompactCounts folds the delta rows of credential_counts into one row per
// range (dropping empty ones), at most batch ranges at a time.
// Deltas written concurrently are left for the next run.
func (CredentialRepo) CompactCounts(ctx context.Context, q sqlx.ExecerContext, batch int) error {
	_, err := q.ExecContext(ctx, `
		WITH pick AS (
			SELECT domain_id, level, bucket FROM credential_counts
			GROUP BY domain_id, level, bucket HAVING count(*) > 1 OR sum(n) = 0 LIMIT $1),
		gone AS (
			DELETE FROM credential_counts c USING pick
			WHERE c.domain_id = pick.domain_id AND c.level = pick.level AND c.bucket = pick.bucket
			RETURNING c.domain_id, c.level, c.bucket, c.n)
		INSERT INTO credential_counts (domain_id, level, bucket, n)
		SELECT domain_id, level, bucket, sum(n) FROM gone GROUP BY domain_id, level, bucket HAVING sum(n) <> 0`, batch)
	if err != nil {
		return fmt.Errorf("compact credential counts: %w", translate(err))
	}
	return nil
}

// Delete removes the credential guid of the domain called domain, owned by
// accountID, and returns it as it was. ErrNotFound when there is none.
func (CredentialRepo) Delete(ctx context.Context, q sqlx.QueryerContext, accountID int64, domain string, guid uuid.UUID) (CredentialRow, error) {
	var r CredentialRow
	err := sqlx.GetContext(ctx, q, &r, `
		DELETE FROM credentials c USING domains d
		WHERE d.id = c.domain_id AND c.account_id = $1 AND d.name = $2 AND c.guid = $3
		RETURNING `+credentialCols, accountID, domain, guid)
	if err != nil {
		return CredentialRow{}, fmt.Errorf("delete credential: %w", translate(err))
	}
	return r, nil
}

// SetPassword stores a new password hash for the credential guid of the domain
// called domain, owned by accountID, stamps the change and bumps its version
// (the credential is unsynced until the backend confirms the new version).
// ErrNotFound when there is none.
func (CredentialRepo) SetPassword(ctx context.Context, q sqlx.QueryerContext, accountID int64, domain string, guid uuid.UUID, hash string) (CredentialRow, error) {
	var r CredentialRow
	err := sqlx.GetContext(ctx, q, &r, `
		UPDATE credentials c
		SET password_hash = $4, modified_at = now(), password_changed_at = now(), version = c.version + 1
		FROM domains d
		WHERE d.id = c.domain_id AND c.account_id = $1 AND d.name = $2 AND c.guid = $3
		RETURNING `+credentialCols+`, `+usageReturning, accountID, domain, guid, hash)
	if err != nil {
		return CredentialRow{}, fmt.Errorf("set credential password: %w", translate(err))
	}
	return r, nil
}
