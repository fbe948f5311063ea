// Package dnstest runs a small in-process authoritative DNS server for tests,
// so that DNS checks and their failure paths run without the network.
//
// It listens on 127.0.0.1 over UDP and TCP (same port), answers from records
// set by the test, and can be told to drop every query or to answer SERVFAIL.
//
// The server is authoritative for every name: unknown names get NXDOMAIN and
// known names without the asked type get an empty NOERROR answer (NODATA),
// with the AA bit set so stub resolvers accept it.
package dnstest

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// ttl is the TTL of every record served.
const ttl = 60

// maxCNAMEChain bounds how many CNAMEs are followed when answering a query,
// so that a loop set up by a test cannot hang the server.
const maxCNAMEChain = 8

// Server is an in-process authoritative DNS server. The zero value is not
// usable; create one with Start. All methods are safe for concurrent use.
type Server struct {
	addr string
	udp  *dns.Server
	tcp  *dns.Server

	mu      sync.RWMutex
	records map[string]map[uint16][]dns.RR // key: lower-case FQDN

	drop     atomic.Bool
	servfail atomic.Bool
	queries  atomic.Int64
}

// Start starts a server on a random free port of 127.0.0.1, serving UDP and
// TCP on the same port. The server is shut down by tb.Cleanup. Start fails
// the test if the server cannot be started.
func Start(tb testing.TB) *Server {
	tb.Helper()

	s := &Server{records: make(map[string]map[uint16][]dns.RR)}

	pc, ln, err := listenPair()
	if err != nil {
		tb.Fatalf("dnstest: listen: %v", err)
	}
	s.addr = pc.LocalAddr().String()

	handler := dns.HandlerFunc(s.serveDNS)
	s.udp = &dns.Server{PacketConn: pc, Handler: handler}
	s.tcp = &dns.Server{Listener: ln, Handler: handler}

	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		errc := make(chan error, 1)
		go func() { errc <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-errc:
			pc.Close()
			ln.Close()
			tb.Fatalf("dnstest: serve: %v", err)
		}
	}

	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.udp.ShutdownContext(ctx)
		_ = s.tcp.ShutdownContext(ctx)
	})
	return s
}

// listenPair opens a UDP socket on a random port of 127.0.0.1 and a TCP
// listener on the same port, retrying when the TCP port is already taken.
func listenPair() (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
	}
	return nil, nil, lastErr
}

// Addr returns the server's address, "127.0.0.1:PORT", for UDP and TCP.
func (s *Server) Addr() string { return s.addr }

// SetTXT replaces the TXT RRset at name with one TXT record per value.
// Values longer than 255 bytes are split into several character-strings of
// the same record, as DKIM keys are published. Values are sent byte for byte
// (no presentation-format escapes are interpreted). With no values, the TXT
// RRset is removed.
func (s *Server) SetTXT(name string, values ...string) {
	owner := fqdn(name)
	rrs := make([]dns.RR, 0, len(values))
	for _, v := range values {
		rrs = append(rrs, &dns.TXT{
			Hdr: header(owner, dns.TypeTXT),
			Txt: splitTXT(v),
		})
	}
	s.set(owner, dns.TypeTXT, rrs)
}

