package postgres

import (
	"context"
	"database/sql"
	"sync"
	"time"

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
//
// A Tx uses the pool's statement only once the pool has prepared it: the
// pool prepares on a connection of its own, and a transaction that waited
// for one while holding its own could wait for ever (a pool of one) or
// until its deadline (a burst of applies on a cold pool). Until then the
// Tx runs the statement as is, while the pool prepares it in the
// background.
func prepared(ctx context.Context, q any, query string) (*sqlx.Stmt, error) {
	switch q := q.(type) {
	case *sqlx.DB:
		return preparedOn(ctx, q, query)
	case *Tx:
		st, ok := stmts.Load(stmtKey{q.db, query})
		if !ok {
			prepareInBackground(q.db, query)
			return nil, nil
		}
		return q.StmtxContext(ctx, st.(*sqlx.Stmt)), nil
	}
	return nil, nil
}

// preparing holds the statements being prepared in the background.
var preparing sync.Map // stmtKey -> struct{}

// prepareInBackground prepares query on the pool db, once at a time.
func prepareInBackground(db *sqlx.DB, query string) {
	k := stmtKey{db, query}
	if _, busy := preparing.LoadOrStore(k, struct{}{}); busy {
		return
	}
	go func() {
		defer preparing.Delete(k)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = preparedOn(ctx, db, query) // on failure the next use tries again
	}()
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
