package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/accounts"
	"github.com/smtpcreds/smtpcreds/internal/credentials"
	"github.com/smtpcreds/smtpcreds/internal/dkim"
	"github.com/smtpcreds/smtpcreds/internal/dnscheck"
	"github.com/smtpcreds/smtpcreds/internal/domains"
	"github.com/smtpcreds/smtpcreds/internal/httpapi"
	"github.com/smtpcreds/smtpcreds/internal/metrics"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/ratelimit"
	"github.com/smtpcreds/smtpcreds/internal/syncer"
	"github.com/smtpcreds/smtpcreds/internal/syncer/dovecotsql"
	"github.com/smtpcreds/smtpcreds/internal/syncer/passwdfile"
	"github.com/smtpcreds/smtpcreds/internal/syncer/webhook"
	"github.com/smtpcreds/smtpcreds/internal/validation"
	"github.com/smtpcreds/smtpcreds/sqlmigrations"
)

func openDB(ctx context.Context, c config) (*sqlx.DB, error) {
	if c.DatabaseURL == "" {
		return nil, usagef("DATABASE_URL (or -database-url) is required")
	}
	return postgres.Open(ctx, withConnectTimeout(c.DatabaseURL), postgres.PoolOptions{
		MaxOpen: c.DBMaxConns, MaxIdle: c.DBMaxConns, MaxLifetime: 30 * time.Minute,
	})
}

// withConnectTimeout bounds new connections, so that an unreachable
// database fails requests fast instead of holding them (unless the URL sets
// its own connect_timeout).
func withConnectTimeout(dsn string) string {
	if strings.Contains(dsn, "connect_timeout") {
		return dsn
	}
	return postgres.WithSetting(dsn, "connect_timeout", "3")
}

func requireKey(c config) error {
	if len(c.TokenKey) == 0 {
		return usagef("a token key is required: set SMTPCREDS_TOKEN_KEY or SMTPCREDS_TOKEN_KEY_FILE (32+ random bytes, hex or base64)")
	}
	return nil
}

var errNoDKIMKey = usagef("a DKIM key is required: set SMTPCREDS_DKIM_KEY or SMTPCREDS_DKIM_KEY_FILE (32 random bytes, hex or base64)")

// newOutbox builds the sync outbox of the configured target; nil when sync
// is off.
func newOutbox(c config, db *sqlx.DB, log *slog.Logger) (*syncer.Service, error) {
	var target syncer.Target
	switch c.Sync.Target {
	case "passwd-file":
		w, err := passwdfile.New(c.Sync.PasswdFile, c.Sync.PasswdGroup)
		if err != nil {
			return nil, usagef("passwd-file: %v", err)
		}
		target = passwdfile.NewTarget(w, log)
	case "webhook":
		s, err := webhook.New(c.Sync.WebhookURL, c.Sync.WebhookSecret, 0)
		if err != nil {
			return nil, usagef("webhook: %v", err)
		}
		target = webhook.NewTarget(s)
	case "dovecot-sql":
		target = dovecotsql.NewTarget(c.Sync.DovecotRole)
	default:
		return nil, nil
	}
	return syncer.New(db, target, syncer.Config{ApplyTimeout: c.Sync.Timeout}, log), nil
}

// newDomains builds the domains service: DKIM keys sealed under the DKIM
// key, DNS checks through the configured resolver, deletions carried to the
// SMTP backend through outbox.
func newDomains(c config, db *sqlx.DB, outbox *syncer.Service) (*domains.Service, error) {
	if len(c.DKIMKey) == 0 {
		return nil, errNoDKIMKey
	}
	sealer, err := dkim.NewSealer(c.DKIMKey)
	if err != nil {
		return nil, usagef("dkim key: %v", err)
	}
	checker, err := dnscheck.New(dnscheck.Config{Resolver: c.DNS.Resolver, Timeout: c.DNS.Timeout})
	if err != nil {
		return nil, usagef("dns resolver: %v", err)
	}
	return domains.NewService(db, sealer, checker, outbox, domains.Config{
		Selector: c.DNS.Selector, SPFInclude: c.DNS.SPFInclude, MXHost: c.DNS.MXHost, TrackingTarget: c.DNS.TrackingTarget,
	}), nil
}

func newLogger(c config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func cmdMigrate(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	c, pos, err := parseConfig("migrate", args, getenv, nil)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("migrate takes no arguments")
	}
	db, err := openDB(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := sqlmigrations.Up(ctx, db.DB); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "migrations applied")
	return nil
}

