package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/smtpcreds/smtpcreds/internal/app"
	"github.com/smtpcreds/smtpcreds/internal/relay"
)

// The milter (internal/milter) writes send_counters, credential_usage and
// message_log; these tests write the rows it writes with SQL and check
// what the API makes of them.

// logEntry is a message_log row as the milter writes it.
type logEntry struct {
	at         time.Time
	domain     string // the login's domain
	credential string // the credential's guid ("": none, as after its deletion)
	login      string
	queueID    string
	ip         string // "": unknown
	sender     string
	recipients []string
	from       string
	subject    *string
	size       int64
	signed     bool
	event      string
	reason     string
}

// mustLog inserts l and returns its id.
func (e *env) mustLog(l logEntry) int64 {
	e.t.Helper()
	var cred, ip any
	if l.credential != "" {
		cred = l.credential
	}
	if l.ip != "" {
		ip = l.ip
	}
	var id int64
	err := e.db.Get(&id, `
		INSERT INTO message_log (at, account_id, domain_id, credential_id, login, queue_id, client_ip,
			envelope_sender, recipients, header_from, subject, size, dkim_signed, event_type, reason)
		SELECT $1, d.account_id, d.id, (SELECT id FROM credentials WHERE guid = $2::text::uuid), $3, $4, $5::text::inet,
			$6, $7, $8, $9, $10, $11, $12, $13
		FROM domains d WHERE d.name = $14
		RETURNING id`,
		l.at, cred, l.login, l.queueID, ip, l.sender, pq.Array(l.recipients), l.from, l.subject, l.size,
		l.signed, l.event, l.reason, l.domain)
	if err != nil {
		e.t.Fatalf("mustLog: %v", err)
	}
	return id
}

// setCounter writes the send_counters row key as the milter leaves it.
func (e *env) setCounter(key string, windowStart int64, hits int) {
	e.t.Helper()
	_, err := e.db.Exec(`INSERT INTO send_counters (key, window_start, hits) VALUES ($1, $2, $3)
		ON CONFLICT (key) DO UPDATE SET window_start = excluded.window_start, hits = excluded.hits`, key, windowStart, hits)
	if err != nil {
		e.t.Fatalf("setCounter: %v", err)
	}
}

// quotaToday sets alice's daily counter to hits in the window starting
// dayOffset days from today's, asks for the quota and returns the answer,
// with the start of the day it was asked on (again when a UTC midnight
// passed in between).
func (w world) quotaToday(dayOffset int64, hits int) (resp, int64) {
	w.t.Helper()
	for {
		today := relay.Day.Start(time.Now())
		w.setCounter(relay.AccountKey(w.alice.id, relay.Day), today+dayOffset*86400, hits)
		r := w.do(req{method: "GET", path: "/api/quota", auth: w.alice.auth})
		if relay.Day.Start(time.Now()) == today {
			return r, today
		}
	}
}

func wantQuota(t *testing.T, r resp, current, maxQuota int64, pct float64, today int64) {
	t.Helper()
	wantStatus(t, r, http.StatusOK)
	want := map[string]any{
		"current_quota": float64(current), "max_quota": float64(maxQuota), "usage_percentage": pct,
		"resets_at": float64(today + 86400),
	}
	if r.body["success"] != true {
		t.Errorf("success: %s", r.raw)
	}
	for k, v := range want {
		if got := dig(r.body, "data", k); got != v {
			t.Errorf("data.%s = %v, want %v (%s)", k, got, v, r.raw)
		}
	}
}

