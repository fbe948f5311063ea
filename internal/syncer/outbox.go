// Package syncer is the outbox that carries every credential change to the
// SMTP server's auth backend, reliably, whatever the backend (its targets).
//
// A change and its sync job are written in one transaction; the request
// that made the change then tries to apply the job within a short
// deadline, and a background worker retries whatever is left until the
// target confirms, with a jittered backoff that grows with the time the
// scope has been failing (not with the number of failed attempts, which a
// busy API multiplies) and is capped at a few seconds, so that a target is
// caught up within seconds of its recovery after an outage of any length.
// The targets
// live in subpackages (passwdfile, webhook, dovecotsql; snapshot helps
// targets that render state) and this package imports none of them.
//
// Jobs of one (target, scope) are claimed and applied together, so a burst
// of changes coalesces into one apply; applications of one scope are
// serialised across processes by the lock of the scope's row in
// sync_scopes, so an apply never overwrites a newer one. A request claims
// in its apply's transaction (row locks: a request that dies leaves its
// jobs at once); a worker's claims are leases, and a worker that dies
// leaves its jobs to be reclaimed when the lease runs out. Workers on
// several processes share one database safely (FOR UPDATE SKIP LOCKED).
//
// Files: outbox.go (the Service, enqueueing), apply.go (a request's apply
// and its waiters), group.go (requests' applies of several scopes in one
// transaction), worker.go (the background worker and retries),
// target.go (what a target implements and is given), event.go.
package syncer

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// Config tunes the outbox.
type Config struct {
	// ApplyTimeout bounds how long a request waits for its change to reach
	// the target before answering with remote_synced false.
	ApplyTimeout time.Duration
	// Lease is how long a job claimed by a worker stays claimed; a crashed
	// worker's jobs are claimable again after it. An attempt, a worker's or
	// a request's (whose jobs are claimed with row locks in the apply's
	// transaction, and which the request waits for ApplyTimeout at most:
	// see Service.Apply), ends once a lease passes without progress; while
	// it progresses, a worker's claim is extended (see leased).
	Lease time.Duration
	// PollInterval is how often an idle worker looks for due jobs.
	PollInterval time.Duration
	// BaseBackoff and MaxBackoff bound the delay before a failing scope's
	// next retry: about as long as the scope's oldest pending job has been
	// failing (since its first failed attempt), jittered down to half, at
	// least BaseBackoff and at most MaxBackoff before the jitter. It depends
	// on time only, not on how many requests failed meanwhile, so the worker
	// tries a down target about once per delay (every MaxBackoff/2 to
	// MaxBackoff once it has been down that long), and catches it up within
	// MaxBackoff plus PollInterval of its recovery, however long it was down.
	BaseBackoff, MaxBackoff time.Duration
	// KeepDone is how long applied jobs are kept.
	KeepDone time.Duration
}

func (c *Config) defaults() {
	if c.ApplyTimeout <= 0 {
		c.ApplyTimeout = 2 * time.Second
	}
	if c.Lease <= 0 {
		c.Lease = 15 * time.Second
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 500 * time.Millisecond
	}
	if c.BaseBackoff <= 0 {
		c.BaseBackoff = 500 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Second
	}
	if c.KeepDone <= 0 {
		c.KeepDone = 24 * time.Hour
	}
}

// Service is the outbox of one target. A nil *Service is a disabled sync:
// Enqueue writes nothing and Apply reports false, so nothing ever claims a
// sync that did not happen.
type Service struct {
	db     *sqlx.DB
	repo   postgres.SyncRepo
	target Target
	// readsState is set for a StateReader target.
	readsState bool
	cfg        Config
	log        *slog.Logger
	// beat is when Run last went round its loop (Unix nanoseconds).
	beat atomic.Int64

	// waiters maps a job id to the requests of this process waiting for
	// it, so that an apply made here wakes them at once instead of them
	// polling the outbox.
	mu      sync.Mutex
	waiters map[int64][]*waiter
	// last is the token of this Service's last committed apply of each
	// scope; an apply takes the scope's entry out until it commits (see
	// Batch.Continues).
	last map[string]int64
	// applying serialises this process's applies of a scope (the database
	// lock serialises processes): an apply waits here, not on a pooled
	// connection.
	applying map[string]chan struct{}
	// queue is the requests' applies handed to the group runner, which
	// runs while grouping is set (group.go).
	gmu      sync.Mutex
	queue    []*turnHolder
	grouping bool
	// bg counts the applies requests started, which may outlive the
	// request's wait (Apply), and the group runner; Drain waits for them.
	bg sync.WaitGroup
	// halt ends every apply in progress when cancelled (Halt).
	halt    context.Context
	haltNow context.CancelFunc
}

