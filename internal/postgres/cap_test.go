package postgres_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/dbtest"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// capFixture is an account with a verified domain, a.example.
type capFixture struct {
	db      *sqlx.DB
	account int64
	domain  int64
}

func newCapFixture(t *testing.T) capFixture {
	t.Helper()
	f := capFixture{db: dbtest.New(t)}
	must(t, f.db.Get(&f.account, `INSERT INTO accounts (name, token_digest) VALUES ('acct', '\x00') RETURNING id`))
	must(t, f.db.Get(&f.domain, `INSERT INTO domains (account_id, name, is_verified) VALUES ($1, 'a.example', true) RETURNING id`, f.account))
	return f
}

// create runs InsertVerified on q for username in a.example under limit,
// with a sync job.
func (f capFixture) create(ctx context.Context, q sqlx.QueryerContext, username string, limit int64) (postgres.CredentialRow, error) {
	job := &postgres.JobDraft{Target: "t", Scope: "a.example", Event: []byte(`{"type":"x"}`), IDKey: "credential_id"}
	row, _, err := postgres.CredentialRepo{}.InsertVerified(ctx, q,
		postgres.NewCredential{GUID: uuid.New(), AccountID: f.account, Username: username, PasswordHash: "x"},
		"a.example", limit, job)
	return row, err
}

// fill adds n credentials to a.example behind InsertVerified's back.
func (f capFixture) fill(t *testing.T, n int) {
	t.Helper()
	_, err := f.db.Exec(`INSERT INTO credentials (guid, account_id, domain_id, username, password_hash)
		SELECT gen_random_uuid(), $1, $2, 'fill' || g, 'x' FROM generate_series(1, $3) g`, f.account, f.domain, n)
	must(t, err)
}

func (f capFixture) count(t *testing.T) (creds, jobs int) {
	t.Helper()
	must(t, f.db.Get(&creds, `SELECT count(*) FROM credentials WHERE domain_id = $1`, f.domain))
	must(t, f.db.Get(&jobs, `SELECT count(*) FROM sync_jobs`))
	return creds, jobs
}

// slack is credential_cap_room's: transactions that can be in progress.
func (f capFixture) slack(t *testing.T) int {
	t.Helper()
	var n int
	must(t, f.db.Get(&n, `SELECT current_setting('max_connections')::int + current_setting('max_worker_processes')::int
		+ current_setting('max_wal_senders')::int + current_setting('max_prepared_transactions')::int`))
	return n
}

// hammer runs n creates of distinct usernames at once, each on its own
// connection, and returns how many succeeded; every other must have failed
// with ErrAtCap.
func (f capFixture) hammer(t *testing.T, n int, limit int64) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	conns := make([]*sqlx.Conn, n)
	for i := range conns {
		c, err := f.db.Connx(ctx)
		must(t, err)
		defer c.Close()
		conns[i] = c
	}
	start := make(chan struct{})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			<-start
			_, errs[i] = f.create(ctx, c, fmt.Sprintf("h%d", i), limit)
		})
	}
	close(start)
	wg.Wait()
	created := 0
	for _, err := range errs {
		switch {
		case err == nil:
			created++
		case !errors.Is(err, postgres.ErrAtCap):
			t.Errorf("a create failed with %v, want ErrAtCap", err)
		}
	}
	return created
}

// Many concurrent creates in a domain near its cap fill it exactly: the
// ones that fit succeed, every other gets ErrAtCap, and each credential
// has its job.
func TestCapExactUnderConcurrentCreates(t *testing.T) {
	f := newCapFixture(t)
	created := f.hammer(t, 60, 20)
	creds, jobs := f.count(t)
	if created != 20 || creds != 20 || jobs != 20 {
		t.Errorf("%d created, %d stored, %d jobs; the cap is 20", created, creds, jobs)
	}
	// Again from just below a larger cap, filled behind the creates' back.
	f = newCapFixture(t)
	f.fill(t, 970)
	created = f.hammer(t, 60, 1000)
	creds, _ = f.count(t)
	if created != 30 || creds != 1000 {
		t.Errorf("%d created, %d stored; the cap is 1000, from 970", created, creds)
	}
}

