package httpapi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/smtpcreds/smtpcreds/internal/dkim"
	"github.com/smtpcreds/smtpcreds/internal/domains"
)

// MustCreateDomain adds name through the API as u and returns data.
func (w world) MustCreateDomain(u user, body string) map[string]any {
	w.t.Helper()
	r := w.do(req{method: "POST", path: "/api/domains", auth: u.auth, body: body})
	if r.status != http.StatusCreated {
		w.t.Fatalf("MustCreateDomain(%s): %d %s", body, r.status, r.raw)
	}
	return r.body["data"].(map[string]any)
}

// publish puts the records a domain owner is told to publish into the test DNS.
func (w world) publish(d map[string]any, skip ...string) {
	for _, rec := range d["dns_records"].([]any) {
		r := rec.(map[string]any)
		if contains(skip, r["purpose"].(string)) {
			continue
		}
		name, value := r["name"].(string), r["value"].(string)
		switch r["type"] {
		case "TXT":
			w.dns.SetTXT(name, value)
		case "MX":
			w.dns.SetMX(name, value)
		case "CNAME":
			w.dns.SetCNAME(name, value)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestCreateDomain201(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	r := w.do(req{method: "POST", path: "/api/domains", auth: w.alice.auth, body: `{"domain":"Mail.Example.ORG.","dkim_key_length":1024}`})
	wantStatus(t, r, http.StatusCreated)
	if r.body["message"] != "Domain added successfully." || str(r.body, "data", "domain") != "mail.example.org" {
		t.Errorf("create: %s", r.raw)
	}
	d := r.body["data"].(map[string]any)
	if d["dkim_key_length"] != float64(1024) || d["is_verified"] != false || d["dns_selector"] != "smtpcreds" {
		t.Errorf("domain: %v", d)
	}
	if !strings.HasPrefix(d["dns_record"].(string), "v=DKIM1; k=rsa; p=") {
		t.Errorf("dns_record %q", d["dns_record"])
	}
	if d["spf_record"] != "v=spf1 include:_spf.relay.test ~all" || d["tracklink_domain"] != "" || d["auth_domain"] != "" {
		t.Errorf("records: %v", d)
	}
	if strings.Contains(r.raw, "PRIVATE") || strings.Contains(r.raw, "private") {
		t.Errorf("response mentions a private key: %s", r.raw)
	}
	var sealed []byte
	if err := w.db.Get(&sealed, `SELECT dkim_private_key FROM domains WHERE name = 'mail.example.org'`); err != nil {
		t.Fatal(err)
	}
	if len(sealed) < 500 || bytes.Contains(sealed, []byte("PRIVATE KEY")) || bytes.Contains(sealed, []byte{0x30, 0x82}) && sealed[0] == 0x30 {
		t.Errorf("the stored private key does not look sealed (%d bytes)", len(sealed))
	}
}

// The stored (sealed) private key really signs, and the published record verifies it.
func TestDomainDKIMKeySigns(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	d := w.MustCreateDomain(w.alice, `{"domain":"signed.example"}`)
	var sealed []byte
	if err := w.db.Get(&sealed, `SELECT dkim_private_key FROM domains WHERE name = 'signed.example'`); err != nil {
		t.Fatal(err)
	}
	sealer, err := dkim.NewSealer(testKey)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := sealer.OpenKey(sealed, []byte("dkim:signed.example"))
	if err != nil {
		t.Fatalf("open stored key: %v", err)
	}
	if priv.N.BitLen() != 2048 {
		t.Errorf("key length %d, want 2048 by default", priv.N.BitLen())
	}
	msg := "From: a@signed.example\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nhello\r\n"
	var signed bytes.Buffer
	if err := msgdkim.Sign(&signed, strings.NewReader(msg), &msgdkim.SignOptions{Domain: "signed.example", Selector: "smtpcreds", Signer: priv}); err != nil {
		t.Fatal(err)
	}
	record := d["dns_record"].(string)
	verifs, err := msgdkim.VerifyWithOptions(&signed, &msgdkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
		if name != "smtpcreds._domainkey.signed.example" {
			return nil, fmt.Errorf("unexpected lookup %s", name)
		}
		return []string{record}, nil
	}})
	if err != nil || len(verifs) != 1 || verifs[0].Err != nil {
		t.Fatalf("signature does not verify against the published record: %v %+v", err, verifs)
	}
}

func TestCreateDomainKeyLengths(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	for i, c := range []struct {
		body string
		bits float64
	}{
		{`{"domain":"k0-%d.example","dkim_key_length":0}`, 2048},
		{`{"domain":"k1-%d.example"}`, 2048},
		{`{"domain":"k2-%d.example","dkim_key_length":1024}`, 1024},
		{`{"domain":"k3-%d.example","dkim_key_length":2048}`, 2048},
	} {
		d := w.MustCreateDomain(w.alice, fmt.Sprintf(c.body, i))
		if d["dkim_key_length"] != c.bits {
			t.Errorf("%s: dkim_key_length %v", c.body, d["dkim_key_length"])
		}
	}
	for _, body := range []string{
		`{"domain":"bad1.example","dkim_key_length":512}`,
		`{"domain":"bad2.example","dkim_key_length":4096}`,
		`{"domain":"bad3.example","dkim_key_length":-1}`,
		`{"domain":"bad4.example","dkim_key_length":"2048"}`,
	} {
		wantFieldError(t, w.do(req{method: "POST", path: "/api/domains", auth: w.alice.auth, body: body}), "dkim_key_length")
	}
	var n int
	if err := w.db.Get(&n, `SELECT count(*) FROM domains WHERE name LIKE 'bad%'`); err != nil || n != 0 {
		t.Errorf("rejected domains stored: %d %v", n, err)
	}
}

func TestCreateDomainNames(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	d := w.MustCreateDomain(w.alice, `{"domain":"Bücher.Example"}`)
	if d["domain"] != "xn--bcher-kva.example" {
		t.Errorf("IDNA: %v", d["domain"])
	}
	for _, name := range []string{``, `localhost`, `a..b.example`, `-a.example`, `a_b.example`, `exa mple.com`,
		strings.Repeat("a", 64) + `.com`, `example.123`, `http://example.com`} {
		r := w.do(req{method: "POST", path: "/api/domains", auth: w.alice.auth, body: `{"domain":"` + name + `"}`})
		msgs := wantFieldError(t, r, "domain")
		if name != "" && strings.Contains(msgs[0].(string), name) {
			t.Errorf("message echoes %q", name)
		}
	}
	wantFieldError(t, w.do(req{method: "POST", path: "/api/domains", auth: w.alice.auth, body: `{}`}), "domain")
	wantFieldError(t, w.do(req{method: "POST", path: "/api/domains", auth: w.alice.auth}), "domain")
}

func TestCreateDomain422Taken(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	r := w.do(req{method: "POST", path: "/api/domains", auth: w.alice.auth, body: `{"domain":"bob.test"}`})
	msgs := wantFieldError(t, r, "domain")
	if strings.Contains(r.raw, "bob\"") || !strings.Contains(msgs[0].(string), "taken") {
		t.Errorf("taken: %s", r.raw)
	}
	wantFieldError(t, w.do(req{method: "POST", path: "/api/domains", auth: w.bob.auth, body: `{"domain":"BOB.test"}`}), "domain")
}

func TestCreateDomainConcurrentClaims(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	won := w.concurrent(8, func(i int) req {
		u := w.alice
		if i%2 == 1 {
			u = w.bob
		}
		return req{method: "POST", path: "/api/domains", auth: u.auth, body: `{"domain":"contested.example","dkim_key_length":1024}`}
	})
	if won != 1 {
		t.Errorf("%d claims won, want 1", won)
	}
}

func TestListDomains(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	for i := range 3 {
		w.MustCreateDomain(w.alice, fmt.Sprintf(`{"domain":"shop%d.example","dkim_key_length":1024}`, i))
	}
	r := w.do(req{method: "GET", path: "/api/domains?page=2&limit=2", auth: w.alice.auth})
	wantStatus(t, r, http.StatusOK)
	items := r.body["data"].([]any)
	p := r.body["pagination"].(map[string]any)
	if len(items) != 2 || p["total"] != float64(4) || p["offset"] != float64(2) {
		t.Errorf("page 2: %s", r.raw)
	}
	// The vendor's names (current_page, per_page, last_page) beside ours.
	wantPagination := func(r resp, total, page, limit, lastPage float64) {
		t.Helper()
		want := map[string]any{"total": total, "page": page, "limit": limit, "offset": (page - 1) * limit,
			"current_page": page, "per_page": limit, "last_page": lastPage}
		if got := r.body["pagination"]; !reflect.DeepEqual(got, want) {
			t.Errorf("pagination %v, want %v", got, want)
		}
	}
	wantPagination(r, 4, 2, 2, 2)
	wantPagination(w.do(req{method: "GET", path: "/api/domains?page=1&limit=3", auth: w.alice.auth}), 4, 1, 3, 2)
	wantPagination(w.do(req{method: "GET", path: "/api/domains?page=5&limit=3", auth: w.alice.auth}), 4, 5, 3, 2)
	wantPagination(w.do(req{method: "GET", path: "/api/domains?search=nomatch", auth: w.alice.auth}), 0, 1, 10, 1)
	r = w.do(req{method: "GET", path: "/api/domains?search=SHOP&limit=100", auth: w.alice.auth})
	if len(r.body["data"].([]any)) != 3 {
		t.Errorf("search: %s", r.raw)
	}
	r = w.do(req{method: "GET", path: "/api/domains?search=%25", auth: w.alice.auth}) // a literal %
	if len(r.body["data"].([]any)) != 0 {
		t.Errorf("wildcard not escaped: %s", r.raw)
	}
	// bob's search never reveals alice's domains.
	r = w.do(req{method: "GET", path: "/api/domains?search=example", auth: w.bob.auth})
	wantStatus(t, r, http.StatusOK)
	if len(r.body["data"].([]any)) != 0 || dig(r.body, "pagination", "total") != float64(0) {
		t.Errorf("isolation: %s", r.raw)
	}
	r = w.do(req{method: "GET", path: "/api/domains?", auth: w.alice.auth})
	if dig(r.body, "pagination", "limit") != float64(10) {
		t.Errorf("default limit: %s", r.raw)
	}
	wantFieldError(t, w.do(req{method: "GET", path: "/api/domains?limit=101", auth: w.alice.auth}), "limit")
}

func TestGetUpdateDeleteDomain(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	w.MustCreateCredential("keep")
	r := w.do(req{method: "GET", path: "/api/domains/EXAMPLE.com", auth: w.alice.auth})
	wantStatus(t, r, http.StatusOK)
	if str(r.body, "data", "domain") != "example.com" || dig(r.body, "data", "is_verified") != true {
		t.Errorf("get: %s", r.raw)
	}
	r = w.do(req{method: "PUT", path: "/api/domains/example.com", auth: w.alice.auth, body: `{"open_track":true}`})
	wantStatus(t, r, http.StatusOK)
	if dig(r.body, "data", "open_track") != true || dig(r.body, "data", "click_track") != false {
		t.Errorf("update: %s", r.raw)
	}
	r = w.do(req{method: "PUT", path: "/api/domains/example.com", auth: w.alice.auth, body: `{"click_track":true,"unsub_track":true}`})
	if dig(r.body, "data", "open_track") != true || dig(r.body, "data", "click_track") != true || dig(r.body, "data", "unsub_track") != true {
		t.Errorf("partial update lost a flag: %s", r.raw)
	}
	wantStatus(t, w.do(req{method: "PUT", path: "/api/domains/example.com", auth: w.alice.auth, body: `{}`}), http.StatusOK)
	wantFieldError(t, w.do(req{method: "PUT", path: "/api/domains/example.com", auth: w.alice.auth, body: `{"open_track":"yes"}`}), "open_track")

	r = w.do(req{method: "DELETE", path: "/api/domains/example.com", auth: w.alice.auth})
	wantStatus(t, r, http.StatusOK)
	if r.body["message"] != "Domain deleted successfully." {
		t.Errorf("delete: %s", r.raw)
	}
	var n int
	if err := w.db.Get(&n, `SELECT count(*) FROM credentials`); err != nil || n != 0 {
		t.Errorf("credentials of a deleted domain remain: %d %v", n, err)
	}
	wantError(t, w.do(req{method: "GET", path: "/api/domains/example.com", auth: w.alice.auth}), http.StatusNotFound, "Domain not found")
	// The name is free again.
	w.MustCreateDomain(w.bob, `{"domain":"example.com","dkim_key_length":1024}`)
}

// Another account's domain is a 404 on every domain route, and nothing changes.
func TestDomainTenantIsolation(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	before := w.do(req{method: "GET", path: "/api/domains/example.com", auth: w.alice.auth}).raw
	for _, r := range []req{
		{method: "GET", path: "/api/domains/example.com"},
		{method: "PUT", path: "/api/domains/example.com", body: `{"open_track":true}`},
		{method: "DELETE", path: "/api/domains/example.com"},
		{method: "POST", path: "/api/domains/example.com/verify-mandatory"},
		{method: "POST", path: "/api/domains/example.com/setup-auth-domain", body: `{}`},
		{method: "POST", path: "/api/domains/example.com/verify-auth-domain"},
		{method: "DELETE", path: "/api/domains/example.com/auth-domain"},
		{method: "POST", path: "/api/domains/example.com/setup-tracklink", body: `{"tracking_domain":"t.example.com"}`},
		{method: "POST", path: "/api/domains/example.com/verify-tracklink"},
		{method: "DELETE", path: "/api/domains/example.com/tracklink"},
	} {
		r.auth = w.bob.auth
		wantError(t, w.do(r), http.StatusNotFound, "Domain not found")
	}
	if after := w.do(req{method: "GET", path: "/api/domains/example.com", auth: w.alice.auth}).raw; after != before {
		t.Errorf("alice's domain changed:\n%s\n%s", before, after)
	}
}

// An operator's mark (smtpcreds domains set-verified, domains add
// --verified) keeps a domain verified through failing DNS checks, whose
// results are still stored and shown; withdrawn, DNS decides again.
func TestVerifiedByOperatorSurvivesDNSChecks(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	ctx := context.Background()
	d := w.MustCreateDomain(w.alice, `{"domain":"op.example","dkim_key_length":1024}`)
	if d["verified_by"] != nil || d["is_verified"] != false {
		t.Fatalf("new domain: verified_by %v, is_verified %v", d["verified_by"], d["is_verified"])
	}
	get := func() resp { return w.do(req{method: "GET", path: "/api/domains/op.example", auth: w.alice.auth}) }
	verify := func() resp {
		return w.do(req{method: "POST", path: "/api/domains/op.example/verify-mandatory", auth: w.alice.auth})
	}

	if _, err := w.dom.SetVerified(ctx, "OP.example", true); err != nil {
		t.Fatal(err)
	}
	if g := get(); dig(g.body, "data", "verified_by") != "operator" || dig(g.body, "data", "is_verified") != true {
		t.Errorf("after set-verified true: %s", g.raw)
	}
	// Nothing published: the check fails and says so, the mark stands.
	r := verify()
	if dig(r.body, "records", "dkim") != false || dig(r.body, "data", "is_verified") != true || dig(r.body, "data", "verified_by") != "operator" {
		t.Errorf("failing check on a marked domain: %s", r.raw)
	}
	g := get()
	if dig(g.body, "data", "verified_by") != "operator" || dig(g.body, "data", "dkim_verified") != false || dig(g.body, "data", "last_checked_at") == nil {
		t.Errorf("stored outcome under the mark: %s", g.raw)
	}
	wantStatus(t, w.do(req{method: "POST", path: "/api/domains/op.example/credentials", auth: w.alice.auth, body: `{"username":"x"}`}), http.StatusCreated)

	// Withdrawn: unverified at once, until a check passes.
	if _, err := w.dom.SetVerified(ctx, "op.example", false); err != nil {
		t.Fatal(err)
	}
	if g := get(); dig(g.body, "data", "verified_by") != nil || dig(g.body, "data", "is_verified") != false {
		t.Errorf("after set-verified false: %s", g.raw)
	}
	w.publish(d, "mx")
	if r := verify(); dig(r.body, "data", "is_verified") != true || dig(r.body, "data", "verified_by") != "dns" {
		t.Errorf("passing check: %s", r.raw)
	}
	if g := get(); dig(g.body, "data", "verified_by") != "dns" {
		t.Errorf("after a passing check: %s", g.raw)
	}
	// Verified by DNS, a failing check unverifies it.
	w.dns.SetTXT("op.example", "v=spf1 -all")
	if r := verify(); dig(r.body, "data", "is_verified") != false || dig(r.body, "data", "verified_by") != nil {
		t.Errorf("failing check without a mark: %s", r.raw)
	}
	// add --verified on the account's own domain marks it, keeping its key;
	// on another account's domain it is still refused.
	if _, err := w.dom.AddForAccount(ctx, "alice", "op.example", true); err != nil {
		t.Fatalf("add --verified on alice's own domain: %v", err)
	}
	if g := get(); dig(g.body, "data", "verified_by") != "operator" || dig(g.body, "data", "dns_record") != d["dns_record"] {
		t.Errorf("after add --verified: %s", g.raw)
	}
	if _, err := w.dom.AddForAccount(ctx, "bob", "op.example", true); !errors.Is(err, domains.ErrTaken) {
		t.Errorf("add --verified on alice's domain as bob: %v, want ErrTaken", err)
	}
}

func TestVerifyMandatory(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	d := w.MustCreateDomain(w.alice, `{"domain":"new.example","dkim_key_length":1024}`)
	path := "/api/domains/new.example/verify-mandatory"

	// Nothing published: 200 with false flags and an explanation per record.
	r := w.do(req{method: "POST", path: path, auth: w.alice.auth})
	wantStatus(t, r, http.StatusOK)
	for _, k := range []string{"dkim", "spf", "mx"} {
		if dig(r.body, "records", k) != false || dig(r.body, "data", "records", k) != false {
			t.Errorf("%s should fail: %s", k, r.raw)
		}
		if str(r.body, "data", "checks", k, "problem") == "" || str(r.body, "data", "checks", k, "expected") == "" {
			t.Errorf("%s has no explanation: %s", k, r.raw)
		}
	}
	wantFieldError(t, w.do(req{method: "POST", path: "/api/domains/new.example/credentials", auth: w.alice.auth, body: `{"username":"x"}`}), "domain")

	// Partial: DKIM and SPF but no MX verifies the domain.
	w.publish(d, "mx")
	r = w.do(req{method: "POST", path: path, auth: w.alice.auth, body: "{}"})
	if dig(r.body, "records", "dkim") != true || dig(r.body, "records", "spf") != true || dig(r.body, "records", "mx") != false || dig(r.body, "data", "is_verified") != true {
		t.Fatalf("partial: %s", r.raw)
	}
	w.publish(d)
	r = w.do(req{method: "POST", path: path, auth: w.alice.auth})
	if dig(r.body, "records", "mx") != true {
		t.Errorf("mx: %s", r.raw)
	}
	g := w.do(req{method: "GET", path: "/api/domains/new.example", auth: w.alice.auth})
	if dig(g.body, "data", "is_verified") != true || dig(g.body, "data", "dkim_verified") != true || dig(g.body, "data", "last_checked_at") == nil {
		t.Errorf("stored outcome: %s", g.raw)
	}
	wantStatus(t, w.do(req{method: "POST", path: "/api/domains/new.example/credentials", auth: w.alice.auth, body: `{"username":"x"}`}), http.StatusCreated)

	// A domain that later fails is not kept verified.
	w.dns.SetTXT("new.example", "v=spf1 -all")
	r = w.do(req{method: "POST", path: path, auth: w.alice.auth})
	if dig(r.body, "records", "spf") != false || dig(r.body, "data", "is_verified") != false {
		t.Errorf("later failure: %s", r.raw)
	}
	if !strings.Contains(strings.Join(stringsOf(dig(r.body, "data", "checks", "spf", "found")), " "), "v=spf1 -all") {
		t.Errorf("found should show the record: %s", r.raw)
	}
	wantFieldError(t, w.do(req{method: "POST", path: "/api/domains/new.example/credentials", auth: w.alice.auth, body: `{"username":"y"}`}), "domain")
}

func stringsOf(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func TestVerifyMandatoryWrongKey(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	d := w.MustCreateDomain(w.alice, `{"domain":"wrongkey.example","dkim_key_length":1024}`)
	other := w.MustCreateDomain(w.alice, `{"domain":"other.example","dkim_key_length":1024}`)
	w.publish(d)
	w.dns.SetTXT("smtpcreds._domainkey.wrongkey.example", other["dns_record"].(string))
	r := w.do(req{method: "POST", path: "/api/domains/wrongkey.example/verify-mandatory", auth: w.alice.auth})
	if dig(r.body, "records", "dkim") != false || dig(r.body, "data", "is_verified") != false {
		t.Errorf("wrong key accepted: %s", r.raw)
	}
}

func TestVerifyMandatoryResolverTimeout(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{dnsTimeout: 300 * time.Millisecond})
	w.MustCreateDomain(w.alice, `{"domain":"slow.example","dkim_key_length":1024}`)
	w.dns.SetDrop(true)
	start := time.Now()
	r := w.do(req{method: "POST", path: "/api/domains/slow.example/verify-mandatory", auth: w.alice.auth})
	wantStatus(t, r, http.StatusOK)
	if time.Since(start) > 5*time.Second {
		t.Errorf("verify took %v with a silent resolver", time.Since(start))
	}
	if dig(r.body, "records", "dkim") != false || !strings.Contains(strings.ToLower(str(r.body, "data", "checks", "dkim", "problem")), "time") {
		t.Errorf("timeout: %s", r.raw)
	}
}

func TestVerifyShowsHostileDNSEscaped(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	w.MustCreateDomain(w.alice, `{"domain":"hostile.example","dkim_key_length":1024}`)
	w.dns.SetTXT("hostile.example", "v=spf1 \x1b[31m<script>alert(1)</script>\x00 -all")
	r := w.do(req{method: "POST", path: "/api/domains/hostile.example/verify-mandatory", auth: w.alice.auth})
	wantStatus(t, r, http.StatusOK)
	if strings.ContainsAny(r.raw, "\x1b\x00") || strings.Contains(r.raw, "<script>") {
		t.Errorf("DNS data not escaped: %q", r.raw)
	}
}

func TestAuthDomain(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	w.MustCreateDomain(w.alice, `{"domain":"brand.example","dkim_key_length":1024}`)
	base := "/api/domains/brand.example/"
	wantFieldError(t, w.do(req{method: "POST", path: base + "verify-auth-domain", auth: w.alice.auth}), "auth_domain")
	wantFieldError(t, w.do(req{method: "DELETE", path: base + "auth-domain", auth: w.alice.auth}), "auth_domain")
	wantFieldError(t, w.do(req{method: "POST", path: base + "setup-auth-domain", auth: w.alice.auth, body: `{"auth_domain":"evil.example"}`}), "auth_domain")
	wantFieldError(t, w.do(req{method: "POST", path: base + "setup-auth-domain", auth: w.alice.auth, body: `{"auth_domain":"notbrand.example"}`}), "auth_domain")
	wantFieldError(t, w.do(req{method: "POST", path: base + "setup-auth-domain", auth: w.alice.auth, body: `{"dkim_key_length":3}`}), "dkim_key_length")

	r := w.do(req{method: "POST", path: base + "setup-auth-domain", auth: w.alice.auth})
	wantStatus(t, r, http.StatusOK)
	if str(r.body, "data", "auth_domain") != "bounce.brand.example" {
		t.Errorf("default auth domain: %s", r.raw)
	}
	r = w.do(req{method: "POST", path: base + "setup-auth-domain", auth: w.alice.auth, body: `{"auth_domain":"RP.brand.example","dkim_key_length":1024}`})
	wantStatus(t, r, http.StatusOK)
	data := r.body["data"].(map[string]any)
	if data["auth_domain"] != "rp.brand.example" || !strings.HasPrefix(data["auth_domain_dkim_record"].(string), "v=DKIM1; k=rsa; p=") {
		t.Errorf("setup: %s", r.raw)
	}
	g := w.do(req{method: "GET", path: "/api/domains/brand.example", auth: w.alice.auth})
	if dig(g.body, "data", "auth_domain_dkim_record") == dig(g.body, "data", "dns_record") {
		t.Error("the auth domain must get its own DKIM key")
	}

	r = w.do(req{method: "POST", path: base + "verify-auth-domain", auth: w.alice.auth})
	wantStatus(t, r, http.StatusOK)
	if dig(r.body, "records", "auth_dkim") != false || dig(r.body, "data", "auth_domain_is_verified") != false {
		t.Errorf("unpublished auth domain passed: %s", r.raw)
	}
	w.publish(data)
	r = w.do(req{method: "POST", path: base + "verify-auth-domain", auth: w.alice.auth})
	for _, k := range []string{"auth_dkim", "auth_spf", "auth_mx"} {
		if dig(r.body, "records", k) != true || dig(r.body, "data", "records", k) != true {
			t.Errorf("%s: %s", k, r.raw)
		}
	}
	if dig(r.body, "data", "auth_domain_is_verified") != true {
		t.Errorf("not verified: %s", r.raw)
	}
	r = w.do(req{method: "DELETE", path: base + "auth-domain", auth: w.alice.auth})
	wantStatus(t, r, http.StatusOK)
	g = w.do(req{method: "GET", path: "/api/domains/brand.example", auth: w.alice.auth})
	if dig(g.body, "data", "auth_domain") != "" || dig(g.body, "data", "auth_domain_is_verified") != false {
		t.Errorf("after delete: %s", g.raw)
	}
}

func TestTracklink(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	base := "/api/domains/example.com/"
	wantFieldError(t, w.do(req{method: "POST", path: base + "verify-tracklink", auth: w.alice.auth}), "tracking_domain")
	wantFieldError(t, w.do(req{method: "DELETE", path: base + "tracklink", auth: w.alice.auth}), "tracking_domain")
	wantFieldError(t, w.do(req{method: "POST", path: base + "setup-tracklink", auth: w.alice.auth, body: `{}`}), "tracking_domain")
	wantFieldError(t, w.do(req{method: "POST", path: base + "setup-tracklink", auth: w.alice.auth, body: `{"tracking_domain":"track.other.example"}`}), "tracking_domain")

	r := w.do(req{method: "POST", path: base + "setup-tracklink", auth: w.alice.auth, body: `{"tracking_domain":"Links.Example.com"}`})
	wantStatus(t, r, http.StatusOK)
	if str(r.body, "data", "tracking_domain") != "links.example.com" || str(r.body, "data", "cname_target") != "track.relay.test" {
		t.Errorf("setup: %s", r.raw)
	}
	r = w.do(req{method: "POST", path: base + "verify-tracklink", auth: w.alice.auth})
	if dig(r.body, "records", "cname") != false || str(r.body, "records", "tracking_domain") != "links.example.com" {
		t.Errorf("unpublished: %s", r.raw)
	}
	w.dns.SetCNAME("links.example.com", "elsewhere.example")
	r = w.do(req{method: "POST", path: base + "verify-tracklink", auth: w.alice.auth})
	if dig(r.body, "records", "cname") != false || str(r.body, "data", "checks", "cname", "problem") == "" {
		t.Errorf("wrong target: %s", r.raw)
	}
	w.dns.SetCNAME("links.example.com", "track.relay.test.")
	r = w.do(req{method: "POST", path: base + "verify-tracklink", auth: w.alice.auth})
	if dig(r.body, "records", "cname") != true || dig(r.body, "data", "tracklink_domain_is_verified") != true {
		t.Errorf("published: %s", r.raw)
	}
	g := w.do(req{method: "GET", path: "/api/domains/example.com", auth: w.alice.auth})
	if dig(g.body, "data", "tracklink_domain") != "links.example.com" || dig(g.body, "data", "tracklink_domain_is_verified") != true {
		t.Errorf("get: %s", g.raw)
	}
	wantStatus(t, w.do(req{method: "DELETE", path: base + "tracklink", auth: w.alice.auth}), http.StatusOK)
	g = w.do(req{method: "GET", path: "/api/domains/example.com", auth: w.alice.auth})
	if dig(g.body, "data", "tracklink_domain") != "" {
		t.Errorf("after delete: %s", g.raw)
	}
}

// Every verify route answers 200 with false flags and a timeout explanation
// when the resolver drops queries, within a bounded time.
func TestEveryVerifyRouteResolverTimeout(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{dnsTimeout: 300 * time.Millisecond})
	base := "/api/domains/example.com/"
	wantStatus(t, w.do(req{method: "POST", path: base + "setup-auth-domain", auth: w.alice.auth, body: `{"dkim_key_length":1024}`}), http.StatusOK)
	wantStatus(t, w.do(req{method: "POST", path: base + "setup-tracklink", auth: w.alice.auth, body: `{"tracking_domain":"t.example.com"}`}), http.StatusOK)
	w.dns.SetDrop(true)
	for route, check := range map[string]string{"verify-mandatory": "dkim", "verify-auth-domain": "auth_dkim", "verify-tracklink": "cname"} {
		start := time.Now()
		r := w.do(req{method: "POST", path: base + route, auth: w.alice.auth})
		wantStatus(t, r, http.StatusOK)
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("%s took %v with a silent resolver", route, took)
		}
		if dig(r.body, "records", check) != false || !strings.Contains(strings.ToLower(str(r.body, "data", "checks", check, "problem")), "time") {
			t.Errorf("%s: %s", route, r.raw)
		}
	}
}

// The auth domain's DKIM check fails on another key and on the main
// domain's key, which the auth domain must not reuse.
func TestVerifyAuthDomainWrongKey(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	d := w.MustCreateDomain(w.alice, `{"domain":"keys.example","dkim_key_length":1024}`)
	r := w.do(req{method: "POST", path: "/api/domains/keys.example/setup-auth-domain", auth: w.alice.auth, body: `{"dkim_key_length":1024}`})
	wantStatus(t, r, http.StatusOK)
	w.publish(r.body["data"].(map[string]any))
	w.dns.SetTXT("smtpcreds._domainkey.bounce.keys.example", d["dns_record"].(string))
	r = w.do(req{method: "POST", path: "/api/domains/keys.example/verify-auth-domain", auth: w.alice.auth})
	if dig(r.body, "records", "auth_dkim") != false || dig(r.body, "records", "auth_spf") != true ||
		dig(r.body, "data", "auth_domain_is_verified") != false || str(r.body, "data", "checks", "auth_dkim", "problem") == "" {
		t.Errorf("auth DKIM with the main domain's key: %s", r.raw)
	}
}