// waiter is one Apply call waiting for its jobs.
type waiter struct {
	left int           // jobs not yet applied; guarded by Service.mu
	done chan struct{} // closed when left reaches 0
}

// New returns the outbox of target.
func New(db *sqlx.DB, target Target, cfg Config, log *slog.Logger) *Service {
	cfg.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	_, readsState := target.(StateReader)
	halt, haltNow := context.WithCancel(context.Background())
	return &Service{db: db, target: target, readsState: readsState, cfg: cfg, log: log, halt: halt, haltNow: haltNow}
}

// Pending is the jobs of one change, as Enqueue made them, for Apply.
type Pending struct {
	ids    []int64
	scopes []string // distinct
}

// Enqueue writes one job per event; call it inside the transaction of the
// change, so that both are committed or neither.
func (s *Service) Enqueue(ctx context.Context, q sqlx.QueryerContext, events ...Event) (Pending, error) {
	if s == nil {
		return Pending{}, nil
	}
	var p Pending
	for _, e := range events {
		if e.OccurredAt == 0 {
			e.OccurredAt = time.Now().Unix()
		}
		b, err := json.Marshal(e)
		if err != nil {
			return Pending{}, fmt.Errorf("enqueue sync job: %w", err)
		}
		scope := s.target.Scope(e.Domain)
		id, err := s.repo.Insert(ctx, q, s.target.Name(), scope, b)
		if err != nil {
			return Pending{}, err
		}
		p.ids = append(p.ids, id)
		if !slices.Contains(p.scopes, scope) {
			p.scopes = append(p.scopes, scope)
		}
	}
	return p, nil
}

// Schedule writes a job of e that is due at at (a credential's expiry, the
// end of its grace period); call it inside the transaction of the change.
// When it comes due it is applied only if it still applies: an event with
// Reason ReasonExpired if its credential has expired (not if the expiry
// was moved or cleared meanwhile, or the credential deleted), one with
// ReasonGraceEnded if its credential is at the event's version and out of
// any grace period (see dueScheduled).
func (s *Service) Schedule(ctx context.Context, q sqlx.QueryerContext, at time.Time, e Event) error {
	if s == nil {
		return nil
	}
	if e.OccurredAt == 0 {
		e.OccurredAt = at.Unix()
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("schedule sync job: %w", err)
	}
	_, err = s.repo.InsertScheduled(ctx, q, s.target.Name(), s.target.Scope(e.Domain), b, at)
	return err
}

// Draft returns the job of e for the caller's own insert statement to
// write together with the new credential it is about (whose id the
// statement adds to the event, under the key of Event.CredentialID): see
// postgres.CredentialRepo.InsertVerified. Nil when sync is disabled.
func (s *Service) Draft(e Event) (*postgres.JobDraft, error) {
	if s == nil {
		return nil, nil
	}
	if e.OccurredAt == 0 {
		e.OccurredAt = time.Now().Unix()
	}
	e.CredentialID = 0 // the statement sets it
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("draft sync job: %w", err)
	}
	return &postgres.JobDraft{Target: s.target.Name(), Scope: s.target.Scope(e.Domain), Event: b, IDKey: credentialIDKey}, nil
}

// Drafted is the Pending of a drafted job, inserted (and committed) as id.
func (s *Service) Drafted(id int64, d *postgres.JobDraft) Pending {
	if s == nil || d == nil || id == 0 {
		return Pending{}
	}
	return Pending{ids: []int64{id}, scopes: []string{d.Scope}}
}

// Running reports whether Run is going round its loop: it went round within
// the last Lease (a round takes a poll interval, or one attempt bounded by
// the lease). A disabled sync (nil) is never running.
func (s *Service) Running() bool {
	if s == nil {
		return false
	}
	last := s.beat.Load()
	return last != 0 && time.Since(time.Unix(0, last)) < s.cfg.Lease+s.cfg.PollInterval
}

// Stats reports the outbox's backlog.
func (s *Service) Stats(ctx context.Context) (postgres.QueueStats, error) {
	if s == nil {
		return postgres.QueueStats{}, nil
	}
	return s.repo.Stats(ctx, s.db)
}

// Drain waits for the applies that requests started (Apply) and left
// running when they stopped waiting, each running while it makes progress
// (or until Halt). Call it once no request can call Apply any more (the
// HTTP server has shut down).
func (s *Service) Drain() {
	if s != nil {
		s.bg.Wait()
	}
}

// Halt ends every apply in progress, a request's or the worker's, and every
// later one: each rolls back and leaves its jobs as they were, for the next
// process, without counting a failure. It bounds a shutdown: an apply
// otherwise runs as long as it makes progress.
func (s *Service) Halt() {
	if s != nil {
		s.haltNow()
	}
}
