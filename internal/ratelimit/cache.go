package ratelimit

import (
	"time"

	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// failEntry is a client address's failed-login count in one window.
type failEntry struct {
	hits int
	ends time.Time // end of the counting window
}

// CacheFailures makes AuthBlocked keep the failed-login counts of client
// addresses seen lately, so that checking one costs no round trip. Call it
// before serving, and hand the subscriber it returns to postgres.Listen on
// postgres.AuthFailChannel: every failed login, in any process, is announced
// and drops the address's count (at once in the process that counted it),
// and nothing cached is used while the listening connection is down. A
// count also ends with its window.
func (l *Limiter) CacheFailures() postgres.Subscriber {
	l.cache = postgres.NewCache[failEntry](100_000)
	return l.cache
}
