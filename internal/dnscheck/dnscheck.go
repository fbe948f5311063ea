// Package dnscheck verifies the DNS records a sending domain must publish:
// the DKIM key (TXT), the SPF policy (TXT), MX and CNAME records.
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
	"errors"
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

// DKIM checks that the TXT record at name (such as
// "sel._domainkey.example.com") publishes publicKeyB64. The character-strings
// of each record are joined; a record passes when its tags parse
// (tag=value; ...), v is absent or DKIM1 (and first), k is absent or rsa,
// and p with whitespace removed equals publicKeyB64 with whitespace removed.
func (c *Checker) DKIM(ctx context.Context, name, publicKeyB64 string) Result {
	want := removeSpace(publicKeyB64)
	r := newResult(name, "TXT", "v=DKIM1; k=rsa; p="+want)
	if problem := checkName(name); problem != "" {
		return r.fail("%s", problem)
	}
	if want == "" {
		return r.fail("no DKIM public key to compare with")
	}

	records, err := lookup(ctx, c.timeout, func(ctx context.Context) ([]string, error) {
		return c.resolver.LookupTXT(ctx, fqdn(name))
	})
	if err != nil {
		return r.fail("%s", c.explain(ctx, err, "TXT", r.Name))
	}
	r.Found = found(records)
	if len(records) == 0 {
		return r.fail("no TXT record at %s", r.Name)
	}

	best, bestRank := "", -1
	for _, rec := range records {
		rank, problem := checkDKIM(rec, want, r.Name)
		if problem == "" {
			r.OK = true
			return r
		}
		if rank > bestRank {
			best, bestRank = problem, rank
		}
	}
	if len(records) > 1 {
		return r.fail("%d TXT records at %s and none is the expected DKIM key%s; closest: %s",
			len(records), r.Name, shownOf(len(records)), best)
	}
	return r.fail("%s", best)
}

// checkDKIM checks one joined TXT record. It returns "" when the record
// publishes want, else a problem and how close the record came (higher is
// closer), used to pick the most useful explanation among several records.
func checkDKIM(rec, want, name string) (rank int, problem string) {
	tags, first, err := parseTags(rec)
	if err != nil {
		return 0, fmt.Sprintf("the TXT record at %s is not a DKIM key record: %v", name, err)
	}
	if v, ok := tags["v"]; ok {
		if v != "DKIM1" {
			return 1, fmt.Sprintf("the DKIM record at %s has v=%s; expected v=DKIM1", name, snippet(v))
		}
		if first != "v" {
			return 1, fmt.Sprintf("the DKIM record at %s has v=DKIM1 but not as its first tag (RFC 6376 requires it first)", name)
		}
	}
	if k, ok := tags["k"]; ok && !strings.EqualFold(k, "rsa") {
		return 2, fmt.Sprintf("the DKIM record at %s has k=%s; this key is RSA, so k must be rsa or absent", name, snippet(k))
	}
	p, ok := tags["p"]
	if !ok {
		return 1, fmt.Sprintf("the DKIM record at %s has no p= tag (public key)", name)
	}
	p = removeSpace(p)
	switch {
	case p == want:
		return 3, ""
	case p == "":
		return 3, fmt.Sprintf("the DKIM key at %s is revoked (p= is empty)", name)
	default:
		return 3, fmt.Sprintf("the DKIM key at %s does not match (published p= has %d characters, expected %d; they differ from character %d)",
			name, len(p), len(want), commonPrefix(p, want)+1)
	}
}