// splitTXT splits v into character-strings of at most 255 bytes, escaping
// backslashes because miekg/dns interprets them when packing.
func splitTXT(v string) []string {
	if v == "" {
		return []string{""}
	}
	var parts []string
	for len(v) > 0 {
		n := min(len(v), 255)
		parts = append(parts, strings.ReplaceAll(v[:n], `\`, `\\`))
		v = v[n:]
	}
	return parts
}

// SetMX replaces the MX RRset at name with the given hosts, with
// preferences 10, 20, 30, ... in order. With no hosts, the MX RRset is
// removed.
func (s *Server) SetMX(name string, hosts ...string) {
	owner := fqdn(name)
	rrs := make([]dns.RR, 0, len(hosts))
	for i, h := range hosts {
		rrs = append(rrs, &dns.MX{
			Hdr:        header(owner, dns.TypeMX),
			Preference: uint16(10 * (i + 1)),
			Mx:         fqdn(h),
		})
	}
	s.set(owner, dns.TypeMX, rrs)
}

// SetCNAME makes name an alias of target. Other records at name are kept but
// are not served while the CNAME exists (a CNAME owns its name).
func (s *Server) SetCNAME(name, target string) {
	owner := fqdn(name)
	s.set(owner, dns.TypeCNAME, []dns.RR{&dns.CNAME{
		Hdr:    header(owner, dns.TypeCNAME),
		Target: fqdn(target),
	}})
}

// SetA replaces the A RRset at name with the given IPv4 addresses. It is
// useful to give a name "other data" so that it exists without a CNAME.
func (s *Server) SetA(name string, ips ...string) {
	owner := fqdn(name)
	rrs := make([]dns.RR, 0, len(ips))
	for _, ip := range ips {
		parsed := net.ParseIP(ip).To4()
		if parsed == nil {
			panic("dnstest: SetA: not an IPv4 address: " + ip)
		}
		rrs = append(rrs, &dns.A{Hdr: header(owner, dns.TypeA), A: parsed})
	}
	s.set(owner, dns.TypeA, rrs)
}

// Remove deletes all records at name, so that it answers NXDOMAIN.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.records, fqdn(name))
}

// SetDrop makes the server silently ignore every query (true) or answer
// normally again (false). Dropped queries are still counted by Queries.
func (s *Server) SetDrop(drop bool) { s.drop.Store(drop) }

// SetServfail makes the server answer every query with SERVFAIL (true) or
// answer normally again (false).
func (s *Server) SetServfail(servfail bool) { s.servfail.Store(servfail) }

// Queries returns how many queries the server has received over UDP and TCP,
// including dropped ones.
func (s *Server) Queries() int { return int(s.queries.Load()) }

// set replaces the RRset of type t at owner; an empty rrs removes it, and
// the name too when nothing is left at it.
func (s *Server) set(owner string, t uint16, rrs []dns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	byType := s.records[owner]
	if byType == nil {
		byType = make(map[uint16][]dns.RR)
		s.records[owner] = byType
	}
	if len(rrs) == 0 {
		delete(byType, t)
		if len(byType) == 0 {
			delete(s.records, owner)
		}
		return
	}
	byType[t] = rrs
}

// serveDNS answers one query.
func (s *Server) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	s.queries.Add(1)
	if s.drop.Load() {
		return // say nothing; the client times out
	}

	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = true

	switch {
	case s.servfail.Load():
		m.Rcode = dns.RcodeServerFailure
	case len(req.Question) != 1:
		m.Rcode = dns.RcodeFormatError
	default:
		q := req.Question[0]
		if q.Qclass != dns.ClassINET {
			m.Rcode = dns.RcodeRefused
			break
		}
		m.Answer, m.Rcode = s.answer(fqdn(q.Name), q.Qtype)
	}

	if _, isUDP := w.RemoteAddr().(*net.UDPAddr); isUDP {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size) // sets TC when it does not fit; clients retry over TCP
	}
	_ = w.WriteMsg(m)
}

// answer builds the answer section and rcode for a question, following
// CNAMEs inside the server's data. A CNAME whose target is unknown to the
// server is treated as pointing out of zone: NOERROR with just the CNAME.
func (s *Server) answer(name string, qtype uint16) ([]dns.RR, int) {
	s.mu.RLock()
	defer s.mu.RUnlock()

	var answer []dns.RR
	for i := 0; ; i++ {
		byType, ok := s.records[name]
		if !ok {
			if i > 0 {
				return answer, dns.RcodeSuccess // CNAME target out of zone
			}
			if s.hasDescendant(name) {
				return nil, dns.RcodeSuccess // empty non-terminal: NODATA
			}
			return nil, dns.RcodeNameError
		}
		if cname := byType[dns.TypeCNAME]; len(cname) > 0 && qtype != dns.TypeCNAME {
			answer = append(answer, dns.Copy(cname[0]))
			if i >= maxCNAMEChain {
				return answer, dns.RcodeSuccess
			}
			name = cname[0].(*dns.CNAME).Target
			continue
		}
		return append(answer, copyRRs(byType[qtype])...), dns.RcodeSuccess // empty: NODATA
	}
}

// hasDescendant reports whether some name below name has records.
// The caller holds s.mu.
func (s *Server) hasDescendant(name string) bool {
	suffix := "." + name
	if name == "." {
		suffix = "."
	}
	for owner := range s.records {
		if strings.HasSuffix(owner, suffix) {
			return true
		}
	}
	return false
}

func copyRRs(rrs []dns.RR) []dns.RR {
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		out[i] = dns.Copy(rr)
	}
	return out
}

func header(owner string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: owner, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
}

// fqdn lower-cases name and adds the trailing dot.
func fqdn(name string) string {
	return dns.Fqdn(strings.ToLower(name))
}
