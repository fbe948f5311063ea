package httpapi_test

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

const credsPath = "/api/domains/example.com/credentials"

// world is an env with a verified domain example.com owned by alice, and a
// second account bob with his own verified domain bob.test.
type world struct {
	*env
	alice, bob user
}

func newWorld(t *testing.T, o opts) world {
	t.Helper()
	e := newEnv(t, o)
	w := world{env: e, alice: e.MustCreateAccount("alice"), bob: e.MustCreateAccount("bob")}
	e.MustAddDomain(w.alice, "example.com", true)
	e.MustAddDomain(w.bob, "bob.test", true)
	return w
}

// MustCreateCredential creates username on example.com as alice and returns
// the response's data.
func (w world) MustCreateCredential(username string) map[string]any {
	w.t.Helper()
	r := w.do(req{method: "POST", path: credsPath, auth: w.alice.auth, body: `{"username":"` + username + `"}`})
	if r.status != http.StatusCreated {
		w.t.Fatalf("MustCreateCredential(%q): %d %s", username, r.status, r.raw)
	}
	return r.body["data"].(map[string]any)
}

var passwordRE = regexp.MustCompile(`^[0-9A-Za-z]{32}$`)

func TestCreate201(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	r := w.do(req{method: "POST", path: credsPath, auth: w.alice.auth, body: `{"username":"MyUser"}`})
	wantStatus(t, r, http.StatusCreated)
	if r.body["success"] != true || r.body["message"] != "Credential created successfully." {
		t.Errorf("envelope: %s", r.raw)
	}
	if got := r.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", got)
	}
	pw := str(r.body, "data", "password")
	if !passwordRE.MatchString(pw) {
		t.Errorf("password %q is not 32 base62 characters", pw)
	}
	if dig(r.body, "data", "remote_synced") != false {
		t.Errorf("remote_synced = %v, want false until a sync target exists", dig(r.body, "data", "remote_synced"))
	}
	if str(r.body, "data", "credential", "username") != "myuser" {
		t.Errorf("username not stored lowercase: %s", r.raw)
	}
	if str(r.body, "data", "credential", "login") != "myuser@example.com" {
		t.Errorf("login: %s", r.raw)
	}
	si, ok := dig(r.body, "data", "strength_info").(map[string]any)
	if !ok || si["length"] != float64(32) || si["entropy_bits"].(float64) < 190 {
		t.Errorf("strength_info: %v", si)
	}
	if dig(r.body, "data", "credential", "last_password_changed") != nil {
		t.Errorf("last_password_changed should be null on create: %s", r.raw)
	}

	// The database holds only the hash, never the password.
	var stored string
	if err := w.db.Get(&stored, `SELECT password_hash FROM credentials WHERE username = 'myuser'`); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stored, "{SSHA512}") || strings.Contains(stored, pw) {
		t.Errorf("stored hash %q is not an SSHA512 hash of another value", stored)
	}
}

func TestCreateAcceptsFormBodies(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	multipart := "--XX\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nfromform\r\n--XX--\r\n"
	r := w.do(req{method: "POST", path: credsPath, auth: w.alice.auth, body: multipart, contentType: "multipart/form-data; boundary=XX"})
	wantStatus(t, r, http.StatusCreated)
	if str(r.body, "data", "credential", "username") != "fromform" {
		t.Errorf("multipart username: %s", r.raw)
	}
	r = w.do(req{method: "POST", path: credsPath, auth: w.alice.auth, body: "username=urlenc", contentType: "application/x-www-form-urlencoded"})
	wantStatus(t, r, http.StatusCreated)
	if str(r.body, "data", "credential", "username") != "urlenc" {
		t.Errorf("urlencoded username: %s", r.raw)
	}
}

func TestCreate422Username(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	long := strings.Repeat("a", 65)
	cases := map[string]string{
		"missing":        `{}`,
		"empty":          `{"username":""}`,
		"too long":       `{"username":"` + long + `"}`,
		"colon":          `{"username":"a:b"}`,
		"hash":           `{"username":"a#b"}`,
		"space":          `{"username":"a b"}`,
		"newline":        `{"username":"a\nb"}`,
		"at":             `{"username":"a@b"}`,
		"leading dot":    `{"username":".ab"}`,
		"trailing dash":  `{"username":"ab-"}`,
		"double dot":     `{"username":"a..b"}`,
		"unicode":        `{"username":"jos\u00e9"}`,
		"not a string":   `{"username":12345}`,
		"null":           `{"username":null}`,
		"no body at all": ``,
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			r := w.do(req{method: "POST", path: credsPath, auth: w.alice.auth, body: body})
			msgs := wantFieldError(t, r, "username")
			for _, m := range msgs {
				for _, v := range []string{"a:b", "a#b", long, "a..b", "12345", "jos"} {
					if strings.Contains(m.(string), v) {
						t.Errorf("message %q echoes the submitted value", m)
					}
				}
			}
		})
	}
	var n int
	if err := w.db.Get(&n, `SELECT count(*) FROM credentials`); err != nil || n != 0 {
		t.Errorf("credentials after rejected creates: %d (%v)", n, err)
	}
}

