package milter

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/accounts"
	"github.com/smtpcreds/smtpcreds/internal/credentials"
	"github.com/smtpcreds/smtpcreds/internal/dbtest"
	sealing "github.com/smtpcreds/smtpcreds/internal/dkim"
	"github.com/smtpcreds/smtpcreds/internal/dnstest"
	"github.com/smtpcreds/smtpcreds/internal/domains"
	"github.com/smtpcreds/smtpcreds/internal/password"
	"github.com/smtpcreds/smtpcreds/internal/postfixtest"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/proctest"
	"github.com/smtpcreds/smtpcreds/internal/relay"
	"github.com/smtpcreds/smtpcreds/internal/relaytest"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

// world is a database with two tenants, a DNS server publishing their
// DKIM records, and milters serving it.
type world struct {
	t      testing.TB
	db     *sqlx.DB
	url    string
	sealer *sealing.Sealer
	dns    *dnstest.Server
	doms   *domains.Service
	creds  *credentials.Service
	accts  map[string]int64 // account name → id
	logins map[string]string
}

func newWorld(t testing.TB) *world {
	t.Helper()
	url := dbtest.NewURL(t)
	db, err := postgres.Open(context.Background(), url, postgres.PoolOptions{MaxOpen: 8, MaxIdle: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	sealer, err := sealing.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, db: db, url: url, sealer: sealer, dns: dnstest.Start(t),
		doms:  domains.NewService(db, sealer, nil, nil, domains.Config{Selector: "sc1", MXHost: "mx.relay.test", SPFInclude: "_spf.relay.test", TrackingTarget: "track.relay.test"}),
		creds: credentials.NewService(db, nil, credentials.Config{Scheme: password.SSHA512}),
		accts: map[string]int64{}, logins: map[string]string{}}
	return w
}

// account makes an account.
func (w *world) account(name string) {
	w.t.Helper()
	svc, err := accounts.NewService(w.db, make([]byte, 32))
	if err != nil {
		w.t.Fatal(err)
	}
	a, _, err := svc.Create(context.Background(), name)
	if err != nil {
		w.t.Fatal(err)
	}
	w.accts[name] = a.ID
}

// domain adds a domain to an account and publishes its DKIM record.
func (w *world) domain(account, name string, verified bool) domains.Domain {
	w.t.Helper()
	d, err := w.doms.AddForAccount(context.Background(), account, name, verified)
	if err != nil {
		w.t.Fatal(err)
	}
	w.dns.SetTXT(d.DKIMSelector+"._domainkey."+name, "v=DKIM1; k=rsa; p="+d.DKIMPublicKey)
	return d
}

// credential creates username@domain and remembers its password.
func (w *world) credential(account, domain, username string) credentials.Credential {
	w.t.Helper()
	iss, err := w.creds.Create(context.Background(), w.accts[account], domain, username)
	if err != nil {
		w.t.Fatal(err)
	}
	w.logins[username+"@"+domain] = iss.Password
	return iss.Credential
}

// milter starts a milter on the world's database, listening to its
// announcements, and returns it with its inet: address.
func (w *world) milter(cfg Config) (*Milter, string) {
	w.t.Helper()
	// The pool as internal/app opens the milter's: no synchronous commit.
	db, err := postgres.Open(context.Background(), postgres.WithSetting(w.url, "synchronous_commit", "off"), postgres.PoolOptions{MaxOpen: 20, MaxIdle: 20})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { db.Close() })
	logs := &proctest.Buffer{} // the milter may log after its test ended, when t.Log would panic
	w.t.Cleanup(func() {
		if w.t.Failed() {
			w.t.Logf("milter log:\n%s", logs.String())
		}
	})
	m := New(db, w.sealer, cfg, slog.New(slog.NewTextHandler(logs, nil)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	live := make(chan struct{})
	sub := &liveSignal{Subscriber: m.Subscriber(), live: live}
	postgres.Listen(ctx, w.url, slog.New(slog.NewTextHandler(io.Discard, nil)), map[string]postgres.Subscriber{postgres.RelayChannel: sub})
	done := make(chan error, 1)
	go func() { done <- m.Serve(ln) }()
	w.t.Cleanup(func() {
		cancel()
		_ = m.Close()
		<-done
	})
	select {
	case <-live:
	case <-time.After(10 * time.Second):
		w.t.Fatal("the milter's cache never went live")
	}
	return m, "inet:" + ln.Addr().String()
}

// liveSignal closes live the first time the subscription goes live.
type liveSignal struct {
	postgres.Subscriber
	once sync.Once
	live chan struct{}
}

func (l *liveSignal) Live(v bool) {
	l.Subscriber.Live(v)
	if v {
		l.once.Do(func() { close(l.live) })
	}
}

// waitForgotten waits until m's cache no longer holds login (an
// announcement arrived).
func waitForgotten(t *testing.T, m *Milter, login string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, ok := m.cache.logins.Get(login); !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the milter still caches %s 10s after the change", login)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// verify checks msg's DKIM signatures against the world's DNS and returns
// the domains whose signatures verify.
func (w *world) verify(msg string) []string {
	w.t.Helper()
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, w.dns.Addr())
	}}
	vs, err := dkim.VerifyWithOptions(strings.NewReader(msg), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) { return r.LookupTXT(context.Background(), name) },
	})
	if err != nil {
		w.t.Fatalf("dkim verify: %v", err)
	}
	var ok []string
	for _, v := range vs {
		if v.Err == nil {
			ok = append(ok, v.Domain)
		} else {
			w.t.Logf("signature of %s does not verify: %v", v.Domain, v.Err)
		}
	}
	return ok
}

