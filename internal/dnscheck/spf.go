package dnscheck

import (
	"context"
	"errors"
	"net"
	"strings"
)

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
