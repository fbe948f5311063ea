package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/gen"
	"github.com/smtpcreds/smtpcreds/internal/accounts"
	"github.com/smtpcreds/smtpcreds/internal/app"
	"github.com/smtpcreds/smtpcreds/internal/basicauth"
	"github.com/smtpcreds/smtpcreds/internal/dbtest"
	"github.com/smtpcreds/smtpcreds/internal/dnstest"
	"github.com/smtpcreds/smtpcreds/internal/domains"
	"github.com/smtpcreds/smtpcreds/internal/metrics"
	"github.com/smtpcreds/smtpcreds/internal/password"
	"github.com/smtpcreds/smtpcreds/internal/proctest"
	"github.com/smtpcreds/smtpcreds/internal/syncer"
)

var testKey = bytes.Repeat([]byte{0x42}, 32)

// specRouter matches requests to operations for response validation.
var specRouter = sync.OnceValue(func() routers.Router {
	spec, err := gen.GetSpec()
	if err != nil {
		panic(err)
	}
	spec.Servers = nil
	r, err := gorillamux.NewRouter(spec)
	if err != nil {
		panic(err)
	}
	return r
})

// opts tune one test server.
type opts struct {
	rateLimit     int
	authFailLimit int
	maxPerDomain  int // 0: 1000, below 0: no cap
	trusted       []netip.Prefix
	dnsTimeout    time.Duration
	sync          app.SyncConfig // Target "": sync disabled
	timeout       time.Duration
	relay         app.RelayConfig // its Account.PerDay: see quota
	quota         int             // the account's daily limit: 0 means 1000, below 0 none
}

// fastSync is target with a worker paced for tests.
func fastSync(target app.SyncConfig) app.SyncConfig {
	target.Timeout = 2 * time.Second
	target.PollInterval = 20 * time.Millisecond
	target.BaseBackoff = 50 * time.Millisecond
	target.MaxBackoff = 200 * time.Millisecond
	return target
}

// testDNS is the operator DNS setup of every test server.
var testDNS = app.DNSConfig{
	Selector: "smtpcreds", SPFInclude: "_spf.relay.test", MXHost: "mx.relay.test", TrackingTarget: "track.relay.test",
}

// env is one API server on a fresh database, its log, and helpers.
type env struct {
	t    *testing.T
	url  string // of the database
	db   *sqlx.DB
	app  *app.App
	e    http.Handler
	logs *proctest.Buffer
	acc  *accounts.Service
	dns  *dnstest.Server
	dom  *domains.Service
	// outbox is the sync outbox (nil when sync is disabled); the tests
	// run its worker when they need it.
	outbox  *syncer.Service
	metrics *metrics.Metrics
}

// Every secret the tests saw and every server log they produced: checks
// after the tests (see TestMain) find that no secret reached any log.
var (
	allLogs    sync.Map // *proctest.Buffer -> true
	allSecrets sync.Map // string -> what it is
)

func rememberSecret(s, what string) {
	if s != "" {
		allSecrets.Store(s, what)
	}
}

func newEnv(t *testing.T, o opts) *env {
	t.Helper()
	return newEnvOn(t, dbtest.NewURL(t), o)
}

