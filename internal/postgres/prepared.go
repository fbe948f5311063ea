package postgres

import (
	"context"
	"sync"

	"github.com/jmoiron/sqlx"
)

// The hot statements of a create (the credential insert, the rate counter,
// the sync claim) run as prepared statements: PostgreSQL then parses and
// plans them once per connection instead of on every call, which under
// load is CPU the whole request path competes for. database/sql prepares a
// statement on each pooled connection as it is first used there and again
// after a reconnect.

type stmtKey struct {
	db    *sqlx.DB
	query string
}

// stmts holds the prepared statements by pool and text. Pools are few and
// live as long as the process (tests open more, and leave theirs here).
var stmts sync.Map // stmtKey -> *sqlx.Stmt

// prepared returns query prepared on q when q is a pool, or nil (a
// transaction: the caller runs the statement as is).
func prepared(ctx context.Context, q any, query string) (*sqlx.Stmt, error) {
	db, ok := q.(*sqlx.DB)
	if !ok {
		return nil, nil
	}
	k := stmtKey{db, query}
	if st, ok := stmts.Load(k); ok {
		return st.(*sqlx.Stmt), nil
	}
	st, err := db.PreparexContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if prev, loaded := stmts.LoadOrStore(k, st); loaded {
		st.Close() //nolint:errcheck // a concurrent caller's is kept
		return prev.(*sqlx.Stmt), nil
	}
	return st, nil
}

// getHot is sqlx.GetContext through a prepared statement when q is a pool.
func getHot(ctx context.Context, q sqlx.QueryerContext, dest any, query string, args ...any) error {
	st, err := prepared(ctx, q, query)
	if err != nil {
		return err
	}
	if st == nil {
		return sqlx.GetContext(ctx, q, dest, query, args...)
	}
	return st.GetContext(ctx, dest, args...)
}

// selectHot is sqlx.SelectContext through a prepared statement when q is a
// pool.
func selectHot(ctx context.Context, q sqlx.QueryerContext, dest any, query string, args ...any) error {
	st, err := prepared(ctx, q, query)
	if err != nil {
		return err
	}
	if st == nil {
		return sqlx.SelectContext(ctx, q, dest, query, args...)
	}
	return st.SelectContext(ctx, dest, args...)
}

// queryRowHot is QueryRowxContext through a prepared statement when q is a
// pool.
func queryRowHot(ctx context.Context, q sqlx.QueryerContext, query string, args ...any) *sqlx.Row {
	st, err := prepared(ctx, q, query)
	if err != nil || st == nil {
		return q.QueryRowxContext(ctx, query, args...)
	}
	return st.QueryRowxContext(ctx, args...)
}