// parseTags parses a DKIM tag list (RFC 6376 section 3.2): tag=value pairs
// separated by ";", whitespace around names and values ignored, an empty
// final element allowed. It returns the tags and the name of the first one.
func parseTags(s string) (map[string]string, string, error) {
	tags := make(map[string]string)
	first := ""
	parts := strings.Split(s, ";")
	for i, part := range parts {
		part = strings.TrimSpace(part)
		if part == "" {
			if i == len(parts)-1 && i > 0 {
				break // trailing ";"
			}
			return nil, "", errors.New("empty tag")
		}
		tag, value, ok := strings.Cut(part, "=")
		if !ok {
			return nil, "", fmt.Errorf(`"%s" is not tag=value`, snippet(part))
		}
		tag = strings.TrimSpace(tag)
		if !validTagName(tag) {
			return nil, "", fmt.Errorf(`invalid tag name "%s"`, snippet(tag))
		}
		if _, dup := tags[tag]; dup {
			return nil, "", fmt.Errorf("tag %q appears twice", tag)
		}
		if first == "" {
			first = tag
		}
		tags[tag] = strings.TrimSpace(value)
	}
	return tags, first, nil
}

// validTagName reports whether s is ALPHA *(ALPHA / DIGIT / "_").
func validTagName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z':
		case i > 0 && ('0' <= ch && ch <= '9' || ch == '_'):
		default:
			return false
		}
	}
	return true
}

// SPF checks that domain publishes exactly one SPF record (a TXT record
// starting with "v=spf1", case-insensitive, followed by a space or the end)
// that authorises us: it must contain include:<include> when include is not
// empty, or mx:<mxHost> or a:<mxHost> when mxHost is not empty (any of them
// suffices when both are given), with no qualifier or "+", before any "all"
// term. A record whose "all" term passes everything ("+all" or a bare
// "all") fails, since it lets anyone send as the domain. With include and
// mxHost both empty, only the uniqueness and "+all" rules are checked.
func (c *Checker) SPF(ctx context.Context, domain, include, mxHost string) Result {
	var wants []string
	if include != "" {
		wants = append(wants, "include:"+normHost(include))
	}
	if mxHost != "" {
		wants = append(wants, "mx:"+normHost(mxHost), "a:"+normHost(mxHost))
	}
	expected := "one SPF record (v=spf1 ...) without +all"
	if len(wants) > 0 {
		expected = "one SPF record (v=spf1 ...) containing " + orList(wants) + ", without +all"
	}
	r := newResult(domain, "TXT", expected)
	if problem := checkName(domain); problem != "" {
		return r.fail("%s", problem)
	}

	records, err := lookup(ctx, c.timeout, func(ctx context.Context) ([]string, error) {
		return c.resolver.LookupTXT(ctx, fqdn(domain))
	})
	if err != nil {
		if dnsErr, ok := errors.AsType[*net.DNSError](err); ok && dnsErr.IsNotFound {
			return r.fail("no SPF record at %s: no TXT record there", r.Name)
		}
		return r.fail("%s", c.explain(ctx, err, "TXT", r.Name))
	}
	var spfs []string
	for _, rec := range records {
		if isSPF(rec) {
			spfs = append(spfs, rec)
		}
	}
	switch len(spfs) {
	case 0:
		r.Found = found(records)
		return r.fail("no SPF record at %s: none of its %d TXT record(s) starts with v=spf1%s",
			r.Name, len(records), shownOf(len(records)))
	case 1:
		r.Found = found(spfs)
	default:
		r.Found = found(spfs)
		return r.fail("%d SPF records found; RFC 7208 allows one (receivers treat several as a permanent error): merge them into a single v=spf1 record", len(spfs))
	}

	terms := strings.Fields(spfs[0])[1:]
	matched, late, wrongQualifier := "", "", ""
	for i, term := range terms {
		qualifier, mech := byte('+'), strings.ToLower(term)
		if mech != "" && strings.ContainsRune("+-~?", rune(mech[0])) {
			qualifier, mech = mech[0], mech[1:]
		}
		if mech == "all" {
			if qualifier == '+' {
				where := "ends in"
				if i < len(terms)-1 {
					where = "contains"
				}
				return r.fail("the SPF record at %s %s \"%s\", which authorises every server on the internet to send mail as %s; use ~all or -all",
					r.Name, where, snippet(term), r.Name)
			}
			for _, rest := range terms[i+1:] {
				if late == "" && matchesSPF(strings.TrimPrefix(strings.ToLower(rest), "+"), wants) {
					late = rest
				}
			}
			break
		}
		if matchesSPF(mech, wants) {
			if qualifier == '+' {
				matched = term
			} else if wrongQualifier == "" {
				wrongQualifier = term
			}
		}
	}
	switch {
	case len(wants) == 0 || matched != "":
		r.OK = true
		return r
	case late != "":
		return r.fail("the SPF record at %s has %s after its \"all\" term, where receivers never evaluate it; move it before \"all\"",
			r.Name, snippet(late))
	case wrongQualifier != "":
		return r.fail("the SPF record at %s has %s, whose qualifier %q does not authorise the sender; remove the qualifier",
			r.Name, snippet(wrongQualifier), wrongQualifier[:1])
	default:
		return r.fail("the SPF record at %s does not contain %s", r.Name, orList(wants))
	}
}

