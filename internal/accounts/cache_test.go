package accounts_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/accounts"
	"github.com/smtpcreds/smtpcreds/internal/dbtest"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

var key = []byte("0123456789abcdef0123456789abcdef")

// process is one smtpcreds process: its own accounts service with a token
// cache, listening on the shared database.
func process(t *testing.T, ctx context.Context, db *sqlx.DB, url string) *accounts.Service {
	t.Helper()
	s, err := accounts.NewService(db, key)
	if err != nil {
		t.Fatal(err)
	}
	postgres.Listen(ctx, url, slog.New(slog.DiscardHandler), map[string]postgres.Subscriber{
		postgres.AccountsChannel: s.CacheTokens(),
	})
	return s
}

// cached reports whether s authenticates name's tok without reading the
// accounts table: while another transaction holds the table locked, a
// lookup waits, and runs out of its short deadline.
func cached(t *testing.T, ctx context.Context, db *sqlx.DB, s *accounts.Service, name, tok string) bool {
	t.Helper()
	tx, err := db.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // only held for the lock
	if _, err := tx.Exec(`LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err = s.Authenticate(ctx, name, tok)
	return err == nil
}

// waitFor polls cond until it holds, or fails the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A cached token costs no lookup; rotating it refuses the old token at once
// in the rotating process and, through the announcement, in the others.
func TestTokenCacheRevocation(t *testing.T) {
	url := dbtest.NewURL(t)
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := process(t, ctx, db, url)
	b := process(t, ctx, db, url)
	_, tok, err := a.Create(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	// The cache is used once its listener is up: then a second call costs
	// no lookup.
	waitFor(t, 5*time.Second, "authentication served from the cache", func() bool {
		if _, err := a.Authenticate(ctx, "acme", tok); err != nil {
			t.Fatal(err)
		}
		return cached(t, ctx, db, a, "acme", tok)
	})
	if _, err := a.Authenticate(ctx, "acme", tok+"x"); err == nil {
		t.Fatal("a wrong token authenticated")
	}
	newTok, err := b.RotateToken(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Authenticate(ctx, "acme", tok); err == nil {
		t.Error("the rotating process still accepts the old token")
	}
	waitFor(t, 5*time.Second, "the other process to refuse the old token", func() bool {
		_, err := a.Authenticate(ctx, "acme", tok)
		return err != nil
	})
	if _, err := a.Authenticate(ctx, "acme", newTok); err != nil {
		t.Errorf("the new token: %v", err)
	}
}

// A change made while the listening connection is down is never
// announced to this process: losing the connection empties the cache and
// keeps it off until the connection is back, so the old token stops
// working all the same.
func TestTokenCacheForgetsWhenTheListenerDrops(t *testing.T) {
	url := dbtest.NewURL(t)
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := process(t, ctx, db, url)
	_, tok, err := a.Create(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "authentication served from the cache", func() bool {
		if _, err := a.Authenticate(ctx, "acme", tok); err != nil {
			t.Fatal(err)
		}
		return cached(t, ctx, db, a, "acme", tok)
	})
	// Cut the listening connection, and change the token behind its back
	// (no announcement), as a change during an outage would.
	var killed int
	if err := db.Get(&killed, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query ILIKE 'LISTEN%') t`); err != nil || killed == 0 {
		t.Fatalf("terminating the listener: %d %v", killed, err)
	}
	if _, err := db.Exec(`UPDATE accounts SET token_digest = '\x00' WHERE name = 'acme'`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the old token to be refused", func() bool {
		_, err := a.Authenticate(ctx, "acme", tok)
		return err != nil
	})
}
