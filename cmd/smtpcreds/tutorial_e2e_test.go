package main

import (
	"bufio"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/smtpcreds/smtpcreds/internal/dnstest"
	"github.com/smtpcreds/smtpcreds/internal/dovecottest"
	"github.com/smtpcreds/smtpcreds/internal/postfixtest"
	"github.com/smtpcreds/smtpcreds/internal/relaytest"
)

// tutorialSkips names every step of the README's tutorial that
// TestTutorial does not run, and what stands in for it. Each changes the
// host (packages, users, /etc/dovecot, /etc/postfix) or needs systemd,
// which cannot run here. Every other step runs.
var tutorialSkips = map[string]string{
	"packages": "apt-get: .ci/run installs the same packages on the test machine",
	"build": "buildBinary compiles this package once (make build adds only the version stamp) and the shell finds it first on PATH; " +
		"no system user is added, so the sandbox's files get group root (see the substitutions)",
	"database": "dbtest's PostgreSQL stands in for Debian's, with an empty database owned by a new role that is not a superuser " +
		"(ownedDatabase): step configure writes its URL (see the substitutions)",
	"service": "systemd cannot run here: the test starts `smtpcreds serve` with the environment file step configure wrote, " +
		"read as the unit's EnvironmentFile= reads it",
	"dovecot": "systemd cannot run here, nor /etc/dovecot be replaced: dovecottest runs deploy/dovecot/passwd-file.conf " +
		"with only its two paths replaced, as TestDeployFiles does",
	"milter": "systemd cannot run here: the test starts `smtpcreds milter` with the environment file step configure wrote, " +
		"on a port of its own, which step postfix's main.cf is given",
	"postfix": "systemd cannot run here, nor /etc/postfix be changed: postfixtest runs deploy/postfix/main.cf and master.cf " +
		"with only the certificate paths and the ports replaced, as TestDeployFiles does",
}