// isSPF reports whether a TXT record is an SPF version 1 record.
func isSPF(rec string) bool {
	return len(rec) >= 6 && strings.EqualFold(rec[:6], "v=spf1") && (len(rec) == 6 || rec[6] == ' ')
}

// matchesSPF reports whether a lower-case mechanism without qualifier is
// one of wants. A CIDR suffix on a: and mx: ("mx:host/24") is ignored, and so
// is a trailing dot on the domain.
func matchesSPF(mech string, wants []string) bool {
	kind, domain, ok := strings.Cut(mech, ":")
	if !ok {
		return false
	}
	if kind == "a" || kind == "mx" {
		domain, _, _ = strings.Cut(domain, "/")
	}
	mech = kind + ":" + strings.TrimSuffix(domain, ".")
	for _, w := range wants {
		if mech == w {
			return true
		}
	}
	return false
}

// MX checks that some MX record of domain points to host (case-insensitive,
// trailing dot ignored).
func (c *Checker) MX(ctx context.Context, domain, host string) Result {
	want := normHost(host)
	r := newResult(domain, "MX", "an MX record pointing to "+want)
	if problem := checkName(domain); problem != "" {
		return r.fail("%s", problem)
	}
	if problem := checkName(host); problem != "" {
		return r.fail("mail host: %s", problem)
	}

	mxs, err := lookup(ctx, c.timeout, func(ctx context.Context) ([]*net.MX, error) {
		mxs, err := c.resolver.LookupMX(ctx, fqdn(domain))
		if len(mxs) > 0 {
			// Records with malformed host names are dropped by the
			// resolver, which then reports an error; use the rest.
			err = nil
		}
		return mxs, err
	})
	if err != nil {
		return r.fail("%s", c.explain(ctx, err, "MX", r.Name))
	}
	entries := make([]string, 0, len(mxs))
	ok := false
	for _, mx := range mxs {
		entries = append(entries, fmt.Sprintf("%d %s", mx.Pref, mx.Host))
		if normHost(mx.Host) == want {
			ok = true
		}
	}
	r.Found = found(entries)
	switch {
	case ok:
		r.OK = true
		return r
	case len(mxs) == 0:
		return r.fail("no MX record at %s", r.Name)
	case len(mxs) == 1 && mxs[0].Host == ".":
		return r.fail("%s publishes a null MX (\"0 .\"), meaning it accepts no mail; replace it with an MX record pointing to %s", r.Name, want)
	case len(mxs) == 1:
		return r.fail("the MX record of %s points to %s, not %s", r.Name, snippet(normHost(mxs[0].Host)), want)
	default:
		return r.fail("none of the %d MX record(s) of %s points to %s%s", len(mxs), r.Name, want, shownOf(len(mxs)))
	}
}

