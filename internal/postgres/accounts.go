package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// AccountRow is a row of accounts.
type AccountRow struct {
	ID          int64     `db:"id"`
	Name        string    `db:"name"`
	TokenDigest []byte    `db:"token_digest"`
	CreatedAt   time.Time `db:"created_at"`
}

// AccountRepo reads and writes accounts.
type AccountRepo struct{}

// Insert creates an account. ErrConflict when the name is taken.
func (AccountRepo) Insert(ctx context.Context, q sqlx.QueryerContext, name string, digest []byte) (AccountRow, error) {
	var r AccountRow
	err := sqlx.GetContext(ctx, q, &r,
		`INSERT INTO accounts (name, token_digest) VALUES ($1, $2)
		 RETURNING id, name, token_digest, created_at`, name, digest)
	if err != nil {
		return AccountRow{}, fmt.Errorf("insert account: %w", translate(err))
	}
	return r, nil
}

// ByName returns the account called name. ErrNotFound when there is none.
func (AccountRepo) ByName(ctx context.Context, q sqlx.QueryerContext, name string) (AccountRow, error) {
	var r AccountRow
	err := sqlx.GetContext(ctx, q, &r,
		`SELECT id, name, token_digest, created_at FROM accounts WHERE name = $1`, name)
	if err != nil {
		return AccountRow{}, fmt.Errorf("account by name: %w", translate(err))
	}
	return r, nil
}

// AccountSummaryRow is an account with the number of its domains.
type AccountSummaryRow struct {
	ID        int64     `db:"id"`
	Name      string    `db:"name"`
	CreatedAt time.Time `db:"created_at"`
	Domains   int64     `db:"domains"`
}

// List returns every account by name, with the number of its domains.
func (AccountRepo) List(ctx context.Context, q sqlx.QueryerContext) ([]AccountSummaryRow, error) {
	rows := []AccountSummaryRow{}
	err := sqlx.SelectContext(ctx, q, &rows, `
		SELECT a.id, a.name, a.created_at, (SELECT count(*) FROM domains d WHERE d.account_id = a.id) AS domains
		FROM accounts a ORDER BY a.name`)
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", translate(err))
	}
	return rows, nil
}

// AccountsChannel is the LISTEN/NOTIFY channel on which a change of an
// account's token is announced (the payload is the account's name), so that
// processes caching token digests drop the old one when the change commits.
const AccountsChannel = "smtpcreds_accounts"

// SetTokenDigest replaces the token digest of the account called name and
// announces it on AccountsChannel. ErrNotFound when there is none.
func (AccountRepo) SetTokenDigest(ctx context.Context, q sqlx.ExecerContext, name string, digest []byte) error {
	res, err := q.ExecContext(ctx, `
		WITH u AS (UPDATE accounts SET token_digest = $2 WHERE name = $1 RETURNING name)
		SELECT pg_notify('`+AccountsChannel+`', name) FROM u`, name, digest)
	if err != nil {
		return fmt.Errorf("set token digest: %w", translate(err))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("set token digest: %w", ErrNotFound)
	}
	return nil
}