// TestTutorial runs the README's "From zero to an authenticated SMTP send"
// as written: its shell blocks (each marked <!-- tutorial-step: NAME -->)
// run in order in one bash session, under set -euo pipefail, from the top
// of the repository, so that a variable one step sets is there for the
// next, as in an operator's terminal. Only what a test machine cannot do
// differs, all of it listed here and checked against the README:
//
//   - the steps of tutorialSkips are not run; the fixtures named there
//     stand in for them, started at that point of the tutorial;
//   - a few strings of the steps that run are substituted (the sandbox's
//     /etc, its database, the API's and Postfix's ports); the test fails
//     when one no longer occurs in its step (postfixtest.Replace);
//   - after step configure, the settings that must be the sandbox's are
//     appended to the environment file it wrote (a later line wins): the
//     key files, the API's address, the passwd-file directory and the DNS
//     resolver, which is dnstest's;
//   - the one step that is not a command, publishing the records at a DNS
//     provider, is done by the test: it publishes in dnstest exactly the
//     lines step records printed.
//
// What it proves: the domain verifies, the login is synced, and swaks
// authenticates (235, PLAIN and LOGIN) and sends through Postfix, whose
// sink receives both messages; a wrong password gets 535.
func TestTutorial(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary, Dovecot and Postfix")
	}
	steps := readTutorial(t, filepath.Join("..", "..", "README.md"))
	bin := buildBinary(t)
	t.Parallel()

	sandbox := dovecottest.TempDir(t) // Dovecot's user must reach the passwd-files
	etc := filepath.Join(sandbox, "etc", "smtpcreds")
	stateDir := filepath.Join(sandbox, "var", "lib", "smtpcreds") // systemd's StateDirectory=
	for _, d := range []string{filepath.Dir(etc), stateDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	passwd := filepath.Join(stateDir, "passwd", "%d")
	dbURL := ownedDatabase(t)
	dns := dnstest.Start(t)
	pf := postfixtest.New(t)

	// The substitutions, per step. The API's port is the kernel's pick,
	// and Postfix's submission port is only final once it runs: those
	// steps are substituted when their fixture is up (nil here).
	subs := map[string][]string{
		"configure": {
			"/etc/smtpcreds", etc,
			"-g smtpcreds", "-g root", // no smtpcreds user (step build)
			"chgrp smtpcreds", "chgrp root",
			"postgres://smtpcreds:$DB_PASSWORD@localhost/smtpcreds?sslmode=require", dbURL, // step database
		},
		"migrate": {"/etc/smtpcreds", etc},
		"ready":   nil, // "127.0.0.1:8080": the server's address, at step service
		"domain":  nil, // the same
		"send":    nil, // "mx.$RELAY:587": Postfix's submission address, at step send
	}
	names := map[string]bool{}
	for _, s := range steps {
		names[s.name] = true
	}
	for name := range tutorialSkips {
		if !names[name] {
			t.Errorf("tutorialSkips names step %q, which the README does not have", name)
		}
	}
	for name := range subs {
		if !names[name] || tutorialSkips[name] != "" {
			t.Errorf("substitutions for step %q, which the README does not have or the test skips", name)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	sh := startTutorialShell(t, bin)
	var (
		srv   *server
		mil   *server
		dc    *dovecottest.Server
		login string
	)
	for _, step := range steps {
		if why, ok := tutorialSkips[step.name]; ok {
			t.Logf("step %s (README.md:%d): not run: %s", step.name, step.line, why)
		}
		switch step.name {
		case "service":
			env := parseEnvFile(t, "smtpcreds.env", readFile(t, filepath.Join(etc, "smtpcreds.env")))
			srv = startServer(t, bin, env)
			subs["ready"] = []string{"127.0.0.1:8080", srv.addr}
			subs["domain"] = subs["ready"]
			continue
		case "dovecot":
			dc = dovecottest.Start(t, dovecottest.Options{Config: postfixtest.Replace(t, readDeploy(t, "dovecot/passwd-file.conf"),
				"/var/spool/postfix", pf.QueueDir(),
				"/var/lib/smtpcreds/passwd/%d", passwd)})
			continue
		case "milter":
			env := parseEnvFile(t, "smtpcreds.env", readFile(t, filepath.Join(etc, "smtpcreds.env")))
			env["SMTPCREDS_MILTER_ADDR"] = "inet:127.0.0.1:0"
			mil = startMilter(t, bin, env)
			continue
		case "postfix":
			if mil == nil {
				t.Fatal("step postfix comes before step milter")
			}
			pf.Start(t, postfixtest.Options{
				MainCF: postfixtest.Replace(t, readDeploy(t, "postfix/main.cf"),
					"/etc/letsencrypt/live/mail.example.net/fullchain.pem", pf.CertFile(),
					"/etc/letsencrypt/live/mail.example.net/privkey.pem", pf.KeyFile(),
					relaytest.DeployMilter, "inet:"+mil.addr),
				MasterCF: readDeploy(t, "postfix/master.cf"),
			})
			continue
		case "send":
			if dc == nil {
				t.Fatal("step send comes before step dovecot")
			}
			subs["send"] = []string{"mx.$RELAY:587", pf.Addr(postfixtest.Submission)}
		}
		if _, skipped := tutorialSkips[step.name]; skipped {
			continue
		}
		script := step.script
		if pairs, ok := subs[step.name]; ok {
			if pairs == nil {
				t.Fatalf("step %s runs before the fixture its substitution needs", step.name)
			}
			script = postfixtest.Replace(t, script, pairs...)
		}
		out := sh.run(step, script)

		switch step.name {
		case "configure":
			sandboxSettings(t, filepath.Join(etc, "smtpcreds.env"), dbURL,
				"SMTPCREDS_TOKEN_KEY_FILE="+filepath.Join(etc, "token.key"),
				"SMTPCREDS_DKIM_KEY_FILE="+filepath.Join(etc, "dkim.key"),
				"SMTPCREDS_ADDR=127.0.0.1:0", // serve logs the port it got
				"SMTPCREDS_PASSWD_FILE="+passwd)
			appendFile(t, filepath.Join(etc, "smtpcreds.env"),
				"# TestTutorial: the sandbox's resolver, where it publishes the records\nSMTPCREDS_DNS_RESOLVER="+dns.Addr()+"\n")
		case "ready":
			if !strings.Contains(out, `"status":"ready"`) {
				t.Fatalf("step ready: %q, want status ready; server log:\n%s", out, srv.logText())
			}
		case "records":
			publish(t, dns, out)
		case "verify":
			var got struct {
				IsVerified bool     `json:"is_verified"`
				Problems   []string `json:"problems"`
			}
			if err := json.Unmarshal([]byte(out), &got); err != nil || !got.IsVerified || len(got.Problems) > 0 {
				t.Fatalf("step verify printed %q (%v), want is_verified true and no problems", out, err)
			}
		case "login":
			var got struct {
				Login        string `json:"login"`
				RemoteSynced bool   `json:"remote_synced"`
			}
			if err := json.Unmarshal([]byte(out), &got); err != nil || got.Login != "newsletter@mail.acme.example" || !got.RemoteSynced {
				t.Fatalf("step login printed %q (%v), want newsletter@mail.acme.example, remote_synced true; server log:\n%s", out, err, srv.logText())
			}
			login = got.Login
		case "send":
			checkSent(t, pf, dc, out, login)
			// A wrong password, in the same session: not in the README,
			// whose blocks stop at the first failure.
			out = sh.run(tutorialStep{name: "wrong-password"},
				`swaks --server `+pf.Addr(postfixtest.Submission)+` --tls --auth PLAIN --auth-user "$LOGIN" --auth-password "${PASSWORD}x" --from "$LOGIN" --to "$TO" || echo "swaks exit $?"`)
			if !strings.Contains(out, "535 5.7.8 Error: authentication failed") || !strings.Contains(out, "swaks exit ") || strings.Contains(out, "Ok: queued") {
				t.Errorf("swaks with a wrong password: want 535 and a failure exit, got:\n%s", out)
			}
		}
	}
	if srv == nil || login == "" {
		t.Fatal("the tutorial neither started the server nor created a login")
	}
	srv.stop(t)
	mil.stop(t)
}

// ownedDatabase stands in for the tutorial's step database: an empty
// database owned by a new role that is not a superuser and logs in with a
// password, as Debian's PostgreSQL gets it there. It returns its URL. The
// role is dropped when the test ends.
func ownedDatabase(t *testing.T) string {
	t.Helper()
	adminURL := emptyDatabase(t)
	db, err := sql.Open("postgres", adminURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var name string
	if err := db.QueryRow(`SELECT current_database()`).Scan(&name); err != nil {
		t.Fatal(err)
	}
	role := "smtpcreds_" + strings.ToLower(rand.Text()[:10])
	pw := strings.ToLower(rand.Text())
	if _, err := db.Exec(`CREATE ROLE ` + role + ` LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD ` + pq.QuoteLiteral(pw)); err != nil {
		var pqErr *pq.Error
		if errors.As(err, &pqErr) && pqErr.Code == "42501" {
			t.Skipf("the test database server does not let this user create the tutorial's role: %v", err)
		}
		t.Fatal(err)
	}
	// Registered after db's Close and emptyDatabase's drop, so it runs
	// first: the database is handed back before the role is dropped.
	t.Cleanup(func() {
		for _, q := range []string{`ALTER DATABASE ` + pq.QuoteIdentifier(name) + ` OWNER TO CURRENT_USER`, `DROP OWNED BY ` + role, `DROP ROLE ` + role} {
			if _, err := db.Exec(q); err != nil {
				t.Errorf("%s: %v", q, err)
			}
		}
	})
	if _, err := db.Exec(`ALTER DATABASE ` + pq.QuoteIdentifier(name) + ` OWNER TO ` + role); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(adminURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("the tutorial's URL is made from the test database's postgres:// URL; it is not one (%v)", err)
	}
	u.User = url.UserPassword(role, pw)
	return u.String()
}

// tutorialStep is one marked shell block of the README.
type tutorialStep struct {
	name   string
	line   int // of the marker, 1-based
	script string
}

var (
	stepMarker  = regexp.MustCompile(`^\s*<!-- tutorial-step: ([a-z][a-z0-9-]*) -->\s*$`)
	tutorialH2  = "## From zero to an authenticated SMTP send"
	fenceOpenSh = "```sh"
)

// readTutorial returns the marked blocks of the README's tutorial section,
// in order, each without the indentation of its fence. It fails the test
// when a marker is not followed by a ```sh block, a name repeats, or a ```sh
// block of the section has no marker (it would silently not run).
func readTutorial(t *testing.T, path string) []tutorialStep {
	t.Helper()
	lines := strings.Split(readFile(t, path), "\n")
	var steps []tutorialStep
	seen := map[string]bool{}
	inSection := false
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if strings.HasPrefix(line, "## ") {
			inSection = line == tutorialH2
			continue
		}
		if strings.TrimSpace(line) == fenceOpenSh && inSection {
			t.Fatalf("%s:%d: a sh block of the tutorial without a <!-- tutorial-step: NAME --> marker", path, i+1)
		}
		m := stepMarker.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if !inSection {
			t.Fatalf("%s:%d: step marker outside %q", path, i+1, tutorialH2)
		}
		step := tutorialStep{name: m[1], line: i + 1}
		if seen[step.name] {
			t.Fatalf("%s:%d: step %q again", path, i+1, step.name)
		}
		seen[step.name] = true
		j := i + 1
		for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
			j++
		}
		if j == len(lines) || strings.TrimSpace(lines[j]) != fenceOpenSh {
			t.Fatalf("%s:%d: step %q is not followed by a %s block", path, i+1, step.name, fenceOpenSh)
		}
		indent := lines[j][:strings.Index(lines[j], fenceOpenSh)]
		var body []string
		for j++; ; j++ {
			if j == len(lines) {
				t.Fatalf("%s:%d: step %q: the block never ends", path, i+1, step.name)
			}
			if strings.TrimSpace(lines[j]) == "```" {
				break
			}
			if strings.TrimSpace(lines[j]) != "" && !strings.HasPrefix(lines[j], indent) {
				t.Fatalf("%s:%d: step %q: a line indented less than its fence", path, j+1, step.name)
			}
			body = append(body, strings.TrimPrefix(lines[j], indent))
		}
		step.script = strings.Join(body, "\n") + "\n"
		steps = append(steps, step)
		i = j
	}
	if len(steps) == 0 {
		t.Fatalf("%s: no tutorial steps under %q", path, tutorialH2)
	}
	return steps
}

// tutorialShell is one bash session in which the steps run, as in an
// operator's terminal.
type tutorialShell struct {
	t     *testing.T
	stdin io.WriteCloser
	lines chan string // stdout and stderr, interleaved as written
	dir   string      // the step scripts
	n     int
}

// stepDone ends each step's output.
const stepDone = "@@tutorial-step-done@@"

// startTutorialShell starts bash in the repository's top directory, with
// set -euo pipefail, the test's environment without smtpcreds settings
// (childEnv) and bin's directory first on PATH.
func startTutorialShell(t *testing.T, bin string) *tutorialShell {
	t.Helper()
	top, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "--noprofile", "--norc")
	cmd.Dir = top
	cmd.Env = childEnv(map[string]string{"PATH": filepath.Dir(bin) + string(os.PathListSeparator) + os.Getenv("PATH")})
	cmd.Stdout, cmd.Stderr = w, w
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("bash: %v", err)
	}
	w.Close()
	sh := &tutorialShell{t: t, stdin: stdin, lines: make(chan string, 4096), dir: t.TempDir()}
	go func() {
		defer close(sh.lines)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64*1024), 4<<20)
		for sc.Scan() {
			sh.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		r.Close()
	})
	if _, err := io.WriteString(stdin, "set -euo pipefail\n"); err != nil {
		t.Fatal(err)
	}
	return sh
}