func cmdAccountsCreate(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	return withAccounts(ctx, "accounts create", args, getenv, func(s *accounts.Service, name string) error {
		_, tok, err := s.Create(ctx, name)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, tok)
		return nil
	})
}

func cmdAccountsRotate(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	return withAccounts(ctx, "accounts rotate-token", args, getenv, func(s *accounts.Service, name string) error {
		tok, err := s.RotateToken(ctx, name)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, tok)
		return nil
	})
}

func withAccounts(ctx context.Context, cmd string, args []string, getenv func(string) string, fn func(*accounts.Service, string) error) error {
	c, pos, err := parseConfig(cmd, args, getenv, nil)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("%s: want exactly one account NAME", cmd)
	}
	if err := requireKey(c); err != nil {
		return err
	}
	db, err := openDB(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	svc, err := accounts.NewService(db, c.TokenKey)
	if err != nil {
		return usagef("%v", err)
	}
	err = fn(svc, pos[0])
	if errors.Is(err, accounts.ErrInvalidName) || errors.Is(err, accounts.ErrNameTaken) || errors.Is(err, accounts.ErrNotFound) {
		return usagef("%s: %v", cmd, err)
	}
	return err
}

func cmdDomainsAdd(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var verified bool
	c, pos, err := parseConfig("domains add", args, getenv, func(fs *flag.FlagSet) {
		fs.BoolVar(&verified, "verified", false, "mark the domain verified without DNS checks")
	})
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("domains add: want NAME DOMAIN")
	}
	db, err := openDB(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	dom, err := newDomains(c, db, nil)
	if err != nil {
		return err
	}
	d, err := dom.AddForAccount(ctx, pos[0], pos[1], verified)
	var verr *validation.Error
	switch {
	case errors.As(err, &verr):
		return usagef("domains add: %s", firstMessage(verr))
	case errors.Is(err, domains.ErrAccountNotFound):
		return usagef("domains add: no account named %q", pos[0])
	case err != nil:
		return err
	}
	fmt.Fprintln(stdout, d.Name)
	return nil
}

func firstMessage(v *validation.Error) string {
	for _, msgs := range v.Fields {
		if len(msgs) > 0 {
			return msgs[0]
		}
	}
	return v.Error()
}

func cmdServe(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	c, pos, err := parseConfig("serve", args, getenv, nil)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("serve takes no arguments")
	}
	return serve(ctx, c, newLogger(c, stderr), nil)
}

