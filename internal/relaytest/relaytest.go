// Package relaytest runs the relay operators build from deploy/: a private
// Postfix (internal/postfixtest) with deploy/postfix/main.cf and master.cf
// as written, whose submission services hand SMTP AUTH to a real Dovecot
// (internal/dovecottest) running deploy/dovecot/passwd-file.conf, and pass
// authenticated mail to the milter at Options.Milter. Only paths and ports
// are replaced (postfixtest.Replace fails when a replaced string is gone).
// Delivery goes to postfixtest's sink.
//
// The passwd-file holds the logins the test gives, with their passwords in
// Dovecot's {PLAIN} scheme: the relay's behaviour after AUTH is what these
// tests are about; the sync of real hashes is tested with the deploy files
// in cmd/smtpcreds.
package relaytest

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/dovecottest"
	"github.com/smtpcreds/smtpcreds/internal/postfixtest"
)

// DeployMilter is the milter address deploy/postfix/main.cf names.
const DeployMilter = "inet:127.0.0.1:8891"

// Options configures Start.
type Options struct {
	// Milter is the address Postfix's submission services use
	// (inet:HOST:PORT or unix:PATH), in place of DeployMilter; "" runs
	// Postfix without a milter.
	Milter string
	// Logins are the logins Dovecot accepts, login → password.
	Logins map[string]string
}

// Relay is a running Postfix with its Dovecot.
type Relay struct {
	Postfix *postfixtest.Server
	Dovecot *dovecottest.Server
}

// Start starts Dovecot and Postfix; tb.Cleanup stops both.
func Start(tb testing.TB, opt Options) *Relay {
	tb.Helper()
	pf := postfixtest.New(tb)
	files := dovecottest.TempDir(tb)
	passwd := filepath.Join(files, "passwd")
	var b strings.Builder
	for login, pw := range opt.Logins {
		fmt.Fprintf(&b, "%s:{PLAIN}%s\n", login, pw)
	}
	if err := os.WriteFile(passwd, []byte(b.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
	dc := dovecottest.Start(tb, dovecottest.Options{Config: postfixtest.Replace(tb, ReadDeploy(tb, "dovecot/passwd-file.conf"),
		"/var/spool/postfix", pf.QueueDir(),
		"/var/lib/smtpcreds/passwd/%d", passwd)})
	pf.Start(tb, postfixtest.Options{
		MainCF: postfixtest.Replace(tb, ReadDeploy(tb, "postfix/main.cf"),
			"/etc/letsencrypt/live/mail.example.net/fullchain.pem", pf.CertFile(),
			"/etc/letsencrypt/live/mail.example.net/privkey.pem", pf.KeyFile(),
			DeployMilter, opt.Milter),
		MasterCF: ReadDeploy(tb, "postfix/master.cf"),
	})
	return &Relay{Postfix: pf, Dovecot: dc}
}

// ReadDeploy returns a file of deploy/ (name slash-separated), found from
// the working directory upwards.
func ReadDeploy(tb testing.TB, name string) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			b, err := os.ReadFile(filepath.Join(dir, "deploy", filepath.FromSlash(name)))
			if err != nil {
				tb.Fatal(err)
			}
			return string(b)
		}
		up := filepath.Dir(dir)
		if up == dir {
			tb.Fatal("relaytest: no go.mod above the working directory")
		}
		dir = up
	}
}

// Dial opens a submission session (STARTTLS) and authenticates with AUTH
// PLAIN. The caller closes the client.
func (r *Relay) Dial(tb testing.TB, login, password string) (*smtp.Client, error) {
	tb.Helper()
	conn, err := net.DialTimeout("tcp", r.Postfix.Addr(postfixtest.Submission), 10*time.Second)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		conn.Close()
		return nil, err
	}
	if err := c.Hello("client.test"); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.StartTLS(r.Postfix.TLSConfig()); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.Auth(smtp.PlainAuth("", login, password, "127.0.0.1")); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Send sends msg (header and body, "\r\n" line ends) from sender to to on
// c, and returns the first refusal.
func Send(c *smtp.Client, sender string, to []string, msg string) error {
	if err := c.Mail(sender); err != nil {
		return err
	}
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return err
	}
	return w.Close()
}

// SendAs opens a session as login, sends msg and quits.
func (r *Relay) SendAs(tb testing.TB, login, password, sender string, to []string, msg string) error {
	tb.Helper()
	c, err := r.Dial(tb, login, password)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := Send(c, sender, to, msg); err != nil {
		return err
	}
	return c.Quit()
}

// TLSConfig is the client configuration trusting the relay's certificate.
func (r *Relay) TLSConfig() *tls.Config { return r.Postfix.TLSConfig() }
