package syncer_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/syncer"
)

// slowTarget takes steps of work in each Apply, reporting progress after
// each step when report is set; fail makes Apply fail at once.
type slowTarget struct {
	step   time.Duration
	steps  int
	report bool
	fail   bool
	calls  atomic.Int32
	made   atomic.Int32 // steps made, over every Apply
}

func (*slowTarget) Name() string               { return "slow" }
func (*slowTarget) Scope(domain string) string { return domain }

func (t *slowTarget) Apply(ctx context.Context, b syncer.Batch) error {
	t.calls.Add(1)
	if t.fail {
		return errors.New("backend refused")
	}
	for range t.steps {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(t.step): // the work of one step
		}
		t.made.Add(1)
		if t.report {
			b.Progress()
		}
	}
	return nil
}

func syncError(t *testing.T, f fixture, user string) string {
	t.Helper()
	var msg *string
	if err := f.db.Get(&msg, `SELECT sync_error FROM credentials WHERE username = $1`, user); err != nil {
		t.Fatal(err)
	}
	if msg == nil {
		return ""
	}
	return *msg
}

// An apply that keeps making progress runs past the lease (a whole write
// of a large scope on a loaded machine), and one that makes none is cut at
// the lease (a hung backend), telling the user so.
func TestApplyLeaseFollowsProgress(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.Lease = 300 * time.Millisecond
	cfg.ApplyTimeout = 10 * time.Second

	t.Run("progressing", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		target := &slowTarget{step: cfg.Lease / 3, steps: 9, report: true} // three leases
		s := syncer.New(f.db, target, cfg, nil)
		if !s.Apply(context.Background(), f.change(t, s, "alice", "{SSHA512}a")) {
			t.Fatalf("an apply making progress for %d steps of %v was cut (sync_error %q)", target.steps, target.step, syncError(t, f, "alice"))
		}
		if !f.synced(t, "alice") || target.made.Load() != int32(target.steps) {
			t.Errorf("synced %v after %d of %d steps", f.synced(t, "alice"), target.made.Load(), target.steps)
		}
	})

	t.Run("stalled", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		target := &slowTarget{step: time.Hour, steps: 1}
		s := syncer.New(f.db, target, cfg, nil)
		if s.Apply(context.Background(), f.change(t, s, "bob", "{SSHA512}b")) {
			t.Fatal("an apply that made no progress reported success")
		}
		if got, want := syncError(t, f, "bob"), "the target did not answer in time"; got != want {
			t.Errorf("sync_error %q, want %q", got, want)
		}
	})
}

// A failed apply answers its request at once, with the error, instead of
// waiting out the request's timeout for jobs only the worker's retry can
// apply now.
func TestFailedApplyAnswersAtOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cfg := fastConfig()
	cfg.ApplyTimeout = time.Minute
	target := &slowTarget{fail: true}
	s := syncer.New(f.db, target, cfg, nil)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ApplyTimeout/2)
	defer cancel()
	if s.Apply(ctx, f.change(t, s, "carol", "{SSHA512}c")) {
		t.Fatal("a failed apply reported success")
	}
	if ctx.Err() != nil {
		t.Fatalf("the request waited %v after its apply had failed", cfg.ApplyTimeout/2)
	}
	if got := syncError(t, f, "carol"); got != "backend refused" {
		t.Errorf("sync_error %q, want the target's error", got)
	}
}

// A worker's apply that runs past the lease while making progress keeps
// its jobs leased: another process's worker does not claim and apply them
// again meanwhile.
func TestWorkerExtendsTheLeaseOfAnApplyInProgress(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cfg := fastConfig()
	cfg.Lease = 400 * time.Millisecond
	target := &slowTarget{step: cfg.Lease / 4, steps: 12, report: true} // three leases
	first := syncer.New(f.db, target, cfg, nil)
	f.change(t, first, "dave", "{SSHA512}d")
	// As after a failed attempt of the request, so that a worker takes it at once.
	if _, err := f.db.Exec(`UPDATE sync_jobs SET attempts = 1`); err != nil {
		t.Fatal(err)
	}
	defer runWorker(first)()
	eventually(t, 5*time.Second, "the first worker to start applying", func() bool { return target.calls.Load() == 1 })
	second := syncer.New(f.db, target, cfg, nil) // another process
	defer runWorker(second)()
	eventually(t, 10*time.Second, "the apply to confirm dave", func() bool { return f.synced(t, "dave") })
	if n := target.calls.Load(); n != 1 {
		t.Errorf("the jobs were applied %d times: the second worker claimed them while the first was applying", n)
	}
}

