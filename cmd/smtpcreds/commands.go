package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/accounts"
	"github.com/smtpcreds/smtpcreds/internal/app"
	"github.com/smtpcreds/smtpcreds/internal/domains"
	"github.com/smtpcreds/smtpcreds/internal/validation"
	"github.com/smtpcreds/smtpcreds/sqlmigrations"
)

func openDB(ctx context.Context, c config) (*sqlx.DB, error) {
	if c.DatabaseURL == "" {
		return nil, usagef("DATABASE_URL (or -database-url) is required")
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
	dom, err := newDomains(c, db)
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
	a, err := app.New(ctx, c.appConfig(), app.Deps{Logger: log, OnListen: ready})
	if err != nil {
		return cliError(err)
	}
	defer a.Close()
	return a.Run(ctx)
}
