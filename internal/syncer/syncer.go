// Package syncer carries every credential change to the SMTP server's auth
// backend, reliably: a change and its sync job are written in one transaction
// (the outbox); the request that made the change then tries to apply the job
// within a short deadline, and a background worker retries whatever is left
// with capped exponential backoff and jitter until the target confirms.
//
// Jobs of one (target, scope) are claimed and applied together, so a burst
// of changes coalesces into one render; applications of one scope are
// serialised across processes by the lock of the scope's row in
// sync_scopes, so a render never overwrites a newer one. A request claims
// in its apply's transaction (row locks: a request that dies leaves its
// jobs at once); a worker's claims are leases, and a worker that dies
// leaves its jobs to be reclaimed when the lease runs out. Workers on
// several processes share one database safely (FOR UPDATE SKIP LOCKED).
package syncer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/sync/passwdfile"
)

// Event types.
const (
	CredentialUpserted = "credential.upserted"
	CredentialDeleted  = "credential.deleted"
	DomainDeleted      = "domain.deleted"
)

// Event is one change, as stored in the outbox and as sent to event targets.
// It never holds a plaintext password: PasswordHash is what the backend stores.
type Event struct {
	Type         string   `json:"type"`
	Domain       string   `json:"domain"`
	Login        string   `json:"login,omitempty"`
	Username     string   `json:"username,omitempty"`
	CredentialID int64    `json:"credential_id,omitempty"`
	GUID         string   `json:"user_smtp_guid,omitempty"`
	Version      int64    `json:"version,omitempty"`
	PasswordHash string   `json:"password_hash,omitempty"`
	Logins       []string `json:"logins,omitempty"`
	OccurredAt   int64    `json:"occurred_at"`
}

// Entry is one credential as a backend holds it: a login and the hash it
// verifies. (The passwd-file writer's own type, so that the state the syncer
// holds goes to the file without a copy.)
type Entry = passwdfile.Entry

// Batch is what a target applies at once: the events of one scope, in
// order, and, for targets that render state, the current state of the parts
// of the scope the events changed.
type Batch struct {
	Scope  string
	JobIDs []int64
	Events []Event
	// Parts, only for targets whose NeedsSnapshot is true, holds the whole
	// current state of each part (see Partitioner) that holds a login the
	// events changed, by key; a part may now be empty. Read-only.
	Parts []Part
	// Whole means that Parts holds every non-empty part of the scope, and
	// any other part is empty (the scope was read whole: the backend may
	// hold anything, e.g. after a restart).
	Whole bool
	// Tx is the apply's transaction, which holds the scope's lock: for a
	// target kept in smtpcreds' own database. Its commit records the
	// batch as applied.
	Tx sqlx.QueryerContext
}

// Part is the state of one part of a scope: its entries, sorted by login.
// AddOnly says that Entries is the part's entries as the last batch applied
// in this process left them (or as the PartStore returned them) plus
// exactly Added, sorted, none of them there before: nothing else changed.
// A target may then add Added instead of replacing the part.
type Part struct {
	Key     string
	Entries []Entry
	AddOnly bool
	Added   []Entry
}

// Partitioner is implemented by snapshot targets that keep a scope's state
// in parts, e.g. the passwd-file target's shards: a login's part is
// Partition(login), and a batch carries only the parts it changed. A target
// without it has one part, "", holding the scope's whole state.
type Partitioner interface {
	Partition(login string) string
}

// PartStore is implemented by partitioned targets that can return a part's
// current state cheaply, e.g. by reading a small shard file: the syncer then
// keeps no copy of a scope's state (memory O(changes), not O(credentials))
// and builds a batch's parts from what ReadPart returns plus the changes.
// While it trusts the backend (no other process applied the scope since,
// and it was read whole less than a minute ago) the backend is taken to
// hold what this process wrote; an error from ReadPart makes the apply read
// the scope whole.
type PartStore interface {
	Partitioner
	// ReadPart returns the entries the backend holds in part key of scope,
	// sorted by login (none for a part it does not have).
	ReadPart(scope, key string) ([]Entry, error)
}

