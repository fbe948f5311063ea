package postgres_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/dbtest"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// Claims racing for the same jobs never wait for each other (which could
// deadlock, two multi-row updates taking rows in different orders): each
// takes what is free, and no job is claimed twice, whether claimed by a
// lease (ClaimDue) or by a row lock held until the apply's transaction ends
// (ClaimLocked; those stay open until every claim is done).
func TestConcurrentClaimsNeitherDeadlockNorOverlap(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	repo := postgres.SyncRepo{}
	for round := range 30 {
		_, err := db.Exec(`DELETE FROM sync_jobs`)
		must(t, err)
		_, err = db.Exec(`INSERT INTO sync_jobs (target, scope, event) SELECT 't', 's', '{}' FROM generate_series(1, 200)`)
		must(t, err)
		var mu sync.Mutex
		seen := map[int64]int{}
		var open []*sqlx.Tx
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var rows []postgres.SyncJobRow
				var err error
				if i%2 == 0 {
					var tx *sqlx.Tx
					if tx, err = db.BeginTxx(ctx, nil); err == nil {
						mu.Lock()
						open = append(open, tx)
						mu.Unlock()
						rows, _, err = repo.ClaimLocked(ctx, tx, "t", "s", true)
					}
				} else {
					rows, err = repo.ClaimDue(ctx, db, time.Minute, 0)
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
		for _, tx := range open {
			must(t, tx.Rollback())
		}
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
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
	rows, err := repo.ClaimDue(ctx, db, time.Minute, time.Hour)
	must(t, err)
	if len(rows) != 0 {
		t.Fatalf("a fresh job was claimed within the grace: %+v", rows)
	}
	_, err = db.Exec(`INSERT INTO sync_jobs (target, scope, event, attempts) VALUES ('t', 'failed', '{}', 1)`)
	must(t, err)
	rows, err = repo.ClaimDue(ctx, db, time.Minute, time.Hour)
	must(t, err)
	if len(rows) != 1 || rows[0].Scope != "failed" || rows[0].Attempts != 2 {
		t.Fatalf("want the failed job claimed (attempt 2), got %+v", rows)
	}
	rows, err = repo.ClaimDue(ctx, db, time.Minute, 0)
	must(t, err)
	if len(rows) != 1 || rows[0].Scope != "fresh" {
		t.Fatalf("want the fresh job claimed once the grace is over, got %+v", rows)
	}
}
