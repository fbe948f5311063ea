package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/password"
)

// patch sends PATCH body to the credential guid of example.com as alice.
func (w world) patch(guid, body string) resp {
	w.t.Helper()
	return w.do(req{method: "PATCH", path: credsPath + "/" + guid, auth: w.alice.auth, body: body})
}

// wantUpdated checks a 200 of PATCH and returns its data.credential.
func wantUpdated(t *testing.T, r resp) map[string]any {
	t.Helper()
	wantStatus(t, r, http.StatusOK)
	if r.body["success"] != true || r.body["message"] != "Credential updated successfully." {
		t.Errorf("envelope: %s", r.raw)
	}
	if _, ok := dig(r.body, "data", "remote_synced").(bool); !ok {
		t.Errorf("data.remote_synced missing: %s", r.raw)
	}
	return dig(r.body, "data", "credential").(map[string]any)
}

func future(d time.Duration) string { return time.Now().Add(d).UTC().Format(time.RFC3339) }

func TestUpdateCredentialFields(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	w.MustAddDomain(w.alice, "Other.Example", true)
	w.MustAddDomain(w.alice, "unverified.example", false)
	guid := str(w.MustCreateCredential("ops"), "credential", "user_smtp_guid")

	c := wantUpdated(t, w.patch(guid, `{}`))
	if c["status"] != true || c["expires_at"] != nil || c["allowed_senders"] != nil || c["limit_per_day"] != nil {
		t.Errorf("an empty PATCH changed something: %v", c)
	}
	wantUpdated(t, w.do(req{method: "PATCH", path: credsPath + "/" + guid, auth: w.alice.auth})) // no body

	c = wantUpdated(t, w.patch(guid, `{"status":false}`))
	if c["status"] != false {
		t.Errorf("status after disabling: %v", c["status"])
	}
	exp := time.Now().Add(48 * time.Hour).Truncate(time.Second)
	c = wantUpdated(t, w.patch(guid, `{"expires_at":"`+exp.UTC().Format(time.RFC3339)+`",
		"allowed_senders":["Billing@OTHER.example","*@example.com","*@example.com"],
		"limit_per_minute":0,"limit_per_hour":100}`))
	if c["status"] != false || c["expires_at"] != float64(exp.Unix()) {
		t.Errorf("status %v expires_at %v, want false %d", c["status"], c["expires_at"], exp.Unix())
	}
	if got := fmt.Sprint(c["allowed_senders"]); got != "[Billing@other.example *@example.com]" {
		t.Errorf("allowed_senders = %s", got)
	}
	if c["limit_per_minute"] != float64(0) || c["limit_per_hour"] != float64(100) || c["limit_per_day"] != nil {
		t.Errorf("limits: %v %v %v", c["limit_per_minute"], c["limit_per_hour"], c["limit_per_day"])
	}
	g := w.do(req{method: "GET", path: credsPath + "/" + guid, auth: w.alice.auth})
	if dig(g.body, "data", "status") != false || dig(g.body, "data", "expires_at") != float64(exp.Unix()) {
		t.Errorf("GET after PATCH: %s", g.raw)
	}
	c = wantUpdated(t, w.patch(guid, `{"status":true,"expires_at":null,"allowed_senders":[],"limit_per_hour":null}`))
	if c["status"] != true || c["expires_at"] != nil || c["allowed_senders"] != nil || c["limit_per_hour"] != nil || c["limit_per_minute"] != float64(0) {
		t.Errorf("after clearing: %v", c)
	}

	for name, body := range map[string]string{
		"expires_at past":           `{"expires_at":"2001-01-01T00:00:00Z"}`,
		"expires_at not a date":     `{"expires_at":"tomorrow"}`,
		"status null":               `{"status":null}`,
		"negative limit":            `{"limit_per_day":-1}`,
		"sender of another account": `{"allowed_senders":["a@bob.test"]}`,
		"sender unverified":         `{"allowed_senders":["*@unverified.example"]}`,
		"sender no domain":          `{"allowed_senders":["nobody"]}`,
		"sender bad local":          `{"allowed_senders":["a b@example.com"]}`,
		"too many senders":          `{"allowed_senders":[` + strings.Repeat(`"a@example.com",`, 100) + `"b@example.com"]}`,
	} {
		t.Run(name, func(t *testing.T) {
			r := w.patch(guid, body)
			wantError(t, r, http.StatusUnprocessableEntity, "Validation failed.")
			if len(r.body["errors"].(map[string]any)) != 1 {
				t.Errorf("errors: %s", r.raw)
			}
		})
	}
	if g := w.do(req{method: "GET", path: credsPath + "/" + guid, auth: w.alice.auth}); dig(g.body, "data", "status") != true ||
		dig(g.body, "data", "limit_per_minute") != float64(0) {
		t.Errorf("a refused PATCH changed the credential: %s", g.raw)
	}
	wantError(t, w.do(req{method: "PATCH", path: "/api/domains/bob.test/credentials/" + guid, auth: w.bob.auth, body: `{"status":false}`}),
		http.StatusNotFound, "Credential not found")
	wantError(t, w.do(req{method: "PATCH", path: credsPath + "/" + guid, auth: w.bob.auth, body: `{"status":false}`}),
		http.StatusNotFound, "Domain not found")
	wantError(t, w.patch("00000000-0000-4000-8000-000000000001", `{"status":false}`), http.StatusNotFound, "Credential not found")
}