// Target is a backend smtpcreds keeps in sync. Adding one (an LDAP
// directory, another MTA's API) means implementing these four methods.
type Target interface {
	// Name identifies the target in the outbox.
	Name() string
	// Scope is the coalescing key of a change to domain: jobs with the same
	// scope are applied together and never concurrently.
	Scope(domain string) string
	// NeedsSnapshot is true for targets that render the scope's whole state
	// (the snapshot is read by domain: scope "" means every domain).
	NeedsSnapshot() bool
	// Apply makes the backend reflect the batch. It must be idempotent: a
	// batch may be applied again after a crash. Its error text is shown to
	// API users, so it must not carry secrets.
	Apply(ctx context.Context, b Batch) error
}

// Live is implemented by targets whose backend reads smtpcreds' database
// itself (the dovecot-sql view): whatever is committed is in the backend
// while Check passes. The worker then marks synced, when it starts, the
// credentials no apply of the target has marked: those made with sync off
// or under another target, which have no job of this target to apply.
type Live interface {
	Target
	// Check reports an error while the backend cannot read the database.
	Check(ctx context.Context, q sqlx.QueryerContext) error
}

// Config tunes the outbox.
type Config struct {
	// ApplyTimeout bounds how long a request waits for its change to reach
	// the target before answering with remote_synced false.
	ApplyTimeout time.Duration
	// Lease is how long a job claimed by a worker stays claimed; a crashed
	// worker's jobs are claimable again after it. A worker's attempt is
	// bounded by it. (A request claims its jobs with row locks in the
	// apply's transaction, which its ApplyTimeout bounds.)
	Lease time.Duration
	// PollInterval is how often an idle worker looks for due jobs.
	PollInterval time.Duration
	// BaseBackoff and MaxBackoff shape the retry delays.
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
		c.MaxBackoff = 5 * time.Minute
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
	cfg    Config
	log    *slog.Logger
	// beat is when Run last went round its loop (Unix nanoseconds).
	beat atomic.Int64

	// waiters maps a job id to the requests of this process waiting for
	// it, so that an apply made here wakes them at once instead of them
	// polling the outbox.
	mu      sync.Mutex
	waiters map[int64][]*waiter
	// held is what this process last wrote to each scope of a snapshot
	// target; an entry is taken out while its scope is being applied.
	held map[string]*held
	// applying serialises this process's applies of a scope (the database
	// lock serialises processes): an apply waits here, not on a pooled
	// connection, and finds what the previous one put back in held.
	applying map[string]chan struct{}
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
	return &Service{db: db, target: target, cfg: cfg, log: log}
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

// Apply tries to apply the (committed) jobs of p now and reports whether
// the target confirmed all of them within ApplyTimeout. Whatever is not done
// is left to the workers.
//
// Applies of a scope take turns in process. When its turn comes, a request
// claims every job of the scope then pending (its own and those committed
// meanwhile by others), so that under load one apply serves many requests;
// a request whose jobs another turn applied meanwhile is woken without SQL.
func (s *Service) Apply(ctx context.Context, p Pending) bool {
	if s == nil || len(p.ids) == 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	w := s.wait(p.ids)
	defer s.unwait(p.ids, w)
	for _, scope := range p.scopes {
		turn := s.scopeTurn(scope)
		select {
		case <-w.done:
			return true
		case <-ctx.Done():
			return false
		case turn <- struct{}{}:
		}
		select {
		case <-w.done: // the turn before this one applied them
			<-turn
			return true
		default:
		}
		err := s.applyOrRelease(ctx, scope, nil)
		<-turn
		if err != nil {
			return false
		}
	}
	// Jobs applied in this process wake w; jobs claimed by another process
	// are only seen by asking the outbox, which is done rarely.
	wait := 25 * time.Millisecond
	poll := time.NewTimer(wait)
	defer poll.Stop()
	for {
		select {
		case <-w.done:
			return true
		case <-ctx.Done():
			return false
		case <-poll.C:
			if done, err := s.repo.AllDone(ctx, s.db, p.ids); err == nil && done {
				return true
			}
			wait = min(wait*2, 200*time.Millisecond)
			poll.Reset(wait)
		}
	}
}

// wait registers a waiter for ids.
func (s *Service) wait(ids []int64) *waiter {
	w := &waiter{left: len(ids), done: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiters == nil {
		s.waiters = map[int64][]*waiter{}
	}
	for _, id := range ids {
		s.waiters[id] = append(s.waiters[id], w)
	}
	return w
}

// unwait removes w.
func (s *Service) unwait(ids []int64, w *waiter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		ws := slices.DeleteFunc(s.waiters[id], func(x *waiter) bool { return x == w })
		if len(ws) == 0 {
			delete(s.waiters, id)
		} else {
			s.waiters[id] = ws
		}
	}
}

// applied wakes the waiters of jobs whose application has been committed.
func (s *Service) applied(ids []int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		for _, w := range s.waiters[id] {
			if w.left--; w.left == 0 {
				close(w.done)
			}
		}
		delete(s.waiters, id)
	}
}

