package dnscheck

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/smtpcreds/smtpcreds/internal/dnstest"
)

// testKey is a base64 string the size of a 2048-bit RSA public key (392
// characters), so its DKIM record needs more than one character-string.
var testKey = func() string {
	b := make([]byte, 294)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return base64.StdEncoding.EncodeToString(b)
}()

const (
	dkimName = "sel1._domainkey.example.com"
	domain   = "example.com"
	include  = "spf.smtpcreds.test"
	mxHost   = "mx.smtpcreds.test"
)

func setup(t *testing.T, timeout time.Duration) (*dnstest.Server, *Checker) {
	t.Helper()
	s := dnstest.Start(t)
	c, err := New(Config{Resolver: s.Addr(), Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

func wantOK(t *testing.T, r Result) {
	t.Helper()
	checkInvariants(t, r)
	if !r.OK || r.Problem != "" {
		t.Fatalf("want OK, got %+v", r)
	}
}

func wantFail(t *testing.T, r Result, problemContains ...string) {
	t.Helper()
	checkInvariants(t, r)
	if r.OK || r.Problem == "" {
		t.Fatalf("want failure, got %+v", r)
	}
	for _, s := range problemContains {
		if !strings.Contains(r.Problem, s) {
			t.Fatalf("Problem %q does not contain %q", r.Problem, s)
		}
	}
}

// checkInvariants checks what holds for every Result: Found is not nil, has
// at most MaxFound entries of bounded size, and nothing returned contains a
// byte outside printable ASCII (except the "…" marking a cut).
func checkInvariants(t *testing.T, r Result) {
	t.Helper()
	if r.Found == nil {
		t.Fatalf("Found is nil: %+v", r)
	}
	if len(r.Found) > MaxFound {
		t.Fatalf("%d Found entries", len(r.Found))
	}
	for _, f := range r.Found {
		if len(f) > MaxEntryBytes+len("…") {
			t.Fatalf("Found entry of %d bytes", len(f))
		}
		assertClean(t, f)
	}
	for _, s := range []string{r.Name, r.Type, r.Expected, r.Problem} {
		assertClean(t, s)
	}
	if _, err := json.Marshal(r); err != nil {
		t.Fatal(err)
	}
}

func assertClean(t *testing.T, s string) {
	t.Helper()
	s = strings.ReplaceAll(s, "…", "")
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			t.Fatalf("byte %#x at %d in %q", s[i], i, s)
		}
	}
}

func dkimRecord(key string) string { return "v=DKIM1; k=rsa; p=" + key }

func TestDKIM(t *testing.T) {
	ctx := context.Background()
	s, c := setup(t, 0)
	otherKey := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("other key ", 29)))

	t.Run("pass split over several strings", func(t *testing.T) {
		s.SetTXT(dkimName, dkimRecord(testKey)) // 411 bytes: two character-strings
		r := c.DKIM(ctx, dkimName, testKey)
		wantOK(t, r)
		if r.Name != dkimName || r.Type != "TXT" || len(r.Found) != 1 || r.Found[0] != dkimRecord(testKey) {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("pass with minimal tags, whitespace in p and trailing dot", func(t *testing.T) {
		s.SetTXT(dkimName, "p="+testKey[:100]+" \t "+testKey[100:]+";")
		wantOK(t, c.DKIM(ctx, dkimName+".", testKey))
	})
	t.Run("pass case-insensitive name and k", func(t *testing.T) {
		s.SetTXT(dkimName, "v=DKIM1; k=RSA; t=y; p="+testKey)
		wantOK(t, c.DKIM(ctx, strings.ToUpper(dkimName), testKey))
	})
	t.Run("pass when one of several records matches", func(t *testing.T) {
		s.SetTXT(dkimName, "unrelated", dkimRecord(otherKey), dkimRecord(testKey))
		wantOK(t, c.DKIM(ctx, dkimName, testKey))
	})
	t.Run("pass through a CNAME", func(t *testing.T) {
		s.SetCNAME("sel2._domainkey.example.com", "sel2.keys.smtpcreds.test")
		s.SetTXT("sel2.keys.smtpcreds.test", dkimRecord(testKey))
		wantOK(t, c.DKIM(ctx, "sel2._domainkey.example.com", testKey))
	})
	t.Run("NXDOMAIN", func(t *testing.T) {
		s.Remove(dkimName)
		r := c.DKIM(ctx, dkimName, testKey)
		wantFail(t, r, "no TXT record at "+dkimName)
		if len(r.Found) != 0 {
			t.Fatalf("Found = %q", r.Found)
		}
	})
	t.Run("NODATA", func(t *testing.T) {
		s.Remove(dkimName)
		s.SetMX(dkimName, "mx.example.com")
		wantFail(t, c.DKIM(ctx, dkimName, testKey), "no TXT record at "+dkimName)
		s.Remove(dkimName)
	})
	t.Run("wrong key", func(t *testing.T) {
		s.SetTXT(dkimName, dkimRecord(otherKey))
		r := c.DKIM(ctx, dkimName, testKey)
		wantFail(t, r, "the DKIM key at "+dkimName+" does not match")
		if len(r.Found) != 1 || r.Found[0] != dkimRecord(otherKey) {
			t.Fatalf("Found = %q", r.Found)
		}
	})
	t.Run("truncated key", func(t *testing.T) {
		s.SetTXT(dkimName, dkimRecord(testKey[:255-len("v=DKIM1; k=rsa; p=")]))
		wantFail(t, c.DKIM(ctx, dkimName, testKey), "does not match", "from character 238")
	})
	t.Run("k=ed25519", func(t *testing.T) {
		s.SetTXT(dkimName, "v=DKIM1; k=ed25519; p="+testKey)
		wantFail(t, c.DKIM(ctx, dkimName, testKey), "k=ed25519")
	})
	t.Run("wrong version", func(t *testing.T) {
		s.SetTXT(dkimName, "v=DKIM2; p="+testKey)
		wantFail(t, c.DKIM(ctx, dkimName, testKey), "v=DKIM2")
	})
	t.Run("version not first", func(t *testing.T) {
		s.SetTXT(dkimName, "k=rsa; v=DKIM1; p="+testKey)
		wantFail(t, c.DKIM(ctx, dkimName, testKey), "first tag")
	})
	t.Run("revoked", func(t *testing.T) {
		s.SetTXT(dkimName, "v=DKIM1; p=")
		wantFail(t, c.DKIM(ctx, dkimName, testKey), "revoked")
	})
	t.Run("not a tag list", func(t *testing.T) {
		s.SetTXT(dkimName, "google-site-verification "+testKey)
		wantFail(t, c.DKIM(ctx, dkimName, testKey), "not a DKIM key record")
	})
	t.Run("duplicate tag", func(t *testing.T) {
		s.SetTXT(dkimName, "p="+testKey+"; p="+testKey)
		wantFail(t, c.DKIM(ctx, dkimName, testKey), "appears twice")
	})
	t.Run("several records none matching picks closest", func(t *testing.T) {
		s.SetTXT(dkimName, "hello", "v=DKIM1; k=ed25519; p="+testKey, "v=DKIM1; p=abc")
		wantFail(t, c.DKIM(ctx, dkimName, testKey), "3 TXT records", "does not match")
	})
	t.Run("empty key", func(t *testing.T) {
		wantFail(t, c.DKIM(ctx, dkimName, " "), "no DKIM public key")
	})
	t.Run("invalid name", func(t *testing.T) {
		wantFail(t, c.DKIM(ctx, "bad name\n.example.com", testKey), "not a valid DNS name", `\x0a`)
	})
}

func TestSPF(t *testing.T) {
	ctx := context.Background()
	s, c := setup(t, 0)

	pass := []struct{ name, record, include, mx string }{
		{"include", "v=spf1 include:spf.smtpcreds.test ~all", include, ""},
		{"plus include, mixed case", "V=SPF1 +INCLUDE:Spf.SmtpCreds.Test -all", include, ""},
		{"include with trailing dot", "v=spf1 include:spf.smtpcreds.test. -all", include + ".", ""},
		{"mx", "v=spf1 mx:mx.smtpcreds.test -all", "", mxHost},
		{"a with cidr", "v=spf1 ip4:192.0.2.1 a:mx.smtpcreds.test/32 ~all", "", mxHost},
		{"either include or mx", "v=spf1 mx:mx.smtpcreds.test ~all", include, mxHost},
		{"no redirect or all at all", "v=spf1 include:spf.smtpcreds.test", include, ""},
		{"nothing asked, just a sane record", "v=spf1 -all", "", ""},
		{"bare v=spf1 when nothing asked", "v=spf1", "", ""},
	}
	for _, tc := range pass {
		t.Run("pass "+tc.name, func(t *testing.T) {
			s.SetTXT(domain, "google-site-verification=abc", tc.record)
			r := c.SPF(ctx, domain, tc.include, tc.mx)
			wantOK(t, r)
			if len(r.Found) != 1 || r.Found[0] != tc.record {
				t.Fatalf("Found = %q", r.Found)
			}
		})
	}

	fail := []struct {
		name    string
		records []string
		include string
		mx      string
		problem []string
	}{
		{"without our include", []string{"v=spf1 include:_spf.google.com ~all"}, include, "",
			[]string{"does not contain include:spf.smtpcreds.test"}},
		{"without our mx", []string{"v=spf1 mx -all"}, "", mxHost,
			[]string{"does not contain mx:mx.smtpcreds.test or a:mx.smtpcreds.test"}},
		{"substring is not a match", []string{"v=spf1 include:spf.smtpcreds.test.evil.example ~all"}, include, "",
			[]string{"does not contain"}},
		{"negative qualifier", []string{"v=spf1 -include:spf.smtpcreds.test ~all"}, include, "",
			[]string{`qualifier "-"`}},
		{"include after all", []string{"v=spf1 -all include:spf.smtpcreds.test"}, include, "",
			[]string{`after its "all" term`}},
		{"two records", []string{"v=spf1 include:spf.smtpcreds.test ~all", "v=spf1 mx -all"}, include, "",
			[]string{"2 SPF records found; RFC 7208 allows one"}},
		{"+all", []string{"v=spf1 include:spf.smtpcreds.test +all"}, include, "",
			[]string{`ends in "+all"`, "every server"}},
		{"bare all is +all", []string{"v=spf1 include:spf.smtpcreds.test all"}, include, "",
			[]string{`ends in "all"`, "every server"}},
		{"+all in the middle", []string{"v=spf1 +all include:spf.smtpcreds.test"}, include, "",
			[]string{`contains "+all"`}},
		{"+all even when nothing asked", []string{"v=spf1 +ALL"}, "", "",
			[]string{"every server"}},
		{"no SPF among TXT", []string{"v=spf10 include:spf.smtpcreds.test", "spf1 include:spf.smtpcreds.test"}, include, "",
			[]string{"no SPF record at example.com", "2 TXT record(s)"}},
		{"v=spf1 not followed by space", []string{"v=spf1include:spf.smtpcreds.test"}, include, "",
			[]string{"no SPF record"}},
	}
	for _, tc := range fail {
		t.Run("fail "+tc.name, func(t *testing.T) {
			s.SetTXT(domain, tc.records...)
			r := c.SPF(ctx, domain, tc.include, tc.mx)
			wantFail(t, r, tc.problem...)
			if len(r.Found) == 0 {
				t.Fatalf("Found is empty")
			}
		})
	}

	t.Run("NXDOMAIN", func(t *testing.T) {
		s.Remove(domain)
		wantFail(t, c.SPF(ctx, domain, include, ""), "no SPF record at example.com", "no TXT record")
	})
	t.Run("NODATA", func(t *testing.T) {
		s.Remove(domain)
		s.SetMX(domain, "mx.example.com")
		wantFail(t, c.SPF(ctx, domain, include, ""), "no SPF record at example.com", "no TXT record")
	})
}

func TestMX(t *testing.T) {
	ctx := context.Background()
	s, c := setup(t, 0)

	t.Run("pass", func(t *testing.T) {
		s.SetMX(domain, "mx1.example.net", "MX.SmtpCreds.Test.")
		r := c.MX(ctx, domain, mxHost+".")
		wantOK(t, r)
		if r.Type != "MX" || len(r.Found) != 2 || r.Found[0] != "10 mx1.example.net." || r.Found[1] != "20 mx.smtpcreds.test." {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("other host", func(t *testing.T) {
		s.SetMX(domain, "mx1.example.net", "mx.smtpcreds.test.evil.example")
		wantFail(t, c.MX(ctx, domain, mxHost), "none of the 2 MX record(s) of example.com points to mx.smtpcreds.test")
	})
	t.Run("single other host", func(t *testing.T) {
		s.SetMX(domain, "mx.other.example")
		wantFail(t, c.MX(ctx, domain, mxHost), "the MX record of example.com points to mx.other.example, not mx.smtpcreds.test")
	})
	t.Run("null MX", func(t *testing.T) {
		s.SetMX(domain, ".")
		wantFail(t, c.MX(ctx, domain, mxHost), "null MX")
	})
	t.Run("NXDOMAIN", func(t *testing.T) {
		s.Remove(domain)
		wantFail(t, c.MX(ctx, domain, mxHost), "no MX record at example.com")
	})
	t.Run("NODATA", func(t *testing.T) {
		s.Remove(domain)
		s.SetTXT(domain, "v=spf1 -all")
		wantFail(t, c.MX(ctx, domain, mxHost), "no MX record at example.com")
	})
	t.Run("many MX", func(t *testing.T) {
		hosts := make([]string, 30)
		for i := range hosts {
			hosts[i] = "mx" + strings.Repeat("x", i) + ".example.net"
		}
		s.SetMX(domain, hosts...)
		r := c.MX(ctx, domain, mxHost)
		wantFail(t, r, "none of the 30", "first 10")
		if len(r.Found) != MaxFound {
			t.Fatalf("%d Found", len(r.Found))
		}
	})
	t.Run("invalid host argument", func(t *testing.T) {
		wantFail(t, c.MX(ctx, domain, "mx..example.com"), "mail host", "not a valid DNS name")
	})
}

func TestCNAME(t *testing.T) {
	ctx := context.Background()
	s, c := setup(t, 0)
	const name, target = "bounce.example.com", "bounce.smtpcreds.test"

	t.Run("pass", func(t *testing.T) {
		s.SetCNAME(name, "Bounce.SmtpCreds.Test.")
		r := c.CNAME(ctx, strings.ToUpper(name)+".", target)
		wantOK(t, r)
		if r.Type != "CNAME" || len(r.Found) != 1 || r.Found[0] != "bounce.smtpcreds.test." {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("pass when target resolves", func(t *testing.T) {
		s.SetCNAME(name, target)
		s.SetA(target, "192.0.2.10")
		wantOK(t, c.CNAME(ctx, name, target+"."))
		s.Remove(target)
	})
	t.Run("chains give a stable verdict", func(t *testing.T) {
		// LookupCNAME returns the first alias or the final name at
		// random; the verdict must not depend on which.
		s.SetCNAME(name, target)
		s.SetCNAME(target, "final.example.org")
		s.SetA("final.example.org", "192.0.2.11")
		s.SetCNAME("other.example.com", "elsewhere.example.net")
		s.SetA("elsewhere.example.net", "192.0.2.12")
		for range 20 {
			wantOK(t, c.CNAME(ctx, name, target))              // first hop
			wantOK(t, c.CNAME(ctx, name, "final.example.org")) // canonical name
			wantOK(t, c.CNAME(ctx, "other.example.com", "elsewhere.example.net"))
			wantFail(t, c.CNAME(ctx, name, "elsewhere.example.net"), "bounce.example.com is a CNAME for ", "not elsewhere.example.net")
			wantFail(t, c.CNAME(ctx, "other.example.com", target), "other.example.com is a CNAME for ", "not bounce.smtpcreds.test")
		}
		s.Remove(target)
		s.Remove("final.example.org")
	})
	t.Run("alias of the target passes", func(t *testing.T) {
		// name -> alias.smtpcreds.test -> bounce.smtpcreds.test
		s.SetCNAME(name, "alias.smtpcreds.test")
		s.SetCNAME("alias.smtpcreds.test", target)
		s.SetA(target, "192.0.2.13")
		for range 10 {
			wantOK(t, c.CNAME(ctx, name, target))
		}
		s.Remove(target)
		s.Remove("alias.smtpcreds.test")
	})
	t.Run("CNAME loop terminates", func(t *testing.T) {
		s.SetCNAME(name, "loop1.example.net")
		s.SetCNAME("loop1.example.net", "loop2.example.net")
		s.SetCNAME("loop2.example.net", "loop1.example.net")
		wantFail(t, c.CNAME(ctx, name, target), "is a CNAME for loop")
		s.Remove("loop1.example.net")
		s.Remove("loop2.example.net")
	})
	t.Run("other target", func(t *testing.T) {
		s.SetCNAME(name, "bounce.other-provider.example")
		r := c.CNAME(ctx, name, target)
		wantFail(t, r, "bounce.example.com is a CNAME for bounce.other-provider.example, not bounce.smtpcreds.test")
		if len(r.Found) != 1 || r.Found[0] != "bounce.other-provider.example." {
			t.Fatalf("Found = %q", r.Found)
		}
	})
	t.Run("NXDOMAIN", func(t *testing.T) {
		s.Remove(name)
		wantFail(t, c.CNAME(ctx, name, target), "no CNAME record at bounce.example.com")
	})
	t.Run("NODATA", func(t *testing.T) {
		s.Remove(name)
		s.SetTXT(name, "hello")
		wantFail(t, c.CNAME(ctx, name, target), "no CNAME record at bounce.example.com")
	})
	t.Run("address instead of CNAME", func(t *testing.T) {
		// net.Resolver.LookupCNAME returns the name itself here.
		s.Remove(name)
		s.SetA(name, "192.0.2.1")
		r := c.CNAME(ctx, name, target)
		wantFail(t, r, "no CNAME record at bounce.example.com", "other records")
		if len(r.Found) != 0 {
			t.Fatalf("Found = %q", r.Found)
		}
	})
}

// allChecks runs every check once against names the server may know.
func allChecks(ctx context.Context, c *Checker) map[string]Result {
	return map[string]Result{
		"DKIM":  c.DKIM(ctx, dkimName, testKey),
		"SPF":   c.SPF(ctx, domain, include, ""),
		"MX":    c.MX(ctx, domain, mxHost),
		"CNAME": c.CNAME(ctx, "bounce.example.com", "bounce.smtpcreds.test"),
	}
}

func TestTimeout(t *testing.T) {
	s, c := setup(t, 300*time.Millisecond)
	s.SetTXT(dkimName, dkimRecord(testKey))
	s.SetDrop(true)
	for name, check := range map[string]func() Result{
		"DKIM":  func() Result { return c.DKIM(context.Background(), dkimName, testKey) },
		"SPF":   func() Result { return c.SPF(context.Background(), domain, include, "") },
		"MX":    func() Result { return c.MX(context.Background(), domain, mxHost) },
		"CNAME": func() Result { return c.CNAME(context.Background(), "bounce.example.com", "bounce.smtpcreds.test") },
	} {
		t.Run(name, func(t *testing.T) {
			before := s.Queries()
			start := time.Now()
			r := check()
			elapsed := time.Since(start)
			if elapsed > 2*time.Second {
				t.Fatalf("took %v", elapsed)
			}
			if elapsed < 250*time.Millisecond {
				t.Fatalf("returned after %v, before the timeout", elapsed)
			}
			wantFail(t, r, "DNS lookup timed out after 300ms (resolver "+s.Addr()+")")
			if s.Queries() == before {
				t.Fatalf("no query reached the test server")
			}
		})
	}
}

func TestCallerDeadlineShorterThanTimeout(t *testing.T) {
	s, c := setup(t, 5*time.Second)
	s.SetDrop(true)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	r := c.MX(ctx, domain, mxHost)
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Fatalf("took %v", elapsed)
	}
	wantFail(t, r, "timed out", "deadline passed")
}

func TestCanceled(t *testing.T) {
	s, c := setup(t, 5*time.Second)
	s.SetDrop(true)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	r := c.DKIM(ctx, dkimName, testKey)
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Fatalf("took %v", elapsed)
	}
	wantFail(t, r, "canceled")
}

func TestServfail(t *testing.T) {
	s, c := setup(t, 0)
	s.SetTXT(dkimName, dkimRecord(testKey))
	s.SetServfail(true)
	for name, r := range allChecks(context.Background(), c) {
		t.Run(name, func(t *testing.T) {
			wantFail(t, r, "SERVFAIL", "resolver "+s.Addr())
		})
	}
}

func TestUnreachableResolver(t *testing.T) {
	// Find a port nothing listens on: bind, note the port, close.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()

	c, err := New(Config{Resolver: addr, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for name, check := range map[string]func() Result{
		"DKIM":  func() Result { return c.DKIM(context.Background(), dkimName, testKey) },
		"SPF":   func() Result { return c.SPF(context.Background(), domain, include, "") },
		"MX":    func() Result { return c.MX(context.Background(), domain, mxHost) },
		"CNAME": func() Result { return c.CNAME(context.Background(), "bounce.example.com", "bounce.smtpcreds.test") },
	} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			r := check()
			if elapsed := time.Since(start); elapsed > time.Second {
				t.Fatalf("took %v; want a fast failure", elapsed)
			}
			wantFail(t, r, "could not reach the DNS resolver "+addr, "connection refused")
		})
	}
}

func TestHostileTXT(t *testing.T) {
	ctx := context.Background()
	s, c := setup(t, 0)

	t.Run("control characters", func(t *testing.T) {
		evil := "v=spf1 \x1b[31mred\x1b[0m\r\n<script>&\x00\x7f\xff\\x41 é include:spf.smtpcreds.test +all"
		s.SetTXT(domain, evil)
		r := c.SPF(ctx, domain, include, "")
		wantFail(t, r, "+all")
		want := `v=spf1 \x1b[31mred\x1b[0m\x0d\x0a<script>&\x00\x7f\xff\\x41 \xc3\xa9 include:spf.smtpcreds.test +all`
		if len(r.Found) != 1 || r.Found[0] != want {
			t.Fatalf("Found = %q\nwant    %q", r.Found, want)
		}
	})
	t.Run("control characters in DKIM tags", func(t *testing.T) {
		s.SetTXT(dkimName, "v=DKIM1; k=\x07\x1b]0\x07pwned; p="+testKey)
		r := c.DKIM(ctx, dkimName, testKey)
		wantFail(t, r, `k=\x07\x1b]0\x07pwned`)
	})
	t.Run("10k-byte record", func(t *testing.T) {
		big := "v=DKIM1; p=" + strings.Repeat("\x01A", 5000)
		s.SetTXT(dkimName, big)
		r := c.DKIM(ctx, dkimName, testKey)
		wantFail(t, r, "does not match")
		if len(r.Found) != 1 || !strings.HasSuffix(r.Found[0], "…") || len(r.Found[0]) > MaxEntryBytes+len("…") {
			t.Fatalf("Found[0] has %d bytes: %.80q", len(r.Found[0]), r.Found[0])
		}
		if !strings.HasPrefix(r.Found[0], `v=DKIM1; p=\x01A\x01A`) {
			t.Fatalf("Found[0] = %.80q", r.Found[0])
		}
	})
	t.Run("50 records", func(t *testing.T) {
		recs := make([]string, 50)
		for i := range recs {
			recs[i] = "record " + strings.Repeat("\x00", i) + strings.Repeat("z", 100)
		}
		s.SetTXT(dkimName, recs...)
		r := c.DKIM(ctx, dkimName, testKey)
		wantFail(t, r, "50 TXT records", "first 10 are shown")
		if len(r.Found) != MaxFound {
			t.Fatalf("%d Found entries", len(r.Found))
		}

		s.SetTXT(domain, recs...)
		wantFail(t, c.SPF(ctx, domain, include, ""), "none of its 50 TXT record(s)")
	})
	t.Run("50 SPF records", func(t *testing.T) {
		recs := make([]string, 50)
		for i := range recs {
			recs[i] = "v=spf1 include:spf.smtpcreds.test ~all " + strings.Repeat("\x7f", i)
		}
		s.SetTXT(domain, recs...)
		r := c.SPF(ctx, domain, include, "")
		wantFail(t, r, "50 SPF records found")
		if len(r.Found) != MaxFound {
			t.Fatalf("%d Found entries", len(r.Found))
		}
	})
}

func TestSanitize(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"plain <b>&</b>", "plain <b>&</b>"},
		{"tab\there", `tab\x09here`},
		{"\x00\x1f\x7f\x80\xff", `\x00\x1f\x7f\x80\xff`},
		{`a\b`, `a\\b`},
		{"日", `\xe6\x97\xa5`},
	} {
		if got := sanitize(tc.in, MaxEntryBytes); got != tc.want {
			t.Errorf("sanitize(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// Cutting never splits an escape and respects the limit.
	got := sanitize(strings.Repeat("a", 509)+"\x01\x02", MaxEntryBytes)
	if got != strings.Repeat("a", 509)+"…" {
		t.Errorf("cut = %q", got)
	}
	if got := sanitize(strings.Repeat("a", 512), MaxEntryBytes); got != strings.Repeat("a", 512) {
		t.Errorf("exactly the limit should not be cut")
	}
	if !utf8.ValidString(sanitize(strings.Repeat("\xff", 1000), MaxEntryBytes)) {
		t.Errorf("sanitized output is not valid UTF-8")
	}
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		resolver string
		label    string // "" = invalid
	}{
		{"", "system resolver"},
		{"127.0.0.1:5353", "resolver 127.0.0.1:5353"},
		{"127.0.0.1", "resolver 127.0.0.1:53"},
		{"::1", "resolver [::1]:53"},
		{"[::1]", "resolver [::1]:53"},
		{"[::1]:5300", "resolver [::1]:5300"},
		{"localhost:53", ""},
		{"dns.example.com", ""},
		{"127.0.0.1:0", ""},
		{"127.0.0.1:70000", ""},
		{"127.0.0.1:domain", ""},
		{"127.0.0.1:", ""},
		{":53", ""},
	} {
		c, err := New(Config{Resolver: tc.resolver})
		switch {
		case tc.label == "" && err == nil:
			t.Errorf("New(%q) accepted", tc.resolver)
		case tc.label != "" && err != nil:
			t.Errorf("New(%q): %v", tc.resolver, err)
		case tc.label != "" && c.label != tc.label:
			t.Errorf("New(%q) label = %q, want %q", tc.resolver, c.label, tc.label)
		case tc.label != "" && c.timeout != DefaultTimeout:
			t.Errorf("New(%q) timeout = %v", tc.resolver, c.timeout)
		}
	}
	if _, err := New(Config{Timeout: -time.Second}); err == nil {
		t.Errorf("negative timeout accepted")
	}
}

func TestResultJSON(t *testing.T) {
	_, c := setup(t, 0)
	r := c.MX(context.Background(), "nothing.example.com", mxHost)
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"ok":false,"name":"nothing.example.com","type":"MX","expected":"an MX record pointing to mx.smtpcreds.test","found":[],"problem":"no MX record at nothing.example.com"}`
	if string(b) != want {
		t.Fatalf("JSON:\n%s\nwant\n%s", b, want)
	}
}
