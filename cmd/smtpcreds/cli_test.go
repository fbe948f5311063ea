package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/dbtest"
)

// cliEnv is an environment for run: variables not in the map are unset.
type cliEnv map[string]string

func (e cliEnv) getenv(k string) string { return e[k] }

// with returns a copy of e with the given key/value pairs; an empty value
// unsets the variable.
func (e cliEnv) with(kv ...string) cliEnv {
	out := cliEnv{}
	for k, v := range e {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(out, kv[i])
		} else {
			out[kv[i]] = kv[i+1]
		}
	}
	return out
}

// runCLI calls run in-process. A command that wrongly starts serving stops
// when the context ends, so a broken case fails instead of hanging.
func runCLI(t *testing.T, env cliEnv, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code = run(ctx, args, env.getenv, &out, &errOut)
	return out.String(), errOut.String(), code
}

func randomKeyHex(t *testing.T) string {
	t.Helper()
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(k[:])
}

// cliSetup returns an environment on a fresh migrated database holding the
// accounts acme and other; acme owns taken.example.
func cliSetup(t *testing.T) (cliEnv, *sqlx.DB) {
	t.Helper()
	url := dbtest.NewURL(t)
	env := cliEnv{"DATABASE_URL": url, "SMTPCREDS_TOKEN_KEY": randomKeyHex(t), "SMTPCREDS_DKIM_KEY": randomKeyHex(t)}
	for _, args := range [][]string{
		{"accounts", "create", "acme"},
		{"accounts", "create", "other"},
		{"domains", "add", "acme", "taken.example"},
	} {
		if out, errOut, code := runCLI(t, env, args...); code != 0 {
			t.Fatalf("setup: smtpcreds %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
		}
	}
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return env, db
}

func TestCLIBadInput(t *testing.T) {
	t.Parallel()
	env, db := cliSetup(t)

	tests := []struct {
		name string
		args []string
		env  cliEnv // nil: env
		want string // substring of the error line
	}{
		{"no command", nil, nil, "missing command"},
		{"unknown command", []string{"frobnicate"}, nil, `unknown command "frobnicate"`},
		{"accounts without subcommand", []string{"accounts"}, nil, "accounts: missing subcommand"},
		{"accounts unknown subcommand", []string{"accounts", "delete", "acme"}, nil, `unknown subcommand "delete"`},
		{"accounts create without name", []string{"accounts", "create"}, nil, "want exactly one account NAME"},
		{"accounts create with two names", []string{"accounts", "create", "alpha", "beta"}, nil, "want exactly one account NAME"},
		{"accounts create invalid name", []string{"accounts", "create", "Bad Name!"}, nil, "account names are"},
		{"accounts create too long name", []string{"accounts", "create", strings.Repeat("a", 65)}, nil, "account names are"},
		{"accounts create duplicate", []string{"accounts", "create", "acme"}, nil, "taken"},
		{"accounts create duplicate other case", []string{"accounts", "create", "ACME"}, nil, "taken"},
		{"rotate-token without name", []string{"accounts", "rotate-token"}, nil, "want exactly one account NAME"},
		{"rotate-token unknown account", []string{"accounts", "rotate-token", "ghost"}, nil, "not found"},
		{"domains without subcommand", []string{"domains"}, nil, "domains add NAME DOMAIN"},
		{"domains unknown subcommand", []string{"domains", "remove", "acme", "x.example"}, nil, "domains add NAME DOMAIN"},
		{"domains add missing domain", []string{"domains", "add", "acme"}, nil, "want NAME DOMAIN"},
		{"domains add three arguments", []string{"domains", "add", "acme", "a.example", "b.example"}, nil, "want NAME DOMAIN"},
		{"domains add invalid domain", []string{"domains", "add", "acme", "not_a_domain"}, nil, "fully qualified domain name"},
		{"domains add single label", []string{"domains", "add", "acme", "localhost"}, nil, "fully qualified domain name"},
		{"domains add unknown account", []string{"domains", "add", "ghost", "ghost.example"}, nil, `no account named "ghost"`},
		{"domains add taken domain", []string{"domains", "add", "other", "taken.example", "--verified"}, nil, "already been taken"},
		{"missing DATABASE_URL", []string{"accounts", "create", "newname"}, env.with("DATABASE_URL", ""), "DATABASE_URL"},
		{"missing DATABASE_URL migrate", []string{"migrate"}, env.with("DATABASE_URL", ""), "DATABASE_URL"},
		{"missing DATABASE_URL domains", []string{"domains", "add", "acme", "new.example"}, env.with("DATABASE_URL", ""), "DATABASE_URL"},
		{"missing DATABASE_URL serve", []string{"serve"}, env.with("DATABASE_URL", "", "SMTPCREDS_ADDR", "127.0.0.1:0"), "DATABASE_URL"},
		{"missing token key", []string{"accounts", "create", "newname"}, env.with("SMTPCREDS_TOKEN_KEY", ""), "token key is required"},
		{"missing token key rotate", []string{"accounts", "rotate-token", "acme"}, env.with("SMTPCREDS_TOKEN_KEY", ""), "token key is required"},
		{"missing token key serve", []string{"serve"}, env.with("SMTPCREDS_TOKEN_KEY", "", "SMTPCREDS_ADDR", "127.0.0.1:0"), "token key is required"},
		{"short token key", []string{"accounts", "create", "newname"}, env.with("SMTPCREDS_TOKEN_KEY", "abcd"), "at least 32 bytes"},
		{"token key not hex or base64", []string{"accounts", "create", "newname"}, env.with("SMTPCREDS_TOKEN_KEY", "not a key!"), "want hex or base64"},
		{"token key file missing", []string{"accounts", "create", "newname"}, env.with("SMTPCREDS_TOKEN_KEY", "", "SMTPCREDS_TOKEN_KEY_FILE", "/nonexistent/token.key"), "/nonexistent/token.key"},
		{"missing DKIM key", []string{"domains", "add", "acme", "new.example"}, env.with("SMTPCREDS_DKIM_KEY", ""), "DKIM key is required"},
		{"invalid SMTPCREDS_RATE_LIMIT", []string{"serve"}, env.with("SMTPCREDS_RATE_LIMIT", "abc"), "invalid -rate-limit"},
		{"invalid SMTPCREDS_RATE_LIMIT migrate", []string{"migrate"}, env.with("SMTPCREDS_RATE_LIMIT", "abc"), "invalid -rate-limit"},
		{"negative rate limit flag", []string{"serve", "--rate-limit=-1"}, nil, "invalid -rate-limit"},
		{"zero db conns", []string{"migrate"}, env.with("SMTPCREDS_DB_MAX_CONNS", "0"), "invalid -db-max-conns"},
		{"invalid log format", []string{"migrate"}, env.with("SMTPCREDS_LOG_FORMAT", "xml"), "invalid -log-format"},
		{"invalid shutdown timeout", []string{"serve"}, env.with("SMTPCREDS_SHUTDOWN_TIMEOUT", "soon"), "invalid -shutdown-timeout"},
		{"invalid trusted proxies", []string{"serve"}, env.with("SMTPCREDS_TRUSTED_PROXIES", "10.0.0.0/99"), "invalid -trusted-proxies"},
		{"invalid password scheme", []string{"serve"}, env.with("SMTPCREDS_PASSWORD_SCHEME", "MD5"), "invalid -password-scheme"},
		{"dovecot-sql without a role", []string{"serve", "--sync-target=dovecot-sql", "--dovecot-sql-role="}, nil, "sync target dovecot-sql needs -dovecot-sql-role"},
		{"passwd-file with another target", []string{"serve", "--sync-target=dovecot-sql"}, env.with("SMTPCREDS_PASSWD_FILE", "/tmp/x/passwd"), "-passwd-file or -passwd-file-group is set, but the sync target is dovecot-sql"},
		{"passwd-file group with another target", []string{"serve", "--sync-target=dovecot-sql", "--passwd-file-group=dovecot"}, nil, "the sync target is dovecot-sql, which would ignore it"},
		{"passwd-file with no target", []string{"serve", "--sync-target=none", "--passwd-file=/tmp/x/passwd"}, nil, "the sync target is none, which would ignore it"},
		{"webhook with passwd-file", []string{"serve", "--passwd-file=/tmp/x/passwd", "--webhook-url=http://127.0.0.1:1/"}, nil, "-webhook-url or -webhook-secret is set, but the sync target is passwd-file"},
		{"invalid sync target", []string{"serve"}, env.with("SMTPCREDS_SYNC_TARGET", "ldap"), `invalid -sync-target "ldap": want passwd-file, webhook, dovecot-sql or none`},
		{"unknown flag", []string{"migrate", "--bogus"}, nil, "flag provided but not defined: -bogus"},
		{"unknown flag after name", []string{"accounts", "create", "newname", "--bogus"}, nil, "flag provided but not defined: -bogus"},
		{"unknown flag on domains add", []string{"domains", "add", "acme", "new.example", "--verify"}, nil, "flag provided but not defined: -verify"},
		{"flag without value", []string{"migrate", "--database-url"}, nil, "flag needs an argument"},
		{"migrate with argument", []string{"migrate", "now"}, nil, "migrate takes no arguments"},
		{"serve with argument", []string{"serve", "now"}, nil, "serve takes no arguments"},
		{"dev with argument", []string{"dev", "now"}, nil, "dev takes no arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.env
			if e == nil {
				e = env
			}
			out, errOut, code := runCLI(t, e, tc.args...)
			if code != 2 {
				t.Errorf("exit code %d, want 2 (stdout %q, stderr %q)", code, out, errOut)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
			if !strings.HasPrefix(errOut, "smtpcreds: ") || !strings.HasSuffix(errOut, "\n") || strings.Count(errOut, "\n") != 1 {
				t.Errorf("stderr %q, want exactly one line starting with \"smtpcreds: \"", errOut)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("stderr %q, want it to mention %q", errOut, tc.want)
			}
		})
	}

	// None of the failed commands changed anything.
	var accounts []string
	if err := db.Select(&accounts, `SELECT name FROM accounts ORDER BY name`); err != nil {
		t.Fatal(err)
	}
	if strings.Join(accounts, ",") != "acme,other" {
		t.Errorf("accounts after the failed commands: %v, want [acme other]", accounts)
	}
	var domains []string
	if err := db.Select(&domains, `SELECT a.name || ':' || d.name FROM domains d JOIN accounts a ON a.id = d.account_id ORDER BY d.name`); err != nil {
		t.Fatal(err)
	}
	if strings.Join(domains, ",") != "acme:taken.example" {
		t.Errorf("domains after the failed commands: %v, want [acme:taken.example]", domains)
	}
}

func TestCLIVersionAndHelp(t *testing.T) {
	t.Parallel()
	out, errOut, code := runCLI(t, nil, "version")
	if code != 0 || out != "smtpcreds "+version+" (commit "+commit+")\n" || errOut != "" {
		t.Errorf("version: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	for _, arg := range []string{"help", "-h", "--help"} {
		out, errOut, code := runCLI(t, nil, arg)
		if code != 0 || !strings.HasPrefix(out, "usage: smtpcreds") || errOut != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 0 and the usage on stdout", arg, code, out, errOut)
		}
	}
	// A subcommand's -h lists its flags.
	out, errOut, code = runCLI(t, nil, "serve", "-h")
	if code != 0 || !strings.HasPrefix(out, "usage: smtpcreds serve") || !strings.Contains(out, "SMTPCREDS_ADDR") || errOut != "" {
		t.Errorf("serve -h: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestMaskURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://u:secret@h/db":                "postgres://u:xxxxx@h/db",
		"postgres://u@h/db?password=secret&x=1":   "postgres://u@h/db?password=xxxxx&x=1",
		"host=h user=u password=secret dbname=db": "(key=value DSN with a password, masked)",
		"postgres://postgres@127.0.0.1:5432/x":    "postgres://postgres@127.0.0.1:5432/x",
	} {
		if got := maskURL(in); got != want || strings.Contains(got, "secret") {
			t.Errorf("maskURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCLIAccountsAndDomains(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	key := randomKeyHex(t)
	env := cliEnv{"DATABASE_URL": url, "SMTPCREDS_TOKEN_KEY": key, "SMTPCREDS_DKIM_KEY": randomKeyHex(t)}

	mustCLI := func(env cliEnv, args ...string) string {
		t.Helper()
		out, errOut, code := runCLI(t, env, args...)
		if code != 0 || errOut != "" {
			t.Fatalf("smtpcreds %s: exit %d, stderr %q; want 0 and nothing on stderr", strings.Join(args, " "), code, errOut)
		}
		return out
	}
	token := func(out string) string {
		t.Helper()
		tok := strings.TrimSuffix(out, "\n")
		if strings.Count(out, "\n") != 1 || !tokenRE.MatchString(tok) {
			t.Fatalf("stdout %q, want one token line matching %s", out, tokenRE)
		}
		return tok
	}

	// migrate on a migrated database is a no-op.
	if out := mustCLI(env, "migrate"); out != "migrations applied\n" {
		t.Errorf("migrate: stdout %q", out)
	}
	// Names are stored lower case.
	t1 := token(mustCLI(env, "accounts", "create", "Acme"))
	t2 := token(mustCLI(env, "accounts", "rotate-token", "acme"))
	if t1 == t2 {
		t.Errorf("rotate-token printed the same token")
	}
	// Flags win over the environment, and may follow the positionals.
	flagsOnly := cliEnv{"DATABASE_URL": "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=1"}
	token(mustCLI(flagsOnly, "accounts", "create", "beta", "--database-url", url, "-token-key="+key))

	if out := mustCLI(env, "domains", "add", "acme", "Example.COM."); out != "example.com\n" {
		t.Errorf("domains add: stdout %q, want the normalised name", out)
	}
	mustCLI(env, "domains", "add", "acme", "verified.example", "--verified")
	mustCLI(env.with("DATABASE_URL", "", "SMTPCREDS_TOKEN_KEY", ""), "domains", "add", "--verified", "beta", "beta.example", "-database-url="+url)

	db, err := sqlx.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	type row struct {
		Account  string `db:"account"`
		Domain   string `db:"domain"`
		Verified bool   `db:"is_verified"`
	}
	var rows []row
	if err := db.Select(&rows, `SELECT a.name AS account, d.name AS domain, d.is_verified
		FROM domains d JOIN accounts a ON a.id = d.account_id ORDER BY d.name`); err != nil {
		t.Fatal(err)
	}
	want := []row{
		{"beta", "beta.example", true},
		{"acme", "example.com", false},
		{"acme", "verified.example", true},
	}
	if len(rows) != len(want) {
		t.Fatalf("domains: %+v, want %+v", rows, want)
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Errorf("domains[%d] = %+v, want %+v", i, rows[i], want[i])
		}
	}
}

// A passwd-file group with no target is left for `dev`, whose default
// passwd-file uses it; the same group with another target is refused.
func TestPasswdFileGroupWithoutTarget(t *testing.T) {
	t.Parallel()
	env := cliEnv{"SMTPCREDS_PASSWD_FILE_GROUP": "dovecot"}
	c, _, err := parseConfig("dev", nil, env.getenv, nil)
	if err != nil {
		t.Fatalf("dev with only a passwd-file group: %v", err)
	}
	if c.Sync.Target != "none" || c.Sync.PasswdGroup != "dovecot" {
		t.Errorf("sync = %s with group %q, want none with dovecot (dev picks its passwd-file)", c.Sync.Target, c.Sync.PasswdGroup)
	}
	if _, _, err := parseConfig("dev", nil, env.with("SMTPCREDS_SYNC_TARGET", "dovecot-sql").getenv, nil); err == nil {
		t.Error("a passwd-file group with dovecot-sql was accepted")
	}
}
