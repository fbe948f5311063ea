package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/smtpcreds/smtpcreds/internal/app"
	"github.com/smtpcreds/smtpcreds/internal/basicauth"
	"github.com/smtpcreds/smtpcreds/internal/dbtest"
	"github.com/smtpcreds/smtpcreds/internal/password"
	"github.com/smtpcreds/smtpcreds/internal/proctest"
	"github.com/smtpcreds/smtpcreds/internal/relay"
)

// The two processes operators run on one database, `smtpcreds milter`
// (spoken to as Postfix does, with go-milter's client) and `smtpcreds
// serve`, agree: the API's message log, the login's usage and the quota
// show exactly what the milter did. (The routes' shapes are checked
// against openapi.yaml in internal/httpapi.)
func TestRelayRoutesShowWhatTheMilterDid(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	key := []byte("0123456789abcdef0123456789abcdef")
	cfg := app.Config{
		DatabaseURL: dbtest.NewURL(t), DBMaxConns: 4, TokenKey: key, DKIMKey: key,
		PasswordScheme: password.SSHA512,
		Sync:           app.SyncConfig{Target: "none"},
		DNS:            app.DNSConfig{Selector: "sel"},
		Relay:          app.RelayConfig{Account: relay.Limits{PerDay: 10}},
	}
	logs := &proctest.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	api, err := app.New(ctx, cfg, app.Deps{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(api.Close)
	_, token, err := api.Accounts().Create(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.Domains().AddForAccount(ctx, "alice", "example.com", true); err != nil {
		t.Fatal(err)
	}
	call := func(method, path, body string) map[string]any {
		t.Helper()
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		r.Header.Set("Authorization", basicauth.Format("alice", token))
		r.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		api.Handler().ServeHTTP(rec, r)
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || rec.Code >= 300 {
			t.Fatalf("%s %s: %d %s", method, path, rec.Code, rec.Body.String())
		}
		return out
	}
	created := call("POST", "/api/domains/example.com/credentials", `{"username":"shop"}`)
	guid := created["data"].(map[string]any)["credential"].(map[string]any)["user_smtp_guid"].(string)

	// The milter process.
	cfg.MilterAddr = "inet:127.0.0.1:0"
	addrs := make(chan string, 1)
	rel, err := app.NewRelay(ctx, cfg, app.Deps{Logger: log, OnListen: func(a string) { addrs <- a }})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- rel.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		<-done
		rel.Close()
	})
	var addr string
	select {
	case addr = <-addrs:
	case err := <-done:
		t.Fatalf("the milter stopped: %v", err)
	}

	queued := sendThroughMilter(t, addr, "shop@example.com", "Shop@Example.com", "Q1",
		"Shop <shop@example.com>", "a@x.test", "B@Y.test")
	if queued.StopProcessing() { // accepted: the end of message goes on, with the signature added
		t.Fatalf("own domain's message: %+v", queued)
	}
	refused := sendThroughMilter(t, addr, "shop@example.com", "billing@bank.example", "",
		"billing@bank.example", "c@x.test")
	if refused.Type != gomilter.ActionRejectWithCode || refused.SMTPCode != 550 {
		t.Fatalf("spoofed sender: %+v", refused)
	}

	body := call("GET", "/api/domains/example.com/log", "")
	data := body["data"].([]any)
	if len(data) != 2 {
		t.Fatalf("log: %v", body)
	}
	wantFields(t, "refused", data[0].(map[string]any), map[string]any{
		"event_type": "permanent_fail", "sender": "billing@bank.example", "credential": "shop@example.com",
		"user_smtp_guid": guid, "client_ip": "192.0.2.7", "dkim_signed": false, "message_id": nil,
	})
	if reason, _ := data[0].(map[string]any)["reason"].(string); !strings.Contains(reason, "billing@bank.example") {
		t.Errorf("refusal reason %q does not name the address", reason)
	}
	wantFields(t, "queued", data[1].(map[string]any), map[string]any{
		"event_type": "queued", "sender": "shop@example.com", "recipients": []any{"a@x.test", "b@y.test"},
		"from": "Shop <shop@example.com>", "message_id": "Q1", "dkim_signed": true, "reason": nil,
		"client_ip": "192.0.2.7", "credential": "shop@example.com", "subject": nil,
	})

	body = call("GET", "/api/domains/example.com/credentials/"+guid, "")
	cred := body["data"].(map[string]any)
	wantFields(t, "usage", cred, map[string]any{
		"last_used_ip": "192.0.2.7", "messages_queued": 1, "messages_refused": 1,
	})
	if at, _ := cred["last_used_at"].(float64); time.Since(time.Unix(int64(at), 0)) > time.Hour {
		t.Errorf("last_used_at %v is not the messages' time", cred["last_used_at"])
	}

	q := call("GET", "/api/quota", "")["data"].(map[string]any)
	if q["current_quota"] != float64(9) || q["max_quota"] != float64(10) || q["usage_percentage"] != float64(10) {
		t.Errorf("quota after one accepted message of 10: %v", q)
	}
}

func wantFields(t *testing.T, name string, got, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if fmt.Sprint(got[k]) != fmt.Sprint(v) || (got[k] == nil) != (v == nil) {
			t.Errorf("%s.%s = %#v, want %#v", name, k, got[k], v)
		}
	}
}

// sendThroughMilter hands one message to the milter at addr as Postfix
// does, from client 192.0.2.7 authenticated as login, and returns the
// action that ended it.
func sendThroughMilter(t *testing.T, addr, login, sender, queueID, from string, rcpts ...string) *gomilter.Action {
	t.Helper()
	macros := gomilter.NewMacroBag()
	s, err := gomilter.NewClient("tcp", addr).Session(macros)
	if err != nil {
		t.Fatalf("milter session: %v", err)
	}
	defer s.Close()
	stop := func(act *gomilter.Action, err error) bool {
		t.Helper()
		if err != nil {
			t.Fatalf("milter: %v", err)
		}
		return act.StopProcessing()
	}
	if act, err := s.Conn("client.test", gomilter.FamilyInet, 41000, "192.0.2.7"); stop(act, err) {
		return act
	}
	if act, err := s.Helo("client.test"); stop(act, err) {
		return act
	}
	macros.Set(gomilter.MacroAuthAuthen, login)
	macros.Set(gomilter.MacroAuthType, "PLAIN")
	if act, err := s.Mail(sender, ""); stop(act, err) {
		return act
	}
	for _, r := range rcpts {
		if act, err := s.Rcpt(r, ""); stop(act, err) {
			return act
		}
	}
	if act, err := s.DataStart(); stop(act, err) {
		return act
	}
	for _, h := range [][2]string{{"From", " " + from}, {"To", " <a@x.test>"}, {"Subject", " Hello"},
		{"Date", " Wed, 02 Dec 2026 12:00:00 +0000"}, {"Message-ID", " <m1@client.test>"}} {
		if act, err := s.HeaderField(h[0], h[1], nil); stop(act, err) {
			return act
		}
	}
	if act, err := s.HeaderEnd(); stop(act, err) {
		return act
	}
	macros.Set(gomilter.MacroQueueId, queueID)
	_, act, err := s.BodyReadFrom(strings.NewReader("Hello.\r\n"))
	if err != nil {
		t.Fatalf("milter body: %v", err)
	}
	return act
}
