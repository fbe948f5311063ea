package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/smtp"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smtpcreds/smtpcreds/gen"
	"github.com/smtpcreds/smtpcreds/internal/dbtest"
	"github.com/smtpcreds/smtpcreds/internal/dovecottest"
	"github.com/smtpcreds/smtpcreds/internal/postfixtest"
	"github.com/smtpcreds/smtpcreds/internal/relaytest"
)

// The files operators copy from deploy/, run as they are: `smtpcreds serve`
// with deploy/smtpcreds.env.example, Dovecot with deploy/dovecot and Postfix
// with deploy/postfix, only their paths replaced (postfixtest.Replace fails
// when one it replaces is gone) and their ports (postfixtest.Start). A
// credential made through the API sends mail through Postfix on submission (STARTTLS, AUTH PLAIN and LOGIN)
// and submissions (implicit TLS); nothing is sent without AUTH; a reset
// password and a deleted credential stop working.
func TestDeployFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary, Dovecot and Postfix")
	}
	bin := buildBinary(t)
	for _, target := range []string{"passwd-file", "dovecot-sql"} {
		t.Run(target, func(t *testing.T) {
			t.Parallel()
			deployRun(t, bin, target)
		})
	}
}

// deployRun is one TestDeployFiles case, on a private database, Dovecot
// and Postfix.
func deployRun(t *testing.T, bin, target string) {
	pf := postfixtest.New(t)
	files := dovecottest.TempDir(t)
	env := deployEnv(t, files)
	mustRun(t, bin, env, "migrate")
	token := createToken(t, bin, env, "accounts", "create", "acme")
	mustRun(t, bin, env, "domains", "add", "acme", "acme.example", "--verified")

	var dovecotConf string
	switch target {
	case "passwd-file":
		dovecotConf = postfixtest.Replace(t, readDeploy(t, "dovecot/passwd-file.conf"),
			"/var/spool/postfix", pf.QueueDir(),
			"/var/lib/smtpcreds/passwd/%d", env["SMTPCREDS_PASSWD_FILE"])
	case "dovecot-sql":
		role, connect := dovecotRole(t, env["DATABASE_URL"])
		delete(env, "SMTPCREDS_PASSWD_FILE")
		delete(env, "SMTPCREDS_PASSWD_FILE_GROUP")
		env["SMTPCREDS_SYNC_TARGET"] = "dovecot-sql"
		env["SMTPCREDS_DOVECOT_SQL_ROLE"] = role
		exts := map[string]string{}
		for _, name := range []string{"dovecot-sql.conf.ext", "dovecot-sql-previous.conf.ext"} {
			exts[name] = filepath.Join(files, name)
			text := postfixtest.Replace(t, readDeploy(t, "dovecot/"+name),
				"host=db.internal dbname=smtpcreds user=dovecot password=CHANGE-ME sslmode=verify-full", connect)
			if err := os.WriteFile(exts[name], []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		dovecotConf = postfixtest.Replace(t, readDeploy(t, "dovecot/dovecot-sql.conf"),
			"/var/spool/postfix", pf.QueueDir(),
			"/etc/dovecot/dovecot-sql.conf.ext", exts["dovecot-sql.conf.ext"],
			"/etc/dovecot/dovecot-sql-previous.conf.ext", exts["dovecot-sql-previous.conf.ext"])
	}
	dc := dovecottest.Start(t, dovecottest.Options{Config: dovecotConf})
	// The milter, as its unit runs it, on a port of the test's.
	env["SMTPCREDS_MILTER_ADDR"] = "inet:127.0.0.1:0"
	mil := startMilter(t, bin, env)
	env["SMTPCREDS_MILTER_ADDR"] = "inet:" + mil.addr
	pf.Start(t, postfixtest.Options{
		MainCF: postfixtest.Replace(t, readDeploy(t, "postfix/main.cf"),
			"/etc/letsencrypt/live/mail.example.net/fullchain.pem", pf.CertFile(),
			"/etc/letsencrypt/live/mail.example.net/privkey.pem", pf.KeyFile(),
			relaytest.DeployMilter, env["SMTPCREDS_MILTER_ADDR"]),
		// Start moves submission and submissions to free ports.
		MasterCF: readDeploy(t, "postfix/master.cf"),
	})
	serveEnv := maps.Clone(env)
	delete(serveEnv, "SMTPCREDS_MILTER_ADDR") // serve would host a second milter
	srv := startServer(t, bin, serveEnv)
	api := newClient(t, srv.addr, "acme", token)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Dovecot re-reads a passwd-file at most once a second (see
	// dovecottest): a test expecting a change waits for a later second
	// than its last login. The SQL passdb reads the view at every login.
	mail := &mailer{t: t, pf: pf, dc: dc, waits: target == "passwd-file"}

	user := "mailer"
	cr, err := api.CreateCredentialWithResponse(ctx, "acme.example", nil, gen.CredentialInput{Username: &user})
	wantStatus(t, "create", cr, err, http.StatusCreated)
	if !cr.JSON201.Data.RemoteSynced {
		t.Fatalf("create: remote_synced false: Dovecot's %s does not have it; server log:\n%s", target, srv.logText())
	}
	login, pw := cr.JSON201.Data.Credential.Login, cr.JSON201.Data.Password
	guid := cr.JSON201.Data.Credential.UserSmtpGuid

	// Submission (587): AUTH only after STARTTLS, nothing without AUTH.
	c := mail.dial(postfixtest.Submission)
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("submission offers AUTH before STARTTLS")
	}
	if err := c.Mail(login); err == nil || !strings.Contains(err.Error(), "STARTTLS") {
		t.Errorf("submission: MAIL before STARTTLS: %v, want a refusal asking for STARTTLS", err)
	}
	c.Close()
	c = mail.dialTLS(postfixtest.Submission)
	if ok, mechs := c.Extension("AUTH"); !ok || !strings.Contains(mechs, "PLAIN") || !strings.Contains(mechs, "LOGIN") {
		t.Errorf("submission after STARTTLS: AUTH %q, want PLAIN and LOGIN", mechs)
	}
	if err := mail.send(c, login, "no auth"); err == nil || !strings.HasPrefix(err.Error(), "5") {
		t.Errorf("submission without AUTH: %v, want a 5xx refusal", err)
	}
	c.Close()

	mail.sendAs(postfixtest.Submission, smtp.PlainAuth("", login, pw, "127.0.0.1"), login, "plain on submission")
	mail.sendAs(postfixtest.Submission, loginAuth{login, pw}, login, "login on submission")
	mail.sendAs(postfixtest.Submissions, smtp.PlainAuth("", login, pw, "127.0.0.1"), login, "plain on submissions")
	mail.sendAs(postfixtest.Submissions, loginAuth{login, pw}, login, "login on submissions")
	mail.refused(postfixtest.Submission, smtp.PlainAuth("", login, pw+"x", "127.0.0.1"), "a wrong password")
	// Every message above went through the milter: signed by acme.example.
	for _, m := range pf.Messages() {
		if !strings.Contains(m.Data, "DKIM-Signature:") || !strings.Contains(m.Data, "d=acme.example;") {
			t.Errorf("a message reached the sink without acme.example's signature:\n%s", m.Data)
		}
	}
	// Another domain's sender is refused, and nothing is sent.
	c = mail.dialTLS(postfixtest.Submission)
	if err := mail.auth(c, smtp.PlainAuth("", login, pw, "127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	if err := mail.send(c, "ceo@bank.example", "spoof"); err == nil || !strings.Contains(err.Error(), "5.7.1") {
		t.Errorf("sender of another domain: %v, want a 5.7.1 refusal", err)
	}
	c.Close()

	// The milter down: Postfix's milter_default_action = tempfail tells
	// clients to retry, and nothing leaves; back up, the retry passes.
	mil.stop(t)
	c = mail.dial(postfixtest.Submission)
	err = c.StartTLS(pf.TLSConfig()) // Postfix refuses the session's commands from its start
	if err == nil {
		if err = mail.auth(c, smtp.PlainAuth("", login, pw, "127.0.0.1")); err == nil {
			err = mail.send(c, login, "milter down")
		}
	}
	if err == nil || !strings.HasPrefix(err.Error(), "4") {
		t.Errorf("milter down: %v, want a 4xx temporary failure", err)
	}
	c.Close()
	mil = startMilter(t, bin, env)
	mail.sendAs(postfixtest.Submission, smtp.PlainAuth("", login, pw, "127.0.0.1"), login, "milter back")
	for _, m := range pf.Messages() {
		if strings.Contains(m.Data, "Subject: milter down\r\n") || strings.Contains(m.Data, "Subject: spoof\r\n") {
			t.Errorf("a refused message reached the sink:\n%s", m.Data)
		}
	}

	// Port 25 is for other servers: no AUTH, and no relaying.
	c = mail.dialTLS(postfixtest.SMTP)
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("port 25 offers AUTH")
	}
	if err := mail.send(c, login, "relay on 25"); err == nil || !strings.Contains(err.Error(), "Relay access denied") {
		t.Errorf("port 25 relays without AUTH: %v", err)
	}
	c.Close()

	rr, err := api.ResetCredentialPasswordWithResponse(ctx, "acme.example", guid, nil, gen.ResetCredentialPasswordJSONRequestBody{})
	wantStatus(t, "reset-password", rr, err, http.StatusOK)
	if !rr.JSON200.Data.RemoteSynced {
		t.Fatalf("reset: remote_synced false; server log:\n%s", srv.logText())
	}
	newPW := rr.JSON200.Data.NewPassword
	mail.waitNextSecond()
	mail.refused(postfixtest.Submission, smtp.PlainAuth("", login, pw, "127.0.0.1"), "the password before the reset")
	mail.sendAs(postfixtest.Submission, loginAuth{login, newPW}, login, "after reset")

	// Rotation with a grace period: the second passdb of the deploy files
	// keeps the replaced password working beside the new one.
	grace := 3600
	rr, err = api.ResetCredentialPasswordWithResponse(ctx, "acme.example", guid, nil,
		gen.ResetCredentialPasswordJSONRequestBody{GracePeriodSeconds: &grace})
	wantStatus(t, "reset-password with a grace period", rr, err, http.StatusOK)
	if !rr.JSON200.Data.RemoteSynced || rr.JSON200.Data.Credential.PreviousPasswordExpiresAt == nil {
		t.Fatalf("reset with grace: %+v; server log:\n%s", rr.JSON200.Data, srv.logText())
	}
	oldPW := newPW
	newPW = rr.JSON200.Data.NewPassword
	mail.waitNextSecond()
	mail.sendAs(postfixtest.Submission, smtp.PlainAuth("", login, newPW, "127.0.0.1"), login, "new password in the grace period")
	mail.sendAs(postfixtest.Submission, smtp.PlainAuth("", login, oldPW, "127.0.0.1"), login, "old password in the grace period")

	dr, err := api.DeleteCredentialWithResponse(ctx, "acme.example", guid)
	wantStatus(t, "delete", dr, err, http.StatusOK)
	mail.waitNextSecond()
	mail.refused(postfixtest.Submissions, smtp.PlainAuth("", login, newPW, "127.0.0.1"), "a deleted credential")

	if t.Failed() {
		t.Logf("dovecot log:\n%s\npostfix log:\n%s", dc.Log(), pf.Log())
	}
	srv.stop(t)
	mil.stop(t)
}

// deployEnv reads deploy/smtpcreds.env.example and replaces only what must
// be the test's: the database, the key files, the address and the
// passwd-file path (under files), and the group unless the test is root.
// Every other setting is the file's.
func deployEnv(t *testing.T, files string) map[string]string {
	t.Helper()
	env := parseEnvFile(t, "smtpcreds.env.example", readDeploy(t, "smtpcreds.env.example"))
	keys := t.TempDir()
	set := map[string]string{
		"DATABASE_URL":             emptyDatabase(t),
		"SMTPCREDS_TOKEN_KEY_FILE": filepath.Join(keys, "token.key"),
		"SMTPCREDS_DKIM_KEY_FILE":  filepath.Join(keys, "dkim.key"),
		"SMTPCREDS_ADDR":           "127.0.0.1:0",
		// A directory smtpcreds creates, as in production.
		"SMTPCREDS_PASSWD_FILE": filepath.Join(files, "passwd", "%d"),
	}
	for k, v := range set {
		if _, ok := env[k]; !ok {
			t.Fatalf("smtpcreds.env.example does not set %s", k)
		}
		env[k] = v
	}
	for _, k := range []string{"SMTPCREDS_TOKEN_KEY_FILE", "SMTPCREDS_DKIM_KEY_FILE"} {
		if err := os.WriteFile(env[k], []byte(randomHexKey(t)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if os.Geteuid() != 0 {
		// Dovecot then runs as this user, who needs no group.
		delete(env, "SMTPCREDS_PASSWD_FILE_GROUP")
	}
	return env
}

// parseEnvFile reads an environment file as the unit's EnvironmentFile=
// does for the files we ship: NAME=value lines, comments and blank lines
// skipped, a later line winning. It fails the test on any other line.
func parseEnvFile(t *testing.T, name, text string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t\"'") {
			t.Fatalf("%s:%d: %q is not NAME=value", name, i+1, line)
		}
		env[k] = v
	}
	return env
}

// readDeploy returns a file of deploy/.
func readDeploy(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", filepath.FromSlash(name)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// dovecotRole creates a role that may read the dovecot_passdb view of the
// database at dbURL and nothing else (as deploy/dovecot/dovecot-sql.conf.ext
// says) and returns its name and Dovecot's connect string for it.
func dovecotRole(t *testing.T, dbURL string) (role, connect string) {
	t.Helper()
	role, pw := dbtest.ViewReader(t, dbURL, "dovecot_passdb")
	u, err := url.Parse(dbURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("Dovecot's connect string is made from the test database's postgres:// URL; it is not one (%v)", err)
	}
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	return role, fmt.Sprintf("host=%s port=%s dbname=%s user=%s password=%s sslmode=disable",
		u.Hostname(), port, strings.TrimPrefix(u.Path, "/"), role, pw)
}

// mailer sends through Postfix as a mail client would.
type mailer struct {
	t     *testing.T
	pf    *postfixtest.Server
	dc    *dovecottest.Server
	waits bool // the passdb is a passwd-file, re-read at most once a second

	mu       sync.Mutex
	lastAuth time.Time // when the last AUTH exchange ended
}

// dial connects to a service and says EHLO; with implicit TLS on
// submissions.
func (m *mailer) dial(service string) *smtp.Client {
	m.t.Helper()
	conn, err := net.DialTimeout("tcp", m.pf.Addr(service), 10*time.Second)
	if err != nil {
		m.t.Fatal(err)
	}
	// Dovecot delays failures (auth_failure_delay, 2 s) and, after
	// failures from one address, every login from it (up to 15 s).
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	if service == postfixtest.Submissions {
		conn = tls.Client(conn, m.pf.TLSConfig())
	}
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		m.t.Fatalf("%s: %v\n%s", service, err, m.pf.Log())
	}
	if err := c.Hello("client.test"); err != nil {
		m.t.Fatalf("%s: EHLO: %v", service, err)
	}
	return c
}

// dialTLS is dial, then STARTTLS unless the service is implicit TLS.
func (m *mailer) dialTLS(service string) *smtp.Client {
	m.t.Helper()
	c := m.dial(service)
	if service != postfixtest.Submissions {
		if err := c.StartTLS(m.pf.TLSConfig()); err != nil {
			m.t.Fatalf("%s: STARTTLS: %v\n%s", service, err, m.pf.Log())
		}
	}
	return c
}

// auth runs AUTH and notes when it ended.
func (m *mailer) auth(c *smtp.Client, a smtp.Auth) error {
	defer func() {
		m.mu.Lock()
		m.lastAuth = time.Now()
		m.mu.Unlock()
	}()
	return c.Auth(a)
}

// send sends a message with subject from sender to a recipient on another
// domain (which only an authenticated client may relay to).
func (m *mailer) send(c *smtp.Client, from, subject string) error {
	if err := c.Mail(from); err != nil {
		return err
	}
	if err := c.Rcpt("someone@rcpt.example"); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, "From: <%s>\r\nTo: <someone@rcpt.example>\r\nSubject: %s\r\n\r\nsent by TestDeployFiles\r\n", from, subject); err != nil {
		return err
	}
	return w.Close()
}

// sendAs authenticates on service and sends a message, which must reach
// the sink.
func (m *mailer) sendAs(service string, a smtp.Auth, from, subject string) {
	m.t.Helper()
	c := m.dialTLS(service)
	defer c.Close()
	if err := m.auth(c, a); err != nil {
		m.t.Fatalf("%s: AUTH for %q: %v\n--- dovecot log ---\n%s\n--- postfix log ---\n%s", service, subject, err, m.dc.Log(), m.pf.Log())
	}
	if err := m.send(c, from, subject); err != nil {
		m.t.Fatalf("%s: sending %q after AUTH: %v\n%s", service, subject, err, m.pf.Log())
	}
	_ = c.Quit()
	got := m.pf.WaitMessage(m.t, 30*time.Second, func(msg postfixtest.Message) bool {
		return strings.Contains(msg.Data, "\r\nSubject: "+subject+"\r\n")
	})
	if got.From != from || len(got.To) != 1 || got.To[0] != "someone@rcpt.example" {
		m.t.Errorf("%s: %q reached the sink as %v", service, subject, got)
	}
}

// refused checks that AUTH fails with 535 (wrong credentials), and that
// nothing can be sent on that connection.
func (m *mailer) refused(service string, a smtp.Auth, what string) {
	m.t.Helper()
	c := m.dialTLS(service)
	defer c.Close()
	err := m.auth(c, a)
	if err == nil || !strings.HasPrefix(err.Error(), "535") {
		m.t.Errorf("%s: AUTH with %s: %v, want 535", service, what, err)
		return
	}
	if err := m.send(c, "x@acme.example", "after a refused AUTH"); err == nil {
		m.t.Errorf("%s: a message was accepted after AUTH with %s was refused", service, what)
	}
}

// waitNextSecond lets the wall clock pass into a later second than the
// last AUTH, so that Dovecot looks at a changed passwd-file again (see
// dovecottest.Server.WaitNextSecond; here the logins go through Postfix).
func (m *mailer) waitNextSecond() {
	if !m.waits {
		return
	}
	m.mu.Lock()
	last := m.lastAuth
	m.mu.Unlock()
	next := last.Truncate(time.Second).Add(time.Second + 20*time.Millisecond)
	if d := time.Until(next); d > 0 {
		time.Sleep(d)
	}
}

// loginAuth is SMTP AUTH LOGIN (net/smtp has only PLAIN and CRAM-MD5):
// the server asks for "Username:" and "Password:", base64-encoded.
type loginAuth struct{ user, pass string }

func (a loginAuth) Start(si *smtp.ServerInfo) (string, []byte, error) {
	if !si.TLS {
		return "", nil, errors.New("AUTH LOGIN without TLS")
	}
	return "LOGIN", nil, nil
}

func (a loginAuth) Next(challenge []byte, more bool) ([]byte, error) {
	if !more {
		return nil, nil
	}
	switch strings.ToLower(strings.TrimSpace(string(challenge))) {
	case "username:":
		return []byte(a.user), nil
	case "password:":
		return []byte(a.pass), nil
	}
	return nil, fmt.Errorf("AUTH LOGIN: unexpected challenge %q", challenge)
}