// Halt stops the applies in progress, a request's and the worker's, however
// well they progress: they roll back and leave their jobs as they were,
// with no failure counted, for the next process.
func TestHaltStopsAppliesInProgress(t *testing.T) {
	t.Parallel()
	for _, by := range []string{"request", "worker"} {
		t.Run(by, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			cfg := fastConfig()
			cfg.ApplyTimeout = 50 * time.Millisecond
			target := &slowTarget{step: 20 * time.Millisecond, steps: 1 << 20, report: true} // for ever, progressing
			s := syncer.New(f.db, target, cfg, nil)
			p := f.change(t, s, "erin", "{SSHA512}e")
			stopWorker := func() {}
			if by == "request" {
				if s.Apply(context.Background(), p) { // outlives the request's wait
					t.Fatal("an apply that never ends reported success")
				}
			} else {
				// Due at once, as after a failed attempt of its request.
				if _, err := f.db.Exec(`UPDATE sync_jobs SET attempts = 1`); err != nil {
					t.Fatal(err)
				}
				stopWorker = runWorker(s)
			}
			eventually(t, 5*time.Second, "the apply to be running", func() bool { return target.made.Load() > 0 })
			s.Halt()
			drained := make(chan struct{})
			go func() { stopWorker(); s.Drain(); close(drained) }()
			eventually(t, 5*time.Second, "the apply to stop", func() bool {
				select {
				case <-drained:
					return true
				default:
					return false
				}
			})
			var j struct {
				Done    bool `db:"done"`
				Failing bool `db:"failing"`
			}
			eventually(t, 5*time.Second, "the job to be free again", func() bool {
				var free bool
				err := f.db.Get(&free, `SELECT locked_until IS NULL FROM sync_jobs`)
				return err == nil && free
			})
			if err := f.db.Get(&j, `SELECT done_at IS NOT NULL AS done, last_error IS NOT NULL OR first_failed_at IS NOT NULL AS failing FROM sync_jobs`); err != nil {
				t.Fatal(err)
			}
			if j.Done || j.Failing {
				t.Errorf("a halted apply left its job %+v, want pending and not failing", j)
			}
			if msg := syncError(t, f, "erin"); msg != "" || f.synced(t, "erin") {
				t.Errorf("sync_error %q, synced %v after a halted apply", msg, f.synced(t, "erin"))
			}
		})
	}
}

// batches is an event target that records the size of each batch.
type batches struct {
	mu    sync.Mutex
	sizes []int
	ids   map[int64]int // job id -> times applied
}

func (*batches) Name() string               { return "batches" }
func (*batches) Scope(domain string) string { return domain }
func (b *batches) Apply(_ context.Context, batch syncer.Batch) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sizes = append(b.sizes, len(batch.Events))
	for _, id := range batch.JobIDs {
		b.ids[id]++
	}
	return nil
}

// A backlog larger than one claim (a bulk import's jobs for an event
// target, an outage's changes) is applied in batches of postgres.ClaimMax
// at most, the oldest first, by the request that waits for the newest and
// by the worker alike: each apply's memory and each delivery stay bounded.
func TestBacklogIsAppliedInBoundedBatches(t *testing.T) {
	t.Parallel()
	for _, by := range []string{"request", "worker"} {
		t.Run(by, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			target := &batches{ids: map[int64]int{}}
			cfg := fastConfig()
			cfg.ApplyTimeout = time.Minute
			s := syncer.New(f.db, target, cfg, nil)
			backlog := 2*postgres.ClaimMax + postgres.ClaimMax/2
			// The backlog: jobs of one credential's events, as a bulk insert writes them.
			var id int64
			if err := f.db.Get(&id, `INSERT INTO credentials (guid, account_id, domain_id, username, password_hash)
				VALUES (gen_random_uuid(), $1, $2, 'bulk', '{SSHA512}x') RETURNING id`, f.account, f.domainID); err != nil {
				t.Fatal(err)
			}
			if _, err := f.db.Exec(`INSERT INTO sync_jobs (target, scope, event)
				SELECT 'batches', 'example.com', jsonb_build_object('type', 'credential.upserted', 'domain', 'example.com',
				       'login', 'bulk@example.com', 'credential_id', $1::bigint, 'version', 1, 'occurred_at', 0)
				FROM generate_series(1, $2::int)`, id, backlog); err != nil {
				t.Fatal(err)
			}
			p := f.change(t, s, "last", "{SSHA512}l") // the newest job
			if by == "request" {
				if !s.Apply(context.Background(), p) {
					t.Fatal("the request's apply did not get through the backlog to its own job")
				}
			} else {
				if _, err := f.db.Exec(`UPDATE sync_jobs SET attempts = 1`); err != nil { // due at once
					t.Fatal(err)
				}
				defer runWorker(s)()
				eventually(t, 30*time.Second, "the worker to apply the backlog", func() bool { return f.synced(t, "last") })
			}
			target.mu.Lock()
			defer target.mu.Unlock()
			total := 0
			for _, n := range target.sizes {
				if n > postgres.ClaimMax {
					t.Errorf("a batch of %d events, over ClaimMax %d", n, postgres.ClaimMax)
				}
				total += n
			}
			if total != backlog+1 || len(target.ids) != backlog+1 {
				t.Errorf("applied %d events of %d jobs, want each of the %d jobs once", total, len(target.ids), backlog+1)
			}
			for job, n := range target.ids {
				if n != 1 {
					t.Errorf("job %d applied %d times", job, n)
				}
			}
		})
	}
}
