// Package relay holds the rules of the relay side: what an SMTP login may
// send (sender policy), how much (sending limits counted in fixed windows
// shared by every process), and what it did (usage and the message log).
// The milter (internal/milter) applies them to messages Postfix hands it;
// the API answers the account's quota, usage and log from the same tables.
package relay

import (
	"fmt"
	"time"
)

// Limits are message counts per fixed window; 0 means no limit.
type Limits struct {
	PerMinute, PerHour, PerDay int
}

// Unit is a window length: a minute, an hour or a UTC day.
type Unit byte

const (
	Minute Unit = 'm'
	Hour   Unit = 'h'
	Day    Unit = 'd'
)

// Units lists every window, longest first: the order of counter keys.
var Units = []Unit{Day, Hour, Minute}

// Of returns the limit for u.
func (l Limits) Of(u Unit) int {
	switch u {
	case Minute:
		return l.PerMinute
	case Hour:
		return l.PerHour
	default:
		return l.PerDay
	}
}

// Start is the start of the window of unit u holding t, in Unix seconds.
func (u Unit) Start(t time.Time) int64 {
	s := t.Unix()
	return s - s%int64(u.seconds())
}

// End is when the window of unit u holding t ends (the next one starts).
func (u Unit) End(t time.Time) time.Time {
	return time.Unix(u.Start(t)+int64(u.seconds()), 0).UTC()
}

func (u Unit) seconds() int {
	switch u {
	case Minute:
		return 60
	case Hour:
		return 3600
	default:
		return 86400
	}
}

// String names the window as limits are named ("per minute").
func (u Unit) String() string {
	switch u {
	case Minute:
		return "per minute"
	case Hour:
		return "per hour"
	default:
		return "per day"
	}
}

// CredentialKey and AccountKey name a counter row of send_counters.
func CredentialKey(id int64, u Unit) string { return fmt.Sprintf("c%d%c", id, u) }

// AccountKey: see CredentialKey.
func AccountKey(id int64, u Unit) string { return fmt.Sprintf("a%d%c", id, u) }
