// Package postgres is the storage of smtpcreds: sqlx repositories holding all
// of its SQL, so that no other package sees rows of database/sql or driver errors.
//
// Each repository owns its tables (one file per table; every statement on
// sync_jobs is in syncjobs.go); driver errors become the sentinels below.
// Every statement that touches tenant data is scoped by the owning account
// in SQL.
//
// Repository methods take a sqlx.ExtContext (or QueryerContext) so that the
// caller decides whether they run on the pool or inside its transaction.
package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

var (
	// ErrNotFound is returned when a statement matched no row.
	ErrNotFound = errors.New("postgres: not found")
	// ErrConflict is returned on a unique-constraint violation (SQLSTATE 23505).
	ErrConflict = errors.New("postgres: conflict")
)

// translate maps driver errors onto the package sentinels, keeping the
// original error in the chain for logs.
func translate(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) && pqErr.Code == "23505" {
		return fmt.Errorf("%w: %s", ErrConflict, pqErr.Constraint)
	}
	return err
}

// PoolOptions size a connection pool.
type PoolOptions struct {
	MaxOpen     int
	MaxIdle     int
	MaxLifetime time.Duration
}

// Open connects to dsn with lib/pq, sizes the pool and pings the server.
//
// Statements with parameters go in one round trip, not two (lib/pq's
// binary_parameters: parse, bind and execute are sent together, and []byte
// parameters go as binary, which suits bytea; pass JSON through jsonArg).
func Open(ctx context.Context, dsn string, opt PoolOptions) (*sqlx.DB, error) {
	db, err := sqlx.Open("postgres", WithSetting(dsn, "binary_parameters", "yes"))
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if opt.MaxOpen > 0 {
		db.SetMaxOpenConns(opt.MaxOpen)
	}
	if opt.MaxIdle > 0 {
		db.SetMaxIdleConns(opt.MaxIdle)
	}
	if opt.MaxLifetime > 0 {
		db.SetConnMaxLifetime(opt.MaxLifetime)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("ping database: %w", err)
	}
	return db, nil
}

// jsonArg passes JSON to a json or jsonb parameter as text: as []byte it
// would be sent in the binary format, which jsonb does not take as is.
func jsonArg(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// WithSetting returns dsn with a PostgreSQL run-time parameter added (lib/pq
// passes unknown keys to the server), e.g. synchronous_commit=off for a pool
// whose writes may be lost in a crash. Both URL and key=value DSNs work.
func WithSetting(dsn, key, value string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " " + key + "=" + value
}
