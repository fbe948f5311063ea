// Package app is the one composition root of smtpcreds: from a Config it
// builds the database pools, the services, the sync outbox with its target,
// the caches and their LISTEN subscriptions, metrics, readiness and the
// HTTP server, and it runs the listeners and background loops. `serve`,
// `dev` and the tests all build the server here, so the tests run the real
// wiring. Nothing here reads the environment.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/labstack/echo/v4"

	"github.com/smtpcreds/smtpcreds/internal/accounts"
	"github.com/smtpcreds/smtpcreds/internal/credentials"
	"github.com/smtpcreds/smtpcreds/internal/dkim"
	"github.com/smtpcreds/smtpcreds/internal/dnscheck"
	"github.com/smtpcreds/smtpcreds/internal/domains"
	"github.com/smtpcreds/smtpcreds/internal/httpapi"
	"github.com/smtpcreds/smtpcreds/internal/idempotency"
	"github.com/smtpcreds/smtpcreds/internal/metrics"
	"github.com/smtpcreds/smtpcreds/internal/milter"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/ratelimit"
	"github.com/smtpcreds/smtpcreds/internal/relay"
	"github.com/smtpcreds/smtpcreds/internal/syncer"
	"github.com/smtpcreds/smtpcreds/internal/syncer/dovecotsql"
	"github.com/smtpcreds/smtpcreds/internal/syncer/passwdfile"
	"github.com/smtpcreds/smtpcreds/internal/syncer/webhook"
	"github.com/smtpcreds/smtpcreds/sqlmigrations"
)

// ConfigError is a setting that cannot work (a key too short, a bad
// passwd-file template, ...): the operator's input, not a failure.
type ConfigError struct{ msg string }

func (e *ConfigError) Error() string { return e.msg }

func configErrorf(format string, args ...any) error {
	return &ConfigError{fmt.Sprintf(format, args...)}
}

// Deps are what New takes besides the configuration.
type Deps struct {
	// Logger receives every log line (nil: discarded).
	Logger *slog.Logger
	// OnListen, if set, gets the API's bound address once Run listens.
	OnListen func(addr string)
}

// App is one smtpcreds server: built by New, served by Run, released by
// Close.
type App struct {
	cfg      Config
	log      *slog.Logger
	onListen func(addr string)
	stopSubs context.CancelFunc // ends the LISTEN subscriptions

	db, limDB   *sqlx.DB
	accounts    *accounts.Service
	domains     *domains.Service
	credentials *credentials.Service
	relay       *relay.Service
	idem        *idempotency.Store
	limiter     *ratelimit.Limiter
	outbox      *syncer.Service
	milter      *milter.Milter // nil unless cfg.MilterAddr: serve hosts the milter too
	metrics     *metrics.Metrics
	echo        *echo.Echo
	stopping    atomic.Bool // set when Run's context ends: /readyz fails while draining
}

