package milter

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	gomilter "github.com/d--j/go-milter"

	"github.com/smtpcreds/smtpcreds/internal/relay"
)

// These tests speak the milter protocol to the milter directly, as Postfix
// does, with go-milter's client: to send what Postfix would have repaired
// or refused itself (no From:, unparsable fields, megabytes of header), and
// to run two milters side by side.

// transaction is one message as an MTA hands it to the milter.
type transaction struct {
	login   string // the {auth_authen} macro; "" for none
	sender  string
	rcpts   []string
	headers [][2]string
	body    string
}

// outcome is what the milter answered: the action that ended the message
// (a refusal, or the end-of-message answer) and the modifications.
type outcome struct {
	stage string
	act   *gomilter.Action
	mods  []gomilter.ModifyAction
}

func (o outcome) accepted() bool {
	return o.act != nil && !o.act.StopProcessing() && o.act.Type != gomilter.ActionDiscard
}

// run sends tx to the milter at addr (inet:HOST:PORT).
func run(t testing.TB, addr string, tx transaction) outcome {
	t.Helper()
	c := gomilter.NewClient("tcp", strings.TrimPrefix(addr, "inet:"))
	macros := gomilter.NewMacroBag()
	s, err := c.Session(macros)
	if err != nil {
		t.Fatalf("milter session: %v", err)
	}
	defer s.Close()
	step := func(stage string, f func() (*gomilter.Action, error)) (outcome, bool) {
		t.Helper()
		act, err := f()
		if err != nil {
			t.Fatalf("%s: %v", stage, err)
		}
		if act.StopProcessing() || act.Type == gomilter.ActionAccept || act.Type == gomilter.ActionDiscard {
			return outcome{stage: stage, act: act}, true
		}
		return outcome{}, false
	}
	if o, done := step("connect", func() (*gomilter.Action, error) {
		return s.Conn("client.test", gomilter.FamilyInet, 41000, "192.0.2.7")
	}); done {
		return o
	}
	if o, done := step("helo", func() (*gomilter.Action, error) { return s.Helo("client.test") }); done {
		return o
	}
	if tx.login != "" {
		macros.Set(gomilter.MacroAuthAuthen, tx.login)
		macros.Set(gomilter.MacroAuthType, "PLAIN")
	}
	if o, done := step("mail", func() (*gomilter.Action, error) { return s.Mail(tx.sender, "") }); done {
		return o
	}
	for _, r := range tx.rcpts {
		if o, done := step("rcpt", func() (*gomilter.Action, error) { return s.Rcpt(r, "") }); done {
			return o
		}
	}
	if o, done := step("data", func() (*gomilter.Action, error) { return s.DataStart() }); done {
		return o
	}
	for _, h := range tx.headers {
		if o, done := step("header", func() (*gomilter.Action, error) { return s.HeaderField(h[0], h[1], nil) }); done {
			return o
		}
	}
	if o, done := step("eoh", func() (*gomilter.Action, error) { return s.HeaderEnd() }); done {
		return o
	}
	macros.Set(gomilter.MacroQueueId, "Q"+fmt.Sprint(queueSeq.Add(1)))
	mods, act, err := s.BodyReadFrom(strings.NewReader(tx.body))
	if err != nil {
		t.Fatalf("body: %v", err)
	}
	return outcome{stage: "eom", act: act, mods: mods}
}

var queueSeq atomic.Int64

func headersOf(from, subject string) [][2]string {
	return [][2]string{{"From", " " + from}, {"To", " <someone@rcpt.example>"}, {"Subject", " " + subject},
		{"Date", " Wed, 02 Dec 2026 12:00:00 +0000"}, {"Message-ID", " <" + subject + "@client.test>"}}
}

// signedMessage rebuilds the message the MTA would send on from tx and
// the milter's modifications (only header insertions are expected).
func signedMessage(t testing.TB, tx transaction, o outcome) string {
	t.Helper()
	var b strings.Builder
	for _, m := range o.mods {
		if m.Type != gomilter.ActionInsertHeader || m.HeaderIndex != 0 {
			t.Fatalf("unexpected modification %+v", m)
		}
		fmt.Fprintf(&b, "%s: %s\r\n", m.HeaderName, m.HeaderValue)
	}
	for _, h := range tx.headers {
		fmt.Fprintf(&b, "%s:%s\r\n", h[0], h[1])
	}
	b.WriteString("\r\n" + tx.body)
	return b.String()
}

