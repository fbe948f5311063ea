package ratelimit_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/dbtest"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/ratelimit"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

// A process that cached an address as unblocked learns of failed logins in
// another process through their announcements and blocks the address too.
func TestFailureCacheFollowsOtherProcesses(t *testing.T) {
	url := dbtest.NewURL(t)
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	limiter := func() *ratelimit.Limiter {
		l := ratelimit.New(db, 0, 3)
		postgres.Listen(ctx, url, slog.New(slog.DiscardHandler), map[string]postgres.Subscriber{
			postgres.AuthFailChannel: l.CacheFailures(),
		})
		return l
	}
	a, b := limiter(), limiter()
	const ip = "192.0.2.7"
	d, err := a.AuthBlocked(ctx, ip) // cached: no failures
	if err != nil || !d.Allowed {
		t.Fatalf("a fresh address: %+v %v", d, err)
	}
	for range 3 {
		if err := b.AuthFailed(ctx, ip); err != nil {
			t.Fatal(err)
		}
	}
	if d, err := b.AuthBlocked(ctx, ip); err != nil || d.Allowed {
		t.Errorf("the failing process does not block: %+v %v", d, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		d, err := a.AuthBlocked(ctx, ip)
		if err != nil {
			t.Fatal(err)
		}
		if !d.Allowed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the other process never blocked the address")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