// New builds the server of cfg: it opens the database pools (the schema
// must be current), builds the services and the HTTP API, and, with
// cfg.AuthCache, subscribes the caches until ctx ends or Close. It starts
// no listener and no background loop: Run does. Errors from cfg's values
// are *ConfigError.
func New(ctx context.Context, cfg Config, deps Deps) (a *App, err error) {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.DatabaseURL == "" {
		return nil, configErrorf("a database URL is required")
	}
	a = &App{cfg: cfg, log: log, onListen: deps.OnListen}
	defer func() {
		if err != nil {
			a.Close()
			a = nil
		}
	}()
	if a.db, err = OpenDB(ctx, cfg); err != nil {
		return a, err
	}
	if err := requireMigrated(ctx, a.db); err != nil {
		return a, err
	}
	// Rate counters go through a small pool of their own with
	// synchronous_commit=off: losing a counter in a crash is harmless, and
	// the hot counter row is then held only for the update, not a WAL flush.
	a.limDB, err = postgres.Open(ctx, postgres.WithSetting(withConnectTimeout(cfg.DatabaseURL), "synchronous_commit", "off"),
		postgres.PoolOptions{MaxOpen: max(cfg.DBMaxConns/2, 2), MaxIdle: max(cfg.DBMaxConns/2, 2), MaxLifetime: 30 * time.Minute})
	if err != nil {
		return a, err
	}

	if a.accounts, err = accounts.NewService(a.db, cfg.TokenKey); err != nil {
		return a, &ConfigError{err.Error()}
	}
	if a.outbox, err = NewOutbox(cfg, a.db, log); err != nil {
		return a, err
	}
	if a.domains, err = NewDomains(cfg, a.db, a.outbox); err != nil {
		return a, err
	}
	a.limiter = ratelimit.New(a.limDB, cfg.RateLimit, cfg.AuthFailLimit)
	if a.idem, err = NewIdempotency(cfg, a.db); err != nil {
		return a, err
	}
	a.credentials = credentials.NewService(a.db, a.outbox,
		credentials.Config{MaxPerDomain: cfg.MaxPerDomain, Scheme: cfg.PasswordScheme, Idempotency: a.idem})
	a.relay = relay.NewService(a.db, relay.ServiceConfig{Account: cfg.Relay.Account, LogRetention: cfg.Relay.LogRetention})
	subCtx, stopSubs := context.WithCancel(ctx)
	a.stopSubs = stopSubs
	if cfg.AuthCache {
		// Authentication then costs no round trip in the steady state; a
		// token rotation or a failed login anywhere reaches every process
		// when it commits.
		postgres.Listen(subCtx, withConnectTimeout(cfg.DatabaseURL), log, map[string]postgres.Subscriber{
			postgres.AccountsChannel: a.accounts.CacheTokens(),
			postgres.AuthFailChannel: a.limiter.CacheFailures(),
		})
	}
	a.metrics = metrics.New()
	a.metrics.RegisterDB("main", a.db.DB)
	if cfg.MilterAddr != "" {
		// On the pool without synchronous commits (see openRelayDB).
		if a.milter, err = newMilter(subCtx, cfg, a.limDB, log); err != nil {
			return a, err
		}
		a.metrics.Register(a.milter.Collector())
	}
	a.metrics.RegisterDB("ratelimit", a.limDB.DB)
	if a.outbox == nil {
		// Everything works but nothing reaches an SMTP server: say so once,
		// loudly (/readyz reports sync_worker "disabled" too).
		log.Warn("no sync target: credentials reach no SMTP server (set SMTPCREDS_SYNC_TARGET: passwd-file, dovecot-sql or webhook)")
	}
	if a.outbox != nil {
		outbox := a.outbox
		a.metrics.RegisterQueue(func(ctx context.Context) (int64, *time.Time, error) {
			st, err := outbox.Stats(ctx)
			return st.Pending, st.OldestPending, err
		})
	}
	a.echo, err = httpapi.NewServer(httpapi.Deps{
		Accounts:       a.accounts,
		Credentials:    a.credentials,
		Domains:        a.domains,
		Limiter:        a.limiter,
		Relay:          a.relay,
		Logger:         log,
		TrustedProxies: cfg.TrustedProxies,
		Metrics:        a.metrics,
		Ready:          a.readiness,
		RequestTimeout: cfg.RequestTimeout,
	})
	if err != nil {
		return a, err
	}
	return a, nil
}

// Close ends the LISTEN subscriptions and closes the database pools. Call
// it once Run has returned (or instead of Run).
func (a *App) Close() {
	if a.stopSubs != nil {
		a.stopSubs()
	}
	if a.limDB != nil {
		a.limDB.Close()
	}
	if a.db != nil {
		a.db.Close()
	}
}

// Handler is the HTTP API, for serving in process.
func (a *App) Handler() http.Handler { return a.echo }

// DB is the main database pool.
func (a *App) DB() *sqlx.DB { return a.db }

// Accounts is the accounts service the API authenticates with.
func (a *App) Accounts() *accounts.Service { return a.accounts }

// Domains is the domains service the API calls.
func (a *App) Domains() *domains.Service { return a.domains }

// RelayService is the service that answers the quota and the message log and
// prunes what the milter recorded.
func (a *App) RelayService() *relay.Service { return a.relay }

// Outbox is the sync outbox, nil when sync is off. Run runs its worker.
func (a *App) Outbox() *syncer.Service { return a.outbox }

// Metrics are the metrics the operator listener serves.
func (a *App) Metrics() *metrics.Metrics { return a.metrics }

