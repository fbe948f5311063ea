package httpapi_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/app"
	"github.com/smtpcreds/smtpcreds/internal/dbtest"
)

func TestHealthz(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{rateLimit: 1})
	w.do(req{method: "GET", path: credsPath, auth: w.alice.auth}) // the account's whole budget
	for range 3 {
		r := w.do(req{method: "GET", path: "/healthz"})
		wantStatus(t, r, http.StatusOK)
		if r.body["status"] != "ok" || r.header.Get("X-RateLimit-Limit") != "" {
			t.Errorf("healthz: %s %v", r.raw, r.header)
		}
	}
}

// /readyz reports the checks of the real wiring: ready with sync off; with
// a sync target, ready only while the sync worker goes round.
func TestReadyz(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	r := w.do(req{method: "GET", path: "/readyz"})
	wantStatus(t, r, http.StatusOK)
	for check, want := range map[string]string{"database": "ok", "migrations": "ok", "sync_worker": "disabled", "shutdown": "ok"} {
		if r.body["success"] != true || dig(r.body, "checks", check) != want {
			t.Errorf("ready: %s is not %s: %s", check, want, r.raw)
		}
	}

	synced := newEnvOn(t, w.url, opts{sync: fastSync(app.SyncConfig{Target: "passwd-file", PasswdFile: filepath.Join(t.TempDir(), "passwd")})})
	r = synced.do(req{method: "GET", path: "/readyz"})
	wantStatus(t, r, http.StatusServiceUnavailable)
	if r.body["success"] != false || dig(r.body, "checks", "sync_worker") != "not running" || r.header.Get("Retry-After") == "" {
		t.Errorf("not ready without its sync worker: %s %v", r.raw, r.header)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { synced.outbox.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for synced.do(req{method: "GET", path: "/readyz"}).status != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("not ready 10s after its sync worker started")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{authFailLimit: 2})
	w.MustCreateCredential("m")
	w.do(req{method: "GET", path: credsPath, auth: w.alice.auth})
	for range 3 {
		w.do(req{method: "GET", path: credsPath, auth: "Basic bm9wZTpub3Bl", remoteAddr: "192.0.2.99:1"})
	}
	rec := httptest.NewRecorder()
	w.metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	text := string(body)
	for _, want := range []string{
		`smtpcreds_http_requests_total{method="POST",route="/api/domains/:domain/credentials",status="201"} 1`,
		`smtpcreds_http_requests_total{method="GET",route="/api/domains/:domain/credentials",status="200"} 1`,
		`smtpcreds_http_requests_total{method="GET",route="/api/domains/:domain/credentials",status="401"} 2`,
		`smtpcreds_auth_failures_total 2`,
		`smtpcreds_rate_limit_rejections_total{limit="auth_failures"} 1`,
		`smtpcreds_http_request_duration_seconds_bucket{method="POST",route="/api/domains/:domain/credentials",le="+Inf"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(text, "example.com") {
		t.Error("metrics carry raw paths")
	}
}

// With PostgreSQL stopped, requests fail fast with 503 and Retry-After (the
// health endpoint still answers); when it is back the same server serves
// again by itself, and every credential acknowledged with 201 under load
// exists exactly once.
func TestDatabaseOutage(t *testing.T) {
	// Not parallel: it stops the PostgreSQL server every test shares.
	cluster := dbtest.Cluster()
	if cluster == nil {
		t.Skip("needs the throwaway cluster dbtest starts (TEST_DATABASE_URL points elsewhere)")
	}
	w := newWorld(t, opts{timeout: 2 * time.Second})
	w.MustCreateCredential("before")

	var (
		mu     sync.Mutex
		acked  []string
		counts = map[int]int{}
		wg     sync.WaitGroup
	)
	ctx, stopLoad := context.WithCancel(context.Background())
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				user := fmt.Sprintf("g%d-%d", g, i)
				r := w.do(req{method: "POST", path: credsPath, auth: w.alice.auth, body: `{"username":"` + user + `"}`})
				mu.Lock()
				counts[r.status]++
				if r.status == http.StatusCreated {
					acked = append(acked, user)
				}
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	time.Sleep(100 * time.Millisecond) // some load before the outage

	if err := cluster.Stop(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := w.do(req{method: "GET", path: credsPath, auth: w.alice.auth})
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("a request took %v with the database down", took)
	}
	wantError(t, r, http.StatusServiceUnavailable, "The service is temporarily unavailable. Please try again later.")
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	wantStatus(t, w.do(req{method: "GET", path: "/healthz"}), http.StatusOK)
	r = w.do(req{method: "GET", path: "/readyz"})
	wantStatus(t, r, http.StatusServiceUnavailable)
	if dig(r.body, "checks", "database") != "unreachable" || r.header.Get("Retry-After") == "" {
		t.Errorf("/readyz with the database down: %s %v", r.raw, r.header)
	}
	for _, r := range everyRoute("00000000-0000-4000-8000-000000000001") {
		r.auth = w.alice.auth
		wantError(t, w.do(r), http.StatusServiceUnavailable, "")
	}

	if err := cluster.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for w.do(req{method: "GET", path: credsPath, auth: w.alice.auth}).status != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("the server did not recover within 20s of the database's return")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // load after recovery
	stopLoad()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	for status, n := range counts {
		if status != http.StatusCreated && status != http.StatusServiceUnavailable {
			t.Errorf("%d responses with status %d (want only 201 and 503)", n, status)
		}
	}
	if counts[http.StatusServiceUnavailable] == 0 || counts[http.StatusCreated] == 0 {
		t.Errorf("the load saw no outage or no success: %v", counts)
	}
	for _, u := range acked {
		var n int
		if err := w.db.Get(&n, `SELECT count(*) FROM credentials WHERE username = $1`, u); err != nil || n != 1 {
			t.Errorf("%s acknowledged with 201 but stored %d times (%v)", u, n, err)
		}
	}
	t.Logf("responses: %v", counts)
}

func TestDocsMounted(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	rec := httptest.NewRecorder()
	w.e.ServeHTTP(rec, httptest.NewRequest("GET", "/openapi.yaml", nil))
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Body.String(), "openapi: 3.0.3") {
		t.Errorf("/openapi.yaml: %d %.40q", rec.Code, rec.Body.String())
	}
	rec = httptest.NewRecorder()
	w.e.ServeHTTP(rec, httptest.NewRequest("GET", "/docs", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "<html") {
		t.Errorf("/docs without credentials: %d", rec.Code)
	} // The root leads to the reference, without credentials.
	for _, m := range []string{"GET", "HEAD"} {
		rec = httptest.NewRecorder()
		w.e.ServeHTTP(rec, httptest.NewRequest(m, "/", nil))
		if rec.Code != http.StatusFound || rec.Header().Get("Location") != "/docs" {
			t.Errorf("%s /: %d to %q, want 302 to /docs", m, rec.Code, rec.Header().Get("Location"))
		}
	}
}
