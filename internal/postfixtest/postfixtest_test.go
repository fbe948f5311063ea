package postfixtest

import (
	"net/smtp"
	"os"
	"strings"
	"testing"
	"time"
)

// A message Postfix accepts reaches the sink, and nothing else is run: the
// instance's own listener relays only what its restrictions allow.
func TestRelayToSink(t *testing.T) {
	t.Parallel()
	s := New(t)
	// rcpt.example is a domain this instance relays for.
	s.Start(t, Options{MainCF: "relay_domains = rcpt.example\n"})

	body := "Subject: hello\r\n\r\nfrom postfixtest\r\n"
	if err := smtp.SendMail(s.Addr(SMTP), nil, "a@sender.example", []string{"b@rcpt.example"}, []byte(body)); err != nil {
		t.Fatalf("send: %v\n%s", err, s.Log())
	}
	m := s.WaitMessage(t, 30*time.Second, func(m Message) bool {
		return strings.Contains(m.Data, "from postfixtest")
	})
	if m.From != "a@sender.example" || len(m.To) != 1 || m.To[0] != "b@rcpt.example" ||
		!strings.Contains(m.Data, "Subject: hello") || !strings.Contains(m.Data, "by "+Hostname) {
		t.Errorf("sink got %v:\n%s", m, m.Data)
	}
	if _, err := os.Stat(s.certFile); err != nil {
		t.Error(err)
	}
}

// Without a relay permission, mail to another domain is refused: 127.0.0.1
// is not in the instance's mynetworks.
func TestNoOpenRelay(t *testing.T) {
	t.Parallel()
	s := New(t)
	s.Start(t, Options{})
	err := smtp.SendMail(s.Addr(SMTP), nil, "a@sender.example", []string{"b@rcpt.example"}, []byte("Subject: x\r\n\r\nx\r\n"))
	if err == nil || !strings.Contains(err.Error(), "Relay access denied") {
		t.Fatalf("relay without permission: %v, want Relay access denied", err)
	}
}

func TestStartRefusesInstanceSettings(t *testing.T) {
	if got := ownedSettings("# relayhost = x\nrelayhost = [mx.example]\nsmtpd_tls_security_level = may\n  -o mydestination=x\nmynetworks=1.2.3.4\n"); strings.Join(got, ",") != "relayhost,mynetworks" {
		t.Errorf("ownedSettings = %q, want relayhost and mynetworks", got)
	}
}

func TestReplace(t *testing.T) {
	got := Replace(t, "submission inet n\nsubmissions inet n\n", "submission inet", "127.0.0.1:1 inet", "submissions inet", "127.0.0.1:2 inet")
	if got != "127.0.0.1:1 inet n\n127.0.0.1:2 inet n\n" {
		t.Errorf("Replace = %q", got)
	}
	ft := &fatalRecorder{T: t}
	func() {
		defer func() { _ = recover() }()
		Replace(ft, "abc", "x", "y")
	}()
	if !ft.failed {
		t.Error("Replace of a string that does not occur did not fail the test")
	}
}

// fatalRecorder records Fatalf instead of failing.
type fatalRecorder struct {
	*testing.T
	failed bool
}

func (f *fatalRecorder) Fatalf(string, ...any) { f.failed = true; panic("fatal") }
