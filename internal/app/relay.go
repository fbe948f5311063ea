package app

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/dkim"
	"github.com/smtpcreds/smtpcreds/internal/metrics"
	"github.com/smtpcreds/smtpcreds/internal/milter"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/relay"
)

// Relay is the milter process (`smtpcreds milter`): built by NewRelay,
// served by Run, released by Close.
type Relay struct {
	cfg      Config
	log      *slog.Logger
	onListen func(addr string)
	stopSubs context.CancelFunc
	db       *sqlx.DB
	milter   *milter.Milter
	metrics  *metrics.Metrics
}

// NewRelay builds the milter of cfg: its database pool (the schema must be
// current), its cache subscribed until ctx ends or Close, and metrics. It
// listens on nothing yet: Run does, on cfg.MilterAddr.
func NewRelay(ctx context.Context, cfg Config, deps Deps) (r *Relay, err error) {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.DatabaseURL == "" {
		return nil, configErrorf("a database URL is required")
	}
	if cfg.MilterAddr == "" {
		return nil, configErrorf("a milter address is required")
	}
	r = &Relay{cfg: cfg, log: log, onListen: deps.OnListen}
	defer func() {
		if err != nil {
			r.Close()
			r = nil
		}
	}()
	if r.db, err = openRelayDB(ctx, cfg); err != nil {
		return r, err
	}
	if err := requireMigrated(ctx, r.db); err != nil {
		return r, err
	}
	subCtx, stop := context.WithCancel(ctx)
	r.stopSubs = stop
	if r.milter, err = newMilter(subCtx, cfg, r.db, log); err != nil {
		return r, err
	}
	r.metrics = metrics.New()
	r.metrics.RegisterDB("main", r.db.DB)
	r.metrics.Register(r.milter.Collector())
	return r, nil
}

// openRelayDB opens the milter's pool: synchronous_commit off, since a
// message's one statement (counters, log row, usage) then holds its
// login's counter rows only while it runs, not through a WAL flush; a crash
// of PostgreSQL may lose the last fraction of a second of counts and log
// rows, never their consistency.
func openRelayDB(ctx context.Context, cfg Config) (*sqlx.DB, error) {
	return postgres.Open(ctx, postgres.WithSetting(withConnectTimeout(cfg.DatabaseURL), "synchronous_commit", "off"),
		postgres.PoolOptions{MaxOpen: cfg.DBMaxConns, MaxIdle: cfg.DBMaxConns, MaxLifetime: 30 * time.Minute})
}

// newMilter builds the milter of cfg on db, its cache subscribed to the
// relay channel until ctx ends.
func newMilter(ctx context.Context, cfg Config, db *sqlx.DB, log *slog.Logger) (*milter.Milter, error) {
	if len(cfg.DKIMKey) == 0 {
		return nil, configErrorf("a DKIM key is required: the milter signs with the keys it seals")
	}
	sealer, err := dkim.NewSealer(cfg.DKIMKey)
	if err != nil {
		return nil, configErrorf("dkim key: %v", err)
	}
	rc := cfg.Relay
	m := milter.New(db, sealer, milter.Config{
		Login: rc.Login, Account: rc.Account, LogSubjects: rc.LogSubjects,
		Policy: relay.Policy{AccountSenders: rc.AccountSenders},
	}, log)
	postgres.Listen(ctx, withConnectTimeout(cfg.DatabaseURL), log, map[string]postgres.Subscriber{
		postgres.RelayChannel: m.Subscriber(),
	})
	return m, nil
}

// serveMilter serves m on addr until the returned stop is called with a
// context bounding how long open sessions may finish.
func serveMilter(m *milter.Milter, addr string, log *slog.Logger, onListen func(string)) (stop func(context.Context), err error) {
	ln, err := milter.Listen(addr)
	if err != nil {
		return nil, fmt.Errorf("milter listener: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Serve(ln) }()
	log.Info("milter listening", "network", ln.Addr().Network(), "addr", ln.Addr().String())
	if onListen != nil {
		onListen(ln.Addr().String())
	}
	return func(ctx context.Context) {
		if err := m.Shutdown(ctx); err != nil {
			_ = m.Close()
		}
		if err := <-done; err != nil {
			log.Warn("milter", "error", err.Error())
		}
	}, nil
}

// Run serves the milter on cfg.MilterAddr (and /metrics on
// cfg.OperatorAddr) until ctx ends; open sessions then get
// cfg.ShutdownTimeout to finish.
func (r *Relay) Run(ctx context.Context) error {
	if r.cfg.OperatorAddr != "" {
		stop, err := serveOperator(r.cfg, r.metrics, r.log)
		if err != nil {
			return err
		}
		defer stop()
	}
	stop, err := serveMilter(r.milter, r.cfg.MilterAddr, r.log, r.onListen)
	if err != nil {
		return err
	}
	<-ctx.Done()
	r.log.Info("shutting down", "timeout", r.cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), max(r.cfg.ShutdownTimeout, time.Second))
	defer cancel()
	stop(sctx)
	r.log.Info("stopped")
	return nil
}

// Close ends the subscription and closes the pool.
func (r *Relay) Close() {
	if r.stopSubs != nil {
		r.stopSubs()
	}
	if r.db != nil {
		r.db.Close()
	}
}
