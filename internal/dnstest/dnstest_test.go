package dnstest

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func exchange(t *testing.T, s *Server, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(4096, false)
	r, _, err := c.Exchange(m, s.Addr())
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return r
}

func TestAddr(t *testing.T) {
	s := Start(t)
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") {
		t.Fatalf("Addr() = %q", s.Addr())
	}
}

func TestTXTBothTransports(t *testing.T) {
	s := Start(t)
	long := strings.Repeat("A", 600)
	s.SetTXT("Sel._DomainKey.Example.COM.", "v=DKIM1; p="+long, `back\slash`)
	for _, network := range []string{"udp", "tcp"} {
		r := exchange(t, s, network, "sel._domainkey.example.com", dns.TypeTXT)
		if r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer) != 2 {
			t.Fatalf("%s: rcode %d aa %v answer %v", network, r.Rcode, r.Authoritative, r.Answer)
		}
		txt := r.Answer[0].(*dns.TXT)
		if len(txt.Txt) != 3 {
			t.Fatalf("%s: want 3 character-strings, got %d", network, len(txt.Txt))
		}
		for _, part := range txt.Txt {
			if len(part) > 255 {
				t.Fatalf("%s: character-string of %d bytes", network, len(part))
			}
		}
		if got := strings.Join(txt.Txt, ""); got != "v=DKIM1; p="+long {
			t.Fatalf("%s: joined = %q", network, got)
		}
		// miekg/dns presents a backslash as `\\`.
		if got := r.Answer[1].(*dns.TXT).Txt[0]; got != `back\\slash` {
			t.Fatalf("%s: backslash record = %q", network, got)
		}
	}
}

func TestNXDOMAINAndNODATA(t *testing.T) {
	s := Start(t)
	s.SetTXT("example.com", "hello")
	s.SetTXT("a.b.example.org", "deep")

	if r := exchange(t, s, "udp", "missing.example.com", dns.TypeTXT); r.Rcode != dns.RcodeNameError {
		t.Fatalf("unknown name: rcode %s", dns.RcodeToString[r.Rcode])
	}
	r := exchange(t, s, "udp", "example.com", dns.TypeMX)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || !r.Authoritative {
		t.Fatalf("NODATA: rcode %s answer %v aa %v", dns.RcodeToString[r.Rcode], r.Answer, r.Authoritative)
	}
	if r := exchange(t, s, "udp", "b.example.org", dns.TypeTXT); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Fatalf("empty non-terminal: rcode %s answer %v", dns.RcodeToString[r.Rcode], r.Answer)
	}

	s.Remove("EXAMPLE.com.")
	if r := exchange(t, s, "udp", "example.com", dns.TypeTXT); r.Rcode != dns.RcodeNameError {
		t.Fatalf("after Remove: rcode %s", dns.RcodeToString[r.Rcode])
	}
	s.SetTXT("example.org")
	if r := exchange(t, s, "udp", "example.org", dns.TypeTXT); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Fatalf("SetTXT with no values: rcode %s answer %v", dns.RcodeToString[r.Rcode], r.Answer)
	}
}

func TestMX(t *testing.T) {
	s := Start(t)
	s.SetMX("example.com", "mx1.example.net", "MX2.example.net.")
	r := exchange(t, s, "udp", "example.com", dns.TypeMX)
	if len(r.Answer) != 2 {
		t.Fatalf("answer %v", r.Answer)
	}
	for i, want := range []struct {
		pref uint16
		host string
	}{{10, "mx1.example.net."}, {20, "mx2.example.net."}} {
		mx := r.Answer[i].(*dns.MX)
		if mx.Preference != want.pref || mx.Mx != want.host {
			t.Fatalf("MX %d = %d %s", i, mx.Preference, mx.Mx)
		}
	}
}

