package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/app"
	"github.com/smtpcreds/smtpcreds/internal/syncer"
	"github.com/smtpcreds/smtpcreds/internal/syncer/webhook"
)

// agent is a sync agent on "another host": it verifies signatures and keeps
// the logins it was told about.
type agent struct {
	secret []byte
	down   atomic.Bool
	mu     sync.Mutex
	hashes map[string]string // login -> hash
	// previous holds the previous password of a login in a grace period.
	previous map[string]string
	bodies   []string
	bad      atomic.Int32
}

func (a *agent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if a.down.Load() {
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
		return
	}
	if webhook.Verify(a.secret, r.Header.Get("X-Smtpcreds-Signature"), body, time.Now(), time.Minute) != nil {
		a.bad.Add(1)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var batch struct {
		Events []syncer.Event `json:"events"`
	}
	if json.Unmarshal(body, &batch) != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.bodies = append(a.bodies, string(body))
	for _, e := range batch.Events {
		switch e.Type {
		case syncer.CredentialUpserted:
			a.hashes[e.Login] = e.PasswordHash
			if e.PreviousPasswordHash != "" {
				a.previous[e.Login] = e.PreviousPasswordHash
			} else {
				delete(a.previous, e.Login)
			}
		case syncer.CredentialDeleted:
			delete(a.hashes, e.Login)
			delete(a.previous, e.Login)
		case syncer.DomainDeleted:
			for _, l := range e.Logins {
				delete(a.hashes, l)
			}
		}
	}
}

func (a *agent) hash(login string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hashes[login]
}

// newWebhookWorld is a world synced through the webhook target to a
// receiving agent, served until the test ends.
func newWebhookWorld(t *testing.T) (*agent, world) {
	t.Helper()
	ag := &agent{secret: []byte("0123456789abcdef-secret"), hashes: map[string]string{}, previous: map[string]string{}}
	srv := httptest.NewServer(ag)
	t.Cleanup(srv.Close)
	w := newWorld(t, opts{sync: fastSync(app.SyncConfig{
		Target: "webhook", WebhookURL: srv.URL, WebhookSecret: ag.secret, WebhookTimeout: time.Second,
	})})
	return ag, w
}

func TestWebhookSyncDownThenRecovers(t *testing.T) {
	t.Parallel()
	ag, w := newWebhookWorld(t)
	d := w.MustCreateCredential("hooked")
	if d["remote_synced"] != true {
		t.Fatalf("remote_synced false with a healthy agent: %v", d)
	}
	var hash string
	if err := w.db.Get(&hash, `SELECT password_hash FROM credentials WHERE username = 'hooked'`); err != nil {
		t.Fatal(err)
	}
	if ag.hash("hooked@example.com") != hash {
		t.Errorf("agent holds %q, database %q", ag.hash("hooked@example.com"), hash)
	}

	ag.down.Store(true)
	r := w.do(req{method: "POST", path: credsPath, auth: w.alice.auth, body: `{"username":"later"}`})
	wantStatus(t, r, http.StatusCreated)
	if dig(r.body, "data", "remote_synced") != false {
		t.Fatalf("remote_synced true while the agent is down: %s", r.raw)
	}
	guid := str(r.body, "data", "credential", "user_smtp_guid")
	g := w.do(req{method: "GET", path: credsPath + "/" + guid, auth: w.alice.auth})
	if !strings.Contains(str(g.body, "data", "sync_error"), "503") {
		t.Errorf("sync_error should name the agent's answer: %s", g.raw)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.outbox.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	ag.down.Store(false)
	deadline := time.Now().Add(10 * time.Second)
	for ag.hash("later@example.com") == "" || dig(w.do(req{method: "GET", path: credsPath + "/" + guid, auth: w.alice.auth}).body, "data", "remote_synced") != true {
		if time.Now().After(deadline) {
			t.Fatal("webhook sync did not converge after the agent came back")
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantStatus(t, w.do(req{method: "DELETE", path: "/api/domains/example.com", auth: w.alice.auth}), http.StatusOK)
	if ag.hash("hooked@example.com") != "" || ag.hash("later@example.com") != "" {
		t.Error("the domain's deletion did not reach the agent")
	}
	if ag.bad.Load() != 0 {
		t.Errorf("%d deliveries with a bad signature", ag.bad.Load())
	}
	ag.mu.Lock()
	defer ag.mu.Unlock()
	for _, b := range ag.bodies {
		if strings.Contains(b, d["password"].(string)) || strings.Contains(b, str(r.body, "data", "password")) {
			t.Error("a plaintext password reached the webhook")
		}
	}
}

// A delete while the agent is down answers remote_synced false: the agent
// (the SMTP server's auth backend) still holds the login, so it still
// authenticates, and /metrics shows the pending deletion until the worker
// delivers it.
func TestWebhookDeleteWhileAgentDown(t *testing.T) {
	t.Parallel()
	ag, w := newWebhookWorld(t)
	guid := str(w.MustCreateCredential("leaving"), "credential", "user_smtp_guid")
	if ag.hash("leaving@example.com") == "" {
		t.Fatal("the create did not reach the agent")
	}

	ag.down.Store(true)
	r := w.do(req{method: "DELETE", path: credsPath + "/" + guid, auth: w.alice.auth})
	wantStatus(t, r, http.StatusOK)
	if dig(r.body, "data", "remote_synced") != false {
		t.Fatalf("remote_synced true while the agent is down: %s", r.raw)
	}
	wantError(t, w.do(req{method: "GET", path: credsPath + "/" + guid, auth: w.alice.auth}), http.StatusNotFound, "Credential not found")
	if ag.hash("leaving@example.com") == "" {
		t.Fatal("the agent lost the login although it was down")
	}
	if depth, age := w.syncBacklog(); depth != 1 || age <= 0 {
		t.Errorf("metrics while the deletion is pending: queue depth %v, oldest age %v; want 1 and > 0", depth, age)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.outbox.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	ag.down.Store(false)
	deadline := time.Now().Add(10 * time.Second)
	for ag.hash("leaving@example.com") != "" {
		if time.Now().After(deadline) {
			t.Fatal("the deletion did not reach the agent after it came back")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
