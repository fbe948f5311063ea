package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
)

// DomainRow is a row of domains.
type DomainRow struct {
	ID                int64      `db:"id"`
	AccountID         int64      `db:"account_id"`
	Name              string     `db:"name"`
	IsVerified        bool       `db:"is_verified"`
	VerifiedBy        *string    `db:"verified_by"` // "dns", "operator" or nil (see SaveCheck)
	Status            bool       `db:"status"`
	CreatedAt         time.Time  `db:"created_at"`
	ModifiedAt        time.Time  `db:"modified_at"`
	DKIMSelector      string     `db:"dkim_selector"`
	DKIMKeyBits       int        `db:"dkim_key_bits"`
	DKIMPublicKey     string     `db:"dkim_public_key"`
	DKIMVerified      bool       `db:"dkim_verified"`
	SPFVerified       bool       `db:"spf_verified"`
	MXVerified        bool       `db:"mx_verified"`
	CheckedAt         *time.Time `db:"checked_at"`
	Checks            []byte     `db:"checks"`
	OpenTrack         bool       `db:"open_track"`
	ClickTrack        bool       `db:"click_track"`
	UnsubTrack        bool       `db:"unsub_track"`
	AuthDomain        string     `db:"auth_domain"`
	AuthDKIMSelector  string     `db:"auth_dkim_selector"`
	AuthDKIMPublicKey string     `db:"auth_dkim_public_key"`
	AuthVerified      bool       `db:"auth_verified"`
	AuthCheckedAt     *time.Time `db:"auth_checked_at"`
	AuthChecks        []byte     `db:"auth_checks"`
	TrackingDomain    string     `db:"tracking_domain"`
	TrackingVerified  bool       `db:"tracking_verified"`
	TrackingCheckedAt *time.Time `db:"tracking_checked_at"`
	TrackingChecks    []byte     `db:"tracking_checks"`
}

// domainCols lists DomainRow's columns; private keys are never selected
// with them.
const domainCols = `id, account_id, name, is_verified, verified_by, status, created_at, modified_at,
	dkim_selector, dkim_key_bits, dkim_public_key, dkim_verified, spf_verified, mx_verified,
	checked_at, checks, open_track, click_track, unsub_track,
	auth_domain, auth_dkim_selector, auth_dkim_public_key, auth_verified, auth_checked_at, auth_checks,
	tracking_domain, tracking_verified, tracking_checked_at, tracking_checks`

// NewDomain is what the insert methods write.
type NewDomain struct {
	Name string
	// Verified marks the domain verified by the operator.
	Verified      bool
	DKIMSelector  string
	DKIMKeyBits   int
	DKIMPublicKey string
	DKIMSealedKey []byte
}

// DomainRepo reads and writes sending domains; every statement but the
// operator's (InsertForAccountName, SetVerifiedByOperator, ListAll, ByName:
// the CLI) is scoped by the owning account.
type DomainRepo struct{}

// Insert adds a domain to accountID. ErrConflict when any account has it.
func (DomainRepo) Insert(ctx context.Context, q sqlx.QueryerContext, accountID int64, d NewDomain) (DomainRow, error) {
	return insertDomain(ctx, q, "id = $1", accountID, d)
}

// InsertForAccountName adds a domain to the account called accountName (the
// operator CLI). ErrNotFound when there is no such account, ErrConflict when
// any account has the domain.
func (DomainRepo) InsertForAccountName(ctx context.Context, q sqlx.QueryerContext, accountName string, d NewDomain) (DomainRow, error) {
	return insertDomain(ctx, q, "name = $1", accountName, d)
}