// Run is the background worker: it applies due jobs until ctx ends, then
// finishes (or releases) the batch in hand and returns.
func (s *Service) Run(ctx context.Context) {
	if s == nil {
		return
	}
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	defer s.beat.Store(0)
	failures := 0
	_, live := s.target.(Live)
	catchUpFailed := false
	for {
		s.beat.Store(time.Now().UnixNano())
		if live { // tried again each round until it succeeds
			if err := s.catchUp(ctx); err == nil {
				live = false
			} else if !catchUpFailed && ctx.Err() == nil {
				catchUpFailed = true // said once
				s.log.Warn("sync: marking what the target already reads", "target", s.target.Name(), "error", err.Error())
			}
		}
		// The batch in hand is finished even while stopping; bounded by the lease.
		work, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Lease)
		jobs, err := s.repo.ClaimDue(work, s.db, s.cfg.Lease, s.cfg.ApplyTimeout+time.Second)
		if err == nil && len(jobs) > 0 {
			s.process(work, jobs)
		}
		cancel()
		wait := s.cfg.PollInterval
		if err != nil && ctx.Err() == nil {
			// The database is away: back off, and say so once per streak.
			failures++
			if failures == 1 {
				s.log.Warn("sync: claim", "error", err.Error())
			}
			wait = min(s.cfg.PollInterval<<min(failures, 4), 5*time.Second)
		} else if err == nil {
			if failures > 0 {
				s.log.Info("sync: claims work again", "failed_rounds", failures)
			}
			failures = 0
		}
		if err == nil && len(jobs) > 0 && ctx.Err() == nil {
			continue // more may be due
		}
		select {
		case <-ctx.Done():
			return
		case <-prune.C:
			if n, err := s.repo.Prune(ctx, s.db, s.cfg.KeepDone); err != nil {
				s.log.Warn("sync: prune", "error", err.Error())
			} else if n > 0 {
				s.log.Debug("sync: pruned applied jobs", "jobs", n)
			}
		case <-time.After(wait):
		}
	}
}

// catchUp marks every credential not yet marked synced, in one
// transaction, once the live target's check passes in it.
func (s *Service) catchUp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Lease)
	defer cancel()
	tx, err := postgres.Begin(ctx, s.db)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	if err := s.target.(Live).Check(ctx, tx); err != nil {
		return err
	}
	n, err := s.repo.MarkAllSynced(ctx, tx)
	if err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	if n > 0 {
		s.log.Info("sync: credentials the target already reads marked synced", "target", s.target.Name(), "credentials", n)
	}
	return nil
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

// process applies claimed jobs, one (target, scope) group at a time.
func (s *Service) process(ctx context.Context, jobs []postgres.SyncJobRow) {
	type key struct{ target, scope string }
	groups := map[key][]postgres.SyncJobRow{}
	var order []key
	for _, j := range jobs {
		k := key{j.Target, j.Scope}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], j)
	}
	for _, k := range order {
		g := groups[k]
		if k.target != s.target.Name() {
			// A job of a target this process does not run (configuration
			// changed): leave it for a process that does.
			s.release(g, s.cfg.MaxBackoff, "", true)
			continue
		}
		turn := s.scopeTurn(k.scope)
		select {
		case turn <- struct{}{}:
		case <-ctx.Done():
			s.release(g, 0, "", true)
			continue
		}
		_ = s.applyOrRelease(ctx, k.scope, g) // a claimed group is released on failure
		<-turn
	}
}

