// Package ratelimit enforces per-minute request limits with counts kept in
// PostgreSQL, so that every smtpcreds process on one database enforces one limit.
//
// Limits apply per account to authenticated calls, and per client address,
// more strictly, to failed authentication.
package ratelimit

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// Decision is the outcome of one check.
type Decision struct {
	Allowed    bool
	Limit      int // requests per minute; 0 when limiting is off
	Remaining  int
	RetryAfter int // whole seconds until the window ends
}

// Limiter applies the limits. db may be a pool opened with
// synchronous_commit=off: a counter lost in a crash costs nothing, and the
// counter row is then locked only for the update itself, not a WAL flush.
type Limiter struct {
	db           *sqlx.DB
	repo         postgres.RateCounterRepo
	perMinute    int
	authFailures int
	cache        *postgres.Cache[failEntry] // by key; nil unless CacheFailures was called
}

// New returns a Limiter allowing perMinute calls per account and
// authFailures failed logins per client address per minute; 0 turns either off.
func New(db *sqlx.DB, perMinute, authFailures int) *Limiter {
	return &Limiter{db: db, perMinute: perMinute, authFailures: authFailures}
}

// Account counts one call of accountID and says whether it is within the limit.
func (l *Limiter) Account(ctx context.Context, accountID int64) (Decision, error) {
	if l.perMinute <= 0 {
		return Decision{Allowed: true}, nil
	}
	hits, left, err := l.repo.Hit(ctx, l.db, "account:"+strconv.FormatInt(accountID, 10))
	if err != nil {
		return Decision{}, fmt.Errorf("rate limit: %w", err)
	}
	return decide(l.perMinute, hits, hits <= l.perMinute, left), nil
}

// AuthBlocked says whether addr has used up its failed logins this minute. It
// is asked before a token is checked, and changes nothing.
func (l *Limiter) AuthBlocked(ctx context.Context, addr string) (Decision, error) {
	if l.authFailures <= 0 {
		return Decision{Allowed: true}, nil
	}
	key := "authfail:" + addr
	var gen uint64
	if l.cache != nil {
		now := time.Now()
		var e failEntry
		var ok bool
		if e, gen, ok = l.cache.Get(key); ok && now.Before(e.ends) {
			return decide(l.authFailures, e.hits, e.hits < l.authFailures, e.ends.Sub(now).Seconds()), nil
		}
	}
	start := time.Now()
	hits, left, err := l.repo.Count(ctx, l.db, key)
	if err != nil {
		return Decision{}, fmt.Errorf("auth rate limit: %w", err)
	}
	if l.cache != nil {
		l.cache.Put(key, failEntry{hits: hits, ends: start.Add(time.Duration(left * float64(time.Second)))}, gen)
	}
	return decide(l.authFailures, hits, hits < l.authFailures, left), nil
}

// AuthFailed counts a failed login from addr.
func (l *Limiter) AuthFailed(ctx context.Context, addr string) error {
	if l.authFailures <= 0 {
		return nil
	}
	key := "authfail:" + addr
	if l.cache != nil {
		l.cache.Drop(key) // here at once; elsewhere when the announcement arrives
	}
	if _, _, err := l.repo.HitAnnounced(ctx, l.db, key); err != nil {
		return fmt.Errorf("auth rate limit: %w", err)
	}
	return nil
}

// Prune drops the counters of ended windows; call it about once a minute.
func (l *Limiter) Prune(ctx context.Context) error {
	_, err := l.repo.Prune(ctx, l.db)
	return err
}

func decide(limit, hits int, allowed bool, secondsLeft float64) Decision {
	retry := int(math.Ceil(secondsLeft))
	if retry < 1 {
		retry = 1
	}
	return Decision{Allowed: allowed, Limit: limit, Remaining: max(limit-hits, 0), RetryAfter: retry}
}
