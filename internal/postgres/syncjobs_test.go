package postgres_test

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/smtpcreds/smtpcreds/internal/dbtest"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// Claims racing for the same jobs never claim a job twice and never wait
// for each other in a cycle, whether claimed by a lease (ClaimDue) or by a
// row lock held until the apply's transaction ends (ClaimLocked).
//
// A request's claim (ClaimLocked, SKIP LOCKED) never waits. A worker's
// claim may: in READ COMMITTED, when its UPDATE meets a row a concurrent
// claim has updated since the statement began, PostgreSQL locks the row's
// newest version waiting (no SKIP LOCKED there), and a ClaimLocked whose
// recheck of that version failed still holds the lock it took. The worker
// then waits for that apply's transaction to end, which never waits for
// the worker: so here the request claims stay open until every worker
// claim has returned or is waiting on a lock, then commit as an apply does
// (their jobs done), and every worker claim must then return.
func TestConcurrentClaimsNeitherDeadlockNorOverlap(t *testing.T) {
	db := dbtest.New(t)
	repo := postgres.SyncRepo{}
	// waiting reports whether a session of the database waits on a lock.
	waiting := func(ctx context.Context) bool {
		var n int
		err := db.GetContext(ctx, &n, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`)
		return err == nil && n > 0
	}
	for round := range 30 {
		// A claim that waited for ever fails instead, with what the
		// sessions were waiting on.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := db.Exec(`DELETE FROM sync_jobs`)
		must(t, err)
		_, err = db.Exec(`INSERT INTO sync_jobs (target, scope, event) SELECT 't', 's', '{}' FROM generate_series(1, 200)`)
		must(t, err)
		var mu sync.Mutex
		seen := map[int64]int{}
		var dueDone atomic.Int32
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var rows []postgres.SyncJobRow
				var err error
				if i%2 == 0 {
					err = func() error {
						tx, err := db.BeginTxx(ctx, nil)
						if err != nil {
							return err
						}
						defer tx.Rollback() //nolint:errcheck // no-op after Commit
						if rows, _, err = repo.ClaimLocked(ctx, tx, "t", "s", &postgres.EventKeys{ID: "credential_id", Login: "login"}); err != nil {
							return err
						}
						ids := make([]int64, len(rows))
						for i, r := range rows {
							ids[i] = r.ID
						}
						if _, err := tx.ExecContext(ctx, `UPDATE sync_jobs SET done_at = now() WHERE id = ANY($1)`, pq.Array(ids)); err != nil {
							return err
						}
						for dueDone.Load() < 2 && !waiting(ctx) && ctx.Err() == nil {
							time.Sleep(2 * time.Millisecond)
						}
						return tx.Commit()
					}()
				} else {
					rows, err = repo.ClaimDue(ctx, db, "t", time.Minute, 0)
					dueDone.Add(1)
				}
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for _, r := range rows {
					seen[r.ID]++
				}
			}()
		}
		wg.Wait()
		var waits []string
		if ctx.Err() != nil {
			_ = db.Select(&waits, `SELECT format('%s %s/%s: %s', state, wait_event_type, wait_event, left(query, 120))
				FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`)
		}
		cancel()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v; sessions: %q", round, err, waits)
		}
		for id, n := range seen {
			if n > 1 {
				t.Fatalf("round %d: job %d claimed %d times", round, id, n)
			}
		}
	}
}

// A worker leaves a fresh job (no attempt counted) to the request that made
// it for the grace period, but takes a job whose attempt failed as soon as
// it is due.
func TestClaimDueLeavesFreshJobsToTheirRequest(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	repo := postgres.SyncRepo{}
	_, err := db.Exec(`INSERT INTO sync_jobs (target, scope, event) VALUES ('t', 'fresh', '{}')`)
	must(t, err)
	rows, err := repo.ClaimDue(ctx, db, "t", time.Minute, time.Hour)
	must(t, err)
	if len(rows) != 0 {
		t.Fatalf("a fresh job was claimed within the grace: %+v", rows)
	}
	// A failed job makes its scope due, and the scope's fresh job is taken
	// along (one apply brings the backend up to date).
	_, err = db.Exec(`INSERT INTO sync_jobs (target, scope, event, attempts) VALUES ('t', 'failed', '{}', 1), ('t', 'failed', '{}', 0)`)
	must(t, err)
	rows, err = repo.ClaimDue(ctx, db, "t", time.Minute, time.Hour)
	must(t, err)
	slices.SortFunc(rows, func(a, b postgres.SyncJobRow) int { return cmp.Compare(a.ID, b.ID) })
	if len(rows) != 2 || rows[0].Scope != "failed" || rows[0].Attempts != 2 || rows[1].Attempts != 1 {
		t.Fatalf("want the failed job (attempt 2) and its scope's fresh one (attempt 1), got %+v", rows)
	}
	rows, err = repo.ClaimDue(ctx, db, "t", time.Minute, 0)
	must(t, err)
	if len(rows) != 1 || rows[0].Scope != "fresh" {
		t.Fatalf("want the oldest fresh job's scope claimed once the grace is over, got %+v", rows)
	}
}

// A worker claims only its own target's jobs: another target's (the
// configuration changed) wait for a process that runs it, without an
// attempt counted.
func TestClaimDueTakesOnlyItsTarget(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	ctx := context.Background()
	repo := postgres.SyncRepo{}
	var other int64
	must(t, db.Get(&other, `INSERT INTO sync_jobs (target, scope, event, attempts) VALUES ('other', 's', '{}', 1) RETURNING id`))
	rows, err := repo.ClaimDue(ctx, db, "t", time.Minute, 0)
	must(t, err)
	if len(rows) != 0 {
		t.Fatalf("target t's worker claimed another target's job: %+v", rows)
	}
	rows, err = repo.ClaimDue(ctx, db, "other", time.Minute, 0)
	must(t, err)
	if len(rows) != 1 || rows[0].ID != other || rows[0].Attempts != 2 {
		t.Fatalf("want the job claimed by its own target's worker at its second attempt, got %+v", rows)
	}
}

// An apply's transaction never waits for a second connection to prepare
// its statements: with a pool of one it runs them as they are until the
// pool has prepared them (in the background, once the connection is free),
// and then uses them prepared.
func TestApplyStatementsNeedNoSecondConnection(t *testing.T) {
	db := dbtest.New(t)
	db.SetMaxOpenConns(1)
	repo := postgres.SyncRepo{}
	deadline := time.Now().Add(10 * time.Second)
	for round := 1; ; round++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		tx, err := postgres.Begin(ctx, db)
		must(t, err)
		_, _, err = repo.LockScope(ctx, tx, "t", "s", int64(round))
		if err == nil {
			_, _, err = repo.ClaimLocked(ctx, tx, "t", "s", &postgres.EventKeys{ID: "credential_id", Login: "login"})
		}
		var prepared int
		if err == nil {
			err = tx.GetContext(ctx, &prepared, `SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%sync_scopes%'`)
		}
		must(t, err)
		must(t, tx.Commit())
		cancel()
		if prepared > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d rounds the statements are still not prepared on the one connection", round)
		}
	}
}