// Creates that cross from far from the cap (the shared lock) to near it
// (the exclusive one) while others hold the shared lock neither deadlock
// nor lose a create.
func TestCreatesAcrossTheSharedLocksEdge(t *testing.T) {
	f := newCapFixture(t)
	limit := int64(f.slack(t) + 30) // the first 30 or so creates share the lock, the rest take turns
	if created := f.hammer(t, 60, limit); created != 60 {
		t.Errorf("%d of 60 created under a cap of %d", created, limit)
	}
	if creds, jobs := f.count(t); creds != 60 || jobs != 60 {
		t.Errorf("%d stored, %d jobs, want 60", creds, jobs)
	}
}

// capLocks are the advisory cap locks of a.example: modes granted and
// modes awaited.
func (f capFixture) capLocks(t *testing.T) (granted, waiting []string) {
	t.Helper()
	rows := []struct {
		Mode    string `db:"mode"`
		Granted bool   `db:"granted"`
	}{}
	must(t, f.db.Select(&rows, `SELECT mode, granted FROM pg_locks
		WHERE locktype = 'advisory' AND classid = 1 AND objid = $1 AND objsubid = 2 ORDER BY mode`, f.domain))
	for _, r := range rows {
		if r.Granted {
			granted = append(granted, r.Mode)
		} else {
			waiting = append(waiting, r.Mode)
		}
	}
	return granted, waiting
}

// Creates far from the cap do not wait for each other: two transactions
// each create a credential and hold the cap's lock, shared, at once.
func TestCreatesFarFromCapShareTheLock(t *testing.T) {
	f := newCapFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var txs []*sqlx.Tx
	for i := range 2 {
		tx, err := f.db.BeginTxx(ctx, nil)
		must(t, err)
		defer tx.Rollback() //nolint:errcheck // committed below
		// The second create returns while the first transaction holds
		// its lock (a wait would end at the context's deadline).
		if _, err := f.create(ctx, tx, fmt.Sprintf("u%d", i), 10000); err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		txs = append(txs, tx)
	}
	granted, waiting := f.capLocks(t)
	if fmt.Sprint(granted) != "[ShareLock ShareLock]" || len(waiting) != 0 {
		t.Errorf("cap locks granted %v, awaited %v; want two shared ones granted", granted, waiting)
	}
	for _, tx := range txs {
		must(t, tx.Commit())
	}
	if creds, jobs := f.count(t); creds != 2 || jobs != 2 {
		t.Errorf("%d stored, %d jobs, want 2", creds, jobs)
	}

	// Without a cap no lock is taken at all.
	tx, err := f.db.BeginTxx(ctx, nil)
	must(t, err)
	defer tx.Rollback() //nolint:errcheck // only looked at
	if _, err := f.create(ctx, tx, "nocap", 0); err != nil {
		t.Fatal(err)
	}
	if granted, waiting := f.capLocks(t); len(granted)+len(waiting) != 0 {
		t.Errorf("uncapped create: cap locks granted %v, awaited %v", granted, waiting)
	}
}