func TestCreateAcceptsEdgeUsernames(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	for _, u := range []string{"a", "A1", "a.b", "a_b+tag-x", strings.Repeat("z", 64), "a.-b"} {
		w.MustCreateCredential(u)
	}
}

func TestCreate422DuplicateUsername(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	w.MustCreateCredential("dup")
	r := w.do(req{method: "POST", path: credsPath, auth: w.alice.auth, body: `{"username":"DUP"}`})
	msgs := wantFieldError(t, r, "username")
	if !strings.Contains(msgs[0].(string), "taken") {
		t.Errorf("message %q", msgs[0])
	}
}

func TestCreateConcurrentSameUsername(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	created := w.concurrent(16, func(int) req {
		return req{method: "POST", path: credsPath, auth: w.alice.auth, body: `{"username":"race"}`}
	})
	if created != 1 {
		t.Errorf("%d creates succeeded, want exactly 1", created)
	}
}

func TestCreate422DomainNotVerified(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	w.MustAddDomain(w.alice, "pending.example", false)
	r := w.do(req{method: "POST", path: "/api/domains/pending.example/credentials", auth: w.alice.auth, body: `{"username":"x"}`})
	msgs := wantFieldError(t, r, "domain")
	if len(msgs) == 0 || !strings.Contains(msgs[0].(string), "/api/domains/pending.example/verify-mandatory") {
		t.Errorf("the message does not name the next step: %v", msgs)
	}
}

// A JSON document sent with curl -d's form content type is refused with a
// message that names the fix, on every route that takes a form, and nothing
// is created; a real form body still works (TestCreateAcceptsFormBodies).
func TestJSONSentAsForm422(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	for _, c := range []struct{ method, path, body string }{
		{"POST", credsPath, `{"username":"x"}`},
		{"POST", credsPath, "  \n[1]"},
		{"POST", "/api/domains", `{"domain":"new.example"}`},
	} {
		r := w.do(req{method: c.method, path: c.path, auth: w.alice.auth, body: c.body, contentType: "application/x-www-form-urlencoded"})
		msgs := wantFieldError(t, r, "body")
		if len(msgs) == 0 || !strings.Contains(msgs[0].(string), "Content-Type: application/json") {
			t.Errorf("%s %s: the message does not name the fix: %v", c.method, c.path, msgs)
		}
	}
	r := w.do(req{method: "GET", path: credsPath, auth: w.alice.auth})
	wantStatus(t, r, http.StatusOK)
	if n := len(r.body["data"].([]any)); n != 0 {
		t.Errorf("%d credentials exist after refused creates", n)
	}
	r = w.do(req{method: "GET", path: "/api/domains/new.example", auth: w.alice.auth})
	wantStatus(t, r, http.StatusNotFound)
}

func TestCreate422AtDomainCap(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{maxPerDomain: 2})
	w.MustCreateCredential("one")
	w.MustCreateCredential("two")
	r := w.do(req{method: "POST", path: credsPath, auth: w.alice.auth, body: `{"username":"three"}`})
	wantFieldError(t, r, "username")
	// Deleting one makes room again.
	guid := str(w.MustCreateCredentialOrList(), "user_smtp_guid")
	wantStatus(t, w.do(req{method: "DELETE", path: credsPath + "/" + guid, auth: w.alice.auth}), http.StatusOK)
	wantStatus(t, w.do(req{method: "POST", path: credsPath, auth: w.alice.auth, body: `{"username":"three"}`}), http.StatusCreated)
}

// MustCreateCredentialOrList returns the first credential of example.com.
func (w world) MustCreateCredentialOrList() map[string]any {
	w.t.Helper()
	r := w.do(req{method: "GET", path: credsPath, auth: w.alice.auth})
	wantStatus(w.t, r, http.StatusOK)
	items := r.body["data"].([]any)
	if len(items) == 0 {
		w.t.Fatal("no credentials")
	}
	return items[0].(map[string]any)
}

func TestCreate404Domain(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	for _, path := range []string{
		"/api/domains/nope.example/credentials",
		"/api/domains/bob.test/credentials", // bob's domain: same answer as a missing one
		"/api/domains/not..a..domain/credentials",
	} {
		r := w.do(req{method: "POST", path: path, auth: w.alice.auth, body: `{"username":"x"}`})
		wantError(t, r, http.StatusNotFound, "Domain not found")
	}
	var n int
	if err := w.db.Get(&n, `SELECT count(*) FROM credentials`); err != nil || n != 0 {
		t.Errorf("credentials after 404s: %d (%v)", n, err)
	}
}

