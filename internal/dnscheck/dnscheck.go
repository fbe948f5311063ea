// Package dnscheck verifies the DNS records a sending domain must publish
// (DKIM, SPF, MX, CNAME) and explains each failure so users can fix their DNS.
//
// Every check returns a Result that says what was looked up, what was
// expected, what was found and, on failure, why, so that users can debug
// their DNS themselves. Lookups use only the standard library: a
// net.Resolver with the pure-Go stub resolver, sending every query to the
// configured resolver address (or the system's resolvers). Names are always
// queried fully qualified, so search domains never apply.
//
// DNS answers are untrusted input. Everything taken from an answer and put in
// a Result is sanitized: at most MaxFound entries, each cut to MaxEntryBytes,
// bytes outside printable ASCII escaped as \xNN and backslashes doubled.
package dnscheck

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// DefaultTimeout is the per-lookup timeout used when Config.Timeout is 0.
const DefaultTimeout = 3 * time.Second

// Limits applied to data taken from DNS answers before it is returned.
const (
	// MaxFound is the most entries a Result.Found holds.
	MaxFound = 10
	// MaxEntryBytes is the most bytes of one sanitized Found entry, not
	// counting the "…" appended when it was cut.
	MaxEntryBytes = 512
)

// snippetBytes bounds DNS-derived text quoted inside a Problem.
const snippetBytes = 64

// Config configures a Checker.
type Config struct {
	// Resolver is the "host:port" of the DNS resolver to query; host must
	// be an IP address and the port defaults to 53 when missing. Empty
	// means the system's resolvers (from /etc/resolv.conf).
	Resolver string
	// Timeout bounds each check, retries included; 0 means DefaultTimeout.
	Timeout time.Duration
}

// Checker runs DNS checks. It is safe for concurrent use.
type Checker struct {
	resolver *net.Resolver
	label    string // "resolver 127.0.0.1:53" or "system resolver", for Problems
	timeout  time.Duration
}

// New returns a Checker for cfg. It fails when cfg.Resolver is not an IP
// address with an optional port, or cfg.Timeout is negative.
func New(cfg Config) (*Checker, error) {
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("dnscheck: negative timeout %v", cfg.Timeout)
	}
	c := &Checker{timeout: cfg.Timeout, label: "system resolver"}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if cfg.Resolver == "" {
		c.resolver = &net.Resolver{PreferGo: true}
		return c, nil
	}
	addr, err := resolverAddr(cfg.Resolver)
	if err != nil {
		return nil, err
	}
	c.label = "resolver " + addr
	var d net.Dialer
	c.resolver = &net.Resolver{
		PreferGo: true,
		// The stub resolver still reads /etc/resolv.conf for its retry
		// policy and passes each listed server as address; ignore that
		// and always talk to the configured resolver.
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
	}
	return c, nil
}

// resolverAddr validates a resolver address and returns it as host:port.
func resolverAddr(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// No port: "192.0.2.1", "::1" or "[::1]".
		host, port = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), "53"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", fmt.Errorf("dnscheck: resolver %q: host must be an IP address", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("dnscheck: resolver %q: invalid port %q", s, port)
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(n)), nil
}

// Result explains one record check so users can debug their DNS.
type Result struct {
	// OK is true when the expected record was found.
	OK bool `json:"ok"`
	// Name is the DNS name looked up, without the trailing dot.
	Name string `json:"name"`
	// Type is the record type looked up: "TXT", "MX" or "CNAME".
	Type string `json:"type"`
	// Expected describes what the check wants to find.
	Expected string `json:"expected"`
	// Found lists what was found, sanitized (see the package
	// documentation). It is never nil.
	Found []string `json:"found"`
	// Problem says why the check failed; empty when OK.
	Problem string `json:"problem,omitempty"`
}

func newResult(name, typ, expected string) Result {
	return Result{Name: displayName(name), Type: typ, Expected: expected, Found: []string{}}
}

func (r Result) fail(format string, args ...any) Result {
	r.OK = false
	r.Problem = fmt.Sprintf(format, args...)
	return r
}