func TestListStatusFilter(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	var guids []string
	for i := range 5 {
		guids = append(guids, str(w.MustCreateCredential(fmt.Sprintf("u%d", i)), "credential", "user_smtp_guid"))
	}
	wantUpdated(t, w.patch(guids[1], `{"status":false}`))
	wantUpdated(t, w.patch(guids[3], `{"status":false}`))
	for q, want := range map[string]string{
		"?status=false":               "u1 u3",
		"?status=true":                "u0 u2 u4",
		"?status=true&limit=2&page=2": "u4",
		"":                            "u0 u1 u2 u3 u4",
	} {
		r := w.do(req{method: "GET", path: credsPath + q, auth: w.alice.auth})
		wantStatus(t, r, http.StatusOK)
		var names []string
		for _, c := range r.body["data"].([]any) {
			names = append(names, c.(map[string]any)["username"].(string))
		}
		if got := strings.Join(names, " "); got != want {
			t.Errorf("list%s = %q, want %q", q, got, want)
		}
		total := float64(len(strings.Fields(want)))
		if q == "?status=true&limit=2&page=2" {
			total = 3
		}
		if dig(r.body, "pagination", "total") != total {
			t.Errorf("list%s total = %v, want %v", q, dig(r.body, "pagination", "total"), total)
		}
	}
	wantFieldError(t, w.do(req{method: "GET", path: credsPath + "?status=maybe", auth: w.alice.auth}), "status")
}

// authTarget is what the lifecycle tests need of a world synced to a real
// Dovecot.
type authTarget struct {
	w    world
	auth func(login, pw string) bool
}