func TestDomainPathIsCaseInsensitive(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	r := w.do(req{method: "POST", path: "/api/domains/EXAMPLE.Com/credentials", auth: w.alice.auth, body: `{"username":"x"}`})
	wantStatus(t, r, http.StatusCreated)
	if str(r.body, "data", "credential", "login") != "x@example.com" {
		t.Errorf("login %s", r.raw)
	}
}

func TestCreateBadBodies(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	cases := []struct {
		name, body, ct string
		status         int
	}{
		{"malformed JSON", `{"username":`, "", http.StatusBadRequest},
		{"JSON null", `null`, "", http.StatusBadRequest},
		{"JSON array", `[]`, "", http.StatusBadRequest},
		{"JSON string", `"x"`, "", http.StatusBadRequest},
		{"text/plain", `username=x`, "text/plain", http.StatusBadRequest},
		{"too large", `{"username":"` + strings.Repeat("a", 17<<10) + `"}`, "", http.StatusRequestEntityTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := w.do(req{method: "POST", path: credsPath, auth: w.alice.auth, body: c.body, contentType: c.ct})
			wantError(t, r, c.status, "")
			if msg, _ := r.body["message"].(string); msg == "" || strings.Contains(msg, "username") && c.status == 400 {
				t.Errorf("message %q", msg)
			}
		})
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	for i := range 5 {
		w.MustCreateCredential(fmt.Sprintf("u%d", i))
	}
	r := w.do(req{method: "GET", path: credsPath + "?page=2&limit=2", auth: w.alice.auth})
	wantStatus(t, r, http.StatusOK)
	items, ok := r.body["data"].([]any)
	if !ok || len(items) != 2 {
		t.Fatalf("data is not a flat array of 2: %s", r.raw)
	}
	if items[0].(map[string]any)["username"] != "u2" || items[1].(map[string]any)["username"] != "u3" {
		t.Errorf("page 2 = %v", items)
	}
	p := r.body["pagination"].(map[string]any)
	if p["total"] != float64(5) || p["page"] != float64(2) || p["limit"] != float64(2) || p["offset"] != float64(2) || p["last_page"] != float64(3) ||
		p["current_page"] != float64(2) || p["per_page"] != float64(2) {
		t.Errorf("pagination %v", p)
	}
	if r.body["domain"] != "example.com" {
		t.Errorf("domain %v", r.body["domain"])
	}

	r = w.do(req{method: "GET", path: credsPath + "?", auth: w.alice.auth}) // trailing bare ?
	wantStatus(t, r, http.StatusOK)
	if dig(r.body, "pagination", "limit") != float64(15) || len(r.body["data"].([]any)) != 5 {
		t.Errorf("defaults: %s", r.raw)
	}
	r = w.do(req{method: "GET", path: credsPath + "?page=9", auth: w.alice.auth})
	wantStatus(t, r, http.StatusOK)
	if len(r.body["data"].([]any)) != 0 {
		t.Errorf("page past the end: %s", r.raw)
	}
	// No password or hash in any listing.
	if strings.Contains(r.raw, "password\"") || strings.Contains(r.raw, "SSHA") {
		t.Errorf("list leaks secrets: %s", r.raw)
	}
}

func TestList422Params(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	for q, field := range map[string]string{
		"limit=0": "limit", "limit=101": "limit", "limit=abc": "limit", "page=0": "page", "page=-1": "page",
	} {
		r := w.do(req{method: "GET", path: credsPath + "?" + q, auth: w.alice.auth})
		msgs := wantFieldError(t, r, field)
		if strings.Contains(msgs[0].(string), "abc") {
			t.Errorf("message echoes the value: %v", msgs)
		}
	}
}