// serve runs the API until ctx ends, then shuts down gracefully. ready, if
// not nil, gets the bound address once the listener is open.
func serve(ctx context.Context, c config, log *slog.Logger, ready func(addr string)) error {
	if err := requireKey(c); err != nil {
		return err
	}
	if c.DatabaseURL == "" {
		return usagef("DATABASE_URL (or -database-url) is required")
	}
	if len(c.DKIMKey) == 0 {
		return errNoDKIMKey
	}
	log.Info("starting smtpcreds", "version", version, "commit", commit, "config", c.logValue())
	db, err := openDB(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	pending, err := sqlmigrations.Pending(ctx, db.DB)
	if err != nil {
		return err
	}
	if pending {
		return errors.New("the database has pending migrations: run 'smtpcreds migrate' first")
	}
	// Rate counters go through a small pool of their own with
	// synchronous_commit=off: losing a counter in a crash is harmless, and
	// the hot counter row is then held only for the update, not a WAL flush.
	limDB, err := postgres.Open(ctx, postgres.WithSetting(withConnectTimeout(c.DatabaseURL), "synchronous_commit", "off"),
		postgres.PoolOptions{MaxOpen: max(c.DBMaxConns/2, 2), MaxIdle: max(c.DBMaxConns/2, 2), MaxLifetime: 30 * time.Minute})
	if err != nil {
		return err
	}
	defer limDB.Close()

	acc, err := accounts.NewService(db, c.TokenKey)
	if err != nil {
		return usagef("%v", err)
	}
	outbox, err := newOutbox(c, db, log)
	if err != nil {
		return err
	}
	dom, err := newDomains(c, db, outbox)
	if err != nil {
		return err
	}
	limiter := ratelimit.New(limDB, c.RateLimit, c.AuthFailLimit)
	creds := credentials.NewService(db, outbox, credentials.Config{MaxPerDomain: c.MaxPerDomain, Scheme: c.PasswordScheme})
	if c.AuthCache {
		// Authentication then costs no round trip in the steady state; a
		// token rotation or a failed login anywhere reaches every process
		// when it commits.
		postgres.Listen(ctx, withConnectTimeout(c.DatabaseURL), log, map[string]postgres.Subscriber{
			postgres.AccountsChannel: acc.CacheTokens(),
			postgres.AuthFailChannel: limiter.CacheFailures(),
		})
	}
	var stopping atomic.Bool // set on SIGTERM: /readyz fails while draining
	m := metrics.New()
	m.RegisterDB("main", db.DB)
	m.RegisterDB("ratelimit", limDB.DB)
	if outbox != nil {
		m.RegisterQueue(func(ctx context.Context) (int64, *time.Time, error) {
			st, err := outbox.Stats(ctx)
			return st.Pending, st.OldestPending, err
		})
	}
	e, err := httpapi.NewServer(httpapi.Deps{
		Accounts:       acc,
		Credentials:    creds,
		Domains:        dom,
		Limiter:        limiter,
		Logger:         log,
		TrustedProxies: c.TrustedProxies,
		Metrics:        m,
		Ready:          readiness(db, outbox, &stopping),
		RequestTimeout: c.RequestTimeout,
	})
	if err != nil {
		return err
	}
	if c.OperatorAddr != "" {
		stop, err := serveOperator(c, m, log)
		if err != nil {
			return err
		}
		defer stop()
	}

	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           e,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go maintain(ctx, limiter, creds, log)
	workerDone := make(chan struct{})
	go func() {
		defer close(workerDone)
		// Catches up on whatever a request could not apply at once,
		// including changes made while the target was down.
		outbox.Run(ctx)
	}()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String())
	if ready != nil {
		ready(ln.Addr().String())
	}

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	stopping.Store(true)
	if c.ShutdownDelay > 0 {
		log.Info("draining: /readyz fails, still serving", "delay", c.ShutdownDelay.String())
		time.Sleep(c.ShutdownDelay)
	}
	log.Info("shutting down", "timeout", c.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	<-workerDone // the sync worker finishes or releases its batch
	log.Info("stopped")
	return nil
}

// readiness is what /readyz checks: the database answers, its schema is
// current, the sync worker goes round (when sync is on), and the process is
// not shutting down.
func readiness(db *sqlx.DB, outbox *syncer.Service, stopping *atomic.Bool) func(context.Context) map[string]string {
	return func(ctx context.Context) map[string]string {
		checks := map[string]string{"database": "ok", "migrations": "ok", "sync_worker": "ok", "shutdown": "ok"}
		if stopping.Load() {
			checks["shutdown"] = "in progress"
		}
		if err := db.PingContext(ctx); err != nil {
			checks["database"] = "unreachable"
			checks["migrations"] = "unknown"
		} else if pending, err := sqlmigrations.Pending(ctx, db.DB); err != nil {
			checks["migrations"] = "unknown"
		} else if pending {
			checks["migrations"] = "pending: run smtpcreds migrate"
		}
		switch {
		case outbox == nil:
			checks["sync_worker"] = "disabled"
		case !outbox.Running():
			checks["sync_worker"] = "not running"
		}
		return checks
	}
}

// serveOperator starts the operator listener: /metrics, and pprof when
// enabled. It returns a function that stops it.
func serveOperator(c config, m *metrics.Metrics, log *slog.Logger) (func(), error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	if c.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	ln, err := net.Listen("tcp", c.OperatorAddr)
	if err != nil {
		return nil, fmt.Errorf("operator listener: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("operator listener", "error", err.Error())
		}
	}()
	log.Info("operator listener", "addr", ln.Addr().String(), "pprof", c.Pprof)
	return func() { _ = srv.Close() }, nil
}

// maintain runs the periodic housekeeping: folding credential count
// deltas every few seconds, pruning expired rate counters every minute.
func maintain(ctx context.Context, l *ratelimit.Limiter, creds *credentials.Service, log *slog.Logger) {
	compact := time.NewTicker(5 * time.Second)
	defer compact.Stop()
	prune := time.NewTicker(time.Minute)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-compact.C:
			if err := creds.CompactCounts(ctx); err != nil && ctx.Err() == nil {
				log.Warn("compact credential counts", "error", err.Error())
			}
		case <-prune.C:
			if err := l.Prune(ctx); err != nil && ctx.Err() == nil {
				log.Warn("prune rate counters", "error", err.Error())
			}
		}
	}
}