// eventually waits (up to limit) for Dovecot to answer want for login and
// pw; it fails the test otherwise.
func (a authTarget) eventually(login, pw string, want bool, limit time.Duration, what string) {
	a.w.t.Helper()
	deadline := time.Now().Add(limit)
	for a.auth(login, pw) != want {
		if time.Now().After(deadline) {
			a.w.t.Fatalf("%s: Dovecot still answers %v for %s after %v", what, !want, login, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lifecycle disables, enables and expires a login against a real Dovecot.
func lifecycle(t *testing.T, a authTarget) {
	w := a.w
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.outbox.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	d := w.MustCreateCredential("life")
	pw := d["password"].(string)
	guid := str(d, "credential", "user_smtp_guid")
	const login = "life@example.com"
	if !a.auth(login, pw) {
		t.Fatal("created password refused")
	}
	r := w.patch(guid, `{"status":false}`)
	if wantUpdated(t, r); dig(r.body, "data", "remote_synced") != true {
		t.Errorf("disable not confirmed by a healthy target: %s", r.raw)
	}
	if a.auth(login, pw) {
		t.Fatal("a disabled login authenticates")
	}
	if g := w.do(req{method: "GET", path: credsPath + "/" + guid, auth: w.alice.auth}); dig(g.body, "data", "remote_synced") != true ||
		dig(g.body, "data", "status") != false {
		t.Errorf("GET of a disabled, synced login: %s", g.raw)
	}
	// A reset of a disabled login gives it a password, and it stays disabled.
	rs := w.do(req{method: "PUT", path: credsPath + "/" + guid + "/reset-password", auth: w.alice.auth})
	wantStatus(t, rs, http.StatusOK)
	pw = str(rs.body, "data", "new_password")
	if a.auth(login, pw) {
		t.Fatal("a disabled login authenticates after a reset")
	}
	r = w.patch(guid, `{"status":true}`)
	if wantUpdated(t, r); dig(r.body, "data", "remote_synced") != true {
		t.Errorf("enable not confirmed: %s", r.raw)
	}
	if !a.auth(login, pw) {
		t.Fatal("an enabled login is refused")
	}

	// Expiry: the login works until expires_at, and stops within the sync
	// deadline after it, without any request.
	at := time.Now().Add(3 * time.Second).Truncate(time.Second).Add(time.Second)
	wantUpdated(t, w.patch(guid, `{"expires_at":"`+at.UTC().Format(time.RFC3339)+`"}`))
	if time.Now().Before(at) && !a.auth(login, pw) {
		t.Fatal("a login refused before its expiry")
	}
	a.eventually(login, pw, false, time.Until(at)+5*time.Second, "expiry")
	if time.Now().Before(at) {
		t.Fatalf("the login stopped before its expiry")
	}
	g := w.do(req{method: "GET", path: credsPath + "/" + guid, auth: w.alice.auth})
	if dig(g.body, "data", "status") != true || dig(g.body, "data", "expires_at") != float64(at.Unix()) {
		t.Errorf("GET of an expired login: %s", g.raw)
	}
	// Clearing the expiry puts it back.
	r = w.patch(guid, `{"expires_at":null}`)
	if wantUpdated(t, r); dig(r.body, "data", "remote_synced") != true {
		t.Errorf("clearing the expiry not confirmed: %s", r.raw)
	}
	if !a.auth(login, pw) {
		t.Fatal("a login whose expiry was cleared is refused")
	}

	// An expiry moved later before it fires: the first schedule does
	// nothing, the login lasts until the second.
	first := time.Now().Add(2 * time.Second).Truncate(time.Second).Add(time.Second)
	wantUpdated(t, w.patch(guid, `{"expires_at":"`+first.UTC().Format(time.RFC3339)+`"}`))
	wantUpdated(t, w.patch(guid, `{"expires_at":"`+future(time.Hour)+`"}`))
	var fired bool
	deadline := time.Now().Add(time.Until(first) + 10*time.Second)
	for !fired && time.Now().Before(deadline) {
		if err := w.db.Get(&fired, `SELECT count(*) = 0 FROM sync_jobs WHERE done_at IS NULL AND not_before <= now() + interval '1 minute'`); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !fired {
		t.Fatal("the first expiry's job was never applied")
	}
	if !a.auth(login, pw) {
		t.Fatal("a login whose expiry was moved later stopped at the old one")
	}
}

func TestLifecyclePasswdFile(t *testing.T) {
	t.Parallel()
	for name, layout := range map[string]string{"one file": oneFile, "file per domain": perDomain, "shards": sharded} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newSyncWorld(t, layout)
			lifecycle(t, authTarget{w: s.world, auth: s.auth})
			s.wantFileMatchesDB("example.com")
		})
	}
}

func TestLifecycleDovecotSQL(t *testing.T) {
	t.Parallel()
	s := newSQLWorld(t)
	lifecycle(t, authTarget{w: s.world, auth: s.auth})
}

func TestLifecycleWebhook(t *testing.T) {
	t.Parallel()
	ag, w := newWebhookWorld(t)
	lifecycle(t, authTarget{w: w, auth: func(login, pw string) bool {
		h := ag.hash(login)
		ok, err := password.Verify(h, pw)
		return h != "" && err == nil && ok
	}})
	ag.mu.Lock()
	defer ag.mu.Unlock()
	var reasons []string
	for _, b := range ag.bodies {
		for _, r := range []string{`"reason":"disabled"`, `"reason":"expired"`} {
			if strings.Contains(b, r) {
				reasons = append(reasons, r)
			}
		}
	}
	if len(reasons) < 2 {
		t.Errorf("the agent was not told why logins went: %v", reasons)
	}
}

// grace resets a login with a grace period against a real Dovecot: both
// passwords authenticate during it, the old one stops at its end (by the
// worker, within the sync deadline), a second reset ends the older grace.
func grace(t *testing.T, a authTarget) {
	w := a.w
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.outbox.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	d := w.MustCreateCredential("rot")
	first := d["password"].(string)
	guid := str(d, "credential", "user_smtp_guid")
	const login = "rot@example.com"
	reset := func(body string) (string, resp) {
		t.Helper()
		r := w.do(req{method: "PUT", path: credsPath + "/" + guid + "/reset-password", auth: w.alice.auth, body: body})
		wantStatus(t, r, http.StatusOK)
		if dig(r.body, "data", "remote_synced") != true {
			t.Errorf("reset not confirmed by a healthy target: %s", r.raw)
		}
		return str(r.body, "data", "new_password"), r
	}

	second, r := reset(`{"grace_period_seconds":3600}`)
	until, ok := dig(r.body, "data", "credential", "previous_password_expires_at").(float64)
	if !ok || int64(until) < time.Now().Add(3590*time.Second).Unix() {
		t.Errorf("previous_password_expires_at = %v, want in an hour", dig(r.body, "data", "credential", "previous_password_expires_at"))
	}
	if !a.auth(login, second) || !a.auth(login, first) {
		t.Fatal("during the grace period both passwords must authenticate")
	}
	if a.auth(login, wrongPassword(first)) {
		t.Fatal("a wrong password authenticates")
	}
	g := w.do(req{method: "GET", path: credsPath + "/" + guid, auth: w.alice.auth})
	if dig(g.body, "data", "previous_password_expires_at") != until {
		t.Errorf("GET previous_password_expires_at: %s", g.raw)
	}

	// A second reset, with a short grace: the first password stops at once
	// (its grace ends), the second lasts until the new grace's end.
	third, r := reset(`{"grace_period_seconds":3}`)
	end := time.Unix(int64(dig(r.body, "data", "credential", "previous_password_expires_at").(float64)), 0)
	if a.auth(login, first) {
		t.Fatal("a second reset did not end the first grace period")
	}
	if !a.auth(login, third) || time.Now().Before(end) && !a.auth(login, second) {
		t.Fatal("during the second grace period both its passwords must authenticate")
	}
	a.eventually(login, second, false, time.Until(end)+5*time.Second, "end of the grace period")
	if !a.auth(login, third) {
		t.Fatal("the new password stopped with the grace period")
	}
	if g := w.do(req{method: "GET", path: credsPath + "/" + guid, auth: w.alice.auth}); dig(g.body, "data", "previous_password_expires_at") != nil {
		t.Errorf("GET after the grace period: %s", g.raw)
	}

	// A reset without a grace period (the vendor SDKs' bodies) ends the old
	// password at once.
	fourth, _ := reset(`[]`)
	if a.auth(login, third) || !a.auth(login, fourth) {
		t.Fatal("a reset without grace must replace the password at once")
	}
	// Disabled during a grace period: neither password; enabled again:
	// both, while it lasts.
	fifth, _ := reset(`{"grace_period_seconds":3600}`)
	wantUpdated(t, w.patch(guid, `{"status":false}`))
	if a.auth(login, fourth) || a.auth(login, fifth) {
		t.Fatal("a disabled login authenticates with a password of its grace period")
	}
	wantUpdated(t, w.patch(guid, `{"status":true}`))
	if !a.auth(login, fourth) || !a.auth(login, fifth) {
		t.Fatal("a login enabled again during its grace period must take both passwords")
	}
}

func TestGracePeriodPasswdFile(t *testing.T) {
	t.Parallel()
	for name, layout := range map[string]string{"one file": oneFile, "file per domain": perDomain, "shards": sharded} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newSyncWorld(t, layout)
			grace(t, authTarget{w: s.world, auth: s.auth})
		})
	}
}

