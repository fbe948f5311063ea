package dnscheck

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

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
