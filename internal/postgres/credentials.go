package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
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
	// ExpiresAt is when the login stops authenticating (nil: never).
	ExpiresAt *time.Time `db:"expires_at"`
	// The relay's policy (migration 00010): nil uses the defaults.
	AllowedSenders pq.StringArray `db:"allowed_senders"`
	LimitPerMinute *int           `db:"limit_per_minute"`
	LimitPerHour   *int           `db:"limit_per_hour"`
	LimitPerDay    *int           `db:"limit_per_day"`
	// PreviousHash is the password a reset with a grace period replaced,
	// which authenticates until PreviousExpiresAt (both nil otherwise).
	PreviousHash      *string    `db:"previous_password_hash"`
	PreviousExpiresAt *time.Time `db:"previous_password_expires_at"`
}

// InGrace reports whether the previous password still authenticates at now.
func (r CredentialRow) InGrace(now time.Time) bool {
	return r.PreviousHash != nil && r.PreviousExpiresAt != nil && r.PreviousExpiresAt.After(now)
}

// Active reports whether the credential authenticates at now: enabled and
// not expired (the condition of the dovecot_passdb view and the snapshots).
func (r CredentialRow) Active(now time.Time) bool {
	return r.Status && (r.ExpiresAt == nil || r.ExpiresAt.After(now))
}

// CredentialUsageRow is what the relay recorded of a credential
// (credential_usage), zero when it has none. The statements that answer
// the API (Get, List, ListStatus, SetPassword, Update) fill it; the others
// leave it zero.
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
	c.version, c.synced_version, c.synced_at, c.sync_error,
	c.expires_at, c.allowed_senders, c.limit_per_minute, c.limit_per_hour, c.limit_per_day`

// previousCols are the previous password's columns of CredentialRow, from
// credential_previous_passwords p (previousJoin); noPrevious when there is
// none.
const (
	previousCols = `p.password_hash AS previous_password_hash, p.expires_at AS previous_password_expires_at`
	previousJoin = ` LEFT JOIN credential_previous_passwords p ON p.credential_id = c.id`
	noPrevious   = `NULL::text AS previous_password_hash, NULL::timestamptz AS previous_password_expires_at`
)

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
		       c.synced_at, c.sync_error, c.expires_at, c.allowed_senders,
		       c.limit_per_minute, c.limit_per_hour, c.limit_per_day, ` + noPrevious + `, (SELECT id FROM j) AS job_id
		FROM (SELECT) one LEFT JOIN d ON true LEFT JOIN c ON true`

// Get returns the credential guid of the domain called domain, owned by
// accountID. ErrNotFound when there is none.
func (CredentialRepo) Get(ctx context.Context, q sqlx.QueryerContext, accountID int64, domain string, guid uuid.UUID) (CredentialRow, error) {
	var r CredentialRow
	err := sqlx.GetContext(ctx, q, &r, `
		SELECT `+credentialCols+`, `+usageCols+`, `+previousCols+`
		FROM credentials c JOIN domains d ON d.id = c.domain_id`+usageJoin+previousJoin+`
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
		SELECT `+credentialCols+`, `+usageCols+`, `+previousCols+`
		FROM (SELECT * FROM credentials c
		      WHERE c.account_id = $1 AND c.domain_id = $2 AND c.id >= (SELECT bucket << 10 FROM start)
		      ORDER BY c.id
		      LIMIT $3 OFFSET $4 - (SELECT before FROM start)) c
		JOIN domains d ON d.id = c.domain_id`+usageJoin+previousJoin+`
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
		RETURNING `+credentialCols+`, `+noPrevious, accountID, domain, guid)
	if err != nil {
		return CredentialRow{}, fmt.Errorf("delete credential: %w", translate(err))
	}
	return r, nil
}

