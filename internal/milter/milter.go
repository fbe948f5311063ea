// Package milter is the relay's edge: a Postfix milter (the sendmail milter
// protocol, spoken by github.com/d--j/go-milter) that applies the rules of
// internal/relay to every message a client sent after SMTP AUTH. It trusts
// only the login Postfix authenticated (the {auth_authen} macro), refuses
// senders outside the login's domains (5.7.1), counts the message against
// the login's and its account's limits in PostgreSQL (4.7.1 when over),
// signs it with the From: domain's DKIM key (and the auth domain's), and
// logs it. Messages without AUTH pass untouched: relay policy stays
// Postfix's.
//
// Logins and domains come from PostgreSQL through an in-process cache that
// migration 00010's triggers empty through LISTEN/NOTIFY, so a message on
// a cache hit costs one database round trip: the one that counts and logs
// it. DKIM private keys are unsealed in this process only, kept in memory
// and never logged.
package milter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smtpcreds/smtpcreds/internal/dkim"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/relay"
)

// Config is the relay policy the milter applies.
type Config struct {
	// Login and Account are the default limits (see relay.Limits); a
	// credential's own limits win over Login.
	Login, Account relay.Limits
	Policy         relay.Policy
	// LogSubjects keeps messages' subjects in the log.
	LogSubjects bool
	// Timeout bounds the database work of one milter callback (0: 10s);
	// past it the message is refused with a temporary failure.
	Timeout time.Duration
}

// Milter serves the milter protocol. Make it with New; Serve each listener.
type Milter struct {
	db     *sqlx.DB
	sealer *dkim.Sealer
	cfg    Config
	log    *slog.Logger
	cache  *cache
	server *gomilter.Server
	events *prometheus.CounterVec
	// fixed, when set (by tests), is the time instead of the clock's.
	fixed atomic.Pointer[time.Time]
}

// now is the time, or the fixed one.
func (m *Milter) now() time.Time {
	if t := m.fixed.Load(); t != nil {
		return *t
	}
	return time.Now()
}

// New returns a milter reading db, unsealing DKIM keys with sealer. Hand
// Subscriber() to postgres.Listen on postgres.RelayChannel: until it is
// live, nothing is cached.
func New(db *sqlx.DB, sealer *dkim.Sealer, cfg Config, log *slog.Logger) *Milter {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	m := &Milter{db: db, sealer: sealer, cfg: cfg, log: log, cache: newCache(),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smtpcreds_milter_messages_total",
			Help: "Authenticated messages the milter decided on, by event.",
		}, []string{"event"}),
	}
	warnLog.Store(log)
	routeWarnings.Do(func() {
		// The library's warnings are about what the MTA sent, never
		// message content; they go to the latest milter's log.
		gomilter.LogWarning = func(format string, v ...any) { warnLog.Load().Warn("milter: " + fmt.Sprintf(format, v...)) }
	})
	m.server = gomilter.NewServer(
		gomilter.WithDynamicMilter(func(uint32, gomilter.OptAction, gomilter.OptProtocol, gomilter.DataSize) gomilter.Milter {
			return &session{m: m}
		}),
		gomilter.WithActions(gomilter.OptAddHeader|gomilter.OptChangeHeader),
		// Every stage is needed: the client's address (connect), the login
		// and sender (MAIL), recipients, headers and the body (to sign).
		// Replies are sent at MAIL and at the end of the message only: one
		// round trip with Postfix besides the end.
		gomilter.WithProtocols(gomilter.OptNoUnknown|gomilter.OptHeaderLeadingSpace|
			gomilter.OptNoConnReply|gomilter.OptNoHeloReply|gomilter.OptNoRcptReply|gomilter.OptNoDataReply|
			gomilter.OptNoHeaderReply|gomilter.OptNoEOHReply|gomilter.OptNoBodyReply),
		gomilter.WithMacroRequest(gomilter.StageMail, []gomilter.MacroName{gomilter.MacroAuthAuthen}),
		gomilter.WithMacroRequest(gomilter.StageEOM, []gomilter.MacroName{gomilter.MacroQueueId}),
		gomilter.WithReadTimeout(5*time.Minute),
		gomilter.WithWriteTimeout(time.Minute),
	)
	return m
}

var (
	routeWarnings sync.Once
	warnLog       atomic.Pointer[slog.Logger]
)

// Subscriber is the cache's side of postgres.Listen on postgres.RelayChannel.
func (m *Milter) Subscriber() postgres.Subscriber { return m.cache }

// Serve answers milter connections on ln until Shutdown or Close.
func (m *Milter) Serve(ln net.Listener) error {
	err := m.server.Serve(ln)
	if errors.Is(err, gomilter.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections and waits, until ctx ends, for the
// open ones (Postfix keeps one per SMTP session) to finish.
func (m *Milter) Shutdown(ctx context.Context) error { return m.server.Shutdown(ctx) }

// Close closes the listeners and every open connection at once.
func (m *Milter) Close() error { return m.server.Close() }

// Listen opens a milter address as Postfix's smtpd_milters names it:
// inet:HOST:PORT or unix:PATH (a bare HOST:PORT is inet).
func Listen(addr string) (net.Listener, error) {
	switch {
	case strings.HasPrefix(addr, "unix:"):
		return net.Listen("unix", strings.TrimPrefix(addr, "unix:"))
	case strings.HasPrefix(addr, "inet:"):
		return net.Listen("tcp", strings.TrimPrefix(addr, "inet:"))
	case strings.Contains(addr, ":"):
		return net.Listen("tcp", addr)
	}
	return nil, fmt.Errorf("milter address %q: want inet:HOST:PORT or unix:PATH", addr)
}

// Collector is the milter's metrics: messages by event
// (smtpcreds_milter_messages_total{event="queued|permanent_fail|temporary_fail"}).
func (m *Milter) Collector() prometheus.Collector { return m.events }

func (m *Milter) metric(event string) { m.events.WithLabelValues(event).Inc() }
