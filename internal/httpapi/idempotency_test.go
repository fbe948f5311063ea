package httpapi_test

import (
	"bytes"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// keyed is r with the Idempotency-Key header key.
func keyed(r req, key string) req {
	r.header = map[string]string{"Idempotency-Key": key}
	return r
}

// wantReplay checks that again is first replayed byte for byte, marked as
// a replay, and that first was not.
func wantReplay(t *testing.T, first, again resp) {
	t.Helper()
	if again.status != first.status || again.raw != first.raw {
		t.Fatalf("replay differs:\nfirst %d %s\nagain %d %s", first.status, first.raw, again.status, again.raw)
	}
	if again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay without Idempotent-Replayed: true: %v", again.header)
	}
	if first.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("first response says Idempotent-Replayed: %v", first.header)
	}
}

// countCredentials counts the credentials of domain.
func (w world) countCredentials(domain string) int {
	w.t.Helper()
	var n int
	if err := w.db.Get(&n, `SELECT count(*) FROM credentials c JOIN domains d ON d.id = c.domain_id WHERE d.name = $1`, domain); err != nil {
		w.t.Fatal(err)
	}
	return n
}

func TestIdempotentCreateReplaysByteForByte(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	create := keyed(req{method: "POST", path: credsPath, auth: w.alice.auth, body: `{"username":"retry"}`}, "k-1")
	first := w.do(create)
	wantStatus(t, first, http.StatusCreated)
	if first.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q", first.header.Get("Cache-Control"))
	}
	again := w.do(create)
	wantReplay(t, first, again)
	if again.header.Get("Cache-Control") != "no-store" {
		t.Errorf("replay Cache-Control = %q", again.header.Get("Cache-Control"))
	}
	// The same request in another form (case, form body) is the same request.
	form := keyed(req{method: "POST", path: "/api/domains/EXAMPLE.com/credentials", auth: w.alice.auth,
		body: "username=Retry", contentType: "application/x-www-form-urlencoded"}, "k-1")
	wantReplay(t, first, w.do(form))
	if n := w.countCredentials("example.com"); n != 1 {
		t.Errorf("%d credentials after replays, want 1", n)
	}
	// Without the key, the retry is a new request: taken.
	wantFieldError(t, w.do(req{method: "POST", path: credsPath, auth: w.alice.auth, body: `{"username":"retry"}`}), "username")

	// The stored response is sealed: no password in the database.
	pw := str(first.body, "data", "password")
	var stored []byte
	if err := w.db.Get(&stored, `SELECT response FROM idempotency_keys WHERE key = 'k-1'`); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(stored, []byte(pw)) || bytes.Contains(stored, []byte("retry")) {
		t.Error("the stored response is not sealed")
	}
}

func TestIdempotencyKeyMismatch422(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	first := w.do(keyed(req{method: "POST", path: credsPath, auth: w.alice.auth, body: `{"username":"one"}`}, "k"))
	wantStatus(t, first, http.StatusCreated)
	guid := str(first.body, "data", "credential", "user_smtp_guid")
	for name, r := range map[string]req{
		"other username": {method: "POST", path: credsPath, auth: w.alice.auth, body: `{"username":"two"}`},
		"other route":    {method: "PUT", path: credsPath + "/" + guid + "/reset-password", auth: w.alice.auth},
		"domain create":  {method: "POST", path: "/api/domains", auth: w.alice.auth, body: `{"domain":"new.example"}`},
	} {
		t.Run(name, func(t *testing.T) {
			wantFieldError(t, w.do(keyed(r, "k")), "idempotency_key")
		})
	}
	if n := w.countCredentials("example.com"); n != 1 {
		t.Errorf("%d credentials, want 1", n)
	}
	var changed *int64
	if err := w.db.Get(&changed, `SELECT extract(epoch FROM password_changed_at)::bigint FROM credentials WHERE guid = $1`, guid); err != nil {
		t.Fatal(err)
	}
	if changed != nil {
		t.Error("a refused reset changed the password")
	}
	// Keys belong to the account: bob's "k" is his own.
	wantStatus(t, w.do(keyed(req{method: "POST", path: "/api/domains/bob.test/credentials", auth: w.bob.auth,
		body: `{"username":"one"}`}, "k")), http.StatusCreated)
}

func TestIdempotencyKey422Malformed(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	for name, key := range map[string]string{"too long": strings.Repeat("k", 256), "not ASCII": "clé", "control": "a\tb"} {
		t.Run(name, func(t *testing.T) {
			wantFieldError(t, w.do(keyed(req{method: "POST", path: credsPath, auth: w.alice.auth, body: `{"username":"x"}`}, key)), "idempotency_key")
		})
	}
	if n := w.countCredentials("example.com"); n != 0 {
		t.Errorf("%d credentials, want 0", n)
	}
}

