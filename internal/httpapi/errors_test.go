package httpapi_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// A database failure is a 500 with the generic message, logged once with the
// request id, and never shows internal detail.
func TestInternalError500(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	guid := str(w.MustCreateCredential("x"), "credential", "user_smtp_guid")
	if _, err := w.db.Exec(`ALTER TABLE credentials RENAME TO credentials_gone`); err != nil {
		t.Fatal(err)
	}
	calls := []req{
		{method: "GET", path: credsPath},
		{method: "POST", path: credsPath, body: `{"username":"y"}`},
		{method: "GET", path: credsPath + "/" + guid},
		{method: "DELETE", path: credsPath + "/" + guid},
		{method: "PUT", path: credsPath + "/" + guid + "/reset-password"},
		{method: "PATCH", path: credsPath + "/" + guid, body: `{"status":false}`},
	}
	for _, c := range calls {
		c.auth = w.alice.auth
		c.header = map[string]string{"X-Request-ID": "req-500"}
		r := w.do(c)
		wantError(t, r, http.StatusInternalServerError, "An error occurred while processing the request.")
		if strings.Contains(r.raw, "credentials") || strings.Contains(r.raw, "relation") {
			t.Errorf("500 leaks detail: %s", r.raw)
		}
	}
	found := 0
	for _, line := range strings.Split(w.logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		if rec["level"] == "ERROR" && rec["request_id"] == "req-500" && strings.Contains(rec["error"].(string), "credentials") {
			found++
		}
	}
	if found != len(calls) {
		t.Errorf("%d error log lines with the request id, want %d:\n%s", found, len(calls), w.logs.String())
	}
}

// No password, token or Authorization header reaches the log.
func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	created := w.MustCreateCredential("logme")
	pw := created["password"].(string)
	guid := str(created, "credential", "user_smtp_guid")
	r := w.do(req{method: "PUT", path: credsPath + "/" + guid + "/reset-password", auth: w.alice.auth})
	newPw := str(r.body, "data", "new_password")
	w.do(req{method: "GET", path: credsPath, auth: "Basic " + "YWxpY2U6bm9wZQ=="})
	logs := w.logs.String()
	if !strings.Contains(logs, `"route":"/api/domains/:domain/credentials"`) {
		t.Fatalf("expected access lines in the log:\n%s", logs)
	}
	for name, secret := range map[string]string{
		"password": pw, "new password": newPw, "alice token": w.alice.token, "bob token": w.bob.token,
		"auth header": strings.TrimPrefix(w.alice.auth, "Basic "), "failed auth header": "YWxpY2U6bm9wZQ==",
	} {
		if strings.Contains(logs, secret) {
			t.Errorf("%s found in the log", name)
		}
	}
}

// Every domain route: a database failure is a 500 without detail.
func TestDomainRoutes500(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	if _, err := w.db.Exec(`ALTER TABLE domains RENAME TO domains_gone`); err != nil {
		t.Fatal(err)
	}
	for _, c := range []req{
		{method: "GET", path: "/api/domains"},
		{method: "POST", path: "/api/domains", body: `{"domain":"new.example","dkim_key_length":1024}`},
		{method: "GET", path: "/api/domains/example.com"},
		{method: "PUT", path: "/api/domains/example.com", body: `{"open_track":true}`},
		{method: "DELETE", path: "/api/domains/example.com"},
		{method: "POST", path: "/api/domains/example.com/verify-mandatory"},
		{method: "POST", path: "/api/domains/example.com/setup-auth-domain", body: `{"dkim_key_length":1024}`},
		{method: "POST", path: "/api/domains/example.com/verify-auth-domain"},
		{method: "DELETE", path: "/api/domains/example.com/auth-domain"},
		{method: "POST", path: "/api/domains/example.com/setup-tracklink", body: `{"tracking_domain":"t.example.com"}`},
		{method: "POST", path: "/api/domains/example.com/verify-tracklink"},
		{method: "DELETE", path: "/api/domains/example.com/tracklink"},
	} {
		c.auth = w.alice.auth
		r := w.do(c)
		wantError(t, r, http.StatusInternalServerError, "An error occurred while processing the request.")
		if strings.Contains(r.raw, "domains") {
			t.Errorf("%s %s leaks: %s", c.method, c.path, r.raw)
		}
	}
}

// Every route with a body: malformed JSON is a 400, a body over 16 KiB a 413.
func TestBodyRoutes400And413(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	big := `{"x":"` + strings.Repeat("a", 17<<10) + `"}`
	for _, c := range []req{
		{method: "POST", path: "/api/domains"},
		{method: "PUT", path: "/api/domains/example.com"},
		{method: "POST", path: "/api/domains/example.com/setup-auth-domain"},
		{method: "POST", path: "/api/domains/example.com/setup-tracklink"},
		{method: "POST", path: credsPath},
		{method: "PATCH", path: credsPath + "/00000000-0000-4000-8000-000000000001"},
	} {
		c.auth = w.alice.auth
		c.body = `{"broken`
		wantError(t, w.do(c), http.StatusBadRequest, "The request body is not valid JSON.")
		c.body = big
		wantError(t, w.do(c), http.StatusRequestEntityTooLarge, "")
	}
}
