package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/gen"
)

// SIGTERM under load: the server stops accepting, finishes what it
// accepted, exits 0, and every acknowledged create is durable. Clients see
// either a complete response or a refused connection, nothing in between.
func TestGracefulShutdownUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	bin := buildBinary(t, t.TempDir())
	keys := make([]string, 2)
	for i := range keys {
		var k [32]byte
		if _, err := rand.Read(k[:]); err != nil {
			t.Fatal(err)
		}
		keys[i] = hex.EncodeToString(k[:])
	}
	dbURL := emptyDatabase(t)
	env := map[string]string{
		"DATABASE_URL":               dbURL,
		"SMTPCREDS_TOKEN_KEY":        keys[0],
		"SMTPCREDS_DKIM_KEY":         keys[1],
		"SMTPCREDS_ADDR":             "127.0.0.1:0",
		"SMTPCREDS_RATE_LIMIT":       "0",
		"SMTPCREDS_SHUTDOWN_TIMEOUT": "10s",
	}
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
		mu       sync.Mutex
		acked    []string
		failures []string
		refused  int
		wg       sync.WaitGroup
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				user := fmt.Sprintf("s%d-%d", w, i)
				r, err := client.CreateCredentialWithResponse(context.Background(), "load.example", gen.CredentialInput{Username: &user})
				mu.Lock()
				switch {
				case errors.Is(err, syscall.ECONNREFUSED):
					refused++
					mu.Unlock()
					return // the listener is closed: the server is going away
				case err != nil:
					failures = append(failures, err.Error())
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
	srv.stop(t) // SIGTERM; requires exit status 0
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
	t.Logf("%d acknowledged, %d clients refused at connect after SIGTERM", len(acked), refused)
}
