package domains

import (
	"errors"
	"strings"
	"testing"

	"github.com/smtpcreds/smtpcreds/internal/validation"
)

func TestNormalize(t *testing.T) {
	good := map[string]string{
		"example.com":                    "example.com",
		"Example.COM.":                   "example.com",
		"mail.sub.example.org":           "mail.sub.example.org",
		"bücher.de":                      "xn--bcher-kva.de",
		"xn--bcher-kva.de":               "xn--bcher-kva.de",
		"a-b.example":                    "a-b.example",
		strings.Repeat("a", 63) + ".com": strings.Repeat("a", 63) + ".com",
	}
	for in, want := range good {
		got, err := Normalize(in)
		if err != nil || got != want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := []string{
		"", "localhost", "com", ".example.com", "a..b.com", "-a.com", "a-.com", "a_b.com",
		"exa mple.com", "example.123", strings.Repeat("a", 64) + ".com",
		strings.Repeat("abcdefghi.", 26) + "com", "a:b.com", "a/b.com", "example.com\n",
	}
	for _, in := range bad {
		got, err := Normalize(in)
		var verr *validation.Error
		if !errors.As(err, &verr) || len(verr.Fields["domain"]) == 0 {
			t.Errorf("Normalize(%q) = %q, %v; want a validation error on domain", in, got, err)
		}
	}
}