func message(from, subject string, extra ...string) string {
	h := "From: " + from + "\r\nTo: <someone@rcpt.example>\r\nSubject: " + subject + "\r\nDate: Wed, 02 Dec 2026 12:00:00 +0000\r\nMessage-ID: <" + subject + "@client.test>\r\n"
	for _, e := range extra {
		h += e + "\r\n"
	}
	return h + "\r\nHello,\r\nthis is " + subject + ".\r\n"
}

// delivered returns the sink's messages whose subject is subject.
func delivered(pf *postfixtest.Server, subject string) []postfixtest.Message {
	var out []postfixtest.Message
	for _, m := range pf.Messages() {
		if strings.Contains(m.Data, "Subject: "+subject+"\r\n") {
			out = append(out, m)
		}
	}
	return out
}

// wantRefused checks err is an SMTP refusal with code's first digit and
// every one of texts.
func wantRefused(t *testing.T, what string, err error, class string, texts ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: accepted, want a %sxx refusal", what, class)
		return
	}
	if !strings.HasPrefix(err.Error(), class) {
		t.Errorf("%s: %v, want a %sxx refusal", what, err, class)
	}
	for _, s := range texts {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%s: %v, want it to say %q", what, err, s)
		}
	}
}

func TestRelay(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.account("shop")
	w.account("bank")
	w.domain("shop", "shop.example", true)
	w.domain("shop", "outlet.example", true)
	w.domain("shop", "pending.example", false)
	w.domain("bank", "bank.example", true)
	w.credential("shop", "shop.example", "mailer")
	w.credential("shop", "shop.example", "narrow")
	w.credential("shop", "shop.example", "doomed")
	w.credential("bank", "bank.example", "teller")
	m, addr := w.milter(Config{Login: relay.Limits{PerMinute: 3}, Account: relay.Limits{PerDay: 1000}})
	r := relaytest.Start(t, relaytest.Options{Milter: addr, Logins: w.logins})
	to := []string{"someone@rcpt.example"}
	pf := r.Postfix
	const mailer = "mailer@shop.example"
	pw := w.logins[mailer]

	t.Run("signed", func(t *testing.T) {
		if err := r.SendAs(t, mailer, pw, mailer, to, message("Shop <mailer@shop.example>", "signed")); err != nil {
			t.Fatalf("send: %v\n%s", err, pf.Log())
		}
		got := pf.WaitMessage(t, 30*time.Second, func(m postfixtest.Message) bool { return strings.Contains(m.Data, "Subject: signed\r\n") })
		if v := w.verify(got.Data); len(v) != 1 || v[0] != "shop.example" {
			t.Errorf("verified signatures %v, want shop.example's; message:\n%s", v, got.Data)
		}
		var row struct {
			Event  string `db:"event_type"`
			Signed bool   `db:"dkim_signed"`
			Queue  string `db:"queue_id"`
			Rcpts  string `db:"rcpts"`
		}
		if err := w.db.Get(&row, `SELECT event_type, dkim_signed, queue_id, array_to_string(recipients, ',') AS rcpts FROM message_log WHERE login = $1 ORDER BY id DESC LIMIT 1`, mailer); err != nil {
			t.Fatal(err)
		}
		if row.Event != "queued" || !row.Signed || row.Queue == "" || row.Rcpts != "someone@rcpt.example" {
			t.Errorf("log row %+v, want queued, signed, with a queue id and the recipient", row)
		}
	})

	t.Run("a login is cached after its message", func(t *testing.T) {
		// (Unauthenticated mail passing untouched is a protocol test: port
		// 25 does not pass mail through the milter at all.)
		if _, _, ok := m.cache.logins.Get(mailer); !ok {
			t.Errorf("the login is not cached after a message: every message costs a lookup")
		}
	})

	spoofs := []struct {
		name, sender, from string
		extra              []string
		says               string
	}{
		{"envelope of another tenant", "billing@bank.example", "<mailer@shop.example>", nil, "billing@bank.example"},
		{"envelope unknown domain", "x@nowhere.example", "<mailer@shop.example>", nil, "x@nowhere.example"},
		{"envelope unverified own domain", "x@pending.example", "<x@pending.example>", nil, "x@pending.example"},
		{"envelope other own domain", "x@outlet.example", "<x@outlet.example>", nil, "may send only as shop.example"},
		{"From of another tenant", mailer, "<billing@bank.example>", nil, "billing@bank.example"},
		{"From unverified", mailer, "<x@pending.example>", nil, "x@pending.example"},
		{"several From addresses", mailer, "<mailer@shop.example>, <ceo@bank.example>", nil, "ceo@bank.example"},
		{"two From fields", mailer, "<mailer@shop.example>", []string{"From: <ceo@bank.example>"}, "2 From: headers"},
		{"encoded-word display name", mailer, "=?utf-8?q?ceo=40bank=2Eexample?= <mailer@shop.example>", nil, "ceo@bank.example"},
		// A message without From: or with one that is not an address is
		// given one by Postfix's cleanup (from the envelope, or with
		// $myorigin): the protocol tests send those to the milter as is.
		{"From completed by Postfix", mailer, "undisclosed", nil, "undisclosed@"},
	}
	for i, c := range spoofs {
		t.Run(c.name, func(t *testing.T) {
			subject := fmt.Sprintf("spoof-%d", i)
			msg := message(c.from, subject, c.extra...)
			err := r.SendAs(t, mailer, pw, c.sender, to, msg)
			wantRefused(t, c.name, err, "5", "5.7.1", c.says)
		})
	}

	t.Run("allowed_senders", func(t *testing.T) {
		const narrow = "narrow@shop.example"
		if _, err := w.db.Exec(`UPDATE credentials SET allowed_senders = '{news@shop.example}' WHERE username = 'narrow'`); err != nil {
			t.Fatal(err)
		}
		waitForgotten(t, m, narrow)
		err := r.SendAs(t, narrow, w.logins[narrow], narrow, to, message("<narrow@shop.example>", "narrow-own"))
		wantRefused(t, "own login address outside allowed_senders", err, "5", "narrow@shop.example", "allowed senders")
		if err := r.SendAs(t, narrow, w.logins[narrow], "news@shop.example", to, message("<news@shop.example>", "narrow-ok")); err != nil {
			t.Errorf("allowed sender: %v", err)
		}
		if _, err := w.db.Exec(`UPDATE credentials SET allowed_senders = '{*@shop.example}' WHERE username = 'narrow'`); err != nil {
			t.Fatal(err)
		}
		waitForgotten(t, m, narrow)
		if err := r.SendAs(t, narrow, w.logins[narrow], "any@shop.example", to, message("<other@shop.example>", "narrow-wild")); err != nil {
			t.Errorf("*@domain: %v", err)
		}
	})

	t.Run("disable, reset and delete take effect on the next message", func(t *testing.T) {
		const doomed = "doomed@shop.example"
		c, err := r.Dial(t, doomed, w.logins[doomed])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := relaytest.Send(c, doomed, to, message("<doomed@shop.example>", "doomed-1")); err != nil {
			t.Fatalf("first message: %v", err)
		}
		ctx := context.Background()
		if _, err := w.db.Exec(`UPDATE credentials SET status = false WHERE username = 'doomed'`); err != nil {
			t.Fatal(err)
		}
		waitForgotten(t, m, doomed)
		wantRefused(t, "disabled", relaytest.Send(c, doomed, to, message("<doomed@shop.example>", "doomed-2")), "5", "disabled")
		_ = c.Reset()
		if _, err := w.db.Exec(`UPDATE credentials SET status = true WHERE username = 'doomed'`); err != nil {
			t.Fatal(err)
		}
		waitForgotten(t, m, doomed)
		if err := relaytest.Send(c, doomed, to, message("<doomed@shop.example>", "doomed-3")); err != nil {
			t.Fatalf("enabled again: %v", err)
		}
		if _, err := w.db.Exec(`UPDATE credentials SET expires_at = now() - interval '1 second' WHERE username = 'doomed'`); err != nil {
			t.Fatal(err)
		}
		waitForgotten(t, m, doomed)
		wantRefused(t, "expired", relaytest.Send(c, doomed, to, message("<doomed@shop.example>", "doomed-expired")), "5", "expired")
		_ = c.Reset()
		if _, err := w.db.Exec(`UPDATE credentials SET expires_at = NULL WHERE username = 'doomed'`); err != nil {
			t.Fatal(err)
		}
		waitForgotten(t, m, doomed)
		cred := w.credByName(t, "doomed")
		// A reset with a grace period: the replaced password still
		// authenticates, so the session goes on.
		if _, err := w.creds.ResetPassword(ctx, w.accts["shop"], "shop.example", cred, time.Hour); err != nil {
			t.Fatal(err)
		}
		waitForgotten(t, m, doomed)
		if err := relaytest.Send(c, doomed, to, message("<doomed@shop.example>", "doomed-grace")); err != nil {
			t.Errorf("session of the replaced password during its grace period: %v", err)
		}
		if _, err := w.creds.ResetPassword(ctx, w.accts["shop"], "shop.example", cred, 0); err != nil {
			t.Fatal(err)
		}
		waitForgotten(t, m, doomed)
		wantRefused(t, "session from before a reset", relaytest.Send(c, doomed, to, message("<doomed@shop.example>", "doomed-4")), "4", "4.7.0", "password")
		_ = c.Reset()
		if _, err := w.creds.Delete(ctx, w.accts["shop"], "shop.example", cred); err != nil {
			t.Fatal(err)
		}
		waitForgotten(t, m, doomed)
		wantRefused(t, "deleted", relaytest.Send(c, doomed, to, message("<doomed@shop.example>", "doomed-5")), "5", "not an SMTP credential")
		for _, s := range []string{"doomed-2", "doomed-expired", "doomed-4", "doomed-5"} {
			if d := delivered(pf, s); len(d) > 0 {
				t.Errorf("%s was delivered", s)
			}
		}
	})

	t.Run("limit", func(t *testing.T) {
		const teller = "teller@bank.example"
		// Per minute: 3. The fourth in the same window is deferred.
		now := time.Date(2026, 12, 2, 10, 0, 5, 0, time.UTC)
		m.fixed.Store(&now)
		for i := range 3 {
			if err := r.SendAs(t, teller, w.logins[teller], teller, to, message("<teller@bank.example>", fmt.Sprintf("limit-%d", i))); err != nil {
				t.Fatalf("message %d: %v", i+1, err)
			}
		}
		err := r.SendAs(t, teller, w.logins[teller], teller, to, message("<teller@bank.example>", "limit-over"))
		wantRefused(t, "over the limit", err, "4", "4.7.1", "3 messages per minute", "10:01:00")
		next := now.Add(time.Minute)
		m.fixed.Store(&next)
		if err := r.SendAs(t, teller, w.logins[teller], teller, to, message("<teller@bank.example>", "limit-next")); err != nil {
			t.Errorf("next window: %v", err)
		}
		if d := delivered(pf, "limit-over"); len(d) > 0 {
			t.Error("the message over the limit was delivered")
		}
	})

	// Nothing refused reached the sink (spoofs are checked after the
	// others had time to arrive: the sink is waited on for the last
	// accepted message).
	pf.WaitMessage(t, 30*time.Second, func(m postfixtest.Message) bool { return strings.Contains(m.Data, "Subject: limit-next\r\n") })
	for i := range spoofs {
		if d := delivered(pf, fmt.Sprintf("spoof-%d", i)); len(d) > 0 {
			t.Errorf("%s was delivered:\n%s", spoofs[i].name, d[0].Data)
		}
	}
	if t.Failed() {
		t.Logf("postfix log:\n%s", pf.Log())
	}
}

func (w *world) credByName(t *testing.T, username string) (guid uuid.UUID) {
	t.Helper()
	if err := w.db.Get(&guid, `SELECT guid FROM credentials WHERE username = $1`, username); err != nil {
		t.Fatal(err)
	}
	return guid
}