// Near the cap creates take turns: the first holds the exclusive lock, the
// second waits for it to commit, and then counts its credential.
func TestCreatesNearCapTakeTurns(t *testing.T) {
	f := newCapFixture(t)
	f.fill(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tx, err := f.db.BeginTxx(ctx, nil)
	must(t, err)
	defer tx.Rollback() //nolint:errcheck // committed below
	if _, err := f.create(ctx, tx, "first", 5); err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	go func() {
		_, err := f.create(ctx, f.db, "second", 5)
		second <- err
	}()
	for {
		granted, waiting := f.capLocks(t)
		if fmt.Sprint(granted) == "[ExclusiveLock]" && len(waiting) == 1 {
			break
		}
		select {
		case err := <-second:
			t.Fatalf("the second create ended (%v) while the first held the lock (granted %v, awaited %v)", err, granted, waiting)
		case <-ctx.Done():
			t.Fatalf("the second create never waited for the lock: granted %v, awaited %v", granted, waiting)
		case <-time.After(5 * time.Millisecond): // poll again
		}
	}
	must(t, tx.Commit())
	if err := <-second; err != nil {
		t.Fatalf("second create: %v", err)
	}
	if _, err := f.create(ctx, f.db, "third", 5); !errors.Is(err, postgres.ErrAtCap) {
		t.Errorf("a create at the cap: %v, want ErrAtCap", err)
	}
}

// A create tells why it added nothing, and refuses what would break the
// cap's arithmetic.
func TestInsertVerifiedOutcomes(t *testing.T) {
	f := newCapFixture(t)
	ctx := t.Context()
	var other int64
	must(t, f.db.Get(&other, `INSERT INTO accounts (name, token_digest) VALUES ('other', '\x01') RETURNING id`))
	_, err := f.db.Exec(`INSERT INTO domains (account_id, name, is_verified) VALUES ($1, 'b.example', true), ($2, 'p.example', false)`,
		other, f.account)
	must(t, err)
	repo := postgres.CredentialRepo{}
	insert := func(q sqlx.QueryerContext, domain, username string, limit int64) error {
		_, _, err := repo.InsertVerified(ctx, q,
			postgres.NewCredential{GUID: uuid.New(), AccountID: f.account, Username: username, PasswordHash: "x"},
			domain, limit, nil)
		return err
	}
	must(t, insert(f.db, "a.example", "taken", 1))
	for _, c := range []struct {
		domain, username string
		limit            int64
		want             error
	}{
		{"nope.example", "u", 10, postgres.ErrNotFound},
		{"b.example", "u", 10, postgres.ErrNotFound}, // another account's
		{"p.example", "u", 10, postgres.ErrNotVerified},
		{"a.example", "u", 1, postgres.ErrAtCap},
		{"a.example", "taken", 10, postgres.ErrConflict},
		{"a.example", "taken", 0, postgres.ErrConflict},
	} {
		if err := insert(f.db, c.domain, c.username, c.limit); !errors.Is(err, c.want) {
			t.Errorf("%s@%s under %d: %v, want %v", c.username, c.domain, c.limit, err, c.want)
		}
	}

	tx, err := f.db.BeginTxx(ctx, nil)
	must(t, err)
	must(t, insert(tx, "a.example", "one", 10000))
	if err := insert(tx, "a.example", "two", 10000); err == nil {
		t.Error("a second create in a.example after a shared pass in one transaction succeeded")
	}
	must(t, tx.Rollback())
	tx, err = f.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
	must(t, err)
	if err := insert(tx, "a.example", "rr", 10000); err == nil {
		t.Error("a capped create in a REPEATABLE READ transaction succeeded")
	}
	must(t, tx.Rollback())
}

// A create that finds the domain near its cap only once it holds the
// shared lock gives that lock back before it waits for the exclusive one:
// two such creates that each waited while holding it would deadlock.
func TestNearCapWaitsHoldingNoSharedLock(t *testing.T) {
	f := newCapFixture(t)
	limit := int64(f.slack(t) + 10)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tx, err := f.db.BeginTxx(ctx, nil)
	must(t, err)
	defer tx.Rollback() //nolint:errcheck // committed below
	// Far from the cap: this transaction holds the shared lock.
	if _, err := f.create(ctx, tx, "far", limit); err != nil {
		t.Fatal(err)
	}
	f.fill(t, 20) // now near
	second := make(chan error, 1)
	go func() {
		_, err := f.create(ctx, f.db, "near", limit)
		second <- err
	}()
	for {
		granted, waiting := f.capLocks(t)
		if fmt.Sprint(waiting) == "[ExclusiveLock]" {
			if fmt.Sprint(granted) != "[ShareLock]" {
				t.Errorf("while a create waits for the exclusive lock, granted: %v; want only the first create's shared lock", granted)
			}
			break
		}
		select {
		case err := <-second:
			t.Fatalf("the near create ended (%v) while the far one held the shared lock", err)
		case <-ctx.Done():
			t.Fatalf("the near create never waited for the exclusive lock: granted %v, awaited %v", granted, waiting)
		case <-time.After(5 * time.Millisecond): // poll again
		}
	}
	must(t, tx.Commit())
	if err := <-second; err != nil {
		t.Fatalf("near create: %v", err)
	}
}