func TestQuota200(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{quota: 200})

	// Nothing sent yet: the whole quota.
	r := w.do(req{method: "GET", path: "/api/quota", auth: w.alice.auth})
	today := relay.Day.Start(time.Now())
	wantQuota(t, r, 200, 200, 0, today)

	// Other counters never count: bob's, a login's, alice's hourly one.
	w.setCounter(relay.AccountKey(w.bob.id, relay.Day), today, 150)
	w.setCounter(relay.CredentialKey(1, relay.Day), today, 150)
	w.setCounter(relay.AccountKey(w.alice.id, relay.Hour), relay.Hour.Start(time.Now()), 150)

	r, today = w.quotaToday(0, 37)
	wantQuota(t, r, 163, 200, 18.5, today)
	// Yesterday's window: today starts afresh.
	r, today = w.quotaToday(-1, 190)
	wantQuota(t, r, 200, 200, 0, today)
	// At and over the limit (the operator lowered it): nothing left, never below 0.
	r, today = w.quotaToday(0, 200)
	wantQuota(t, r, 0, 200, 100, today)
	r, today = w.quotaToday(0, 250)
	wantQuota(t, r, 0, 200, 100, today)

	// bob's quota is his own.
	r = w.do(req{method: "GET", path: "/api/quota", auth: w.bob.auth})
	wantStatus(t, r, http.StatusOK)
	if dig(r.body, "data", "current_quota") != float64(50) {
		t.Errorf("bob: %s", r.raw)
	}
}

func TestQuota200RoundsToTwoDecimals(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{quota: 3})
	r, today := w.quotaToday(0, 1)
	wantQuota(t, r, 2, 3, 33.33, today)
	r, today = w.quotaToday(0, 2)
	wantQuota(t, r, 1, 3, 66.67, today)
}

func TestQuota404WithoutDailyLimit(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{quota: -1})
	r := w.do(req{method: "GET", path: "/api/quota", auth: w.alice.auth})
	wantError(t, r, http.StatusNotFound, "User quota not found")
	if r.header.Get("X-RateLimit-Limit") == "" {
		t.Errorf("404 without X-RateLimit-Limit: %v", r.header)
	}
}

// logWorld is a world whose example.com has a credential shop and four
// logged messages, and whose bob.test has one.
type logWorld struct {
	world
	guid string
	base time.Time
	ids  map[string]int64 // by name: e1..e4 (example.com), b1 (bob.test)
}