// A request's failed attempt (its claim rolled back) counts against its own
// job only, keeps the time already failing jobs are due and gives it to the
// jobs failing for the first time, and leaves a lease a worker took
// meanwhile; a worker's release ends its own lease, and its failure
// reschedules the scope's free failing jobs. A scope failing for the first
// time is due after the delay given.
func TestFailAfterRollbackKeepsTheScheduleAndAnotherLease(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	repo := postgres.SyncRepo{}
	var own, along, failing, leased int64
	must(t, db.Get(&own, `INSERT INTO sync_jobs (target, scope, event) VALUES ('t', 's', '{}') RETURNING id`))
	must(t, db.Get(&along, `INSERT INTO sync_jobs (target, scope, event) VALUES ('t', 's', '{}') RETURNING id`))
	must(t, db.Get(&failing, `INSERT INTO sync_jobs (target, scope, event, attempts, first_failed_at, available_at)
		VALUES ('t', 's', '{}', 3, now() - interval '1 minute', now() + interval '2 seconds') RETURNING id`))
	must(t, db.Get(&leased, `INSERT INTO sync_jobs (target, scope, event, attempts, locked_until)
		VALUES ('t', 's', '{}', 1, now() + interval '1 minute') RETURNING id`))
	must(t, repo.Fail(ctx, db, []int64{own, along, failing, leased}, []int64{own}, time.Hour, "boom"))
	type job struct {
		Attempts  int     `db:"attempts"`
		LastError *string `db:"last_error"`
		Leased    bool    `db:"leased"`
		Failing   bool    `db:"failing"`
		DueIn     float64 `db:"due_in"` // seconds
	}
	get := func(id int64) job {
		var j job
		must(t, db.Get(&j, `SELECT attempts, last_error, locked_until IS NOT NULL AS leased, first_failed_at IS NOT NULL AS failing,
			extract(epoch FROM available_at - now())::float8 AS due_in FROM sync_jobs WHERE id = $1`, id))
		return j
	}
	boom := func(j job) bool { return j.LastError != nil && *j.LastError == "boom" }
	if j := get(own); j.Attempts != 1 || !boom(j) || j.Leased || !j.Failing || j.DueIn > 2 {
		t.Errorf("the request's own job after its failed attempt: %+v (want the failing scope's schedule)", j)
	}
	if j := get(along); j.Attempts != 0 || !boom(j) || !j.Failing || j.DueIn > 2 {
		t.Errorf("a job taken along: %+v (want no attempt counted, the failing scope's schedule)", j)
	}
	if j := get(failing); j.Attempts != 3 || !boom(j) || j.DueIn > 2 {
		t.Errorf("an already failing job: %+v (want its attempts and its time due kept)", j)
	}
	if j := get(leased); j.Attempts != 1 || j.LastError != nil || !j.Leased || j.Failing {
		t.Errorf("a worker's leased job after a request's failure: %+v", j)
	}
	must(t, repo.Release(ctx, db, []int64{leased}, time.Second, ""))
	if j := get(leased); j.Attempts != 1 || j.Leased || j.Failing {
		t.Errorf("leased job after its worker's release without a failure: %+v", j)
	}
	// A worker's failure gives its schedule to the scope's other failing
	// jobs that are free.
	must(t, db.Get(&leased, `INSERT INTO sync_jobs (target, scope, event, attempts, locked_until, first_failed_at)
		VALUES ('t', 's', '{}', 1, now() + interval '1 minute', now()) RETURNING id`))
	must(t, repo.Release(ctx, db, []int64{leased}, time.Hour, "boom"))
	for _, id := range []int64{leased, own, along, failing} {
		if j := get(id); j.DueIn < 3000 || j.Leased || !boom(j) {
			t.Errorf("job %d after a worker's failure in its scope: %+v (want the worker's schedule)", id, j)
		}
	}
	var fresh int64
	must(t, db.Get(&fresh, `INSERT INTO sync_jobs (target, scope, event) VALUES ('t', 'other', '{}') RETURNING id`))
	must(t, repo.Fail(ctx, db, []int64{fresh}, []int64{fresh}, time.Hour, "boom"))
	if j := get(fresh); j.Attempts != 1 || !j.Failing || j.DueIn < 3000 {
		t.Errorf("the first failure of a scope: %+v (want due after the delay)", j)
	}
}

