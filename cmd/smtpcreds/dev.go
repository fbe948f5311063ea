package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lib/pq"

	"github.com/smtpcreds/smtpcreds/internal/accounts"
	"github.com/smtpcreds/smtpcreds/internal/localpg"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/validation"
	"github.com/smtpcreds/smtpcreds/sqlmigrations"
)

const (
	demoAccount = "demo"
	demoDomain  = "demo.example"
)

type devCmd struct {
	serverGroups
	devFlags
}

// Run is `make run`: a working server on a fresh machine. Without
// DATABASE_URL it keeps a PostgreSQL cluster under <data-dir>/pg; without a
// token key it keeps one in <data-dir>/token.key. It migrates, makes sure the
// demo account (with a fresh token) and its verified demo domain exist,
// prints a banner (a curl line that creates a credential, the docs, the
// passwd-file, how to point the CLI at this database), and serves.
func (d *devCmd) Run(r *runEnv) error {
	c, err := d.config()
	if err != nil {
		return err
	}
	if err := d.devFlags.apply(&c); err != nil {
		return err
	}
	ctx, stdout, stderr := r.ctx, r.stdout, r.stderr
	log := newLogger(c, stderr)
	// 0711: the postgres user (when running as root) must traverse it to
	// reach pg/, but cannot list it; token.key itself is 0600.
	if err := os.MkdirAll(c.DataDir, 0o711); err != nil {
		return err
	}
	if err := os.Chmod(c.DataDir, 0o711); err != nil {
		return err
	}
	if c.DatabaseURL == "" {
		cluster, err := localpg.Start(ctx, localpg.Options{
			Dir:  filepath.Join(c.DataDir, "pg"),
			Logf: func(f string, a ...any) { log.Info(fmt.Sprintf(f, a...)) },
		})
		if err != nil {
			return fmt.Errorf("local PostgreSQL: %w", err)
		}
		if !cluster.Reused() {
			defer cluster.Stop() //nolint:errcheck // best effort on the way out
		}
		if err := ensureDatabase(ctx, cluster.URL("postgres"), "smtpcreds"); err != nil {
			return err
		}
		c.DatabaseURL = cluster.URL("smtpcreds")
	}
	if len(c.TokenKey) == 0 {
		if c.TokenKey, err = ensureKeyFile(filepath.Join(c.DataDir, "token.key")); err != nil {
			return err
		}
	}
	if c.Sync.Target == "none" && d.SyncTarget == "" {
		// The working default of `make run`: a Dovecot passwd-file under
		// .data. The passwd-file writer creates its directory, with the
		// configured group, so that Dovecot can traverse it.
		c.Sync.Target, c.Sync.PasswdFile = "passwd-file", filepath.Join(c.DataDir, "dovecot", "passwd")
	}
	if len(c.DKIMKey) == 0 {
		if c.DKIMKey, err = ensureKeyFile(filepath.Join(c.DataDir, "dkim.key")); err != nil {
			return err
		}
	}

	db, err := openDB(ctx, c)
	if err != nil {
		return err
	}
	if err := sqlmigrations.Up(ctx, db.DB); err != nil {
		db.Close()
		return err
	}
	acc, err := accounts.NewService(db, c.TokenKey)
	if err != nil {
		db.Close()
		return err
	}
	_, token, err := acc.Create(ctx, demoAccount)
	if errors.Is(err, accounts.ErrNameTaken) {
		token, err = acc.RotateToken(ctx, demoAccount)
	}
	if err != nil {
		db.Close()
		return err
	}
	dom, err := newDomains(c, db)
	if err != nil {
		db.Close()
		return err
	}
	_, err = dom.AddForAccount(ctx, demoAccount, demoDomain, true)
	var verr *validation.Error
	if err != nil && !errors.As(err, &verr) { // already added on an earlier run
		db.Close()
		return err
	}
	db.Close()

	return serve(ctx, c, log, func(addr string) {
		fmt.Fprint(stdout, devBanner(addr, token, c))
	})
}

// devBanner is what dev prints once it listens on addr: the demo account,
// a curl line that creates a credential, where the docs and the passwd-file
// are, and the line that runs the CLI against this database.
func devBanner(addr, token string, c config) string {
	var b strings.Builder
	fmt.Fprintf(&b, `
smtpcreds is running on http://%[1]s with a local demo.
  account: %[2]s
  token:   %[3]s
  domain:  %[4]s (verified)
  docs:    http://%[1]s/docs
`, addr, demoAccount, token, demoDomain)
	switch c.Sync.Target {
	case "passwd-file":
		fmt.Fprintf(&b, "  passwd-file: %s\n", c.Sync.PasswdFile)
	default:
		fmt.Fprintf(&b, "  sync target: %s\n", c.Sync.Target)
	}
	fmt.Fprintf(&b, `
Create a credential:
  curl -s -u '%[2]s:%[3]s' -H 'Content-Type: application/json' -d '{"username":"hello"}' http://%[1]s/api/domains/%[4]s/credentials

Point the CLI at this database (in another terminal):
  DATABASE_URL='%[5]s' smtpcreds domains list

`, addr, demoAccount, token, demoDomain, maskURL(c.DatabaseURL))
	return b.String()
}

// ensureDatabase creates database name on the server at adminURL if missing.
func ensureDatabase(ctx context.Context, adminURL, name string) error {
	db, err := postgres.Open(ctx, adminURL, postgres.PoolOptions{MaxOpen: 1})
	if err != nil {
		return err
	}
	defer db.Close()
	var exists bool
	if err := db.GetContext(ctx, &exists, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name); err != nil {
		return fmt.Errorf("check database: %w", err)
	}
	if exists {
		return nil
	}
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name)); err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	return nil
}

// ensureKeyFile returns the key in path, first writing 32 random bytes (hex)
// there with mode 0600 when the file does not exist.
func ensureKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		var k [32]byte
		if _, err := rand.Read(k[:]); err != nil {
			return nil, err
		}
		b = []byte(hex.EncodeToString(k[:]) + "\n")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	return decodeKey(strings.TrimSpace(string(b)), 32)
}