func TestCNAME(t *testing.T) {
	s := Start(t)
	s.SetCNAME("bounce.example.com", "Target.Example.NET")
	s.SetTXT("target.example.net", "at target")
	s.SetTXT("bounce.example.com", "hidden by the CNAME")

	r := exchange(t, s, "udp", "bounce.example.com", dns.TypeCNAME)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.CNAME).Target != "target.example.net." {
		t.Fatalf("CNAME query: %v", r.Answer)
	}
	r = exchange(t, s, "udp", "bounce.example.com", dns.TypeTXT)
	if len(r.Answer) != 2 {
		t.Fatalf("TXT via CNAME: %v", r.Answer)
	}
	if _, ok := r.Answer[0].(*dns.CNAME); !ok {
		t.Fatalf("first RR should be the CNAME: %v", r.Answer[0])
	}
	if txt := r.Answer[1].(*dns.TXT); txt.Txt[0] != "at target" || txt.Hdr.Name != "target.example.net." {
		t.Fatalf("second RR: %v", txt)
	}

	// Target unknown: NOERROR with just the CNAME.
	s.SetCNAME("dangling.example.com", "elsewhere.example.org")
	r = exchange(t, s, "udp", "dangling.example.com", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("dangling: rcode %s answer %v", dns.RcodeToString[r.Rcode], r.Answer)
	}

	// A loop terminates.
	s.SetCNAME("loop1.example.com", "loop2.example.com")
	s.SetCNAME("loop2.example.com", "loop1.example.com")
	r = exchange(t, s, "udp", "loop1.example.com", dns.TypeTXT)
	if len(r.Answer) == 0 || len(r.Answer) > maxCNAMEChain+1 {
		t.Fatalf("loop: %d RRs", len(r.Answer))
	}
}

func TestTruncationFallsBackToTCP(t *testing.T) {
	s := Start(t)
	s.SetTXT("big.example.com", strings.Repeat("x", 3000))

	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion("big.example.com.", dns.TypeTXT)
	r, _, err := c.Exchange(m, s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if !r.Truncated {
		t.Fatalf("a 3000-byte answer over plain UDP should be truncated")
	}
	r = exchange(t, s, "tcp", "big.example.com", dns.TypeTXT)
	if r.Truncated || len(r.Answer) != 1 || len(strings.Join(r.Answer[0].(*dns.TXT).Txt, "")) != 3000 {
		t.Fatalf("TCP answer: truncated %v, %d RRs", r.Truncated, len(r.Answer))
	}
}

func TestServfailAndDrop(t *testing.T) {
	s := Start(t)
	s.SetTXT("example.com", "x")

	s.SetServfail(true)
	if r := exchange(t, s, "udp", "example.com", dns.TypeTXT); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("rcode %s", dns.RcodeToString[r.Rcode])
	}
	s.SetServfail(false)

	s.SetDrop(true)
	before := s.Queries()
	for _, network := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: network, Timeout: 200 * time.Millisecond}
		m := new(dns.Msg)
		m.SetQuestion("example.com.", dns.TypeTXT)
		if _, _, err := c.Exchange(m, s.Addr()); err == nil {
			t.Fatalf("%s: dropped query got an answer", network)
		}
	}
	if got := s.Queries() - before; got != 2 {
		t.Fatalf("dropped queries counted: %d, want 2", got)
	}
	s.SetDrop(false)
	if r := exchange(t, s, "udp", "example.com", dns.TypeTXT); len(r.Answer) != 1 {
		t.Fatalf("after SetDrop(false): %v", r.Answer)
	}
}

func TestConcurrentUse(t *testing.T) {
	s := Start(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 20 {
				s.SetTXT("example.com", "v", strings.Repeat("y", i))
				s.SetMX("example.com", "mx.example.com")
				s.Remove("other.example.com")
			}
		}()
		go func() {
			defer wg.Done()
			c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
			for range 20 {
				m := new(dns.Msg)
				m.SetQuestion("example.com.", dns.TypeTXT)
				if _, _, err := c.Exchange(m, s.Addr()); err != nil {
					t.Errorf("exchange: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	if s.Queries() != 160 {
		t.Fatalf("Queries() = %d, want 160", s.Queries())
	}
}