func newLogWorld(t *testing.T) logWorld {
	t.Helper()
	w := newWorld(t, opts{})
	lw := logWorld{world: w, ids: map[string]int64{},
		base: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	lw.guid = str(w.MustCreateCredential("shop"), "credential", "user_smtp_guid")
	subject := "Invoice 42 (50% off)"
	other := "Your order"
	lw.ids["e1"] = w.mustLog(logEntry{
		at: lw.base, domain: "example.com", credential: lw.guid, login: "shop@example.com", queueID: "4AbC1",
		ip: "198.51.100.7", sender: "shop@example.com", recipients: []string{"a@x.test", "b@y.test"},
		from: "Shop <shop@example.com>", subject: &subject, size: 1234, signed: true, event: "queued",
	})
	lw.ids["e2"] = w.mustLog(logEntry{
		at: lw.base.Add(time.Hour), domain: "example.com", credential: lw.guid, login: "shop@example.com",
		ip: "198.51.100.8", sender: "billing@bank.example", recipients: []string{"c@x.test"},
		event: "permanent_fail", reason: "5.7.1 sender <billing@bank.example> refused",
	})
	lw.ids["e3"] = w.mustLog(logEntry{
		at: lw.base.Add(2*time.Hour + 300*time.Millisecond), domain: "example.com", credential: lw.guid,
		login: "shop@example.com", ip: "2001:db8::1", sender: "shop@example.com", recipients: []string{"a@x.test"},
		from: "shop@example.com", subject: &other, size: 99, event: "temporary_fail", reason: "4.7.0 limit per hour",
	})
	lw.ids["e4"] = w.mustLog(logEntry{
		at: lw.base.Add(3 * time.Hour), domain: "example.com", login: "gone@example.com", queueID: "9ZZ",
		sender: "gone@example.com", recipients: []string{"d@x.test"}, event: "queued", signed: true,
	})
	lw.ids["b1"] = w.mustLog(logEntry{
		at: lw.base.Add(30 * time.Minute), domain: "bob.test", login: "bob@bob.test", sender: "shop@example.com",
		recipients: []string{"a@x.test"}, event: "queued",
	})
	return lw
}

// logIDs asks alice's example.com log with the query and returns the
// response and its events' ids.
func (lw logWorld) logIDs(query string) (resp, []int64) {
	lw.t.Helper()
	r := lw.do(req{method: "GET", path: "/api/domains/example.com/log?" + query, auth: lw.alice.auth})
	wantStatus(lw.t, r, http.StatusOK)
	var ids []int64
	for _, e := range r.body["data"].([]any) {
		ids = append(ids, int64(e.(map[string]any)["id"].(float64)))
	}
	return r, ids
}

func (lw logWorld) want(names ...string) []int64 {
	ids := []int64{}
	for _, n := range names {
		ids = append(ids, lw.ids[n])
	}
	return ids
}

func TestLog200NewestFirstWithEveryField(t *testing.T) {
	t.Parallel()
	lw := newLogWorld(t)
	r, ids := lw.logIDs("")
	if !slices.Equal(ids, lw.want("e4", "e3", "e2", "e1")) {
		t.Fatalf("ids %v, want %v", ids, lw.want("e4", "e3", "e2", "e1"))
	}
	if r.body["success"] != true || r.body["count"] != float64(4) || r.body["offset"] != float64(0) || r.body["limit"] != float64(1000) {
		t.Errorf("envelope: %s", r.raw)
	}
	wantPagination(t, r, 4, 1000, 1, 1)

	data := r.body["data"].([]any)
	e1 := data[3].(map[string]any)
	wantFields(t, "e1", e1, map[string]any{
		"timestamp": float64(lw.base.Unix()), "created_at": float64(lw.base.Unix()), "event_type": "queued",
		"message_id": "4AbC1", "sender": "shop@example.com", "recipients": []any{"a@x.test", "b@y.test"},
		"from": "Shop <shop@example.com>", "subject": "Invoice 42 (50% off)", "size": float64(1234),
		"credential": "shop@example.com", "user_smtp_guid": lw.guid, "client_ip": "198.51.100.7",
		"sender_ip": "198.51.100.7", "dkim_signed": true, "reason": nil, "event_detail": nil,
	})
	e2 := data[2].(map[string]any)
	wantFields(t, "e2", e2, map[string]any{
		"event_type": "permanent_fail", "message_id": nil, "from": nil, "subject": nil, "size": float64(0),
		"dkim_signed": false, "reason": "5.7.1 sender <billing@bank.example> refused",
		"event_detail": "5.7.1 sender <billing@bank.example> refused",
	})
	e3 := data[1].(map[string]any)
	wantFields(t, "e3", e3, map[string]any{
		"timestamp": float64(lw.base.Add(2 * time.Hour).Unix()), "client_ip": "2001:db8::1", "event_type": "temporary_fail",
	})
	// A deleted credential's messages keep their login, without a guid.
	e4 := data[0].(map[string]any)
	wantFields(t, "e4", e4, map[string]any{
		"credential": "gone@example.com", "user_smtp_guid": nil, "client_ip": nil, "sender_ip": nil,
	})

	// The domain name is case-insensitive.
	r = lw.do(req{method: "GET", path: "/api/domains/EXAMPLE.com/log", auth: lw.alice.auth})
	wantStatus(t, r, http.StatusOK)
	if r.body["count"] != float64(4) {
		t.Errorf("EXAMPLE.com: %s", r.raw)
	}
	// bob sees his own domain's only.
	r = lw.do(req{method: "GET", path: "/api/domains/bob.test/log", auth: lw.bob.auth})
	wantStatus(t, r, http.StatusOK)
	if r.body["count"] != float64(1) || dig(r.body, "pagination", "total") != float64(1) {
		t.Errorf("bob.test: %s", r.raw)
	}
}

func wantFields(t *testing.T, name string, got map[string]any, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if fmt.Sprint(got[k]) != fmt.Sprint(v) || (got[k] == nil) != (v == nil) {
			t.Errorf("%s.%s = %#v, want %#v", name, k, got[k], v)
		}
	}
}

