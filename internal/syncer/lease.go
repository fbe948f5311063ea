package syncer

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// An apply's deadline follows its progress rather than the clock alone: it
// ends once Lease has passed without progress, however long the apply has
// run. A whole write of a scope of a million logins on a loaded machine
// may take longer than any fixed bound that still cuts a hung target short;
// with a fixed bound such a scope failed on every retry. Rows read from the
// scope are progress (Batch.Scan, ScanInOrder, Changes), and a target
// reports its own long work with Batch.Progress.

// progress is when an apply last made progress (Unix nanoseconds).
type progress struct{ last atomic.Int64 }

func (p *progress) touch() {
	if p != nil {
		p.last.Store(time.Now().UnixNano())
	}
}

func (p *progress) idle(now time.Time) time.Duration {
	return now.Sub(time.Unix(0, p.last.Load()))
}

// errHalted ends the applies in progress when the Service halts: no
// failure of the target.
var errHalted = errors.New("sync: stopped before the apply finished")

// errStalled ends an apply that made no progress for a lease; it is a
// deadline, as API users are told ("the target did not answer in time").
var errStalled = fmt.Errorf("no progress for the apply's lease: %w", context.DeadlineExceeded)

// leased returns the context of one apply, which ends with parent or once
// the apply has made no progress for Lease, and the progress to report to.
// held are the jobs a worker claimed for the apply: their lease in the
// outbox (locked_until) is extended while the apply progresses, so that no
// other worker claims them meanwhile; a request's jobs are held by its
// transaction's row locks instead (nil). Call stop when the apply is over.
func (s *Service) leased(parent context.Context, held []int64) (ctx context.Context, p *progress, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	unhalt := context.AfterFunc(s.halt, func() { cancel(errHalted) })
	p = &progress{}
	p.touch()
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(s.cfg.Lease / 4)
		defer tick.Stop()
		extended := time.Now()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case now := <-tick.C:
				if p.idle(now) >= s.cfg.Lease {
					cancel(errStalled)
					return
				}
				if len(held) > 0 && now.Sub(extended) >= s.cfg.Lease/2 {
					if err := s.repo.Extend(ctx, s.db, held, s.cfg.Lease); err != nil && ctx.Err() == nil {
						s.log.Warn("sync: extend the lease of an apply in progress", "jobs", len(held), "error", err.Error())
					}
					extended = now
				}
			}
		}
	}()
	return ctx, p, func() {
		unhalt()
		close(done)
		cancel(context.Canceled)
	}
}

// cause is err, or why ctx ended when it did: a stalled apply's statements
// fail with "context canceled", which says nothing.
func cause(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		if c := context.Cause(ctx); c != nil && c != ctx.Err() {
			return fmt.Errorf("%w (%v)", c, err)
		}
	}
	return err
}
