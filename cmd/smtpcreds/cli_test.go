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

	"github.com/smtpcreds/smtpcreds/internal/credentials"
	"github.com/smtpcreds/smtpcreds/internal/dbtest"
	"github.com/smtpcreds/smtpcreds/internal/dnstest"
	"github.com/smtpcreds/smtpcreds/internal/password"
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
		{"unknown command", []string{"frobnicate"}, nil, "unexpected argument frobnicate"},
		{"accounts without subcommand", []string{"accounts"}, nil, `expected one of "create", "rotate-token", "list"`},
		{"accounts unknown subcommand", []string{"accounts", "delete", "acme"}, nil, "unexpected argument delete"},
		{"accounts create without name", []string{"accounts", "create"}, nil, `expected "<name>" (see 'smtpcreds accounts create --help')`},
		{"accounts create with two names", []string{"accounts", "create", "alpha", "beta"}, nil, "unexpected argument beta"},
		{"accounts create invalid name", []string{"accounts", "create", "Bad Name!"}, nil, "account names are"},
		{"accounts create too long name", []string{"accounts", "create", strings.Repeat("a", 65)}, nil, "account names are"},
		{"accounts create duplicate", []string{"accounts", "create", "acme"}, nil, "taken"},
		{"accounts create duplicate other case", []string{"accounts", "create", "ACME"}, nil, "taken"},
		{"rotate-token without name", []string{"accounts", "rotate-token"}, nil, `expected "<name>"`},
		{"rotate-token unknown account", []string{"accounts", "rotate-token", "ghost"}, nil, "not found"},
		{"domains without subcommand", []string{"domains"}, nil, `expected one of "add", "list", "verify", "set-verified"`},
		{"domains unknown subcommand", []string{"domains", "remove", "acme", "x.example"}, nil, "unexpected argument remove"},
		{"domains add missing domain", []string{"domains", "add", "acme"}, nil, `expected "<domain>"`},
		{"domains add three arguments", []string{"domains", "add", "acme", "a.example", "b.example"}, nil, "unexpected argument b.example"},
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
		{"invalid SMTPCREDS_RATE_LIMIT", []string{"serve"}, env.with("SMTPCREDS_RATE_LIMIT", "abc"), "--rate-limit: from SMTPCREDS_RATE_LIMIT: expected a valid 64 bit int"},
		{"invalid SMTPCREDS_DB_MAX_CONNS migrate", []string{"migrate"}, env.with("SMTPCREDS_DB_MAX_CONNS", "abc"), "--db-max-conns: from SMTPCREDS_DB_MAX_CONNS"},
		{"negative rate limit flag", []string{"serve", "--rate-limit=-1"}, nil, "invalid --rate-limit: want a non-negative integer"},
		{"zero db conns", []string{"migrate"}, env.with("SMTPCREDS_DB_MAX_CONNS", "0"), "invalid --db-max-conns: want at least 1"},
		{"invalid log format", []string{"serve"}, env.with("SMTPCREDS_LOG_FORMAT", "xml"), "invalid --log-format"},
		{"invalid shutdown timeout", []string{"serve"}, env.with("SMTPCREDS_SHUTDOWN_TIMEOUT", "soon"), "--shutdown-timeout: from SMTPCREDS_SHUTDOWN_TIMEOUT"},
		{"invalid trusted proxies", []string{"serve"}, env.with("SMTPCREDS_TRUSTED_PROXIES", "10.0.0.0/99"), "invalid --trusted-proxies"},
		{"invalid password scheme", []string{"serve"}, env.with("SMTPCREDS_PASSWORD_SCHEME", "MD5"), "invalid --password-scheme"},
		{"dovecot-sql without a role", []string{"serve", "--sync-target=dovecot-sql", "--dovecot-sql-role="}, nil, "sync target dovecot-sql needs --dovecot-sql-role"},
		{"passwd-file with another target", []string{"serve", "--sync-target=dovecot-sql"}, env.with("SMTPCREDS_PASSWD_FILE", "/tmp/x/passwd"), "--passwd-file or --passwd-file-group is set, but the sync target is dovecot-sql"},
		{"passwd-file group with another target", []string{"serve", "--sync-target=dovecot-sql", "--passwd-file-group=dovecot"}, nil, "the sync target is dovecot-sql, which would ignore it"},
		{"passwd-file with no target", []string{"serve", "--sync-target=none", "--passwd-file=/tmp/x/passwd"}, nil, "the sync target is none, which would ignore it"},
		{"webhook with passwd-file", []string{"serve", "--passwd-file=/tmp/x/passwd", "--webhook-url=http://127.0.0.1:1/"}, nil, "--webhook-url or --webhook-secret is set, but the sync target is passwd-file"},
		{"invalid sync target", []string{"serve"}, env.with("SMTPCREDS_SYNC_TARGET", "ldap"), `invalid --sync-target "ldap": want passwd-file, webhook, dovecot-sql or none`},
		{"unknown flag", []string{"migrate", "--bogus"}, nil, "unknown flag --bogus"},
		{"unknown flag after name", []string{"accounts", "create", "newname", "--bogus"}, nil, "unknown flag --bogus"},
		{"unknown flag on domains add", []string{"domains", "add", "acme", "new.example", "--verify"}, nil, "unknown flag --verify"},
		{"flag without value", []string{"migrate", "--database-url"}, nil, "--database-url: expected string value"},
		{"single-dash unknown flag", []string{"migrate", "-bogus=1"}, nil, "unknown flag --bogus"},
		{"flag of another command", []string{"migrate", "--rate-limit=5"}, nil, "unknown flag --rate-limit"},
		{"token key on domains add", []string{"domains", "add", "acme", "new.example", "--token-key=x"}, nil, "unknown flag --token-key"},
		{"set-verified neither true nor false", []string{"domains", "set-verified", "taken.example", "maybe"}, nil, `<true|false> must be one of "true","false"`},
		{"set-verified unknown domain", []string{"domains", "set-verified", "ghost.example", "true"}, nil, `domains set-verified: no domain "ghost.example"`},
		{"verify unknown domain", []string{"domains", "verify", "ghost.example"}, nil, `domains verify: no domain "ghost.example"`},
		{"domains list unknown account", []string{"domains", "list", "ghost"}, nil, "domains list: account not found"},
		{"credentials list unknown account", []string{"credentials", "list", "ghost", "taken.example"}, nil, "credentials list: account not found"},
		{"credentials list another account's domain", []string{"credentials", "list", "other", "taken.example"}, nil, `account other has no domain "taken.example"`},
		{"credentials list without domain", []string{"credentials", "list", "acme"}, nil, `expected "<domain>"`},
		{"migrate with argument", []string{"migrate", "now"}, nil, "unexpected argument now"},
		{"serve with argument", []string{"serve", "now"}, nil, "unexpected argument now"},
		{"dev with argument", []string{"dev", "now"}, nil, "unexpected argument now"},
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
	want := "smtpcreds " + version + " (commit " + commit + ")\n"
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}, {"domains", "list", "--version"}} {
		out, errOut, code := runCLI(t, nil, args...)
		if code != 0 || out != want || errOut != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
	for _, arg := range []string{"help", "-h", "--help"} {
		out, errOut, code := runCLI(t, nil, arg)
		if code != 0 || !strings.HasPrefix(out, "Usage: smtpcreds <command>") || errOut != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 0 and the usage on stdout", arg, code, out, errOut)
		}
		for _, s := range []string{"Exit codes: 0 success, 1 failure, 2 bad usage", "accounts create <name>", "domains set-verified <domain> <true|false>", "credentials list <account> <domain>"} {
			if !strings.Contains(out, s) {
				t.Errorf("%s: the usage does not mention %q:\n%s", arg, s, out)
			}
		}
	}
}

