package syncer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// Apply tries to apply the (committed) jobs of p now and reports whether
// the target confirmed all of them within ApplyTimeout. Whatever is not done
// is left to the workers.
//
// Applies of a scope take turns in process. When its turn comes, a request
// claims every job of the scope then pending (its own and those committed
// meanwhile by others), so that under load one apply serves many requests;
// a request whose jobs another turn applied meanwhile is woken without SQL.
//
// The request waits ApplyTimeout at most, but an apply it started has its
// own deadline, as a worker's attempt has: it ends once Lease passes
// without progress (see leased). An apply that must read and write a large
// scope whole (after a restart, an import, a file in doubt) finishes in the
// background when the request stops waiting, and confirms the jobs then,
// instead of failing on the request's deadline every time and leaving the
// work to a retry that would fail the same way. A failed apply answers at
// once: its jobs are left to the worker's retry.
func (s *Service) Apply(ctx context.Context, p Pending) bool {
	if s == nil || len(p.ids) == 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	w := s.wait(p.ids)
	defer s.unwait(p.ids, w)
	for _, scope := range p.scopes {
		for more := true; more; { // a claim takes ClaimMax jobs at most: again while it was full
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
			h := &turnHolder{scope: scope, own: p.ids, turn: turn, done: make(chan applyResult, 1)}
			if s.groupable(scope) {
				s.join(h)
			} else {
				s.bg.Add(1)
				go s.applyAlone(ctx, h) // holds the turn until the apply is over
			}
			select {
			case r := <-h.done:
				if r.err != nil {
					return false
				}
				more = r.claimed == postgres.ClaimMax
			case <-w.done:
				return true
			case <-ctx.Done():
				return false
			}
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

// applyOrRelease applies a claimed group of scope (the caller has the
// scope's turn), or, when g is nil, claims the scope's pending jobs in the
// apply's transaction and applies them (a request's apply, whose own jobs
// are own); on failure the jobs are released with a backoff and the
// credentials marked with the error. It returns how many jobs it applied
// or tried to, and the error of an apply that did not commit (nil when it
// did or when its claim found nothing).
//
// The backoff depends on how long the scope's oldest pending job has been
// failing, never on how many attempts failed: a request's failure counts
// against its own jobs only and leaves the time already failing jobs are
// due (SyncRepo.Fail), so the worker retries a scope about once per backoff
// however many requests fail meanwhile, and within MaxBackoff of the
// target's recovery.
func (s *Service) applyOrRelease(ctx context.Context, prog *progress, scope string, g []postgres.SyncJobRow, own []int64) (int, error) {
	claim := g == nil
	g, err := s.applyGroup(ctx, prog, scope, g)
	if err == nil {
		return len(g), nil
	}
	err = cause(ctx, err)
	if errors.Is(err, errHalted) {
		// Stopping: a request's claim rolled back with the apply, a
		// worker's is handed back; neither failed.
		if !claim {
			s.release(g, 0, "")
		}
		s.log.Info("sync: apply stopped by the shutdown", "target", s.target.Name(), "scope", scope, "jobs", len(g))
		return len(g), err
	}
	if len(g) == 0 {
		s.log.WarnContext(ctx, "sync: claim", "target", s.target.Name(), "scope", scope, "error", err.Error())
		return len(g), err
	}
	msg := publicError(err)
	failing, ferr := s.failing(scope)
	if ferr != nil {
		s.log.Warn("sync: read how long the scope has been failing", "scope", scope, "error", ferr.Error())
	}
	delay := s.backoff(failing)
	by := "worker"
	if claim {
		by = "request"
	}
	s.log.Warn("sync: apply failed", "target", s.target.Name(), "scope", scope, "by", by, "jobs", len(g),
		"failing_for", failing.Round(time.Millisecond).String(), "retry_in", delay.String(), "error", err.Error())
	if claim {
		s.fail(g, own, delay, msg)
	} else {
		s.release(g, delay, msg)
	}
	s.markError(g, msg)
	return len(g), err
}

// applyGroup applies one group in a transaction holding the scope's lock;
// success marks the credentials synced and the jobs done in that same
// transaction. A nil g is claimed in the transaction (after the lock, so
// that it takes every job committed until then). It returns the group it
// applied or tried to: a given g even if the transaction could not begin
// or lock, so that its jobs are released; none if its own claim failed or
// found nothing.
//
// The transaction is not bound to ctx (its statements are): database/sql
// rolls a transaction back when its context ends, which would free the
// scope's lock while the target is still applying, and let another process
// apply the scope meanwhile, its newer state then overwritten by this older
// one. The lock is held until the target's Apply has returned.
func (s *Service) applyGroup(ctx context.Context, prog *progress, scope string, g []postgres.SyncJobRow) ([]postgres.SyncJobRow, error) {
	tx, err := postgres.Begin(context.WithoutCancel(ctx), s.db)
	if err != nil {
		return g, err
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	token := rand.Int64N(1<<62) + 1
	prev, partsTrusted, err := s.repo.LockScope(ctx, tx, s.target.Name(), scope, token)
	if err != nil {
		return g, err
	}
	// The current rows of the changed credentials: read when needed for a
	// group claimed by a worker, returned by the claim here.
	changes := func(ctx context.Context, ids []int64, logins []string) ([]postgres.SnapshotRow, error) {
		return s.repo.SnapshotOf(ctx, tx, ids, logins)
	}
	if g == nil {
		var rows []postgres.SnapshotRow
		if g, rows, err = s.repo.ClaimLocked(ctx, tx, s.target.Name(), scope, s.changeKeys()); err != nil || len(g) == 0 {
			return nil, err // nothing claimed: the rollback keeps the scope's token
		}
		if s.readsState { // else the claim read none, and they are read on demand
			changes = func(context.Context, []int64, []string) ([]postgres.SnapshotRow, error) { return rows, nil }
		}
	}
	return g, s.apply(ctx, prog, tx, scope, g, prev, token, partsTrusted, changes)
}

// apply is applyGroup's work once g is claimed and the scope locked (prev
// is the scope's token before this apply's, token; partsTrusted says whether
// the scope's stored fingerprints are its last apply's); changes returns the
// current rows of the credentials and logins the jobs change.
func (s *Service) apply(ctx context.Context, prog *progress, tx *postgres.Tx, scope string, g []postgres.SyncJobRow, prev, token int64, partsTrusted bool,
	changes func(ctx context.Context, ids []int64, logins []string) ([]postgres.SnapshotRow, error)) error {
	events, err := decodeJobs(g)
	if err != nil {
		return err
	}
	b := Batch{Scope: scope, JobIDs: jobIDs(g), Tx: tx, Continues: s.continues(scope, prev),
		reads: &reads{repo: s.repo, tx: tx, target: s.target.Name(), changes: changes, partsTrusted: partsTrusted, progress: prog}}
	if b.Events, err = s.dueScheduled(ctx, tx, events); err != nil {
		return err
	}
	b.reads.expect(b.Events)
	if len(b.Events) > 0 {
		if err := s.target.Apply(ctx, b); err != nil {
			return err
		}
	}
	if ds := importedDomains(b.Events); len(ds) > 0 {
		// A live target has whatever is committed: the imported
		// credentials, which the events do not name, are confirmed by
		// their domains.
		if _, live := s.target.(Live); live {
			if err := s.repo.MarkSyncedIn(ctx, tx, ds); err != nil {
				return err
			}
		}
	}
	if r := b.reads; r.keep {
		if err := s.repo.KeepParts(ctx, tx, s.target.Name(), scope, token, r.prints, r.printsWhole); err != nil {
			return err
		}
	}
	ids, versions := b.confirmed()
	if err := s.repo.Finish(ctx, tx, ids, versions, b.JobIDs); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	s.committed(scope, token)
	s.applied(b.JobIDs)
	return nil
}

// decodeJobs sorts g by id and returns the events of its jobs, in order.
func decodeJobs(g []postgres.SyncJobRow) ([]Event, error) {
	slices.SortFunc(g, func(a, b postgres.SyncJobRow) int { return int(a.ID - b.ID) })
	events := make([]Event, 0, len(g))
	for _, j := range g {
		var e Event
		if err := json.Unmarshal(j.Event, &e); err != nil {
			return nil, fmt.Errorf("sync job %d: %w", j.ID, err)
		}
		events = append(events, e)
	}
	return events, nil
}

// continues reports whether the scope's previous apply, whose token is
// prev, was this Service's last committed apply of it; the scope's entry
// is taken out until this apply commits, so that a failed apply leaves the
// next one not continuing.
func (s *Service) continues(scope string, prev int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	last, ok := s.last[scope]
	delete(s.last, scope)
	return ok && last == prev
}

// committed records token as this Service's last committed apply of scope.
func (s *Service) committed(scope string, token int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil {
		s.last = map[string]int64{}
	}
	s.last[scope] = token
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

// changeKeys is what a claim needs to read the changed credentials along:
// nil unless the target reads state.
func (s *Service) changeKeys() *postgres.EventKeys {
	if !s.readsState {
		return nil
	}
	return &eventKeys
}

// dueScheduled drops the scheduled events (a credential's expiry, the end
// of its grace period) that no longer apply: an expiry whose credential has
// not expired now (the expiry was moved or cleared since, or the
// credential is gone), a grace's end whose credential changed since (its
// later events carry its state) or is in a grace period again. The others
// are kept.
func (s *Service) dueScheduled(ctx context.Context, tx *postgres.Tx, events []Event) ([]Event, error) {
	var ids []int64
	for _, e := range events {
		if e.Reason == ReasonExpired || e.Reason == ReasonGraceEnded {
			ids = append(ids, e.CredentialID)
		}
	}
	if len(ids) == 0 {
		return events, nil
	}
	states, err := s.repo.ScheduledStates(ctx, tx, ids)
	if err != nil {
		return nil, err
	}
	kept := make([]Event, 0, len(events))
	for _, e := range events {
		i := slices.IndexFunc(states, func(st postgres.ScheduledState) bool { return st.ID == e.CredentialID })
		switch {
		case e.Reason == ReasonExpired && (i < 0 || !states[i].Expired):
		case e.Reason == ReasonGraceEnded && (i < 0 || states[i].Version != e.Version || states[i].InGrace):
		default:
			kept = append(kept, e)
		}
	}
	return kept, nil
}
