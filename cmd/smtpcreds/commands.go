package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/accounts"
	"github.com/smtpcreds/smtpcreds/internal/app"
	"github.com/smtpcreds/smtpcreds/internal/domains"
	"github.com/smtpcreds/smtpcreds/internal/validation"
	"github.com/smtpcreds/smtpcreds/sqlmigrations"
)

func openDB(ctx context.Context, c config) (*sqlx.DB, error) {
	if c.DatabaseURL == "" {
		return nil, usagef("DATABASE_URL (or --database-url) is required")
	}
	return app.OpenDB(ctx, c.appConfig())
}

func requireKey(c config) error {
	if len(c.TokenKey) == 0 {
		return usagef("a token key is required: set SMTPCREDS_TOKEN_KEY or SMTPCREDS_TOKEN_KEY_FILE (32+ random bytes, hex or base64)")
	}
	return nil
}

var errNoDKIMKey = usagef("a DKIM key is required: set SMTPCREDS_DKIM_KEY or SMTPCREDS_DKIM_KEY_FILE (32 random bytes, hex or base64)")

// newDomains builds the domains service as the server does (through
// internal/app), for the CLI commands that add domains.
func newDomains(c config, db *sqlx.DB) (*domains.Service, error) {
	if len(c.DKIMKey) == 0 {
		return nil, errNoDKIMKey
	}
	dom, err := app.NewDomains(c.appConfig(), db, nil)
	return dom, cliError(err)
}

// cliError makes an error of the configuration's values a usage error
// (exit code 2, one line), as for a bad flag.
func cliError(err error) error {
	var ce *app.ConfigError
	if errors.As(err, &ce) {
		return usagef("%v", ce)
	}
	return err
}

