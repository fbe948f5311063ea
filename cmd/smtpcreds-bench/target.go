package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/syncer/webhook"
)

// targetWebhook is the webhook sync target: the server posts signed
// batches of events to a receiver (hookReceiver, in the bench process).
const targetWebhook = "webhook"

// prepareTarget makes the database and the bench ready for the server's
// sync target e.target before the server starts with it: for dovecot-sql,
// Dovecot's role, as the README sets it up (the server checks that it may
// read the view); for webhook, a receiver in the bench process.
func (e *env) prepareTarget(ctx context.Context) error {
	switch e.target {
	case targetSQL:
		var exists bool
		if err := e.db.GetContext(ctx, &exists, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dovecot')`); err != nil {
			return err
		}
		qs := []string{`GRANT SELECT ON dovecot_passdb TO dovecot`}
		if !exists {
			qs = append([]string{`CREATE ROLE dovecot LOGIN`}, qs...)
		}
		for _, q := range qs {
			if _, err := e.db.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
	case targetWebhook:
		if e.hook == nil {
			h, err := startHookReceiver()
			if err != nil {
				return err
			}
			e.hook = h
		}
	}
	return nil
}

// syncEnv is the server's (and the CLI's) sync target settings.
func (e *env) syncEnv() []string {
	env := []string{"SMTPCREDS_SYNC_TARGET=" + e.target}
	switch e.target {
	case targetFile:
		env = append(env, "SMTPCREDS_PASSWD_FILE="+e.passwd)
		if e.passwdGroup != "" {
			env = append(env, "SMTPCREDS_PASSWD_FILE_GROUP="+e.passwdGroup)
		}
	case targetWebhook:
		env = append(env, "SMTPCREDS_WEBHOOK_URL="+e.hook.url, "SMTPCREDS_WEBHOOK_SECRET="+string(e.hook.secret))
	}
	return env
}

// hookReceiver is a webhook sync agent for the bench: it checks each
// delivery's signature, counts its events by type and the logins they
// upsert, and answers 204 (401 to a bad signature, 400 to a body it cannot
// read: the server then retries, and the bench sees its jobs pending).
type hookReceiver struct {
	url    string
	secret []byte
	srv    *http.Server

	deliveries, bad atomic.Int64
	mu              sync.Mutex
	events          map[string]int64 // by event type
	bytes           int64
	largest         int // events in the largest delivery
}

func startHookReceiver() (*hookReceiver, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &hookReceiver{url: "http://" + l.Addr().String() + "/events", secret: []byte(randHex(24)), events: map[string]int64{}}
	h.srv = &http.Server{Handler: http.HandlerFunc(h.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = h.srv.Serve(l) }()
	return h, nil
}

func (h *hookReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		h.bad.Add(1)
		http.Error(w, "read", http.StatusBadRequest)
		return
	}
	if err := webhook.Verify(h.secret, r.Header.Get(webhook.SignatureHeader), body, time.Now(), 5*time.Minute); err != nil {
		h.bad.Add(1)
		http.Error(w, "signature", http.StatusUnauthorized)
		return
	}
	var d struct {
		Events []struct {
			Type string `json:"type"`
		} `json:"events"`
	}
	if err := json.Unmarshal(body, &d); err != nil || len(d.Events) == 0 {
		h.bad.Add(1)
		http.Error(w, "body", http.StatusBadRequest)
		return
	}
	h.deliveries.Add(1)
	h.mu.Lock()
	for _, ev := range d.Events {
		h.events[ev.Type]++
	}
	h.bytes += int64(len(body))
	h.largest = max(h.largest, len(d.Events))
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// count is the events of type typ received so far.
func (h *hookReceiver) count(typ string) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.events[typ]
}

// summary describes what the receiver got.
func (h *hookReceiver) summary() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return fmt.Sprintf("%d deliveries (%d refused), events %v, %.1f MB, at most %d events in one", h.deliveries.Load(), h.bad.Load(), h.events, float64(h.bytes)/1e6, h.largest)
}

func (h *hookReceiver) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = h.srv.Shutdown(ctx)
}
