package postgres

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// DomainRepo reads and writes sending domains.
type DomainRepo struct{}

// InsertForAccountName attaches the domain name to the account called
// accountName. ErrNotFound when the account does not exist, ErrConflict when
// the name is already claimed (by any account).
func (DomainRepo) InsertForAccountName(ctx context.Context, q sqlx.QueryerContext, accountName, name string, verified bool) (int64, error) {
	var id int64
	err := sqlx.GetContext(ctx, q, &id, `
		INSERT INTO domains (account_id, name, is_verified)
		SELECT id, $2, $3 FROM accounts WHERE name = $1
		RETURNING id`, accountName, name, verified)
	if err != nil {
		return 0, fmt.Errorf("insert domain: %w", translate(err))
	}
	return id, nil
}