// newEnvOn builds a server on the database at url through internal/app,
// as `smtpcreds serve` does (the auth cache on, as by default), without
// listening: requests go in process.
func newEnvOn(t *testing.T, url string, o opts) *env {
	t.Helper()
	if o.rateLimit == 0 {
		o.rateLimit = 100000
	}
	if o.authFailLimit == 0 {
		o.authFailLimit = 100000
	}
	switch {
	case o.maxPerDomain == 0:
		o.maxPerDomain = 1000
	case o.maxPerDomain < 0:
		o.maxPerDomain = 0 // no cap
	}
	switch {
	case o.quota == 0:
		o.relay.Account.PerDay = 1000
	case o.quota > 0:
		o.relay.Account.PerDay = o.quota
	default:
		o.relay.Account.PerDay = 0 // no quota
	}
	logs := &proctest.Buffer{}
	allLogs.Store(logs, true)
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	dns := dnstest.Start(t)
	dnsCfg := testDNS
	dnsCfg.Resolver, dnsCfg.Timeout = dns.Addr(), o.dnsTimeout
	a, err := app.New(context.Background(), app.Config{
		DatabaseURL:    url,
		DBMaxConns:     testDBMaxConns,
		TokenKey:       testKey,
		DKIMKey:        testKey,
		RateLimit:      o.rateLimit,
		AuthFailLimit:  o.authFailLimit,
		MaxPerDomain:   o.maxPerDomain,
		PasswordScheme: password.SSHA512,
		TrustedProxies: o.trusted,
		AuthCache:      true,
		RequestTimeout: o.timeout,
		DNS:            dnsCfg,
		Sync:           o.sync,
		Relay:          o.relay,
	}, app.Deps{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return &env{t: t, url: url, db: a.DB(), app: a, e: a.Handler(), logs: logs, acc: a.Accounts(), dns: dns,
		dom: a.Domains(), outbox: a.Outbox(), metrics: a.Metrics()}
}

// testDBMaxConns sizes each test server's main pool (its rate-counter pool
// gets half): tests run in parallel against one PostgreSQL.
const testDBMaxConns = 10

// user is an account and its Basic auth header.
type user struct {
	name, token, auth string
	id                int64
}

// MustCreateAccount creates an account through the service the CLI uses.
func (e *env) MustCreateAccount(name string) user {
	e.t.Helper()
	a, tok, err := e.acc.Create(context.Background(), name)
	if err != nil {
		e.t.Fatalf("MustCreateAccount(%q): %v", name, err)
	}
	u := user{name: name, token: tok, auth: basicauth.Format(name, tok), id: a.ID}
	rememberSecret(tok, "API token")
	rememberSecret(strings.TrimPrefix(u.auth, "Basic "), "Authorization header")
	return u
}

// MustAddDomain attaches a domain through the service the CLI uses.
func (e *env) MustAddDomain(u user, name string, verified bool) {
	e.t.Helper()
	if _, err := e.dom.AddForAccount(context.Background(), u.name, name, verified); err != nil {
		e.t.Fatalf("MustAddDomain(%q): %v", name, err)
	}
}

// req describes one call.
type req struct {
	method, path string
	auth         string
	body         string
	contentType  string // default application/json (as the SDKs send, even on GET)
	header       map[string]string
	remoteAddr   string
}

// resp is a recorded response with its decoded JSON body.
type resp struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
}

// do sends r through the server in-process and validates the response
// against openapi.yaml whenever the request names a documented operation.
func (e *env) do(r req) resp {
	e.t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	hr := httptest.NewRequest(r.method, r.path, body)
	ct := r.contentType
	if ct == "" {
		ct = "application/json"
	}
	hr.Header.Set("Content-Type", ct)
	if r.auth != "" {
		hr.Header.Set("Authorization", r.auth)
		if cred, ok := strings.CutPrefix(r.auth, "Basic "); ok && len(cred) > 8 {
			rememberSecret(cred, "Authorization header")
		}
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	if r.remoteAddr != "" {
		hr.RemoteAddr = r.remoteAddr
	}
	rec := httptest.NewRecorder()
	e.e.ServeHTTP(rec, hr)

	out := resp{status: rec.Code, header: rec.Header(), raw: rec.Body.String()}
	if err := json.Unmarshal(rec.Body.Bytes(), &out.body); err != nil {
		e.t.Fatalf("%s %s: response is not a JSON object (%d): %q", r.method, r.path, rec.Code, rec.Body.String())
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		e.t.Fatalf("%s %s: Content-Type %q", r.method, r.path, ct)
	}
	rememberSecret(str(out.body, "data", "password"), "password")
	rememberSecret(str(out.body, "data", "new_password"), "password")
	e.validate(r, hr, out)
	return out
}

func (e *env) validate(r req, hr *http.Request, out resp) {
	e.t.Helper()
	vreq := httptest.NewRequest(r.method, hr.URL.String(), nil)
	route, params, err := specRouter().FindRoute(vreq)
	if err != nil {
		return // not a documented operation (unknown route or method)
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: vreq, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status: out.status,
		Header: out.header,
		Body:   io.NopCloser(strings.NewReader(out.raw)),
		Options: &openapi3filter.Options{
			IncludeResponseStatus: true,
			MultiError:            true,
		},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		e.t.Errorf("%s %s -> %d: response does not match openapi.yaml: %v\nbody: %s", r.method, r.path, out.status, err, out.raw)
	}
	observe(route.Operation.OperationID, out.status)
}

// observed records (operation, status) pairs seen by any test, for the
// coverage check after all tests (see TestMain).
var observed sync.Map

func observe(op string, status int) { observed.Store(op+" "+itoa(status), true) }

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

var _ = openapi3.MultiError{}

// helpers for JSON bodies

func str(m map[string]any, path ...string) string {
	v := dig(m, path...)
	s, _ := v.(string)
	return s
}

func dig(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

// wantStatus fails unless r has the status; it prints the body.
func wantStatus(t *testing.T, r resp, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.raw)
	}
}

// wantError checks an error envelope: success false and the message.
func wantError(t *testing.T, r resp, status int, message string) {
	t.Helper()
	wantStatus(t, r, status)
	if r.body["success"] != false {
		t.Errorf("success = %v, want false", r.body["success"])
	}
	if message != "" && r.body["message"] != message {
		t.Errorf("message = %q, want %q", r.body["message"], message)
	}
}

// wantFieldError checks a 422 with a message for field.
func wantFieldError(t *testing.T, r resp, field string) []any {
	t.Helper()
	wantError(t, r, http.StatusUnprocessableEntity, "Validation failed.")
	msgs, ok := dig(r.body, "errors", field).([]any)
	if !ok || len(msgs) == 0 {
		t.Fatalf("errors.%s missing in %s", field, r.raw)
	}
	return msgs
}

// concurrent sends n requests at once (request(i) makes the i-th) and
// returns how many got 201; any status other than 201 or 422 fails the test.
func (e *env) concurrent(n int, request func(i int) req) int {
	e.t.Helper()
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = e.do(request(i)).status
		}()
	}
	wg.Wait()
	created := 0
	for _, s := range statuses {
		switch s {
		case http.StatusCreated:
			created++
		case http.StatusUnprocessableEntity:
		default:
			e.t.Errorf("unexpected status %d among %v", s, statuses)
		}
	}
	return created
}