func TestGetDeleteReset(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	created := w.MustCreateCredential("carol")
	cred := created["credential"].(map[string]any)
	guid := cred["user_smtp_guid"].(string)
	path := credsPath + "/" + guid

	r := w.do(req{method: "GET", path: path, auth: w.alice.auth})
	wantStatus(t, r, http.StatusOK)
	if str(r.body, "data", "user_smtp_guid") != guid || strings.Contains(r.raw, created["password"].(string)) {
		t.Errorf("get: %s", r.raw)
	}

	var before string
	if err := w.db.Get(&before, `SELECT password_hash FROM credentials WHERE guid = $1`, guid); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{"", "null", "[]", "{}"} {
		r = w.do(req{method: "PUT", path: path + "/reset-password", auth: w.alice.auth, body: body})
		wantStatus(t, r, http.StatusOK)
	}
	if r.body["message"] != "Password reset successfully." || r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("reset envelope: %s %v", r.raw, r.header)
	}
	newPw := str(r.body, "data", "new_password")
	if !passwordRE.MatchString(newPw) || newPw == created["password"] {
		t.Errorf("new password %q", newPw)
	}
	if dig(r.body, "data", "credential", "last_password_changed") == nil {
		t.Errorf("last_password_changed not set: %s", r.raw)
	}
	var after string
	if err := w.db.Get(&after, `SELECT password_hash FROM credentials WHERE guid = $1`, guid); err != nil {
		t.Fatal(err)
	}
	if after == before {
		t.Error("reset did not change the stored hash")
	}

	r = w.do(req{method: "DELETE", path: path, auth: w.alice.auth, body: "{}"})
	wantStatus(t, r, http.StatusOK)
	if r.body["message"] != "Credential deleted successfully." || dig(r.body, "data", "remote_synced") != false {
		t.Errorf("delete without a sync target: %s", r.raw)
	}
	wantError(t, w.do(req{method: "GET", path: path, auth: w.alice.auth}), http.StatusNotFound, "Credential not found")
	wantError(t, w.do(req{method: "DELETE", path: path, auth: w.alice.auth}), http.StatusNotFound, "Credential not found")
	wantError(t, w.do(req{method: "PUT", path: path + "/reset-password", auth: w.alice.auth}), http.StatusNotFound, "Credential not found")
	list := w.do(req{method: "GET", path: credsPath, auth: w.alice.auth})
	if len(list.body["data"].([]any)) != 0 {
		t.Errorf("list still shows the deleted credential: %s", list.raw)
	}
	w.MustCreateCredential("carol") // the username can be reused
}

func TestCredentialPath404s(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	guid := str(w.MustCreateCredential("x"), "credential", "user_smtp_guid")
	for _, c := range []struct{ path, msg string }{
		{credsPath + "/not-a-uuid", "Credential not found"},
		{credsPath + "/00000000-0000-4000-8000-000000000000", "Credential not found"},
		{"/api/domains/nope.example/credentials/" + guid, "Domain not found"},
	} {
		for _, m := range []string{"GET", "DELETE"} {
			wantError(t, w.do(req{method: m, path: c.path, auth: w.alice.auth}), http.StatusNotFound, c.msg)
		}
		wantError(t, w.do(req{method: "PUT", path: c.path + "/reset-password", auth: w.alice.auth}), http.StatusNotFound, c.msg)
	}
}

// Another account's domain or credential is a 404 on every route, and
// nothing changes.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	guid := str(w.MustCreateCredential("secret"), "credential", "user_smtp_guid")
	var hash string
	if err := w.db.Get(&hash, `SELECT password_hash FROM credentials`); err != nil {
		t.Fatal(err)
	}
	bobPaths := []req{
		{method: "GET", path: credsPath},
		{method: "POST", path: credsPath, body: `{"username":"intruder"}`},
		{method: "GET", path: credsPath + "/" + guid},
		{method: "DELETE", path: credsPath + "/" + guid},
		{method: "PUT", path: credsPath + "/" + guid + "/reset-password"},
		// alice's credential addressed through bob's own domain
		{method: "GET", path: "/api/domains/bob.test/credentials/" + guid},
		{method: "DELETE", path: "/api/domains/bob.test/credentials/" + guid},
		{method: "PUT", path: "/api/domains/bob.test/credentials/" + guid + "/reset-password"},
	}
	for _, r := range bobPaths {
		r.auth = w.bob.auth
		got := w.do(r)
		wantStatus(t, got, http.StatusNotFound)
		if strings.Contains(got.raw, "secret") || strings.Contains(got.raw, "alice") {
			t.Errorf("%s %s leaks: %s", r.method, r.path, got.raw)
		}
	}
	var n int
	var after string
	if err := w.db.Get(&n, `SELECT count(*) FROM credentials`); err != nil || n != 1 {
		t.Errorf("credentials: %d (%v)", n, err)
	}
	if err := w.db.Get(&after, `SELECT password_hash FROM credentials`); err != nil || after != hash {
		t.Errorf("alice's credential changed (%v)", err)
	}

}

// The per-domain cap is exact under concurrent creates.
func TestCreateCapExactUnderConcurrency(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{maxPerDomain: 5})
	created := w.concurrent(16, func(i int) req {
		return req{method: "POST", path: credsPath, auth: w.alice.auth, body: fmt.Sprintf(`{"username":"c%d"}`, i)}
	})
	var stored int
	if err := w.db.Get(&stored, `SELECT count(*) FROM credentials`); err != nil {
		t.Fatal(err)
	}
	if created != 5 || stored != 5 {
		t.Errorf("%d created, %d stored; the cap is 5", created, stored)
	}
}
