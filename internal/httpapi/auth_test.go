package httpapi_test

import (
	"encoding/base64"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/smtpcreds/smtpcreds/internal/basicauth"
)

func TestUnauthorizedIsUniform(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	otherToken := w.bob.token
	cases := map[string]string{
		"no header":         "",
		"wrong scheme":      "Bearer " + w.alice.token,
		"bad base64":        "Basic !!!",
		"no colon":          "Basic " + base64.StdEncoding.EncodeToString([]byte("alice")),
		"wrong token":       basicauth.Format("alice", otherToken),
		"unknown user":      basicauth.Format("mallory", w.alice.token),
		"malformed token":   basicauth.Format("alice", "hunter2"),
		"token typo":        basicauth.Format("alice", wrongPassword(w.alice.token)),
		"empty password":    basicauth.Format("alice", ""),
		"token of bob, bob": basicauth.Format("bob", w.alice.token),
	}
	var first string
	for name, auth := range cases {
		t.Run(name, func(t *testing.T) {
			r := w.do(req{method: "POST", path: credsPath, auth: auth, body: `{"username":"..bad"}`})
			wantError(t, r, http.StatusUnauthorized, "Unauthorized") // 401 wins over 422
			if r.body["error"] != "Unauthorized" {
				t.Errorf("error = %v", r.body["error"])
			}
			if got := r.header.Get("WWW-Authenticate"); got != `Basic realm="smtpcreds"` {
				t.Errorf("WWW-Authenticate = %q", got)
			}
			if r.header.Get("X-RateLimit-Limit") != "" {
				t.Error("rate-limit headers on an unauthenticated response")
			}
			if first == "" {
				first = r.raw
			} else if r.raw != first {
				t.Errorf("body differs between causes: %s vs %s", r.raw, first)
			}
		})
	}
	// Names are case-insensitive.
	r := w.do(req{method: "GET", path: credsPath, auth: basicauth.Format("ALICE", w.alice.token)})
	wantStatus(t, r, http.StatusOK)
}

func TestAuthFailuresLimitedPerAddress(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{authFailLimit: 3})
	bad := basicauth.Format("alice", w.bob.token)
	const attacker, bystander = "192.0.2.7:1234", "192.0.2.8:1234"
	for range 3 {
		wantStatus(t, w.do(req{method: "GET", path: credsPath, auth: bad, remoteAddr: attacker}), http.StatusUnauthorized)
	}
	// Over the limit the address is refused before its token is checked,
	// even a right one.
	r := w.do(req{method: "GET", path: credsPath, auth: w.alice.auth, remoteAddr: attacker})
	wantError(t, r, http.StatusTooManyRequests, "Too many attempts. Please try again later.")
	if n, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || n < 1 || n > 60 {
		t.Errorf("Retry-After = %q", r.header.Get("Retry-After"))
	}
	wantStatus(t, w.do(req{method: "GET", path: credsPath, auth: w.alice.auth, remoteAddr: bystander}), http.StatusOK)
}

func TestClientAddressFromTrustedProxyOnly(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{authFailLimit: 1, trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	bad := basicauth.Format("alice", w.bob.token)
	proxy := "10.1.1.1:999"
	xff := func(ip string) map[string]string { return map[string]string{"X-Forwarded-For": ip} }
	wantStatus(t, w.do(req{method: "GET", path: credsPath, auth: bad, remoteAddr: proxy, header: xff("198.51.100.1")}), http.StatusUnauthorized)
	// Another client behind the same proxy is not blocked...
	wantStatus(t, w.do(req{method: "GET", path: credsPath, auth: w.alice.auth, remoteAddr: proxy, header: xff("198.51.100.2")}), http.StatusOK)
	// ...but the failing one is.
	wantStatus(t, w.do(req{method: "GET", path: credsPath, auth: w.alice.auth, remoteAddr: proxy, header: xff("198.51.100.1")}), http.StatusTooManyRequests)
	// An untrusted peer cannot pick its address with the header.
	wantStatus(t, w.do(req{method: "GET", path: credsPath, auth: bad, remoteAddr: "203.0.113.9:1", header: xff("198.51.100.3")}), http.StatusUnauthorized)
	wantStatus(t, w.do(req{method: "GET", path: credsPath, auth: w.alice.auth, remoteAddr: "203.0.113.9:1", header: xff("198.51.100.4")}), http.StatusTooManyRequests)
}

// Two server processes on one database enforce one limit.
func TestRateLimitSharedAcrossInstances(t *testing.T) {
	t.Parallel()
	a := newWorld(t, opts{rateLimit: 5})
	b := newEnvOn(t, a.url, opts{rateLimit: 5})
	servers := []*env{a.env, b, a.env, b, a.env}
	for i, s := range servers {
		r := s.do(req{method: "GET", path: credsPath, auth: a.alice.auth})
		wantStatus(t, r, http.StatusOK)
		if r.header.Get("X-RateLimit-Limit") != "5" || r.header.Get("X-RateLimit-Remaining") != strconv.Itoa(4-i) {
			t.Errorf("call %d: limit %q remaining %q", i, r.header.Get("X-RateLimit-Limit"), r.header.Get("X-RateLimit-Remaining"))
		}
	}
	r := b.do(req{method: "POST", path: credsPath, auth: a.alice.auth, body: `{"username":"x"}`})
	wantError(t, r, http.StatusTooManyRequests, "Too many attempts. Please try again later.")
	if r.header.Get("Retry-After") == "" || r.header.Get("X-RateLimit-Remaining") != "0" {
		t.Errorf("429 headers: %v", r.header)
	}
	var n int
	if err := a.db.Get(&n, `SELECT count(*) FROM credentials`); err != nil || n != 0 {
		t.Errorf("a limited create changed data: %d %v", n, err)
	}
	// Another account has its own budget.
	wantStatus(t, a.do(req{method: "GET", path: "/api/domains/bob.test/credentials", auth: a.bob.auth}), http.StatusOK)
}

func TestRateLimitHeadersOnErrors(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{rateLimit: 50})
	r := w.do(req{method: "GET", path: "/api/domains/nope.example/credentials", auth: w.alice.auth})
	wantStatus(t, r, http.StatusNotFound)
	if r.header.Get("X-RateLimit-Limit") != "50" || r.header.Get("X-RateLimit-Remaining") != "49" {
		t.Errorf("headers on 404: %v", r.header)
	}
}