// insertDomain inserts d for the account that accountWhere ($1 = account)
// selects; no row (ErrNotFound) when none does.
func insertDomain(ctx context.Context, q sqlx.QueryerContext, accountWhere string, account any, d NewDomain) (DomainRow, error) {
	var r DomainRow
	err := sqlx.GetContext(ctx, q, &r, `
		INSERT INTO domains (account_id, name, is_verified, verified_by, dkim_selector, dkim_key_bits, dkim_public_key, dkim_private_key)
		SELECT id, $2, $3::boolean, CASE WHEN $3::boolean THEN 'operator' END, $4, $5, $6, $7 FROM accounts WHERE `+accountWhere+`
		RETURNING `+domainCols,
		account, d.Name, d.Verified, d.DKIMSelector, d.DKIMKeyBits, d.DKIMPublicKey, d.DKIMSealedKey)
	if err != nil {
		return DomainRow{}, fmt.Errorf("insert domain: %w", translate(err))
	}
	return r, nil
}

// Get returns accountID's domain called name. ErrNotFound when there is none.
func (DomainRepo) Get(ctx context.Context, q sqlx.QueryerContext, accountID int64, name string) (DomainRow, error) {
	var r DomainRow
	err := sqlx.GetContext(ctx, q, &r,
		`SELECT `+domainCols+` FROM domains WHERE account_id = $1 AND name = $2`, accountID, name)
	if err != nil {
		return DomainRow{}, fmt.Errorf("get domain: %w", translate(err))
	}
	return r, nil
}

// likePattern escapes LIKE wildcards so search text matches literally.
func likePattern(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(strings.ToLower(s)) + "%"
}

// List returns one page of accountID's domains whose name contains search
// (all when empty), oldest first, and how many match in all.
func (DomainRepo) List(ctx context.Context, q sqlx.QueryerContext, accountID int64, search string, limit int, offset int64) ([]DomainRow, int64, error) {
	pattern := likePattern(search)
	var total int64
	if err := sqlx.GetContext(ctx, q, &total,
		`SELECT count(*) FROM domains WHERE account_id = $1 AND name LIKE $2`, accountID, pattern); err != nil {
		return nil, 0, fmt.Errorf("count domains: %w", translate(err))
	}
	rows := []DomainRow{}
	if offset >= total {
		return rows, total, nil
	}
	err := sqlx.SelectContext(ctx, q, &rows, `
		SELECT `+domainCols+` FROM domains WHERE account_id = $1 AND name LIKE $2
		ORDER BY id LIMIT $3 OFFSET $4`, accountID, pattern, limit, offset)
	if err != nil {
		return nil, 0, fmt.Errorf("list domains: %w", translate(err))
	}
	return rows, total, nil
}

// UpdateTracking sets the tracking flags that are not nil. ErrNotFound when
// accountID has no domain called name.
func (DomainRepo) UpdateTracking(ctx context.Context, q sqlx.QueryerContext, accountID int64, name string, open, click, unsub *bool) (DomainRow, error) {
	return domainUpdate(ctx, q, "update tracking", `
		UPDATE domains SET open_track = coalesce($3, open_track), click_track = coalesce($4, click_track),
		       unsub_track = coalesce($5, unsub_track), modified_at = now()
		WHERE account_id = $1 AND name = $2 RETURNING `+domainCols, accountID, name, open, click, unsub)
}

// Delete removes accountID's domain called name with its credentials and
// returns it as it was. ErrNotFound when there is none.
func (DomainRepo) Delete(ctx context.Context, q sqlx.QueryerContext, accountID int64, name string) (DomainRow, error) {
	return domainUpdate(ctx, q, "delete domain",
		`DELETE FROM domains WHERE account_id = $1 AND name = $2 RETURNING `+domainCols, accountID, name)
}

// Logins returns the SMTP logins of accountID's domain called name.
func (DomainRepo) Logins(ctx context.Context, q sqlx.QueryerContext, accountID int64, name string) ([]string, error) {
	logins := []string{}
	err := sqlx.SelectContext(ctx, q, &logins, `
		SELECT c.username || '@' || d.name FROM credentials c JOIN domains d ON d.id = c.domain_id
		WHERE d.account_id = $1 AND d.name = $2 ORDER BY 1`, accountID, name)
	if err != nil {
		return nil, fmt.Errorf("domain logins: %w", translate(err))
	}
	return logins, nil
}