// Each command's help lists its own flags, typed, with their variables and
// defaults, and no flag of another command.
func TestCLIHelpPerCommand(t *testing.T) {
	t.Parallel()
	serverOnly := []string{"--addr=", "--rate-limit=", "--sync-target=", "--log-format="}
	tests := []struct {
		args  []string
		usage string
		want  []string
		not   []string
	}{
		{[]string{"serve"}, "serve [flags]", []string{"--addr=HOST:PORT", "$SMTPCREDS_ADDR", "default: 127.0.0.1:8080", "--rate-limit=INT",
			"--dns-timeout=DURATION", "--pprof", "--token-key=KEY", "--passwd-file=PATH", "--log-format=json|text", "$DATABASE_URL"}, []string{"--data-dir", "--verified"}},
		{[]string{"dev"}, "dev [flags]", []string{"--data-dir=DIR", "$SMTPCREDS_DATA_DIR", "default: .data", "--addr=HOST:PORT"}, nil},
		{[]string{"migrate"}, "migrate [flags]", []string{"--database-url=URL", "$DATABASE_URL", "--db-max-conns=INT"}, append([]string{"--token-key", "--dkim-key", "--data-dir"}, serverOnly...)},
		{[]string{"accounts"}, "accounts <command> [flags]", []string{"accounts create <name>", "accounts list"}, []string{"--database-url"}},
		{[]string{"accounts", "create"}, "accounts create <name> [flags]", []string{"<name>", "--token-key=KEY", "$SMTPCREDS_TOKEN_KEY_FILE", "--database-url=URL"}, append([]string{"--dkim-key"}, serverOnly...)},
		{[]string{"accounts", "rotate-token"}, "accounts rotate-token <name> [flags]", []string{"--token-key=KEY"}, serverOnly},
		{[]string{"accounts", "list"}, "accounts list [flags]", []string{"--database-url=URL"}, append([]string{"--token-key", "--dkim-key"}, serverOnly...)},
		{[]string{"domains", "add"}, "domains add <account> <domain> [flags]", []string{"--verified", "domains set-verified", "--dkim-key=KEY", "--spf-include=HOST", "--mx-host=HOST"}, append([]string{"--token-key", "--dns-resolver"}, serverOnly...)},
		{[]string{"domains", "list"}, "domains list [<account>] [flags]", []string{"--database-url=URL"}, append([]string{"--dkim-key", "--spf-include"}, serverOnly...)},
		{[]string{"domains", "verify"}, "domains verify <domain> [flags]", []string{"--dns-resolver=IP[:PORT]", "default: system resolver", "--dns-timeout=DURATION", "--spf-include=HOST"}, append([]string{"--dkim-key", "--token-key"}, serverOnly...)},
		{[]string{"domains", "set-verified"}, "domains set-verified <domain> <true|false> [flags]", []string{"--database-url=URL", "withdraw"}, append([]string{"--dkim-key", "--dns-resolver"}, serverOnly...)},
		{[]string{"credentials", "list"}, "credentials list <account> <domain> [flags]", []string{"--database-url=URL"}, append([]string{"--dkim-key", "--token-key"}, serverOnly...)},
	}
	for _, tc := range tests {
		for _, h := range []string{"--help", "-h"} {
			args := append(append([]string{}, tc.args...), h)
			out, errOut, code := runCLI(t, nil, args...)
			if code != 0 || errOut != "" || !strings.HasPrefix(out, "Usage: smtpcreds "+tc.usage+"\n") {
				t.Errorf("%v: exit %d, stderr %q, stdout:\n%s", args, code, errOut, out)
				continue
			}
			flat := strings.Join(strings.Fields(out), " ") // help wraps lines
			for _, w := range tc.want {
				if !strings.Contains(flat, w) {
					t.Errorf("%v: help lacks %q:\n%s", args, w, out)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(out, n) {
					t.Errorf("%v: help mentions %q, a flag of another command:\n%s", args, n, out)
				}
			}
		}
	}
	// help COMMAND is COMMAND --help.
	a, _, _ := runCLI(t, nil, "help", "domains", "verify")
	b, _, _ := runCLI(t, nil, "domains", "verify", "--help")
	if a != b {
		t.Errorf("help domains verify differs from domains verify --help")
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
	f := syncFlags{PasswdFileGroup: "dovecot", SyncTimeout: 2 * time.Second}
	sc, err := parseSync(f)
	if err != nil {
		t.Fatalf("only a passwd-file group: %v", err)
	}
	if sc.Target != "none" || sc.PasswdGroup != "dovecot" {
		t.Errorf("sync = %s with group %q, want none with dovecot (dev picks its passwd-file)", sc.Target, sc.PasswdGroup)
	}
	f.SyncTarget = "dovecot-sql"
	if _, err := parseSync(f); err == nil {
		t.Error("a passwd-file group with dovecot-sql was accepted")
	}
}

// The operator's commands against a real database and a real DNS server:
// accounts list, domains list, domains verify, domains set-verified (whose
// mark a failing verify reports but does not undo), domains add --verified
// on an existing domain (which keeps its key), and credentials list.
func TestCLIOperatorCommands(t *testing.T) {
	t.Parallel()
	env, db := cliSetup(t)
	dns := dnstest.Start(t)
	env = env.with("SMTPCREDS_DNS_RESOLVER", dns.Addr(), "SMTPCREDS_DNS_TIMEOUT", "2s")
	mustCLI := func(wantCode int, args ...string) string {
		t.Helper()
		out, errOut, code := runCLI(t, env, args...)
		if code != wantCode {
			t.Fatalf("smtpcreds %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, wantCode, out, errOut)
		}
		return out
	}
	lines := func(out string) []string { return strings.Split(strings.TrimSuffix(out, "\n"), "\n") }
	fields := func(line string) string { return strings.Join(strings.Fields(line), " ") }

	mustCLI(0, "domains", "add", "acme", "v.example", "--verified")
	var key string
	if err := db.Get(&key, `SELECT dkim_public_key FROM domains WHERE name = 'taken.example'`); err != nil {
		t.Fatal(err)
	}

	out := lines(mustCLI(0, "accounts", "list"))
	if len(out) != 3 || fields(out[0]) != "NAME ID CREATED DOMAINS" ||
		!strings.HasPrefix(fields(out[1]), "acme ") || !strings.HasSuffix(out[1], " 2") ||
		!strings.HasPrefix(fields(out[2]), "other ") || !strings.HasSuffix(out[2], " 0") {
		t.Errorf("accounts list:\n%s", strings.Join(out, "\n"))
	}

	out = lines(mustCLI(0, "domains", "list"))
	if len(out) != 3 || fields(out[0]) != "DOMAIN ACCOUNT VERIFIED DKIM SPF MX CREATED" ||
		!strings.HasPrefix(fields(out[1]), "taken.example acme no - - - ") ||
		!strings.HasPrefix(fields(out[2]), "v.example acme yes (operator) - - - ") {
		t.Errorf("domains list:\n%s", strings.Join(out, "\n"))
	}
	if out := lines(mustCLI(0, "domains", "list", "OTHER")); len(out) != 1 {
		t.Errorf("domains list other: %q, want the header alone", out)
	}

	// Nothing published: every record fails with its explanation; exit 1.
	o := mustCLI(1, "domains", "verify", "taken.example")
	for _, s := range []string{"taken.example (account acme): not verified", "DKIM: FAIL (required)", "SPF: FAIL (required)",
		"MX: FAIL (reported, not required)", "looked up: TXT smtpcreds._domainkey.taken.example", "problem:"} {
		if !strings.Contains(o, s) {
			t.Errorf("verify output lacks %q:\n%s", s, o)
		}
	}
	// DKIM and SPF published: verified by DNS.
	dns.SetTXT("smtpcreds._domainkey.taken.example", "v=DKIM1; k=rsa; p="+key)
	dns.SetTXT("taken.example", "v=spf1 include:_spf.smtpcreds.example ~all")
	o = mustCLI(0, "domains", "verify", "Taken.Example")
	if !strings.Contains(o, "verified by dns") || !strings.Contains(o, "DKIM: ok") || !strings.Contains(o, "SPF: ok") {
		t.Errorf("verify after publishing:\n%s", o)
	}
	if out := lines(mustCLI(0, "domains", "list", "acme")); !strings.HasPrefix(fields(out[1]), "taken.example acme yes (dns) ok ok fail ") {
		t.Errorf("domains list after verify: %q", out[1])
	}

	// The operator's mark stands through a failing check, which reports it.
	if o := mustCLI(0, "domains", "set-verified", "taken.example", "true"); o != "taken.example (account acme): verified yes (operator)\n" {
		t.Errorf("set-verified true: %q", o)
	}
	dns.SetTXT("taken.example", "v=spf1 -all")
	o = mustCLI(0, "domains", "verify", "taken.example")
	if !strings.Contains(o, "verified by operator") || !strings.Contains(o, "SPF: FAIL") || !strings.Contains(o, "the operator's mark keeps it verified") {
		t.Errorf("verify under the mark:\n%s", o)
	}
	// add --verified on the account's existing domain marks it and keeps
	// its key; withdrawn, the domain is unverified.
	if o := mustCLI(0, "domains", "set-verified", "taken.example", "false"); o != "taken.example (account acme): verified no\n" {
		t.Errorf("set-verified false: %q", o)
	}
	if o := mustCLI(0, "domains", "add", "acme", "taken.example", "--verified"); o != "taken.example\n" {
		t.Errorf("add --verified on an existing domain: %q", o)
	}
	var after, by string
	if err := db.QueryRow(`SELECT dkim_public_key, verified_by FROM domains WHERE name = 'taken.example'`).Scan(&after, &by); err != nil {
		t.Fatal(err)
	}
	if after != key || by != "operator" {
		t.Errorf("after add --verified: key kept %v, verified_by %q", after == key, by)
	}
	// Without --verified, an existing domain is refused, pointing at set-verified.
	if _, errOut, code := runCLI(t, env, "domains", "add", "acme", "taken.example"); code != 2 || !strings.Contains(errOut, "smtpcreds domains set-verified DOMAIN true") {
		t.Errorf("add an existing domain: exit %d, %q", code, errOut)
	}

	// credentials list: the header alone, then one row per credential.
	if out := lines(mustCLI(0, "credentials", "list", "acme", "v.example")); len(out) != 1 || fields(out[0]) != "LOGIN GUID ACTIVE SYNCED CREATED" {
		t.Errorf("credentials list of an empty domain: %q", out)
	}
	var acme int64
	if err := db.Get(&acme, `SELECT id FROM accounts WHERE name = 'acme'`); err != nil {
		t.Fatal(err)
	}
	creds := credentials.NewService(db, nil, credentials.Config{Scheme: password.SSHA512})
	var guids []string
	for _, u := range []string{"alpha", "beta"} {
		is, err := creds.Create(context.Background(), acme, "v.example", u)
		if err != nil {
			t.Fatal(err)
		}
		guids = append(guids, is.Credential.GUID.String())
	}
	out = lines(mustCLI(0, "credentials", "list", "ACME", "V.example"))
	if len(out) != 3 || !strings.HasPrefix(fields(out[1]), "alpha@v.example "+guids[0]+" yes ") || !strings.HasPrefix(fields(out[2]), "beta@v.example "+guids[1]+" yes ") {
		t.Errorf("credentials list:\n%s", strings.Join(out, "\n"))
	}
}

// make run's banner says where the docs and the passwd-file are, and how to
// run the CLI against the dev database (a password in the URL masked).
func TestDevBanner(t *testing.T) {
	t.Parallel()
	c := config{DatabaseURL: "postgres://postgres@127.0.0.1:5432/smtpcreds?sslmode=disable",
		Sync: syncConfig{Target: "passwd-file", PasswdFile: ".data/dovecot/passwd"}}
	b := devBanner("127.0.0.1:8080", "smtpk_x", c)
	for _, s := range []string{"docs:    http://127.0.0.1:8080/docs", "passwd-file: .data/dovecot/passwd",
		"DATABASE_URL='postgres://postgres@127.0.0.1:5432/smtpcreds?sslmode=disable' smtpcreds domains list",
		"curl -s -u 'demo:smtpk_x'"} {
		if !strings.Contains(b, s) {
			t.Errorf("banner lacks %q:\n%s", s, b)
		}
	}
	c.DatabaseURL = "postgres://u:secret@db/x"
	if b := devBanner("127.0.0.1:8080", "smtpk_x", c); strings.Contains(b, "secret") {
		t.Errorf("banner shows the database password:\n%s", b)
	}
}