// CNAME checks that name is an alias (CNAME) of target (case-insensitive,
// trailing dot ignored).
//
// With a chain of CNAMEs, net.Resolver.LookupCNAME returns either the first
// alias or the final canonical name, depending on which of the A, AAAA and
// CNAME queries it sends in parallel is answered first. To give a stable
// verdict, the check passes when the name returned is target, or when
// following CNAMEs from name and from target ends at the same canonical name
// (so an alias of target, or a target that is itself an alias, also passes).
func (c *Checker) CNAME(ctx context.Context, name, target string) Result {
	want := normHost(target)
	r := newResult(name, "CNAME", "a CNAME record pointing to "+want)
	if problem := checkName(name); problem != "" {
		return r.fail("%s", problem)
	}
	if problem := checkName(target); problem != "" {
		return r.fail("target: %s", problem)
	}

	type verdict struct {
		alias, final, targetFinal string
	}
	v, err := lookup(ctx, c.timeout, func(ctx context.Context) (verdict, error) {
		alias, err := c.resolver.LookupCNAME(ctx, fqdn(name))
		if err != nil || normHost(alias) == want || normHost(alias) == normHost(name) {
			return verdict{alias: alias}, err
		}
		final, err := c.canonical(ctx, alias)
		if err != nil {
			return verdict{}, err
		}
		targetFinal, err := c.canonical(ctx, want)
		return verdict{alias, final, targetFinal}, err
	})
	if err != nil {
		return r.fail("%s", c.explain(ctx, err, "CNAME", r.Name))
	}
	got := normHost(v.alias)
	if got == normHost(name) {
		// LookupCNAME returns the name itself when the name has address
		// records but no CNAME.
		return r.fail("no CNAME record at %s: the name has other records (such as an address) instead, and a CNAME cannot coexist with them", r.Name)
	}
	r.Found = found([]string{v.alias})
	if got != want && v.final != v.targetFinal {
		return r.fail("%s is a CNAME for %s, not %s", r.Name, snippet(got), want)
	}
	r.OK = true
	return r
}

// canonical follows CNAMEs from name and returns the last name reached,
// normalised with normHost. A name that does not exist or has no records
// ends the chain.
func (c *Checker) canonical(ctx context.Context, name string) (string, error) {
	cur := normHost(name)
	seen := map[string]bool{cur: true}
	for range 8 {
		next, err := c.resolver.LookupCNAME(ctx, fqdn(cur))
		if dnsErr, ok := errors.AsType[*net.DNSError](err); ok && dnsErr.IsNotFound {
			return cur, nil
		}
		if err != nil {
			return "", err
		}
		next = normHost(next)
		if seen[next] {
			return cur, nil // end of chain, or a loop
		}
		seen[next] = true
		cur = next
	}
	return cur, nil
}