// Run serves the API on cfg.Addr (and the operator listener on
// cfg.OperatorAddr), with the sync worker and the housekeeping loops, until
// ctx ends; then /readyz fails for cfg.ShutdownDelay while still serving,
// in-flight requests get cfg.ShutdownTimeout, and the sync worker finishes
// or releases its batch, and the sync applies requests left running finish,
// before Run returns; sync applies still running at the end of
// cfg.ShutdownTimeout are stopped (rolled back, their jobs left as they were).
func (a *App) Run(ctx context.Context) error {
	c, log := a.cfg, a.log
	if c.OperatorAddr != "" {
		stop, err := serveOperator(a.cfg, a.metrics, a.log)
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
		Handler:           a.echo,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go maintain(ctx, a.limiter, a.credentials, a.idem, a.relay, log)
	workerDone := make(chan struct{})
	go func() {
		defer close(workerDone)
		// Catches up on whatever a request could not apply at once,
		// including changes made while the target was down.
		a.outbox.Run(ctx)
	}()
	if a.milter != nil {
		stopMilter, err := serveMilter(a.milter, c.MilterAddr, log, nil)
		if err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), max(c.ShutdownTimeout, time.Second))
			defer cancel()
			stopMilter(sctx)
		}()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String())
	if a.onListen != nil {
		a.onListen(ln.Addr().String())
	}

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	a.stopping.Store(true)
	if c.ShutdownDelay > 0 {
		log.Info("draining: /readyz fails, still serving", "delay", c.ShutdownDelay.String())
		time.Sleep(c.ShutdownDelay)
	}
	log.Info("shutting down", "timeout", c.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
	defer cancel()
	// Sync applies still running when the timeout ends are stopped: they
	// roll back and leave their jobs to the next process.
	defer context.AfterFunc(sctx, a.outbox.Halt)()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	<-workerDone     // the sync worker finishes or releases its batch
	a.outbox.Drain() // and the applies requests left running finish
	log.Info("stopped")
	return nil
}

// readiness is what /readyz checks: the database answers, its schema is
// current, the sync worker goes round (when sync is on), and the process is
// not shutting down.
func (a *App) readiness(ctx context.Context) map[string]string {
	checks := map[string]string{"database": "ok", "migrations": "ok", "sync_worker": "ok", "shutdown": "ok"}
	if a.stopping.Load() {
		checks["shutdown"] = "in progress"
	}
	if err := a.db.PingContext(ctx); err != nil {
		checks["database"] = "unreachable"
		checks["migrations"] = "unknown"
	} else if pending, err := sqlmigrations.Pending(ctx, a.db.DB); err != nil {
		checks["migrations"] = "unknown"
	} else if pending {
		checks["migrations"] = "pending: run smtpcreds migrate"
	}
	switch {
	case a.outbox == nil:
		checks["sync_worker"] = "disabled"
	case !a.outbox.Running():
		checks["sync_worker"] = "not running"
	}
	return checks
}

// serveOperator starts the operator listener of cfg: /metrics, and pprof
// when enabled. It returns a function that stops it.
func serveOperator(cfg Config, m *metrics.Metrics, log *slog.Logger) (func(), error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	if cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	ln, err := net.Listen("tcp", cfg.OperatorAddr)
	if err != nil {
		return nil, fmt.Errorf("operator listener: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("operator listener", "error", err.Error())
		}
	}()
	log.Info("operator listener", "addr", ln.Addr().String(), "pprof", cfg.Pprof)
	return func() { _ = srv.Close() }, nil
}

// maintain runs the periodic housekeeping: folding credential count
// deltas every few seconds; pruning expired rate counters, idempotency keys
// (with their sealed responses), the previous passwords of ended grace
// periods and the message log past its retention every minute; and the
// relay's ended send counters every hour (a whole-table scan, and nothing
// reads them once ended).
func maintain(ctx context.Context, l *ratelimit.Limiter, creds *credentials.Service, idem *idempotency.Store,
	rel *relay.Service, log *slog.Logger) {
	compact := time.NewTicker(5 * time.Second)
	defer compact.Stop()
	prune := time.NewTicker(time.Minute)
	defer prune.Stop()
	hourly := time.NewTicker(time.Hour)
	defer hourly.Stop()
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
			if err := idem.Prune(ctx); err != nil && ctx.Err() == nil {
				log.Warn("prune idempotency keys", "error", err.Error())
			}
			if err := creds.PrunePrevious(ctx); err != nil && ctx.Err() == nil {
				log.Warn("prune previous passwords", "error", err.Error())
			}
			if n, err := rel.PruneLog(ctx); err != nil && ctx.Err() == nil {
				log.Warn("prune message log", "error", err.Error())
			} else if n > 0 {
				log.Info("pruned message log", "messages", n)
			}
		case <-hourly.C:
			if _, err := rel.PruneCounters(ctx); err != nil && ctx.Err() == nil {
				log.Warn("prune send counters", "error", err.Error())
			}
		}
	}
}

