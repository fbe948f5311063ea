package dnscheck

import (
	"context"
	"errors"
	"fmt"
	"net"
)

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
