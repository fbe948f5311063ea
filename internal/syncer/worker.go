package syncer

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// Run is the background worker: it applies due jobs until ctx ends, then
// finishes (or releases) the batch in hand and returns; or until Halt.
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
	for s.halt.Err() == nil { // a halted Service applies nothing more
		s.beat.Store(time.Now().UnixNano())
		if live { // tried again each round until it succeeds
			if err := s.catchUp(ctx); err == nil {
				live = false
			} else if !catchUpFailed && ctx.Err() == nil {
				catchUpFailed = true // said once
				s.log.Warn("sync: marking what the target already reads", "target", s.target.Name(), "error", err.Error())
			}
		}
		claim, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Lease)
		jobs, err := s.repo.ClaimDue(claim, s.db, s.target.Name(), s.cfg.Lease, s.cfg.ApplyTimeout+time.Second)
		cancel()
		if err == nil && len(jobs) > 0 {
			// The group in hand is finished even while stopping, for as
			// long as it makes progress (see leased).
			s.process(context.WithoutCancel(ctx), jobs)
		}
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

// process applies claimed jobs (of this target), one scope at a time.
func (s *Service) process(ctx context.Context, jobs []postgres.SyncJobRow) {
	groups := map[string][]postgres.SyncJobRow{}
	var order []string
	for _, j := range jobs {
		if _, ok := groups[j.Scope]; !ok {
			order = append(order, j.Scope)
		}
		groups[j.Scope] = append(groups[j.Scope], j)
	}
	for _, scope := range order {
		g := groups[scope]
		if !s.takeTurn(ctx, scope) {
			s.release(g, 0, "")
			continue
		}
		work, prog, stop := s.leased(ctx, jobIDs(g))
		_, _ = s.applyOrRelease(work, prog, scope, g, nil) // a claimed group is released on failure
		stop()
		<-s.scopeTurn(scope)
	}
}

// takeTurn waits for scope's turn (a request's apply of it in this process
// may hold it) for a lease at most, and reports whether it got it.
func (s *Service) takeTurn(ctx context.Context, scope string) bool {
	wait := time.NewTimer(s.cfg.Lease)
	defer wait.Stop()
	select {
	case s.scopeTurn(scope) <- struct{}{}:
		return true
	case <-wait.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// failing, release, fail and markError run on a fresh short context: they must
// happen even when the attempt failed because its context ran out.

// release ends the worker's lease on g (see SyncRepo.Release).
func (s *Service) release(g []postgres.SyncJobRow, delay time.Duration, msg string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.repo.Release(ctx, s.db, jobIDs(g), delay, msg); err != nil {
		s.log.Warn("sync: release", "error", err.Error()) // the lease runs out instead
	}
}

// failing is how long scope's oldest pending job has been failing.
func (s *Service) failing(scope string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.repo.Failing(ctx, s.db, s.target.Name(), scope)
}

// fail records a request's failed attempt at g, whose own jobs are own
// (see SyncRepo.Fail).
func (s *Service) fail(g []postgres.SyncJobRow, own []int64, delay time.Duration, msg string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.repo.Fail(ctx, s.db, jobIDs(g), own, delay, msg); err != nil {
		s.log.Warn("sync: record failed attempt", "error", err.Error()) // the jobs stay due as they were
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

// backoff is the delay before the next attempt at a scope whose oldest
// pending job has been failing for failing: drawn from [d/2, d] with d =
// failing clamped to [BaseBackoff, MaxBackoff]. Each retry thus waits about
// as long again as the scope has been failing (exponential in time: ×1.5 to
// ×2 per retry), and never longer than MaxBackoff, whatever the number of
// attempts.
func (s *Service) backoff(failing time.Duration) time.Duration {
	d := min(max(failing, s.cfg.BaseBackoff), s.cfg.MaxBackoff)
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
