package postgres_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/dbtest"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// Claims racing for the same jobs never wait for each other (which could
// deadlock, two multi-row updates taking rows in different orders): each
// takes what is free, and no job is claimed twice.
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
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var rows []postgres.SyncJobRow
				var err error
				if i%2 == 0 {
					rows, err = repo.ClaimScope(ctx, db, "t", "s", time.Minute)
				} else {
					rows, err = repo.ClaimDue(ctx, db, time.Minute)
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
