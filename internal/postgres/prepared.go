package postgres

import (
	"context"
	"database/sql"
	"sync"

	"github.com/jmoiron/sqlx"
)

// The hot statements of a create (the credential insert, the rate counter,
// the sync claim) run as prepared statements: PostgreSQL then parses and
// plans them once per connection instead of on every call, which under
// load is CPU the whole request path competes for (planning the sync claim
// takes twice as long as running it). database/sql prepares a statement on
// each pooled connection as it is first used there and again after a
// reconnect; a transaction begun with Begin uses the statement its
// connection has.

type stmtKey struct {
	db    *sqlx.DB
	query string
}

// stmts holds the prepared statements by pool and text. Pools are few and
// live as long as the process (tests open more, and leave theirs here).
var stmts sync.Map // stmtKey -> *sqlx.Stmt

// Tx is a transaction whose hot statements run prepared.
type Tx struct {
	*sqlx.Tx
	db *sqlx.DB
}

// Begin begins a transaction on db.
func Begin(ctx context.Context, db *sqlx.DB) (*Tx, error) {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, err
	}
	return &Tx{tx, db}, nil
}

// prepared returns query prepared on q when q is a pool or a Tx, or nil
// (another transaction: the caller runs the statement as is).
func prepared(ctx context.Context, q any, query string) (*sqlx.Stmt, error) {
	switch q := q.(type) {
	case *sqlx.DB:
		return preparedOn(ctx, q, query)
	case *Tx:
		st, err := preparedOn(ctx, q.db, query)
		if err != nil {
			return nil, err
		}
		return q.StmtxContext(ctx, st), nil
	}
	return nil, nil
}

// preparedOn returns query prepared on the pool db.
func preparedOn(ctx context.Context, db *sqlx.DB, query string) (*sqlx.Stmt, error) {
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

// getHot is sqlx.GetContext through a prepared statement when q is a pool
// or a Tx.
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

// queryHot is QueryxContext through a prepared statement when q is a pool
// or a Tx.
func queryHot(ctx context.Context, q sqlx.QueryerContext, query string, args ...any) (*sqlx.Rows, error) {
	st, err := prepared(ctx, q, query)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return q.QueryxContext(ctx, query, args...)
	}
	return st.QueryxContext(ctx, args...)
}

// queryRowHot is QueryRowxContext through a prepared statement when q is a
// pool or a Tx.
func queryRowHot(ctx context.Context, q sqlx.QueryerContext, query string, args ...any) *sqlx.Row {
	st, err := prepared(ctx, q, query)
	if err != nil || st == nil {
		return q.QueryRowxContext(ctx, query, args...)
	}
	return st.QueryRowxContext(ctx, args...)
}

// execHot is ExecContext through a prepared statement when q is a pool or
// a Tx.
func execHot(ctx context.Context, q sqlx.ExecerContext, query string, args ...any) (sql.Result, error) {
	st, err := prepared(ctx, q, query)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return q.ExecContext(ctx, query, args...)
	}
	return st.ExecContext(ctx, args...)
}
