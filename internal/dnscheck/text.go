package dnscheck

import (
	"fmt"
	"strings"
)

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