// A failed request keeps nothing: it may be sent again with its key.
func TestIdempotencyKeyFailureNotKept(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	w.MustAddDomain(w.alice, "later.example", false)
	r := keyed(req{method: "POST", path: "/api/domains/later.example/credentials", auth: w.alice.auth, body: `{"username":"x"}`}, "k")
	wantFieldError(t, w.do(r), "domain")
	if _, err := w.db.Exec(`UPDATE domains SET is_verified = true WHERE name = 'later.example'`); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, w.do(r), http.StatusCreated)
}

// An expired key is free again.
func TestIdempotencyKeyExpires(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	r := keyed(req{method: "POST", path: credsPath, auth: w.alice.auth, body: `{"username":"a"}`}, "k")
	wantStatus(t, w.do(r), http.StatusCreated)
	if _, err := w.db.Exec(`UPDATE idempotency_keys SET expires_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	r.body = `{"username":"b"}`
	again := w.do(r)
	wantStatus(t, again, http.StatusCreated)
	if again.header.Get("Idempotent-Replayed") != "" || str(again.body, "data", "credential", "username") != "b" {
		t.Errorf("an expired key replayed: %v %s", again.header, again.raw)
	}
}

func TestIdempotentCreateConcurrent(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	const n = 20
	out := make([]resp, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = w.do(keyed(req{method: "POST", path: credsPath, auth: w.alice.auth, body: `{"username":"race"}`}, "same"))
		}()
	}
	wg.Wait()
	replays := 0
	for i, r := range out {
		if r.status != http.StatusCreated {
			t.Fatalf("request %d: %d %s", i, r.status, r.raw)
		}
		if str(r.body, "data", "password") != str(out[0].body, "data", "password") {
			t.Errorf("request %d got another password", i)
		}
		if r.header.Get("Idempotent-Replayed") == "true" {
			replays++
		}
	}
	if replays != n-1 {
		t.Errorf("%d replays among %d requests, want %d", replays, n, n-1)
	}
	if c := w.countCredentials("example.com"); c != 1 {
		t.Errorf("%d credentials, want 1", c)
	}
}

func TestIdempotentResetPassword(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	guid := str(w.MustCreateCredential("rot"), "credential", "user_smtp_guid")
	reset := keyed(req{method: "PUT", path: credsPath + "/" + guid + "/reset-password", auth: w.alice.auth, body: "{}"}, "reset-1")
	first := w.do(reset)
	wantStatus(t, first, http.StatusOK)
	var hash string
	if err := w.db.Get(&hash, `SELECT password_hash FROM credentials WHERE guid = $1`, guid); err != nil {
		t.Fatal(err)
	}
	reset.body = "" // the vendor SDKs' other empty bodies are the same request
	wantReplay(t, first, w.do(reset))
	var after string
	if err := w.db.Get(&after, `SELECT password_hash FROM credentials WHERE guid = $1`, guid); err != nil {
		t.Fatal(err)
	}
	if after != hash {
		t.Error("a replayed reset changed the password again")
	}
	// Another key resets again.
	second := w.do(keyed(reset, "reset-2"))
	wantStatus(t, second, http.StatusOK)
	if str(second.body, "data", "new_password") == str(first.body, "data", "new_password") {
		t.Error("a new key replayed the old reset")
	}
	wantError(t, w.do(keyed(req{method: "PUT", path: credsPath + "/00000000-0000-4000-8000-000000000001/reset-password",
		auth: w.alice.auth}, "reset-3")), http.StatusNotFound, "Credential not found")
}

func TestIdempotentCreateDomain(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	create := keyed(req{method: "POST", path: "/api/domains", auth: w.alice.auth, body: `{"domain":"fresh.example","dkim_key_length":1024}`}, "d-1")
	first := w.do(create)
	wantStatus(t, first, http.StatusCreated)
	wantReplay(t, first, w.do(create))
	// Without the key: taken.
	wantFieldError(t, w.do(req{method: "POST", path: "/api/domains", auth: w.alice.auth, body: `{"domain":"fresh.example"}`}), "domain")
	// The same key with another key length is another request.
	create.body = `{"domain":"fresh.example","dkim_key_length":2048}`
	wantFieldError(t, w.do(create), "idempotency_key")
}

// With a sync target, the first response says remote_synced true, and the
// replay says the same.
func TestIdempotentCreateSyncedReplay(t *testing.T) {
	t.Parallel()
	s := newSyncWorld(t, oneFile)
	create := keyed(req{method: "POST", path: credsPath, auth: s.alice.auth, body: `{"username":"synced"}`}, "k")
	first := s.do(create)
	wantStatus(t, first, http.StatusCreated)
	if dig(first.body, "data", "remote_synced") != true {
		t.Fatalf("remote_synced should be true with a healthy passwd-file: %s", first.raw)
	}
	wantReplay(t, first, s.do(create))
	if !s.auth("synced@example.com", str(first.body, "data", "password")) {
		t.Error("Dovecot refuses the password of the keyed create")
	}
}
