package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/accounts"
	"github.com/smtpcreds/smtpcreds/internal/app"
	"github.com/smtpcreds/smtpcreds/internal/credentials"
	"github.com/smtpcreds/smtpcreds/internal/password"
)

type credentialsImportCmd struct {
	dbFlags
	syncFlags
	Account      string        `name:"account" required:"" placeholder:"NAME" help:"the account whose verified domains get the credentials"`
	Format       string        `name:"format" enum:"auto,passwd,csv" default:"auto" help:"{passwd} (login:{SCHEME}hash[:...]), {csv} (login,hash) or {auto}: detected from the first line"`
	IgnoreCap    bool          `name:"ignore-cap" help:"import past the per-domain cap instead of refusing the lines over it"`
	MaxPerDomain int           `name:"max-credentials-per-domain" env:"SMTPCREDS_MAX_CREDENTIALS_PER_DOMAIN" default:"1000" help:"the API's credential cap per domain ({0} = none), which the import applies unless --ignore-cap"`
	SyncWait     time.Duration `name:"sync-wait" default:"5m" help:"how long to wait for the sync target to take the imported credentials ({0}: leave them to the server's workers)"`
	File         string        `arg:"" help:"the passwd-file or CSV to read, {-} for standard input"`
}

// errRefused: the import refused lines (exit 1; they are on stderr).
var errRefused = errors.New("lines were refused")

func (c *credentialsImportCmd) Run(r *runEnv) error {
	if c.MaxPerDomain < 0 {
		return invalid("max-credentials-per-domain", "want a non-negative integer")
	}
	if c.SyncWait < 0 {
		return invalid("sync-wait", "want a non-negative duration")
	}
	var in io.Reader = os.Stdin
	name := "<stdin>"
	if c.File != "-" {
		f, err := os.Open(c.File)
		if err != nil {
			return usagef("credentials import: %v", err)
		}
		defer f.Close()
		in, name = f, c.File
	}
	return withDB(r.ctx, func(cfg config, db *sqlx.DB) error {
		acc, err := accounts.NewDirectory(db).ByName(r.ctx, c.Account)
		if err != nil {
			return accountErr("credentials import", err)
		}
		ac := cfg.appConfig()
		// The command waits for its applies for the whole --sync-wait; an
		// apply that rewrites a scope of a million logins runs for as long
		// as it makes progress (the syncer's lease follows it).
		ac.Sync.Timeout = max(c.SyncWait, time.Millisecond)
		log := slog.New(slog.NewTextHandler(r.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		outbox, err := app.NewOutbox(ac, db, log)
		if err != nil {
			return cliError(err)
		}
		svc := credentials.NewService(db, outbox, credentials.Config{MaxPerDomain: c.MaxPerDomain, Scheme: password.SSHA512})
		rep, err := svc.Import(r.ctx, acc.ID, in, credentials.ImportOptions{
			Format: c.Format, IgnoreCap: c.IgnoreCap,
			Refused: func(line int64, why string) { fmt.Fprintf(r.stderr, "%s:%d: %s\n", name, line, why) },
		})
		if err != nil {
			return fmt.Errorf("credentials import: %w (the batches before it were committed: running the import again skips them)", err)
		}
		sync := "nothing to sync"
		switch {
		case outbox == nil:
			sync = "off: no sync target configured (set --sync-target and its settings as the server has them): nothing was queued for the SMTP server"
		case rep.Pending.Len() == 0:
		case c.SyncWait == 0:
			sync = fmt.Sprintf("left to the server's workers (%d jobs)", rep.Pending.Len())
		case outbox.Apply(r.ctx, rep.Pending):
			sync = "applied: the imported logins authenticate on the SMTP server"
		default:
			sync = fmt.Sprintf("not confirmed within %s: the server's workers retry (smtpcreds credentials list shows SYNCED)", c.SyncWait)
		}
		fmt.Fprintf(r.stdout, "format:            %s\nread:              %d\ncreated:           %d\nskipped existing:  %d\nrefused:           %d\nsync:              %s\n",
			rep.Format, rep.Read, rep.Created, rep.Skipped, rep.Refused, sync)
		if rep.Refused > 0 {
			return fmt.Errorf("credentials import: %d %w (see above)", rep.Refused, errRefused)
		}
		return nil
	}, c.dbFlags, c.syncFlags)
}
