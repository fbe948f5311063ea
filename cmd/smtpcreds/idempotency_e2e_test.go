package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/basicauth"
	"github.com/smtpcreds/smtpcreds/internal/password"
)

// kill -9 of the server after a keyed create committed and before it
// answered (it is waiting for its sync, which a webhook holds): the client
// gets no response, and after a restart the retry with the same key
// replays the create (the same credential and password), creating nothing.
func TestIdempotentCreateReplaysAfterKill9(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	bin := buildBinary(t)
	var hold atomic.Bool
	hold.Store(true)
	arrived := make(chan struct{}, 16)
	release := make(chan struct{})
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if hold.Load() {
			arrived <- struct{}{}
			select { // held until the test ends or the client gives up
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		_, _ = w.Write([]byte(`{}`))
	}))
	defer hook.Close()
	defer close(release)

	env := serverEnv(t, map[string]string{
		"SMTPCREDS_RATE_LIMIT":     "0",
		"SMTPCREDS_SYNC_TARGET":    "webhook",
		"SMTPCREDS_WEBHOOK_URL":    hook.URL,
		"SMTPCREDS_WEBHOOK_SECRET": "0123456789abcdef0123456789abcdef",
		"SMTPCREDS_SYNC_TIMEOUT":   "30s",
	})
	mustRun(t, bin, env, "migrate")
	token := createToken(t, bin, env, "accounts", "create", "crash")
	mustRun(t, bin, env, "domains", "add", "crash", "crash.example", "--verified")
	db, err := sqlx.Connect("postgres", env["DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	post := func(addr string) (*http.Response, []byte, error) {
		req, err := http.NewRequestWithContext(context.Background(), "POST",
			"http://"+addr+"/api/domains/crash.example/credentials", bytes.NewReader([]byte(`{"username":"survivor"}`)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", basicauth.Format("crash", token))
		req.Header.Set("Idempotency-Key", "crash-1")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		return res, body, err
	}

	srv := startServer(t, bin, env)
	lost := make(chan error, 1)
	go func() {
		_, _, err := post(srv.addr)
		lost <- err
	}()
	select {
	case <-arrived: // committed: the sync job is applied only after the commit
	case <-time.After(time.Minute):
		t.Fatalf("the create's sync never reached the webhook; log:\n%s", srv.logText())
	}
	srv.kill9(t)
	if err := <-lost; err == nil {
		t.Fatal("the create answered before the kill")
	}
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM credentials`); err != nil || n != 1 {
		t.Fatalf("%d credentials committed before the kill (%v), want 1", n, err)
	}

	hold.Store(false)
	srv = startServer(t, bin, env)
	res, body, err := post(srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusCreated || res.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry after the crash: %d %v %s", res.StatusCode, res.Header, body)
	}
	var out struct {
		Data struct {
			Password   string `json:"password"`
			Credential struct {
				GUID string `json:"user_smtp_guid"`
			} `json:"credential"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	var row struct {
		GUID string `db:"guid"`
		Hash string `db:"password_hash"`
	}
	if err := db.Get(&row, `SELECT guid::text, password_hash FROM credentials`); err != nil {
		t.Fatal(err)
	}
	if row.GUID != out.Data.Credential.GUID {
		t.Errorf("replayed credential %s, stored %s", out.Data.Credential.GUID, row.GUID)
	}
	if ok, err := password.Verify(row.Hash, out.Data.Password); err != nil || !ok {
		t.Errorf("the replayed password does not match the stored hash (%v)", err)
	}
	if err := db.Get(&n, `SELECT count(*) FROM credentials`); err != nil || n != 1 {
		t.Errorf("%d credentials after the retry (%v), want 1", n, err)
	}
	again, body2, err := post(srv.addr)
	if err != nil || again.StatusCode != http.StatusCreated || !bytes.Equal(body, body2) {
		t.Errorf("second replay differs: %v %s", err, body2)
	}
	srv.stop(t)
}
