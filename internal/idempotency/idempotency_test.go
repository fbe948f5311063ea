package idempotency_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/dbtest"
	"github.com/smtpcreds/smtpcreds/internal/dkim"
	"github.com/smtpcreds/smtpcreds/internal/idempotency"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/validation"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

// keep claims k and saves r in one transaction, as a service does.
func keep(t *testing.T, s *idempotency.Store, db *sqlx.DB, k idempotency.Key, r idempotency.Response) {
	t.Helper()
	ctx := context.Background()
	tx, err := postgres.Begin(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck
	claimed, err := s.Claim(ctx, tx, k)
	if err != nil || !claimed {
		t.Fatalf("Claim = %v, %v", claimed, err)
	}
	if err := s.Save(ctx, tx, k, r, true); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// Expired keys are pruned with their responses; live ones are kept, and
// replay what was saved.
func TestPruneExpired(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	var account int64
	if err := db.Get(&account, `INSERT INTO accounts (name, token_digest) VALUES ('a', '\x00') RETURNING id`); err != nil {
		t.Fatal(err)
	}
	sealer, err := dkim.NewSealer(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	s := idempotency.NewStore(db, sealer, time.Second)
	old, _ := idempotency.NewKey(account, "old", "op")
	live, _ := idempotency.NewKey(account, "live", "op")
	keep(t, s, db, old, idempotency.Response{Status: 201, Body: []byte("old\n")})
	keep(t, s, db, live, idempotency.Response{Status: 200, Body: []byte("live\n")})
	if _, err := db.Exec(`UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'old'`); err != nil {
		t.Fatal(err)
	}
	if err := s.Prune(context.Background()); err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := db.Select(&keys, `SELECT key FROM idempotency_keys`); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0] != "live" {
		t.Errorf("keys after prune: %v, want [live]", keys)
	}
	r, err := s.Replay(context.Background(), live)
	if err != nil || r.Status != 200 || string(r.Body) != "live\n" {
		t.Errorf("Replay = %d %q %v", r.Status, r.Body, err)
	}
	other, _ := idempotency.NewKey(account, "live", "another op")
	var verr *validation.Error
	if _, err := s.Replay(context.Background(), other); !errors.As(err, &verr) || verr.Fields[idempotency.Field] == nil {
		t.Errorf("Replay of another request: %v", err)
	}
}