func TestUnknownRouteAndMethod(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	r := w.do(req{method: "GET", path: "/api/nothing", auth: w.alice.auth})
	wantError(t, r, http.StatusNotFound, "Not found")
	r = w.do(req{method: "GET", path: "/nothing"})
	wantError(t, r, http.StatusNotFound, "Not found")
	r = w.do(req{method: "PATCH", path: credsPath, auth: w.alice.auth})
	wantError(t, r, http.StatusMethodNotAllowed, "Method not allowed")
	if !strings.Contains(r.header.Get("Allow"), "POST") {
		t.Errorf("Allow = %q", r.header.Get("Allow"))
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	r := w.do(req{method: "GET", path: credsPath, auth: w.alice.auth, header: map[string]string{"X-Request-ID": "abc-123"}})
	if r.header.Get("X-Request-ID") != "abc-123" {
		t.Errorf("X-Request-ID not echoed: %v", r.header)
	}
	r = w.do(req{method: "GET", path: credsPath, auth: w.alice.auth, header: map[string]string{"X-Request-ID": "bad id\x01"}})
	if id := r.header.Get("X-Request-ID"); id == "" || strings.Contains(id, " ") {
		t.Errorf("unsafe X-Request-ID kept: %q", id)
	}
}

// every route: no auth is a 401, and past the account's budget a 429.
func TestEveryRoute401And429(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{rateLimit: 1})
	routes := everyRoute("00000000-0000-4000-8000-000000000001")
	for _, r := range routes {
		wantError(t, w.do(r), http.StatusUnauthorized, "Unauthorized")
	}
	w.do(req{method: "GET", path: credsPath, auth: w.alice.auth}) // uses the budget of 1
	for _, r := range routes {
		r.auth = w.alice.auth
		wantError(t, w.do(r), http.StatusTooManyRequests, "Too many attempts. Please try again later.")
	}
}

func TestOptionsAnswersWithJSON(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	r := w.do(req{method: "OPTIONS", path: credsPath})
	wantStatus(t, r, http.StatusOK)
	if !strings.Contains(r.header.Get("Allow"), "POST") || r.body["success"] != true {
		t.Errorf("OPTIONS: %v %s", r.header, r.raw)
	}
}

// everyRoute is one request to each documented operation, on alice's
// example.com and the credential guid.
func everyRoute(guid string) []req {
	return []req{
		{method: "GET", path: credsPath},
		{method: "POST", path: credsPath, body: `{"username":"x"}`},
		{method: "GET", path: credsPath + "/" + guid},
		{method: "DELETE", path: credsPath + "/" + guid},
		{method: "PUT", path: credsPath + "/" + guid + "/reset-password"},
		{method: "PATCH", path: credsPath + "/" + guid, body: `{"status":false}`},
		{method: "GET", path: "/api/domains"},
		{method: "POST", path: "/api/domains", body: `{"domain":"x.example"}`},
		{method: "GET", path: "/api/domains/example.com"},
		{method: "PUT", path: "/api/domains/example.com", body: `{}`},
		{method: "DELETE", path: "/api/domains/example.com"},
		{method: "POST", path: "/api/domains/example.com/verify-mandatory"},
		{method: "POST", path: "/api/domains/example.com/setup-auth-domain"},
		{method: "POST", path: "/api/domains/example.com/verify-auth-domain"},
		{method: "DELETE", path: "/api/domains/example.com/auth-domain"},
		{method: "POST", path: "/api/domains/example.com/setup-tracklink", body: `{"tracking_domain":"t.example.com"}`},
		{method: "POST", path: "/api/domains/example.com/verify-tracklink"},
		{method: "DELETE", path: "/api/domains/example.com/tracklink"},
		{method: "GET", path: "/api/quota"},
		{method: "GET", path: "/api/domains/example.com/log"},
	}
}