func wantPagination(t *testing.T, r resp, total, perPage, current, last int) {
	t.Helper()
	p := r.body["pagination"].(map[string]any)
	got := []any{p["total"], p["per_page"], p["current_page"], p["last_page"]}
	want := []any{float64(total), float64(perPage), float64(current), float64(last)}
	if !slices.Equal(got, want) {
		t.Errorf("pagination (total, per_page, current_page, last_page) = %v, want %v", got, want)
	}
}

func TestLog200Filters(t *testing.T) {
	t.Parallel()
	lw := newLogWorld(t)
	at := func(d time.Duration) string { return url.QueryEscape(lw.base.Add(d).Format(time.RFC3339Nano)) }
	for _, c := range []struct {
		query string
		want  []string
	}{
		{"start=" + at(time.Hour), []string{"e4", "e3", "e2"}},
		{"end=" + at(time.Hour), []string{"e2", "e1"}},
		{"start=" + at(time.Hour) + "&end=" + at(time.Hour), []string{"e2"}},
		// Whole seconds, both inclusive: e3 is at 14:00:00.3.
		{"start=" + at(2*time.Hour+500*time.Millisecond), []string{"e4", "e3"}},
		{"end=" + at(2*time.Hour), []string{"e3", "e2", "e1"}},
		{"end=" + at(2*time.Hour-time.Second), []string{"e2", "e1"}},
		// Any offset: 14:00+01:00 is 13:00Z.
		{"end=" + url.QueryEscape("2026-11-30T14:00:00+01:00"), []string{"e2", "e1"}},
		{"start=" + at(5*time.Hour), nil},
		{"sender=SHOP@example.com", []string{"e3", "e1"}},
		{"sender=shop", nil}, // whole addresses only
		{"recipient=A@X.TEST", []string{"e3", "e1"}},
		{"recipient=b@y.test", []string{"e1"}},
		{"recipient=x.test", nil},
		{"subject=invoice", []string{"e1"}},
		{"subject=" + url.QueryEscape("50% OFF"), []string{"e1"}},
		{"subject=" + url.QueryEscape("%"), []string{"e1"}}, // a literal %, not a wildcard
		{"subject=o", []string{"e3", "e1"}},
		{"event_type=permanent_fail", []string{"e2"}},
		{"event_type=temporary_fail", []string{"e3"}},
		{"event_type=queued", []string{"e4", "e1"}},
		{"event_type=delivered", nil}, // the vendor's, never recorded here
		{"sender=shop@example.com&event_type=queued", []string{"e1"}},
		{"tags=", []string{"e4", "e3", "e2", "e1"}},
		// An empty filter is no filter.
		{"start=&end=&sender=&recipient=&subject=&event_type=", []string{"e4", "e3", "e2", "e1"}},
		{"tags=newsletter", nil},
		// Unknown parameters are ignored, as the vendor's clients may send more.
		{"foo=bar", []string{"e4", "e3", "e2", "e1"}},
	} {
		r, ids := lw.logIDs(c.query)
		want := lw.want(c.want...)
		if !slices.Equal(ids, want) && !(len(ids) == 0 && len(want) == 0) {
			t.Errorf("%s: ids %v, want %v", c.query, ids, want)
		}
		if r.body["count"] != float64(len(want)) || dig(r.body, "pagination", "total") != float64(len(want)) {
			t.Errorf("%s: count/total: %s", c.query, r.raw)
		}
	}
}