// SaveCheck stores the outcome of a mandatory-records check; passed says
// whether it verifies the domain. The domain is then verified by "dns" when
// it passed, else not verified, unless an operator marked it verified: that
// mark stands (verified_by stays "operator") whatever the check found, and
// the check's results are stored all the same.
func (DomainRepo) SaveCheck(ctx context.Context, q sqlx.QueryerContext, accountID int64, name string, dkim, spf, mx, passed bool, checks []byte) (DomainRow, error) {
	return domainUpdate(ctx, q, "save domain check", `
		UPDATE domains SET dkim_verified = $3, spf_verified = $4, mx_verified = $5,
		       is_verified = (verified_by IS NOT DISTINCT FROM 'operator' OR $6::boolean),
		       verified_by = CASE WHEN verified_by = 'operator' THEN 'operator' WHEN $6::boolean THEN 'dns' END,
		       checks = $7, checked_at = now(), modified_at = now()
		WHERE account_id = $1 AND name = $2 RETURNING `+domainCols, accountID, name, dkim, spf, mx, passed, jsonArg(checks))
}

// SetVerifiedByOperator marks the domain called name verified by the
// operator (verified), or withdraws any verification (not verified): the
// domain is then unverified until a DNS check passes. accountName, when not
// empty, must own the domain. ErrNotFound otherwise, or when there is no such
// domain. The operator's path (the CLI): not scoped by an API account.
func (DomainRepo) SetVerifiedByOperator(ctx context.Context, q sqlx.QueryerContext, accountName, name string, verified bool) (DomainRow, error) {
	return domainUpdate(ctx, q, "set verified", `
		UPDATE domains SET is_verified = $3::boolean, verified_by = CASE WHEN $3::boolean THEN 'operator' END, modified_at = now()
		WHERE name = $2 AND ($1 = '' OR account_id = (SELECT id FROM accounts WHERE name = $1))
		RETURNING `+domainCols, accountName, name, verified)
}

// OperatorDomainRow is a domain with the name of its account.
type OperatorDomainRow struct {
	DomainRow
	AccountName string `db:"account_name"`
}

// ListAll returns every domain, or those of the account called accountName
// when it is not empty, ordered by account name and domain name. The
// operator's path (the CLI): not scoped by an API account.
func (DomainRepo) ListAll(ctx context.Context, q sqlx.QueryerContext, accountName string) ([]OperatorDomainRow, error) {
	rows := []OperatorDomainRow{}
	err := sqlx.SelectContext(ctx, q, &rows, `
		SELECT a.name AS account_name, `+prefixed("d.", domainCols)+`
		FROM domains d JOIN accounts a ON a.id = d.account_id
		WHERE $1 = '' OR a.name = $1
		ORDER BY a.name, d.name`, accountName)
	if err != nil {
		return nil, fmt.Errorf("list all domains: %w", translate(err))
	}
	return rows, nil
}

// ByName returns the domain called name, whichever account owns it, with
// that account's name. ErrNotFound when there is none. The operator's path
// (the CLI): not scoped by an API account.
func (DomainRepo) ByName(ctx context.Context, q sqlx.QueryerContext, name string) (OperatorDomainRow, error) {
	var r OperatorDomainRow
	err := sqlx.GetContext(ctx, q, &r, `
		SELECT a.name AS account_name, `+prefixed("d.", domainCols)+`
		FROM domains d JOIN accounts a ON a.id = d.account_id WHERE d.name = $1`, name)
	if err != nil {
		return OperatorDomainRow{}, fmt.Errorf("domain by name: %w", translate(err))
	}
	return r, nil
}