func TestProtocol(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.account("shop")
	w.account("bank")
	w.domain("shop", "shop.example", true)
	w.domain("bank", "bank.example", true)
	w.credential("shop", "shop.example", "mailer")
	_, addr := w.milter(Config{})
	const login = "mailer@shop.example"
	to := []string{"someone@rcpt.example"}
	body := "Hello,\r\nhere.\r\n"

	t.Run("unauthenticated passes untouched", func(t *testing.T) {
		o := run(t, addr, transaction{sender: "x@bank.example", rcpts: to, headers: headersOf("<x@bank.example>", "anon"), body: body})
		if o.stage != "mail" || o.act.Type != gomilter.ActionAccept {
			t.Errorf("got %s %+v, want accept at MAIL (no more callbacks, no change)", o.stage, o.act)
		}
	})

	t.Run("8-bit header and body are signed and verify", func(t *testing.T) {
		tx := transaction{login: login, sender: login, rcpts: to,
			headers: append(headersOf("Caf\xc3\xa9 <mailer@shop.example>", "eight \xff\xfe"), [2]string{"Content-Type", " text/plain; charset=latin1"}),
			body:    "caf\xe9 \xff\xfe\r\n\r\n\r\n"}
		o := run(t, addr, tx)
		if !o.accepted() || len(o.mods) != 1 {
			t.Fatalf("got %s %+v %+v, want accepted with one signature", o.stage, o.act, o.mods)
		}
		if v := w.verify(signedMessage(t, tx, o)); len(v) != 1 || v[0] != "shop.example" {
			t.Errorf("verified %v, want shop.example", v)
		}
	})

	t.Run("folded header values are signed as sent", func(t *testing.T) {
		tx := transaction{login: login, sender: login, rcpts: to,
			headers: append(headersOf("\"Shop\"\r\n <mailer@shop.example>", "folded"), [2]string{"X-Long", " a\r\n\tb\r\n c"}),
			body:    body}
		o := run(t, addr, tx)
		if !o.accepted() {
			t.Fatalf("got %s %+v", o.stage, o.act)
		}
		if v := w.verify(signedMessage(t, tx, o)); len(v) != 1 {
			t.Errorf("verified %v, want shop.example", v)
		}
	})

	refusals := []struct {
		name    string
		tx      transaction
		code    string
		says    string
		atStage string
	}{
		{"no From", transaction{login: login, sender: login, rcpts: to, headers: headersOf("<mailer@shop.example>", "nofrom")[1:], body: body}, "550 5.7.1", "no From: header", "eom"},
		{"From not an address", transaction{login: login, sender: login, rcpts: to, headers: headersOf("undisclosed recipients", "notaddr"), body: body}, "550 5.7.1", "not a list of addresses", "eom"},
		// (A NUL cannot be sent: the milter protocol ends strings with it.)
		{"From binary garbage", transaction{login: login, sender: login, rcpts: to, headers: headersOf("\x01<\xff@\xfe>", "garbage"), body: body}, "550 5.7.1", "not a list of addresses", "eom"},
		{"From with invalid UTF-8", transaction{login: login, sender: login, rcpts: to, headers: headersOf("Caf\xff <mailer@shop.example>", "badutf8"), body: body}, "550 5.7.1", "not a list of addresses", "eom"},
		{"From with a bare newline trick", transaction{login: login, sender: login, rcpts: to, headers: headersOf("<mailer@shop.example>\nFrom: <ceo@bank.example>", "nl"), body: body}, "550 5.7.1", "", "eom"},
		{"encoded-word address", transaction{login: login, sender: login, rcpts: to, headers: headersOf("=?utf-8?b?Y2VvQGJhbmsuZXhhbXBsZQ==?= <mailer@shop.example>", "b64"), body: body}, "550 5.7.1", "ceo@bank.example", "eom"},
		{"null sender", transaction{login: login, sender: "", rcpts: to, headers: headersOf("<mailer@shop.example>", "null"), body: body}, "550 5.7.1", "sender <>", "mail"},
		{"unknown login", transaction{login: "ghost@shop.example", sender: "ghost@shop.example", rcpts: to, headers: headersOf("<ghost@shop.example>", "ghost"), body: body}, "550 5.7.1", "not an SMTP credential", "mail"},
	}
	for _, c := range refusals {
		t.Run(c.name, func(t *testing.T) {
			o := run(t, addr, c.tx)
			if o.stage != c.atStage || o.act.Type != gomilter.ActionRejectWithCode || !strings.HasPrefix(o.act.SMTPReply, c.code) || !strings.Contains(o.act.SMTPReply, c.says) {
				t.Errorf("got %s %+v, want %q saying %q at %s", o.stage, o.act, c.code, c.says, c.atStage)
			}
		})
	}

	t.Run("a key that does not unseal: tempfail, never unsigned", func(t *testing.T) {
		w.domain("shop", "broken.example", true)
		w.credential("shop", "broken.example", "x")
		w.db.MustExec(`UPDATE domains SET dkim_private_key = '\x01deadbeef' WHERE name = 'broken.example'`)
		const broken = "x@broken.example"
		o := run(t, addr, transaction{login: broken, sender: broken, rcpts: to, headers: headersOf("<"+broken+">", "broken"), body: body})
		if o.accepted() || !strings.HasPrefix(o.act.SMTPReply, "451 4.3.0") {
			t.Errorf("got %s %+v, want 451 4.3.0", o.stage, o.act)
		}
	})

	t.Run("huge header", func(t *testing.T) {
		h := headersOf("<mailer@shop.example>", "huge")
		for i := range 3000 {
			h = append(h, [2]string{fmt.Sprintf("X-Filler-%d", i), " " + strings.Repeat("x", 500)})
		}
		// A second From: beyond what is kept must not slip through.
		h = append(h, [2]string{"From", " <ceo@bank.example>"})
		o := run(t, addr, transaction{login: login, sender: login, rcpts: to, headers: h, body: body})
		if o.accepted() || !strings.HasPrefix(o.act.SMTPReply, "552 5.3.4") {
			t.Errorf("got %s %+v, want 552 5.3.4", o.stage, o.act)
		}
	})

	t.Run("log", func(t *testing.T) {
		var n struct {
			Queued int `db:"queued"`
			Perm   int `db:"perm"`
			Anon   int `db:"anon"`
		}
		if err := w.db.Get(&n, `SELECT count(*) FILTER (WHERE event_type = 'queued') AS queued,
			count(*) FILTER (WHERE event_type = 'permanent_fail') AS perm,
			count(*) FILTER (WHERE envelope_sender = 'x@bank.example') AS anon FROM message_log`); err != nil {
			t.Fatal(err)
		}
		// ghost is no credential: it has no log (no account to log under).
		if n.Queued != 2 || n.Perm != len(refusals)-1+1 || n.Anon != 0 {
			var reasons []string
			_ = w.db.Select(&reasons, `SELECT reason FROM message_log`)
			t.Errorf("log has %+v (%q), want 2 queued, %d refused, none of the unauthenticated message", n, reasons, len(refusals))
		}
	})
}