func TestLog200Pagination(t *testing.T) {
	t.Parallel()
	lw := newLogWorld(t)
	r, ids := lw.logIDs("limit=2")
	if !slices.Equal(ids, lw.want("e4", "e3")) || r.body["count"] != float64(2) || r.body["limit"] != float64(2) {
		t.Errorf("limit=2: %v %s", ids, r.raw)
	}
	wantPagination(t, r, 4, 2, 1, 2)
	r, ids = lw.logIDs("limit=2&offset=2")
	if !slices.Equal(ids, lw.want("e2", "e1")) || r.body["offset"] != float64(2) {
		t.Errorf("offset=2: %v %s", ids, r.raw)
	}
	wantPagination(t, r, 4, 2, 2, 2)
	r, ids = lw.logIDs("limit=2&offset=3")
	if !slices.Equal(ids, lw.want("e1")) || r.body["count"] != float64(1) {
		t.Errorf("offset=3: %v %s", ids, r.raw)
	}
	wantPagination(t, r, 4, 2, 2, 2)
	r, ids = lw.logIDs("offset=10")
	if len(ids) != 0 || r.body["count"] != float64(0) {
		t.Errorf("offset past the end: %v %s", ids, r.raw)
	}
	wantPagination(t, r, 4, 1000, 1, 1)
	r, ids = lw.logIDs("limit=10000&event_type=queued")
	if !slices.Equal(ids, lw.want("e4", "e1")) {
		t.Errorf("limit=10000: %v", ids)
	}
	wantPagination(t, r, 2, 10000, 1, 1)
	// Filters and pagination together: the page is of the matches.
	r, ids = lw.logIDs("recipient=a@x.test&limit=1&offset=1")
	if !slices.Equal(ids, lw.want("e1")) {
		t.Errorf("filtered page: %v", ids)
	}
	wantPagination(t, r, 2, 1, 2, 2)
}

func TestLog404NotOwned(t *testing.T) {
	t.Parallel()
	lw := newLogWorld(t)
	for _, c := range []struct {
		who    user
		domain string
	}{
		{lw.alice, "bob.test"},  // bob's
		{lw.bob, "example.com"}, // alice's
		{lw.alice, "nowhere.test"},
		{lw.alice, "bad_name!"},
		{lw.alice, strings.Repeat("a", 250) + ".test"}, // longer than the spec allows
	} {
		r := lw.do(req{method: "GET", path: "/api/domains/" + c.domain + "/log", auth: c.who.auth})
		wantError(t, r, http.StatusNotFound, "Domain not found or you do not own this domain")
		if strings.Contains(r.raw, "bob@bob.test") || strings.Contains(r.raw, "shop@") {
			t.Errorf("%s leaks: %s", c.domain, r.raw)
		}
	}
}

func TestLog400BadFilters(t *testing.T) {
	t.Parallel()
	lw := newLogWorld(t)
	const rfc = " must be an RFC 3339 date-time (e.g. 2026-12-01T00:00:00Z)."
	for _, c := range []struct{ query, message string }{
		{"start=yesterday", "The start" + rfc},
		{"start=2026-11-30", "The start" + rfc},
		{"end=2026-11-30T25:00:00Z", "The end" + rfc},
		{"end=" + url.QueryEscape("2026-11-30 12:00:00"), "The end" + rfc},
		{"start=2026-11-30T12:00:01Z&end=2026-11-30T12:00:00Z", "The end must not be before the start."},
		{"event_type=sent", "The event_type must be one of: queued, send, delivered, bounced, failed, opened, clicked, unsubscribed, temporary_fail, permanent_fail, deferred."},
		{"limit=0", "The limit must be an integer between 1 and 10000."},
		{"limit=10001", "The limit must be an integer between 1 and 10000."},
		{"limit=ten", "The limit must be an integer between 1 and 10000."},
		{"limit=", "The limit must be an integer between 1 and 10000."},
		{"offset=-1", "The offset must be an integer between 0 and 1000000000."},
		{"sender=" + strings.Repeat("a", 321), "The sender must be at most 320 characters."},
		{"subject=" + strings.Repeat("s", 999), "The subject must be at most 998 characters."},
	} {
		r := lw.do(req{method: "GET", path: "/api/domains/example.com/log?" + c.query, auth: lw.alice.auth})
		wantError(t, r, http.StatusBadRequest, c.message)
		if _, ok := r.body["errors"]; ok {
			t.Errorf("%s: a 400 with errors: %s", c.query, r.raw)
		}
	}
	// A bad filter is a 400 on another account's domain too (nothing is looked up).
	r := lw.do(req{method: "GET", path: "/api/domains/bob.test/log?limit=0", auth: lw.alice.auth})
	wantStatus(t, r, http.StatusBadRequest)
}