// requireMigrated fails when db has pending migrations: a server runs only
// on the schema it was built for.
func requireMigrated(ctx context.Context, db *sqlx.DB) error {
	pending, err := sqlmigrations.Pending(ctx, db.DB)
	if err != nil {
		return err
	}
	if pending {
		return errors.New("the database has pending migrations: run 'smtpcreds migrate' first")
	}
	return nil
}

// OpenDB opens the main pool of cfg: cfg.DBMaxConns connections, each
// with a connect timeout unless the URL sets its own.
func OpenDB(ctx context.Context, cfg Config) (*sqlx.DB, error) {
	return postgres.Open(ctx, withConnectTimeout(cfg.DatabaseURL), postgres.PoolOptions{
		MaxOpen: cfg.DBMaxConns, MaxIdle: cfg.DBMaxConns, MaxLifetime: 30 * time.Minute,
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

// NewOutbox builds the sync outbox of the configured target; nil when sync
// is off. The composition root picks the target: package syncer knows none.
func NewOutbox(cfg Config, db *sqlx.DB, log *slog.Logger) (*syncer.Service, error) {
	c := cfg.Sync
	var target syncer.Target
	switch c.Target {
	case "passwd-file":
		w, err := passwdfile.New(c.PasswdFile, c.PasswdGroup)
		if err != nil {
			return nil, configErrorf("passwd-file: %v", err)
		}
		target = passwdfile.NewTarget(w, log)
	case "webhook":
		s, err := webhook.New(c.WebhookURL, c.WebhookSecret, c.WebhookTimeout)
		if err != nil {
			return nil, configErrorf("webhook: %v", err)
		}
		target = webhook.NewTarget(s)
	case "dovecot-sql":
		target = dovecotsql.NewTarget(c.DovecotRole)
	default:
		return nil, nil
	}
	return syncer.New(db, target, syncer.Config{
		ApplyTimeout: c.Timeout, PollInterval: c.PollInterval, BaseBackoff: c.BaseBackoff, MaxBackoff: c.MaxBackoff,
	}, log), nil
}

// NewDomains builds the domains service: DKIM keys sealed under
// cfg.DKIMKey, DNS checks through the configured resolver, deletions
// carried to the SMTP backend through outbox (nil: sync off).
func NewDomains(cfg Config, db *sqlx.DB, outbox *syncer.Service) (*domains.Service, error) {
	if len(cfg.DKIMKey) == 0 {
		return nil, configErrorf("a DKIM key is required")
	}
	sealer, err := dkim.NewSealer(cfg.DKIMKey)
	if err != nil {
		return nil, configErrorf("dkim key: %v", err)
	}
	checker, err := dnscheck.New(dnscheck.Config{Resolver: cfg.DNS.Resolver, Timeout: cfg.DNS.Timeout})
	if err != nil {
		return nil, configErrorf("dns resolver: %v", err)
	}
	d := cfg.DNS
	return domains.NewService(db, sealer, checker, outbox, domains.Config{
		Selector: d.Selector, SPFInclude: d.SPFInclude, MXHost: d.MXHost, TrackingTarget: d.TrackingTarget,
		Idempotency: idempotency.NewStore(db, sealer, idempotencyWait(cfg)),
	}), nil
}

// NewIdempotency builds the store of idempotency keys: responses sealed
// under cfg.DKIMKey, the server's key for secrets at rest.
func NewIdempotency(cfg Config, db *sqlx.DB) (*idempotency.Store, error) {
	sealer, err := dkim.NewSealer(cfg.DKIMKey)
	if err != nil {
		return nil, configErrorf("dkim key: %v", err)
	}
	return idempotency.NewStore(db, sealer, idempotencyWait(cfg)), nil
}

// idempotencyWait is how long after its commit the first request of a key
// may still be about to answer (it waits for its sync, within its request
// timeout): until then a replay waits for its final response.
func idempotencyWait(cfg Config) time.Duration {
	apply := cfg.Sync.Timeout
	if apply <= 0 {
		apply = 2 * time.Second
	}
	request := cfg.RequestTimeout
	if request <= 0 {
		request = 10 * time.Second // httpapi's default
	}
	return min(apply, request) + time.Second
}