// applyOrRelease applies a claimed group of scope (the caller has the
// scope's turn), or, when g is nil, claims the scope's pending jobs in the
// apply's transaction and applies them; on failure the jobs are released
// with a backoff and the credentials marked with the error. It returns an
// error only when the jobs could not be claimed.
func (s *Service) applyOrRelease(ctx context.Context, scope string, g []postgres.SyncJobRow) error {
	claim := g == nil
	g, err := s.applyGroup(ctx, scope, g)
	if err == nil {
		return nil
	}
	if len(g) == 0 {
		s.log.WarnContext(ctx, "sync: claim", "target", s.target.Name(), "scope", scope, "error", err.Error())
		return err
	}
	msg := publicError(err)
	attempts := 0
	for _, j := range g {
		attempts = max(attempts, j.Attempts)
	}
	if claim {
		attempts++ // this attempt, not yet counted
	}
	delay := s.backoff(attempts)
	s.log.Warn("sync: apply failed", "target", s.target.Name(), "scope", scope, "jobs", len(g),
		"attempts", attempts, "retry_in", delay.String(), "error", err.Error())
	s.release(g, delay, msg, !claim)
	s.markError(g, msg)
	return nil
}

// applyGroup applies one group in a transaction holding the scope's lock;
// success marks the credentials synced and the jobs done in that same
// transaction. A nil g is claimed in the transaction (after the lock, so
// that it takes every job committed until then). It returns the group it
// applied or tried to: a given g even if the transaction could not begin
// or lock, so that its jobs are released; none if its own claim failed or
// found nothing.
func (s *Service) applyGroup(ctx context.Context, scope string, g []postgres.SyncJobRow) ([]postgres.SyncJobRow, error) {
	tx, err := postgres.Begin(ctx, s.db)
	if err != nil {
		return g, err
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	token := rand.Int64N(1<<62) + 1
	prev, err := s.repo.LockScope(ctx, tx, s.target.Name(), scope, token)
	if err != nil {
		return g, err
	}
	// The current rows of the changed credentials: read when needed for a
	// group claimed by a worker, returned by the claim here.
	changes := func(ids []int64, logins []string) ([]postgres.SnapshotRow, error) {
		return s.repo.SnapshotOf(ctx, tx, ids, logins)
	}
	if g == nil {
		var rows []postgres.SnapshotRow
		if g, rows, err = s.repo.ClaimLocked(ctx, tx, s.target.Name(), scope, s.target.NeedsSnapshot()); err != nil || len(g) == 0 {
			return nil, err // nothing claimed: the rollback keeps the scope's token
		}
		changes = func([]int64, []string) ([]postgres.SnapshotRow, error) { return rows, nil }
	}
	return g, s.apply(ctx, tx, scope, g, prev, token, changes)
}

// apply is applyGroup's work once g is claimed and the scope locked (prev
// is the scope's token before this apply's, token); changes returns the
// current rows of the credentials and logins the jobs change.
func (s *Service) apply(ctx context.Context, tx *postgres.Tx, scope string, g []postgres.SyncJobRow, prev, token int64,
	changes func(ids []int64, logins []string) ([]postgres.SnapshotRow, error)) error {
	var err error
	slices.SortFunc(g, func(a, b postgres.SyncJobRow) int { return int(a.ID - b.ID) })
	b := Batch{Scope: scope, JobIDs: jobIDs(g), Tx: tx}
	for _, j := range g {
		var e Event
		if err := json.Unmarshal(j.Event, &e); err != nil {
			return fmt.Errorf("sync job %d: %w", j.ID, err)
		}
		b.Events = append(b.Events, e)
	}
	var ids, versions []int64
	var h *held
	if s.target.NeedsSnapshot() {
		// What this process last wrote is taken out while the scope is
		// applied, and put back only once the apply has committed: a failed
		// apply leaves the backend in doubt, so the next one reads it whole.
		h = s.takeHeld(scope)
		changed, logins, single := changedCredentials(b.Events)
		store, _ := s.target.(PartStore)
		var rows []postgres.SnapshotRow
		if h != nil && h.token == prev && single && time.Since(h.readAt) < fullReadEvery {
			if rows, err = changes(changed, logins); err != nil {
				return err
			}
			if store == nil {
				b.Parts = h.merge(logins, rows)
			} else if b.Parts, err = changedParts(store.Partition, logins, rows, func(k string) ([]Entry, error) {
				return store.ReadPart(scope, k)
			}, nil); err != nil {
				s.log.Warn("sync: reading the parts to change failed, reading the scope whole",
					"target", s.target.Name(), "scope", scope, "error", err.Error())
				h = nil
			}
		} else {
			h = nil
		}
		if h == nil {
			var partOf func(string) string
			if p, ok := s.target.(Partitioner); ok {
				partOf = p.Partition
			}
			h = newHeld(time.Now(), partOf)
			rows = nil
			err := s.repo.Snapshot(ctx, tx, scope, func(r postgres.SnapshotRow) error {
				h.add(r)
				if r.SyncedVersion < r.Version { // only these need marking
					ids, versions = append(ids, r.CredentialID), append(versions, r.Version)
				}
				return nil
			})
			if err != nil {
				return err
			}
			b.Parts, b.Whole = h.done().all(), true
			if store != nil {
				// The target keeps the state: hold only when it was read.
				h = &held{readAt: h.readAt}
			}
		}
		h.token = token
		for _, r := range rows {
			if r.SyncedVersion < r.Version { // only these need marking
				ids, versions = append(ids, r.CredentialID), append(versions, r.Version)
			}
		}
	} else {
		for _, e := range b.Events {
			if e.Type == CredentialUpserted {
				ids, versions = append(ids, e.CredentialID), append(versions, e.Version)
			}
		}
	}
	if err := s.target.Apply(ctx, b); err != nil {
		return err
	}
	if err := s.repo.Finish(ctx, tx, ids, versions, b.JobIDs); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	if h != nil {
		s.putHeld(scope, h)
	}
	s.applied(b.JobIDs)
	return nil
}

// scopeTurn returns the channel (a semaphore of one) of scope's applies.
func (s *Service) scopeTurn(scope string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.applying == nil {
		s.applying = map[string]chan struct{}{}
	}
	c, ok := s.applying[scope]
	if !ok {
		c = make(chan struct{}, 1)
		s.applying[scope] = c
	}
	return c
}

func (s *Service) takeHeld(scope string) *held {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.held[scope]
	delete(s.held, scope)
	return h
}

func (s *Service) putHeld(scope string, h *held) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held == nil {
		s.held = map[string]*held{}
	}
	s.held[scope] = h
}