func TestCredentialUsage(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	used := str(w.MustCreateCredential("used"), "credential", "user_smtp_guid")
	idle := str(w.MustCreateCredential("idle"), "credential", "user_smtp_guid")
	noUsage := map[string]any{"last_used_at": nil, "last_used_ip": nil, "messages_queued": 0, "messages_refused": 0}

	r := w.do(req{method: "GET", path: credsPath + "/" + used, auth: w.alice.auth})
	wantStatus(t, r, http.StatusOK)
	wantFields(t, "before", r.body["data"].(map[string]any), noUsage)

	last := time.Date(2026, 12, 1, 8, 30, 0, 0, time.UTC)
	if _, err := w.db.Exec(`INSERT INTO credential_usage (credential_id, last_used_at, last_used_ip, messages_queued, messages_refused)
		SELECT id, $2, '2001:db8::25', 12, 3 FROM credentials WHERE guid = $1`, used, last); err != nil {
		t.Fatal(err)
	}
	usage := map[string]any{"last_used_at": float64(last.Unix()), "last_used_ip": "2001:db8::25",
		"messages_queued": 12, "messages_refused": 3}

	r = w.do(req{method: "GET", path: credsPath + "/" + used, auth: w.alice.auth})
	wantStatus(t, r, http.StatusOK)
	wantFields(t, "get", r.body["data"].(map[string]any), usage)

	for _, path := range []string{credsPath, credsPath + "?limit=1&page=2", credsPath + "?limit=1"} {
		r = w.do(req{method: "GET", path: path, auth: w.alice.auth})
		wantStatus(t, r, http.StatusOK)
		for _, c := range r.body["data"].([]any) {
			c := c.(map[string]any)
			switch c["user_smtp_guid"] {
			case used:
				wantFields(t, path+" used", c, usage)
			case idle:
				wantFields(t, path+" idle", c, noUsage)
			}
		}
	}

	// A reset keeps the history and shows it.
	r = w.do(req{method: "PUT", path: credsPath + "/" + used + "/reset-password", auth: w.alice.auth})
	wantStatus(t, r, http.StatusOK)
	wantFields(t, "reset", dig(r.body, "data", "credential").(map[string]any), usage)

	// An IPv4 client address reads as plain text, not as a network.
	if _, err := w.db.Exec(`UPDATE credential_usage SET last_used_ip = '198.51.100.7'`); err != nil {
		t.Fatal(err)
	}
	r = w.do(req{method: "GET", path: credsPath + "/" + used, auth: w.alice.auth})
	if got := dig(r.body, "data", "last_used_ip"); got != "198.51.100.7" {
		t.Errorf("last_used_ip = %v", got)
	}
}

// The relay routes: a database failure is a 500 without detail.
func TestRelayRoutes500(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	if _, err := w.db.Exec(`ALTER TABLE send_counters RENAME TO send_counters_gone;
		ALTER TABLE message_log RENAME TO message_log_gone`); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/api/quota", "/api/domains/example.com/log"} {
		r := w.do(req{method: "GET", path: path, auth: w.alice.auth})
		wantError(t, r, http.StatusInternalServerError, "An error occurred while processing the request.")
		if strings.Contains(r.raw, "send_counters") || strings.Contains(r.raw, "message_log") {
			t.Errorf("%s leaks: %s", path, r.raw)
		}
	}
}