func newLogger(c config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// serverGroups are the flags of serve (and dev, which adds its own).
type serverGroups struct {
	dbFlags
	tokenKeyFlags
	dkimKeyFlags
	dnsRecordFlags
	dnsCheckFlags
	serverFlags
	syncFlags
	relayFlags
	milterFlags
	logFlags
}

func (g *serverGroups) config() (config, error) {
	return buildConfig(g.dbFlags, g.tokenKeyFlags, g.dkimKeyFlags, g.dnsRecordFlags, g.dnsCheckFlags,
		g.serverFlags, g.syncFlags, g.relayFlags, g.milterFlags, g.logFlags)
}

type serveCmd struct{ serverGroups }

func (s *serveCmd) Run(r *runEnv) error {
	c, err := s.config()
	if err != nil {
		return err
	}
	return serve(r.ctx, c, newLogger(c, r.stderr), nil)
}

// serve runs the API until ctx ends, then shuts down gracefully. ready, if
// not nil, gets the bound address once the listener is open.
func serve(ctx context.Context, c config, log *slog.Logger, ready func(addr string)) error {
	if err := requireKey(c); err != nil {
		return err
	}
	if c.DatabaseURL == "" {
		return usagef("DATABASE_URL (or --database-url) is required")
	}
	if len(c.DKIMKey) == 0 {
		return errNoDKIMKey
	}
	log.Info("starting smtpcreds", "version", version, "commit", commit, "config", c.logValue())
	a, err := app.New(ctx, c.appConfig(), app.Deps{Logger: log, OnListen: ready})
	if err != nil {
		return cliError(err)
	}
	defer a.Close()
	return a.Run(ctx)
}

type migrateCmd struct{ dbFlags }

func (m *migrateCmd) Run(r *runEnv) error {
	c, err := buildConfig(m.dbFlags)
	if err != nil {
		return err
	}
	db, err := openDB(r.ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := sqlmigrations.Up(r.ctx, db.DB); err != nil {
		return err
	}
	fmt.Fprintln(r.stdout, "migrations applied")
	return nil
}

// accountArg is the account a command acts on.
type accountArg struct {
	Name string `arg:"" help:"account name: 1-64 characters of a-z 0-9 . _ - (case-insensitive)"`
}

type accountsCreateCmd struct {
	dbFlags
	tokenKeyFlags
	accountArg
}

func (a *accountsCreateCmd) Run(r *runEnv) error {
	return withAccounts(r.ctx, "accounts create", a.dbFlags, a.tokenKeyFlags, func(s *accounts.Service) error {
		_, tok, err := s.Create(r.ctx, a.Name)
		if err != nil {
			return err
		}
		fmt.Fprintln(r.stdout, tok)
		return nil
	})
}

type accountsRotateCmd struct {
	dbFlags
	tokenKeyFlags
	accountArg
}

func (a *accountsRotateCmd) Run(r *runEnv) error {
	return withAccounts(r.ctx, "accounts rotate-token", a.dbFlags, a.tokenKeyFlags, func(s *accounts.Service) error {
		tok, err := s.RotateToken(r.ctx, a.Name)
		if err != nil {
			return err
		}
		fmt.Fprintln(r.stdout, tok)
		return nil
	})
}

func withAccounts(ctx context.Context, cmd string, db dbFlags, key tokenKeyFlags, fn func(*accounts.Service) error) error {
	c, err := buildConfig(db, key)
	if err != nil {
		return err
	}
	if err := requireKey(c); err != nil {
		return err
	}
	pool, err := openDB(ctx, c)
	if err != nil {
		return err
	}
	defer pool.Close()
	svc, err := accounts.NewService(pool, c.TokenKey)
	if err != nil {
		return usagef("%v", err)
	}
	return accountErr(cmd, fn(svc))
}

// accountErr makes the account errors a user can fix usage errors.
func accountErr(cmd string, err error) error {
	if errors.Is(err, accounts.ErrInvalidName) || errors.Is(err, accounts.ErrNameTaken) || errors.Is(err, accounts.ErrNotFound) {
		return usagef("%s: %v", cmd, err)
	}
	return err
}

type domainsAddCmd struct {
	dbFlags
	dkimKeyFlags
	dnsRecordFlags
	Account  string `arg:"" help:"the account that gets the domain"`
	Domain   string `arg:"" help:"the domain name (internationalised names in either form)"`
	Verified bool   `help:"mark the domain verified by the operator, without DNS checks; on a domain the account already has, the same as 'domains set-verified DOMAIN true'"`
}

func (a *domainsAddCmd) Run(r *runEnv) error {
	c, err := buildConfig(a.dbFlags, a.dkimKeyFlags, a.dnsRecordFlags)
	if err != nil {
		return err
	}
	db, err := openDB(r.ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	dom, err := newDomains(c, db)
	if err != nil {
		return err
	}
	d, err := dom.AddForAccount(r.ctx, a.Account, a.Domain, a.Verified)
	var verr *validation.Error
	switch {
	case errors.As(err, &verr):
		msg := firstMessage(verr)
		if !a.Verified && errors.Is(err, domains.ErrTaken) {
			msg += " (to mark an account's domain verified: smtpcreds domains set-verified DOMAIN true)"
		}
		return usagef("domains add: %s", msg)
	case errors.Is(err, domains.ErrAccountNotFound):
		return usagef("domains add: no account named %q", a.Account)
	case err != nil:
		return err
	}
	fmt.Fprintln(r.stdout, d.Name)
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

// milterCmd runs the milter alone: the process Postfix's smtpd_milters
// names, beside (or instead of) an API process.
type milterCmd struct {
	dbFlags
	dkimKeyFlags
	relayFlags
	milterFlags
	logFlags
}

func (m *milterCmd) Run(r *runEnv) error {
	c, err := buildConfig(m.dbFlags, m.dkimKeyFlags, m.relayFlags, m.milterFlags, m.logFlags)
	if err != nil {
		return err
	}
	if c.MilterAddr == "" {
		c.MilterAddr = defaultMilterAddr
	}
	if c.DatabaseURL == "" {
		return usagef("DATABASE_URL (or --database-url) is required")
	}
	if len(c.DKIMKey) == 0 {
		return errNoDKIMKey
	}
	c.ShutdownTimeout = 15 * time.Second
	log := newLogger(c, r.stderr)
	log.Info("starting smtpcreds milter", "version", version, "commit", commit, "config", c.logValue())
	relay, err := app.NewRelay(r.ctx, c.appConfig(), app.Deps{Logger: log})
	if err != nil {
		return cliError(err)
	}
	defer relay.Close()
	return relay.Run(r.ctx)
}

// defaultMilterAddr is where `smtpcreds milter` listens unless told, the
// address deploy/postfix/main.cf names.
const defaultMilterAddr = "inet:127.0.0.1:8891"