// run sources script in the session (stdin from /dev/null, so that no
// command reads the session's input) and returns what it printed. It
// fails the test when the shell exits, which set -e makes it do at the
// first failing command, or when the step takes over three minutes.
func (sh *tutorialShell) run(step tutorialStep, script string) string {
	sh.t.Helper()
	sh.n++
	file := filepath.Join(sh.dir, fmt.Sprintf("%02d.sh", sh.n))
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		sh.t.Fatal(err)
	}
	where := "the test's own"
	if step.line > 0 {
		where = fmt.Sprintf("README.md:%d", step.line)
	}
	sh.t.Logf("step %s (%s):\n%s", step.name, where, script)
	if _, err := fmt.Fprintf(sh.stdin, "source %s </dev/null\nprintf '\\n%s\\n'\n", file, stepDone); err != nil {
		sh.t.Fatalf("step %s: writing to the shell: %v", step.name, err)
	}
	var out []string
	timeout := time.After(3 * time.Minute)
	for {
		select {
		case line, ok := <-sh.lines:
			if !ok {
				sh.t.Fatalf("step %s: a command failed and the shell exited; output:\n%s", step.name, strings.Join(out, "\n"))
			}
			if line == stepDone {
				text := strings.TrimSuffix(strings.Join(out, "\n"), "\n")
				sh.t.Logf("step %s printed:\n%s", step.name, text)
				return text
			}
			out = append(out, line)
		case <-timeout:
			sh.t.Fatalf("step %s: still running after 3 minutes; output:\n%s", step.name, strings.Join(out, "\n"))
		}
	}
}