// Housekeeping deletes the messages logged longer ago than the retention,
// however many, and the send counters whose window ended more than a day
// ago; everything newer stays.
func TestPruneMessageLogAndCounters(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{relay: app.RelayConfig{LogRetention: time.Hour}})
	now := time.Now()
	// More than two batches of old messages, in both accounts.
	if _, err := w.db.Exec(`
		INSERT INTO message_log (at, account_id, domain_id, login, envelope_sender, recipients, event_type)
		SELECT $1::timestamptz - g * interval '1 second', d.account_id, d.id, 'old@' || d.name, 'old@' || d.name, '{a@x.test}', 'queued'
		FROM domains d, generate_series(1, 10001) g`, now.Add(-2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	kept := w.mustLog(logEntry{at: now.Add(-50 * time.Minute), domain: "example.com", login: "new@example.com",
		sender: "new@example.com", recipients: []string{"a@x.test"}, event: "queued"})

	today := relay.Day.Start(now)
	counters := map[string]struct {
		start int64
		kept  bool
	}{
		"a1d": {today, true},                              // today's
		"a2d": {today - 86400, true},                      // yesterday's: ended today
		"a3d": {today - 2*86400, false},                   // ended yesterday at 00:00, over a day ago
		"c5m": {relay.Minute.Start(now) - 25*3600, false}, // ended 24h59m ago
		"c6m": {relay.Minute.Start(now) - 23*3600, true},  // ended 22h59m ago
		"c7h": {now.Unix() - 26*3600, false},              // ended 25h ago
		"c8h": {relay.Hour.Start(now) - 22*3600, true},
	}
	for key, c := range counters {
		w.setCounter(key, c.start, 5)
	}

	rel := w.app.RelayService()
	n, err := rel.PruneLog(context.Background())
	if err != nil || n != 2*10001 {
		t.Fatalf("PruneLog = %d, %v; want %d", n, err, 2*10001)
	}
	var left []int64
	if err := w.db.Select(&left, `SELECT id FROM message_log`); err != nil || !slices.Equal(left, []int64{kept}) {
		t.Errorf("left %v (%v), want only %d", left, err, kept)
	}
	if n, err := rel.PruneLog(context.Background()); err != nil || n != 0 {
		t.Errorf("PruneLog again = %d, %v", n, err)
	}

	n, err = rel.PruneCounters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := w.db.Select(&keys, `SELECT key FROM send_counters ORDER BY key`); err != nil {
		t.Fatal(err)
	}
	var want []string
	for key, c := range counters {
		if c.kept {
			want = append(want, key)
		}
	}
	slices.Sort(want)
	if !slices.Equal(keys, want) || int(n) != len(counters)-len(want) {
		t.Errorf("counters left %v (pruned %d), want %v", keys, n, want)
	}
}

// Without a retention setting the log keeps 30 days.
func TestPruneMessageLogDefaultRetention(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	now := time.Now()
	kept := w.mustLog(logEntry{at: now.Add(-29 * 24 * time.Hour), domain: "example.com", login: "a@example.com",
		sender: "a@example.com", recipients: []string{"a@x.test"}, event: "queued"})
	w.mustLog(logEntry{at: now.Add(-31 * 24 * time.Hour), domain: "example.com", login: "a@example.com",
		sender: "a@example.com", recipients: []string{"a@x.test"}, event: "queued"})
	if n, err := w.app.RelayService().PruneLog(context.Background()); err != nil || n != 1 {
		t.Fatalf("PruneLog = %d, %v; want 1", n, err)
	}
	r := w.do(req{method: "GET", path: "/api/domains/example.com/log", auth: w.alice.auth})
	wantStatus(t, r, http.StatusOK)
	if r.body["count"] != float64(1) || dig(r.body, "data") == nil ||
		r.body["data"].([]any)[0].(map[string]any)["id"] != float64(kept) {
		t.Errorf("after pruning: %s", r.raw)
	}
}
