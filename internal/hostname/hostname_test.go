package hostname

import (
	"errors"
	"strings"
	"testing"
)

var long63 = strings.Repeat("a", 63)

func TestValidASCII(t *testing.T) {
	good := []string{
		"example.com", "a", "localhost", "a-b.example", "xn--bcher-kva.de", "1.2.3.4", "example.123",
		long63 + ".com", strings.Repeat("abcdefghi.", 24) + "abcdefghijkl", // 252 bytes
	}
	for _, s := range good {
		if !ValidASCII(s) {
			t.Errorf("ValidASCII(%q) = false, want true", s)
		}
	}
	bad := []string{
		"", ".", "example.com.", ".example.com", "a..b", "-a.com", "a-.com", "a_b.com", "Example.com",
		"exa mple.com", "a/b", "..", "a:b.com", "example.com\n", "bücher.de", strings.Repeat("a", 64) + ".com",
		strings.Repeat("abcdefghi.", 25) + "abcd", // 254 bytes
	}
	for _, s := range bad {
		if ValidASCII(s) {
			t.Errorf("ValidASCII(%q) = true, want false", s)
		}
	}
}

func TestValidFQDN(t *testing.T) {
	for s, want := range map[string]bool{
		"example.com": true, "a.b.c": true, "a1.x9": true, "example.1a": true,
		"localhost": false, "com": false, "example.123": false, "1.2.3.4": false, "Example.com": false,
		"example.com.": false, "": false,
	} {
		if got := ValidFQDN(s); got != want {
			t.Errorf("ValidFQDN(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestNormalize(t *testing.T) {
	good := map[string]string{
		"example.com":          "example.com",
		"Example.COM.":         "example.com",
		"mail.sub.example.org": "mail.sub.example.org",
		"bücher.de":            "xn--bcher-kva.de",
		"xn--bcher-kva.de":     "xn--bcher-kva.de",
		"a-b.example":          "a-b.example",
		long63 + ".com":        long63 + ".com",
	}
	for in, want := range good {
		got, err := Normalize(in)
		if err != nil || got != want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := []string{
		"", ".", "localhost", "com", ".example.com", "example.com..", "a..b.com", "-a.com", "a-.com", "a_b.com",
		"exa mple.com", "example.123", strings.Repeat("a", 64) + ".com",
		strings.Repeat("abcdefghi.", 26) + "com", "a:b.com", "a/b.com", "example.com\n",
	}
	for _, in := range bad {
		if got, err := Normalize(in); !errors.Is(err, ErrInvalid) || got != "" {
			t.Errorf("Normalize(%q) = %q, %v; want ErrInvalid", in, got, err)
		}
	}
}

// Every name Normalize returns passes ValidASCII, so it may be part of a path.
// (Normalize is not idempotent: "0.\xce0", invalid UTF-8, becomes "0.xn--0-p10i",
// which IDNA refuses when given back. Behaviour kept as it was in domains.)
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"example.com", "Bücher.DE.", "a..b", "xn--", "1.2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Normalize(s)
		if err != nil {
			return
		}
		if !ValidASCII(n) || !ValidFQDN(n) {
			t.Fatalf("Normalize(%q) = %q, which ValidASCII/ValidFQDN reject", s, n)
		}
	})
}