// sandboxSettings checks what step configure made of the environment file
// (the database it substituted, the relay's name in place of the
// example's) and appends lines that override the settings, each of which
// the file must already set.
func sandboxSettings(t *testing.T, path, dbURL string, lines ...string) {
	t.Helper()
	env := parseEnvFile(t, path, readFile(t, path))
	if env["DATABASE_URL"] != dbURL {
		t.Fatalf("step configure left DATABASE_URL=%q, want the substituted %q", env["DATABASE_URL"], dbURL)
	}
	if env["SMTPCREDS_SPF_INCLUDE"] != "_spf.relay.example.net" || env["SMTPCREDS_MX_HOST"] != "mx.relay.example.net" {
		t.Fatalf("step configure: SPF include %q, MX host %q, want the relay's", env["SMTPCREDS_SPF_INCLUDE"], env["SMTPCREDS_MX_HOST"])
	}
	text := "\n# TestTutorial: the sandbox's paths and address\n"
	for _, l := range lines {
		k, _, _ := strings.Cut(l, "=")
		if _, ok := env[k]; !ok {
			t.Fatalf("step configure wrote no %s for the test to override", k)
		}
		text += l + "\n"
	}
	appendFile(t, path, text)
}

// publish does the tutorial's one manual step: it publishes in dns the
// records step records printed, one "name<TAB>type<TAB>value" a line (MX
// values "priority host"), as an operator would at a DNS provider.
func publish(t *testing.T, dns *dnstest.Server, printed string) {
	t.Helper()
	types := map[string]int{}
	for _, line := range strings.Split(printed, "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 3 {
			t.Fatalf("step records printed %q, want name, type and value separated by tabs", line)
		}
		switch f[1] {
		case "TXT":
			dns.SetTXT(f[0], f[2])
		case "MX":
			prio, host, ok := strings.Cut(f[2], " ")
			if !ok || prio == "" {
				t.Fatalf("step records printed MX %q, want \"priority host\"", f[2])
			}
			dns.SetMX(f[0], host) // preference 10, the one record
		default:
			t.Fatalf("step records printed a %s record, which the test cannot publish", f[1])
		}
		types[f[1]]++
	}
	if types["TXT"] != 2 || types["MX"] != 1 {
		t.Fatalf("step records printed %v records, want DKIM and SPF TXT and one MX:\n%s", types, printed)
	}
}