// A limit holds exactly across milter processes: two milters with caches
// of their own, messages sent to both at once.
func TestLimitAcrossMilters(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.account("shop")
	w.domain("shop", "shop.example", true)
	w.credential("shop", "shop.example", "a")
	w.credential("shop", "shop.example", "b")
	cfg := Config{Login: relay.Limits{PerHour: 7}, Account: relay.Limits{PerDay: 10}}
	_, addr1 := w.milter(cfg)
	_, addr2 := w.milter(cfg)
	var wg sync.WaitGroup
	var accepted, deferred atomic.Int64
	var mu sync.Mutex
	var replies []string
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			login := []string{"a@shop.example", "b@shop.example"}[i%2]
			addr := []string{addr1, addr2}[(i/2)%2]
			o := run(t, addr, transaction{login: login, sender: login, rcpts: []string{"x@rcpt.example"},
				headers: headersOf("<"+login+">", fmt.Sprintf("n%d", i)), body: "hi\r\n"})
			switch {
			case o.accepted():
				accepted.Add(1)
			case o.act.Type == gomilter.ActionRejectWithCode && strings.HasPrefix(o.act.SMTPReply, "451 4.7.1"):
				deferred.Add(1)
				mu.Lock()
				replies = append(replies, o.act.SMTPReply)
				mu.Unlock()
			default:
				t.Errorf("message %d: %s %+v", i, o.stage, o.act)
			}
		}()
	}
	wg.Wait()
	if accepted.Load() != 10 || deferred.Load() != 20 {
		t.Errorf("accepted %d, deferred %d; want the account's 10 and 20", accepted.Load(), deferred.Load())
	}
	var perLogin []int
	if err := w.db.Select(&perLogin, `SELECT count(*) FROM message_log WHERE event_type = 'queued' GROUP BY login ORDER BY 1`); err != nil {
		t.Fatal(err)
	}
	if len(perLogin) != 2 || perLogin[0]+perLogin[1] != 10 || perLogin[1] > 7 {
		t.Errorf("queued per login %v, want 10 in all, none over 7", perLogin)
	}
	var day int
	if err := w.db.Get(&day, `SELECT hits FROM send_counters WHERE key = $1`, relay.AccountKey(w.accts["shop"], relay.Day)); err != nil {
		t.Fatal(err)
	}
	if day != 10 {
		t.Errorf("the account's day counter is %d, want 10 (refused messages count nothing)", day)
	}
	for _, r := range replies {
		if !strings.Contains(r, "sending limit of") || !strings.Contains(r, "resets at") {
			t.Errorf("deferral %q does not say which limit and when it resets", r)
		}
	}
}