// prefixed qualifies each column of the comma-separated cols with p.
func prefixed(p, cols string) string {
	parts := strings.Split(cols, ",")
	for i, c := range parts {
		parts[i] = p + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}

// SetAuthDomain replaces the auth domain and its DKIM key, resetting its
// verification.
func (DomainRepo) SetAuthDomain(ctx context.Context, q sqlx.QueryerContext, accountID int64, name, authDomain, selector, publicKey string, sealedKey []byte) (DomainRow, error) {
	return domainUpdate(ctx, q, "set auth domain", `
		UPDATE domains SET auth_domain = $3, auth_dkim_selector = $4, auth_dkim_public_key = $5,
		       auth_dkim_private_key = $6, auth_verified = false, auth_checked_at = NULL, auth_checks = NULL,
		       modified_at = now()
		WHERE account_id = $1 AND name = $2 RETURNING `+domainCols, accountID, name, authDomain, selector, publicKey, sealedKey)
}

// SaveAuthCheck stores the outcome of an auth-domain check, provided the auth
// domain is still the one checked.
func (DomainRepo) SaveAuthCheck(ctx context.Context, q sqlx.QueryerContext, accountID int64, name, authDomain string, verified bool, checks []byte) (DomainRow, error) {
	return domainUpdate(ctx, q, "save auth check", `
		UPDATE domains SET auth_verified = $4, auth_checks = $5, auth_checked_at = now(), modified_at = now()
		WHERE account_id = $1 AND name = $2 AND auth_domain = $3 RETURNING `+domainCols, accountID, name, authDomain, verified, jsonArg(checks))
}

// ClearAuthDomain removes the auth domain and its key.
func (DomainRepo) ClearAuthDomain(ctx context.Context, q sqlx.QueryerContext, accountID int64, name string) (DomainRow, error) {
	return domainUpdate(ctx, q, "clear auth domain", `
		UPDATE domains SET auth_domain = '', auth_dkim_selector = '', auth_dkim_public_key = '',
		       auth_dkim_private_key = NULL, auth_verified = false, auth_checked_at = NULL, auth_checks = NULL,
		       modified_at = now()
		WHERE account_id = $1 AND name = $2 RETURNING `+domainCols, accountID, name)
}

// SetTrackingDomain replaces the link-tracking domain, resetting its verification.
func (DomainRepo) SetTrackingDomain(ctx context.Context, q sqlx.QueryerContext, accountID int64, name, tracking string) (DomainRow, error) {
	return domainUpdate(ctx, q, "set tracking domain", `
		UPDATE domains SET tracking_domain = $3, tracking_verified = false, tracking_checked_at = NULL,
		       tracking_checks = NULL, modified_at = now()
		WHERE account_id = $1 AND name = $2 RETURNING `+domainCols, accountID, name, tracking)
}

// SaveTrackingCheck stores the outcome of a tracking-domain check, provided
// the tracking domain is still the one checked.
func (DomainRepo) SaveTrackingCheck(ctx context.Context, q sqlx.QueryerContext, accountID int64, name, tracking string, verified bool, checks []byte) (DomainRow, error) {
	return domainUpdate(ctx, q, "save tracking check", `
		UPDATE domains SET tracking_verified = $4, tracking_checks = $5, tracking_checked_at = now(), modified_at = now()
		WHERE account_id = $1 AND name = $2 AND tracking_domain = $3 RETURNING `+domainCols, accountID, name, tracking, verified, jsonArg(checks))
}

// ClearTrackingDomain removes the link-tracking domain.
func (DomainRepo) ClearTrackingDomain(ctx context.Context, q sqlx.QueryerContext, accountID int64, name string) (DomainRow, error) {
	return domainUpdate(ctx, q, "clear tracking domain", `
		UPDATE domains SET tracking_domain = '', tracking_verified = false, tracking_checked_at = NULL,
		       tracking_checks = NULL, modified_at = now()
		WHERE account_id = $1 AND name = $2 RETURNING `+domainCols, accountID, name)
}

func domainUpdate(ctx context.Context, q sqlx.QueryerContext, op, query string, args ...any) (DomainRow, error) {
	var r DomainRow
	if err := sqlx.GetContext(ctx, q, &r, query, args...); err != nil {
		return DomainRow{}, fmt.Errorf("%s: %w", op, translate(err))
	}
	return r, nil
}