// checkSent checks swaks' output of step send (two sends, each with a
// successful AUTH) and that both messages reached Postfix's sink.
func checkSent(t *testing.T, pf *postfixtest.Server, dc *dovecottest.Server, out, login string) {
	t.Helper()
	if n := strings.Count(out, "<~  235 "); n != 2 {
		t.Errorf("step send: %d AUTH answered 235, want 2 (PLAIN and LOGIN)", n)
	}
	if n := strings.Count(out, "<~  250 2.0.0 Ok: queued"); n != 2 {
		t.Errorf("step send: %d messages queued, want 2", n)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got int
		for _, m := range pf.Messages() {
			if m.From == login && len(m.To) == 1 && m.To[0] == "you@example.org" {
				got++
			}
		}
		if got == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sink has %d of the 2 messages from %s after 30s\n--- dovecot log ---\n%s\n--- postfix log ---\n%s", got, login, dc.Log(), pf.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, domain, _ := strings.Cut(login, "@")
	for _, m := range pf.Messages() {
		if m.From == login && (!strings.Contains(m.Data, "DKIM-Signature:") || !strings.Contains(m.Data, "d="+domain+";")) {
			t.Errorf("a message from %s reached the sink without %s's DKIM signature:\n%s", login, domain, m.Data)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