// SetPassword stores a new password hash for the credential guid of the domain
// called domain, owned by accountID, stamps the change and bumps its version
// (the credential is unsynced until the backend confirms the new version).
// With a grace period (above 0), the replaced password becomes the previous
// one until then; without, there is no previous password (a grace under way
// ends). ErrNotFound when there is none.
func (CredentialRepo) SetPassword(ctx context.Context, q sqlx.QueryerContext, accountID int64, domain string, guid uuid.UUID, hash string, grace time.Duration) (CredentialRow, error) {
	var r CredentialRow
	err := sqlx.GetContext(ctx, q, &r, `
		WITH old AS (
			SELECT c.id, c.password_hash FROM credentials c JOIN domains d ON d.id = c.domain_id
			WHERE c.account_id = $1 AND d.name = $2 AND c.guid = $3
			FOR UPDATE OF c),
		c AS (
			UPDATE credentials c
			SET password_hash = $4, modified_at = now(), password_changed_at = now(), version = c.version + 1
			FROM old WHERE c.id = old.id
			RETURNING c.*),
		p AS (
			INSERT INTO credential_previous_passwords AS p (credential_id, password_hash, expires_at)
			SELECT id, password_hash, now() + $5 * interval '1 millisecond' FROM old WHERE $5 > 0
			ON CONFLICT (credential_id) DO UPDATE SET password_hash = EXCLUDED.password_hash, expires_at = EXCLUDED.expires_at
			RETURNING p.*),
		gone AS (
			DELETE FROM credential_previous_passwords WHERE $5 <= 0 AND credential_id IN (SELECT id FROM old))
		SELECT `+credentialCols+`, `+usageCols+`, `+previousCols+`
		FROM c JOIN domains d ON d.id = c.domain_id LEFT JOIN p ON p.credential_id = c.id`+usageJoin,
		accountID, domain, guid, hash, grace.Milliseconds())
	if err != nil {
		return CredentialRow{}, fmt.Errorf("set credential password: %w", translate(err))
	}
	return r, nil
}

// CountDisabled returns the number of disabled credentials of domainID
// (from a partial index: disabled credentials are few).
func (CredentialRepo) CountDisabled(ctx context.Context, q sqlx.QueryerContext, domainID int64) (int64, error) {
	var n int64
	err := sqlx.GetContext(ctx, q, &n, `SELECT count(*) FROM credentials WHERE domain_id = $1 AND NOT status`, domainID)
	if err != nil {
		return 0, fmt.Errorf("count disabled credentials: %w", translate(err))
	}
	return n, nil
}

// ListStatus is List of the credentials whose status is status only. It
// skips offset rows: deep pages of enabled credentials cost their offset
// (disabled ones are found through a partial index).
func (CredentialRepo) ListStatus(ctx context.Context, q sqlx.QueryerContext, accountID, domainID int64, status bool, limit int, offset int64) ([]CredentialRow, error) {
	rows := []CredentialRow{}
	err := sqlx.SelectContext(ctx, q, &rows, `
		SELECT `+credentialCols+`, `+usageCols+`, `+previousCols+`
		FROM credentials c JOIN domains d ON d.id = c.domain_id`+usageJoin+previousJoin+`
		WHERE c.account_id = $1 AND c.domain_id = $2 AND c.status = $3
		ORDER BY c.id LIMIT $4 OFFSET $5`, accountID, domainID, status, limit, offset)
	if err != nil {
		return nil, fmt.Errorf("list credentials: %w", translate(err))
	}
	return rows, nil
}

// CredentialUpdate is what Update changes: each Set* field says whether
// its value is to be stored (nil values store NULL).
type CredentialUpdate struct {
	Status                             *bool
	SetExpiresAt                       bool
	ExpiresAt                          *time.Time
	SetAllowedSenders                  bool
	AllowedSenders                     []string
	SetLimitPerMinute, SetLimitPerHour bool
	SetLimitPerDay                     bool
	LimitPerMinute, LimitPerHour       *int
	LimitPerDay                        *int
}

// UpdatedCredential is a credential as Update left it, with its stored
// hash (for the sync event) and whether its authentication changed.
type UpdatedCredential struct {
	CredentialRow
	Hash string `db:"password_hash"`
	// AuthChanged: the status or the expiry changed (the version was
	// bumped: the backend has to learn it).
	AuthChanged bool `db:"auth_changed"`
}