// A job scheduled for later (an expiry) is claimed neither alone nor with
// its scope's due jobs before its time, nor counted as pending; once its
// time comes it is claimed at once (no grace for the request that made it).
func TestScheduledJobWaitsForItsTime(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	repo := postgres.SyncRepo{}
	ctx := context.Background()
	later, err := repo.InsertScheduled(ctx, db, "t", "s", []byte(`{"n":1}`), time.Now().Add(time.Hour))
	must(t, err)
	soon, err := repo.InsertScheduled(ctx, db, "t", "s", []byte(`{"n":2}`), time.Now().Add(-time.Second))
	must(t, err)
	now, err := repo.Insert(ctx, db, "t", "s", []byte(`{"n":3}`))
	must(t, err)

	st, err := repo.Stats(ctx, db)
	must(t, err)
	if st.Pending != 2 {
		t.Errorf("pending = %d, want 2 (the job scheduled in an hour does not count)", st.Pending)
	}
	tx, err := db.BeginTxx(ctx, nil)
	must(t, err)
	locked, _, err := repo.ClaimLocked(ctx, tx, "t", "s", nil)
	must(t, err)
	must(t, tx.Rollback())
	if ids := jobIDsOf(locked); !slices.Equal(ids, []int64{soon, now}) {
		t.Errorf("ClaimLocked took %v, want %v (not %d)", ids, []int64{soon, now}, later)
	}
	// The grace keeps fresh jobs for their request; a due scheduled job
	// is taken at once, with the scope's fresh jobs.
	due, err := repo.ClaimDue(ctx, db, "t", time.Minute, time.Hour)
	must(t, err)
	if ids := jobIDsOf(due); !slices.Equal(ids, []int64{soon, now}) {
		t.Errorf("ClaimDue took %v, want %v (not %d)", ids, []int64{soon, now}, later)
	}
	again, err := repo.ClaimDue(ctx, db, "t", time.Minute, 0)
	must(t, err)
	if len(again) != 0 {
		t.Errorf("ClaimDue took %v before its time", jobIDsOf(again))
	}
}

func jobIDsOf(rows []postgres.SyncJobRow) []int64 {
	ids := make([]int64, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	slices.Sort(ids)
	return ids
}
