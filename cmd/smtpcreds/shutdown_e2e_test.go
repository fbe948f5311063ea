package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/gen"
)

// freeAddr is a 127.0.0.1 address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func getText(t *testing.T, url string) string {
	t.Helper()
	r, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil || r.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, r.StatusCode, err)
	}
	return string(b)
}

func getJSON(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	r, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer r.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return r.StatusCode, body
}

// SIGTERM under load: the server stops accepting, finishes every request it
// started, exits 0, and every acknowledged create is durable. A connection
// still in the kernel's accept queue when the listener closes is reset: its
// request was never read, so it must have changed nothing (a client may
// retry it safely). Nothing else may fail.
func TestGracefulShutdownUnderLoad(t *testing.T) {
	// Not parallel: it drains a server under load; the other tests' load would
	// make its timing flaky.
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	bin := buildBinary(t)
	opAddr := freeAddr(t)
	env := serverEnv(t, map[string]string{
		"SMTPCREDS_OPERATOR_ADDR":              opAddr,
		"SMTPCREDS_RATE_LIMIT":                 "0",
		"SMTPCREDS_MAX_CREDENTIALS_PER_DOMAIN": "0",
		"SMTPCREDS_SHUTDOWN_TIMEOUT":           "10s",
		"SMTPCREDS_SHUTDOWN_DELAY":             "1s",
	})
	dbURL := env["DATABASE_URL"]
	mustRun(t, bin, env, "migrate")
	token := createToken(t, bin, env, "accounts", "create", "load")
	mustRun(t, bin, env, "domains", "add", "load", "load.example", "--verified")
	srv := startServer(t, bin, env)

	// A fresh connection per request: a request is either accepted whole or
	// refused at connect time (keep-alive reuse could race with the close).
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	client, err := gen.NewClientWithResponses("http://"+srv.addr, gen.WithHTTPClient(hc),
		gen.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
			r.SetBasicAuth("load", token)
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu         sync.Mutex
		acked      []string
		unanswered []string // transport error without a response
		failures   []string
		refused    int
		wg         sync.WaitGroup
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				user := fmt.Sprintf("s%d-%d", w, i)
				r, err := client.CreateCredentialWithResponse(context.Background(), "load.example", nil, gen.CredentialInput{Username: &user})
				mu.Lock()
				switch {
				case errors.Is(err, syscall.ECONNREFUSED):
					refused++
					mu.Unlock()
					return // the listener is closed: the server is going away
				case err != nil:
					unanswered = append(unanswered, user)
				case r.StatusCode() != http.StatusCreated:
					failures = append(failures, fmt.Sprintf("status %d: %s", r.StatusCode(), r.Body))
				default:
					acked = append(acked, user)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	deadline := time.Now().Add(time.Minute)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d creates acknowledged in a minute", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st, body := getJSON(t, "http://"+srv.addr+"/readyz"); st != http.StatusOK || body["success"] != true {
		t.Errorf("/readyz before SIGTERM: %d %v", st, body)
	}
	// The operator listener serves the metrics of the load so far; the
	// public listener does not.
	metrics := getText(t, "http://"+opAddr+"/metrics")
	for _, want := range []string{
		`smtpcreds_http_requests_total{method="POST",route="/api/domains/:domain/credentials",status="201"}`,
		`go_sql_max_open_connections{db_name="main"}`,
		`smtpcreds_http_request_duration_seconds_bucket`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if r, err := http.Get("http://" + srv.addr + "/metrics"); err == nil {
		r.Body.Close()
		if r.StatusCode != http.StatusNotFound {
			t.Errorf("/metrics on the public listener: %d, want 404", r.StatusCode)
		}
	}
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// While draining (1 s), /readyz fails so that a load balancer stops
	// sending; the signal takes a moment to arrive.
	drainSeen := false
	for until := time.Now().Add(900 * time.Millisecond); time.Now().Before(until); time.Sleep(10 * time.Millisecond) {
		st, body := getJSON(t, "http://"+srv.addr+"/readyz")
		if st == http.StatusServiceUnavailable && body["checks"].(map[string]any)["shutdown"] == "in progress" {
			drainSeen = true
			break
		}
	}
	if !drainSeen {
		t.Error("/readyz never reported the shutdown while draining")
	}
	srv.stop(t) // requires exit status 0
	wg.Wait()

	if len(failures) > 0 {
		t.Errorf("%d requests failed or were cut off during shutdown, e.g. %s", len(failures), failures[0])
	}
	db, err := sqlx.Connect("postgres", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, u := range acked {
		var n int
		if err := db.Get(&n, `SELECT count(*) FROM credentials WHERE username = $1`, u); err != nil || n != 1 {
			t.Errorf("%s acknowledged but stored %d times (%v)", u, n, err)
		}
	}
	for _, u := range unanswered {
		var n int
		if err := db.Get(&n, `SELECT count(*) FROM credentials WHERE username = $1`, u); err != nil || n != 0 {
			t.Errorf("%s got no response but was stored: a request was cut off (%v)", u, err)
		}
	}
	t.Logf("%d acknowledged, %d unanswered and unapplied (reset in the accept queue), %d refused at connect",
		len(acked), len(unanswered), refused)
}