// lookup runs f with a context bounded by timeout and returns no later than
// the deadline even if f does not honour its context.
func lookup[T any](ctx context.Context, timeout time.Duration, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1) // buffered: f may finish after we gave up
	go func() {
		v, err := f(ctx)
		done <- result{v, err}
	}()
	select {
	case res := <-done:
		return res.v, res.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// explain turns a lookup error into a Problem. parent is the caller's
// context, used to tell our own timeout from the caller's cancellation.
func (c *Checker) explain(parent context.Context, err error, typ, name string) string {
	if errors.Is(parent.Err(), context.Canceled) {
		return fmt.Sprintf("DNS lookup of %s %s canceled", typ, name)
	}
	timeout := fmt.Sprintf("DNS lookup timed out after %v (%s)", c.timeout, c.label)
	if d, ok := parent.Deadline(); ok && !time.Now().Before(d) {
		// The caller's deadline, not ours, ended the lookup. (The
		// resolver's socket deadline can fire a moment before the
		// context reports it, so compare times rather than parent.Err.)
		timeout = fmt.Sprintf("DNS lookup timed out: the request's deadline passed first (%s)", c.label)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return timeout
	}
	dnsErr, ok := errors.AsType[*net.DNSError](err)
	if !ok {
		return fmt.Sprintf("DNS lookup of %s %s failed: %s (%s)", typ, name, snippet(err.Error()), c.label)
	}
	switch {
	case dnsErr.IsNotFound:
		// NXDOMAIN and NODATA look the same through net.Resolver.
		return fmt.Sprintf("no %s record at %s", typ, name)
	case dnsErr.IsTimeout:
		return timeout
	case strings.Contains(dnsErr.Err, "connection refused"):
		return fmt.Sprintf("could not reach the DNS %s: connection refused (no DNS server is listening there)", c.label)
	case dnsErr.Err == "server misbehaving" && dnsErr.IsTemporary:
		return fmt.Sprintf("the DNS server answered SERVFAIL (server failure) for %s %s (%s); the domain's nameservers may be down or misconfigured, or DNSSEC validation failed", typ, name, c.label)
	case dnsErr.Err == "server misbehaving":
		return fmt.Sprintf("the DNS server refused to answer or returned an error for %s %s (%s)", typ, name, c.label)
	case dnsErr.Err == "lame referral":
		return fmt.Sprintf("the DNS server gave no answer for %s %s (lame referral: it is neither authoritative nor recursive) (%s)", typ, name, c.label)
	default:
		return fmt.Sprintf("DNS lookup of %s %s failed: %s (%s)", typ, name, snippet(dnsErr.Err), c.label)
	}
}

// checkName returns a problem when name is not a syntactically valid DNS
// name (letters, digits, "-" and "_" in labels of 1 to 63 bytes, 253 bytes
// in all, an optional trailing dot), else "".
func checkName(name string) string {
	n := strings.TrimSuffix(name, ".")
	bad := fmt.Sprintf(`"%s" is not a valid DNS name`, snippet(name))
	if n == "" || len(n) > 253 {
		return bad
	}
	for label := range strings.SplitSeq(n, ".") {
		if label == "" || len(label) > 63 {
			return bad
		}
		for i := 0; i < len(label); i++ {
			ch := label[i]
			if !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || ch == '-' || ch == '_') {
				return bad
			}
		}
	}
	return ""
}

// fqdn returns name with exactly one trailing dot.
func fqdn(name string) string { return strings.TrimSuffix(name, ".") + "." }

// displayName returns name without its trailing dot, sanitized.
func displayName(name string) string { return sanitize(strings.TrimSuffix(name, "."), MaxEntryBytes) }

// normHost lower-cases a host name and drops its trailing dot.
func normHost(h string) string { return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(h), ".")) }

func removeSpace(s string) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, s)
}

// commonPrefix returns the length of the common prefix of a and b.
func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// orList joins items as "a, b or c".
func orList(items []string) string {
	if len(items) <= 1 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
}

// shownOf notes that Found holds only the first MaxFound of n entries.
func shownOf(n int) string {
	if n <= MaxFound {
		return ""
	}
	return fmt.Sprintf(" (the first %d are shown)", MaxFound)
}

// found sanitizes DNS data for Result.Found: at most MaxFound entries, each
// at most MaxEntryBytes (plus "…"). It never returns nil.
func found(values []string) []string {
	out := make([]string, 0, min(len(values), MaxFound))
	for _, v := range values[:min(len(values), MaxFound)] {
		out = append(out, sanitize(v, MaxEntryBytes))
	}
	return out
}

// snippet sanitizes a short piece of DNS data quoted in a Problem.
func snippet(s string) string { return sanitize(s, snippetBytes) }

// sanitize escapes every byte outside printable ASCII (0x20-0x7E) as \xNN
// and a backslash as \\, so the result is unambiguous and free of control
// characters; it cuts the result to at most limit bytes, appending "…" when
// something was cut. "<", ">" and "&" are kept: JSON encoding escapes them.
func sanitize(s string, limit int) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		piece := ""
		switch {
		case ch == '\\':
			piece = `\\`
		case 0x20 <= ch && ch <= 0x7e:
			piece = s[i : i+1]
		default:
			piece = fmt.Sprintf(`\x%02x`, ch)
		}
		if b.Len()+len(piece) > limit {
			b.WriteString("…")
			break
		}
		b.WriteString(piece)
	}
	return b.String()
}