// release and markError run on a fresh short context: they must happen even
// when the attempt failed because its context ran out.
func (s *Service) release(g []postgres.SyncJobRow, delay time.Duration, msg string, counted bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.repo.Release(ctx, s.db, jobIDs(g), delay, msg, counted); err != nil {
		s.log.Warn("sync: release", "error", err.Error()) // the lease runs out instead
	}
}

func (s *Service) markError(g []postgres.SyncJobRow, msg string) {
	var ids []int64
	for _, j := range g {
		var e Event
		if json.Unmarshal(j.Event, &e) == nil && e.CredentialID != 0 {
			ids = append(ids, e.CredentialID)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.repo.MarkError(ctx, s.db, ids, msg); err != nil {
		s.log.Warn("sync: mark error", "error", err.Error())
	}
}

// jobIDs returns the ids of g in ascending order.
func jobIDs(g []postgres.SyncJobRow) []int64 {
	ids := make([]int64, len(g))
	for i, j := range g {
		ids[i] = j.ID
	}
	slices.Sort(ids)
	return ids
}

// backoff is capped exponential backoff with jitter: a delay drawn from
// [d/2, d) with d = BaseBackoff * 2^(attempts-1), capped at MaxBackoff.
func (s *Service) backoff(attempts int) time.Duration {
	d := s.cfg.BaseBackoff
	for i := 1; i < attempts && d < s.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.cfg.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

// publicError is the text of a failed attempt as API users see it: file
// errors lose their paths, an error with a Public text shows that, and the
// text is bounded.
func publicError(err error) string {
	var pe *fs.PathError
	var pub interface{ Public() string }
	msg := err.Error()
	if errors.As(err, &pe) {
		msg = pe.Op + ": " + pe.Err.Error()
	}
	if errors.As(err, &pub) {
		msg = pub.Public()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		msg = "the target did not answer in time"
	}
	if len(msg) > 200 {
		msg = msg[:200]
	}
	return msg
}