func TestGracePeriodDovecotSQL(t *testing.T) {
	t.Parallel()
	s := newSQLWorld(t)
	grace(t, authTarget{w: s.world, auth: s.auth})
}

func TestGracePeriodWebhook(t *testing.T) {
	t.Parallel()
	ag, w := newWebhookWorld(t)
	grace(t, authTarget{w: w, auth: func(login, pw string) bool {
		ag.mu.Lock()
		h, prev := ag.hashes[login], ag.previous[login]
		ag.mu.Unlock()
		ok, err := password.Verify(h, pw)
		okPrev, errPrev := password.Verify(prev, pw)
		return h != "" && err == nil && ok || prev != "" && errPrev == nil && okPrev
	}})
}

func TestGracePeriod422(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	guid := str(w.MustCreateCredential("g"), "credential", "user_smtp_guid")
	for _, body := range []string{`{"grace_period_seconds":-1}`, `{"grace_period_seconds":604801}`, `{"grace_period_seconds":"1"}`} {
		wantFieldError(t, w.do(req{method: "PUT", path: credsPath + "/" + guid + "/reset-password", auth: w.alice.auth, body: body}), "grace_period_seconds")
	}
	r := w.do(req{method: "PUT", path: credsPath + "/" + guid + "/reset-password", auth: w.alice.auth, body: `{"grace_period_seconds":604800}`})
	wantStatus(t, r, http.StatusOK)
	// With an idempotency key, another grace period is another request.
	k := keyed(req{method: "PUT", path: credsPath + "/" + guid + "/reset-password", auth: w.alice.auth, body: `{"grace_period_seconds":60}`}, "g")
	wantStatus(t, w.do(k), http.StatusOK)
	k.body = `{"grace_period_seconds":61}`
	wantFieldError(t, w.do(k), "idempotency_key")
}