// Update applies u to the credential guid of the domain called domain,
// owned by accountID, and stamps modified_at. A change of status or expiry
// bumps the version (the credential is unsynced until the backend
// confirms). ErrNotFound when there is none.
func (CredentialRepo) Update(ctx context.Context, q sqlx.QueryerContext, accountID int64, domain string, guid uuid.UUID, u CredentialUpdate) (UpdatedCredential, error) {
	var r UpdatedCredential
	var senders any // NULL unless set to a list
	if u.AllowedSenders != nil {
		senders = pq.StringArray(u.AllowedSenders)
	}
	err := sqlx.GetContext(ctx, q, &r, `
		WITH old AS (
			SELECT c.id, c.status, c.expires_at FROM credentials c JOIN domains d ON d.id = c.domain_id
			WHERE c.account_id = $1 AND d.name = $2 AND c.guid = $3
			FOR UPDATE OF c),
		new AS (
			SELECT old.id, coalesce($4, old.status) AS status,
			       CASE WHEN $5 THEN $6::timestamptz ELSE old.expires_at END AS expires_at
			FROM old),
		c AS (
			UPDATE credentials c
			SET status = new.status, expires_at = new.expires_at,
			    allowed_senders = CASE WHEN $7 THEN $8::text[] ELSE c.allowed_senders END,
			    limit_per_minute = CASE WHEN $9 THEN $10::integer ELSE c.limit_per_minute END,
			    limit_per_hour = CASE WHEN $11 THEN $12::integer ELSE c.limit_per_hour END,
			    limit_per_day = CASE WHEN $13 THEN $14::integer ELSE c.limit_per_day END,
			    modified_at = now(),
			    version = c.version + CASE WHEN (old.status, old.expires_at) IS DISTINCT FROM (new.status, new.expires_at) THEN 1 ELSE 0 END
			FROM old JOIN new USING (id)
			WHERE c.id = old.id
			RETURNING c.*, (old.status, old.expires_at) IS DISTINCT FROM (new.status, new.expires_at) AS auth_changed)
		SELECT `+credentialCols+`, `+usageCols+`, `+previousCols+`, c.password_hash, c.auth_changed
		FROM c JOIN domains d ON d.id = c.domain_id`+usageJoin+previousJoin,
		accountID, domain, guid, u.Status, u.SetExpiresAt, u.ExpiresAt, u.SetAllowedSenders, senders,
		u.SetLimitPerMinute, u.LimitPerMinute, u.SetLimitPerHour, u.LimitPerHour, u.SetLimitPerDay, u.LimitPerDay)
	if err != nil {
		return UpdatedCredential{}, fmt.Errorf("update credential: %w", translate(err))
	}
	return r, nil
}

// VerifiedDomains returns which of names are verified domains of accountID.
func (CredentialRepo) VerifiedDomains(ctx context.Context, q sqlx.QueryerContext, accountID int64, names []string) ([]string, error) {
	out := []string{}
	err := sqlx.SelectContext(ctx, q, &out,
		`SELECT name FROM domains WHERE account_id = $1 AND is_verified AND name = ANY($2)`, accountID, pq.Array(names))
	if err != nil {
		return nil, fmt.Errorf("verified domains: %w", translate(err))
	}
	return out, nil
}

// PrunePrevious deletes the previous passwords whose grace period ended,
// at most batch of them; it returns how many.
func (CredentialRepo) PrunePrevious(ctx context.Context, q sqlx.ExecerContext, batch int) (int64, error) {
	res, err := q.ExecContext(ctx, `
		DELETE FROM credential_previous_passwords WHERE credential_id IN (
			SELECT credential_id FROM credential_previous_passwords WHERE expires_at <= now() LIMIT $1)`, batch)
	if err != nil {
		return 0, fmt.Errorf("prune previous passwords: %w", translate(err))
	}
	return res.RowsAffected()
}
