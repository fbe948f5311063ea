package basicauth

import (
	"encoding/base64"
	"strings"
	"testing"
	"unicode/utf8"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestParse(t *testing.T) {
	long := strings.Repeat("p", 700)
	tests := []struct {
		name       string
		header     string
		user, pass string
		ok         bool
	}{
		{"basic", "Basic " + b64("alice:secret"), "alice", "secret", true},
		{"RFC 7617 example", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", "Aladdin", "open sesame", true},
		{"lower-case scheme", "basic " + b64("alice:secret"), "alice", "secret", true},
		{"upper-case scheme", "BASIC " + b64("alice:secret"), "alice", "secret", true},
		{"mixed-case scheme", "bAsIc " + b64("alice:secret"), "alice", "secret", true},
		{"several spaces", "Basic    " + b64("alice:secret"), "alice", "secret", true},
		{"colon in password", "Basic " + b64("alice:se:cr:et"), "alice", "se:cr:et", true},
		{"empty password", "Basic " + b64("alice:"), "alice", "", true},
		{"unicode", "Basic " + b64("jörg@example.org:pässwörd€"), "jörg@example.org", "pässwörd€", true},
		{"unpadded", "Basic " + strings.TrimRight(b64("alice:secre"), "="), "alice", "secre", true},
		{"space in password", "Basic " + b64("alice:a b"), "alice", "a b", true},
		{"just fits", "Basic " + b64("u:"+strings.Repeat("p", 760)), "u", strings.Repeat("p", 760), true},

		{"empty", "", "", "", false},
		{"scheme only", "Basic", "", "", false},
		{"scheme and space", "Basic ", "", "", false},
		{"no space", "Basic" + b64("alice:secret"), "", "", false},
		{"tab separator", "Basic\t" + b64("alice:secret"), "", "", false},
		{"leading space", " Basic " + b64("alice:secret"), "", "", false},
		{"trailing space", "Basic " + b64("alice:secret") + " ", "", "", false},
		{"other scheme", "Bearer " + b64("alice:secret"), "", "", false},
		{"prefix scheme", "Basicx " + b64("alice:secret"), "", "", false},
		{"unicode fold scheme", "Baſic " + b64("alice:secret"), "", "", false},
		{"bad base64", "Basic !!!!", "", "", false},
		{"url base64", "Basic " + base64.URLEncoding.EncodeToString([]byte("a:>>>?")), "", "", false},
		{"embedded newline", "Basic YWxp\nY2U6c2VjcmV0", "", "", false},
		{"embedded CR", "Basic YWxp\rY2U6c2VjcmV0", "", "", false},
		{"bad padding", "Basic YWxpY2U6c2VjcmV0=", "", "", false},
		{"non-canonical bits", "Basic YR==", "", "", false},
		{"no colon", "Basic " + b64("alicesecret"), "", "", false},
		{"empty user", "Basic " + b64(":secret"), "", "", false},
		{"only colon", "Basic " + b64(":"), "", "", false},
		{"NUL in user", "Basic " + b64("ali\x00ce:secret"), "", "", false},
		{"NUL in password", "Basic " + b64("alice:sec\x00ret"), "", "", false},
		{"newline in password", "Basic " + b64("alice:sec\nret"), "", "", false},
		{"tab in user", "Basic " + b64("ali\tce:secret"), "", "", false},
		{"DEL in password", "Basic " + b64("alice:secret\x7f"), "", "", false},
		{"unit separator", "Basic " + b64("alice\x1f:secret"), "", "", false},
		{"invalid utf-8", "Basic " + b64("alice:\xff\xfe"), "", "", false},
		{"too long", "Basic " + b64("u:"+long+long), "", "", false},
		// Regression: 1024 bytes unpadded, but 763 decoded bytes need
		// 1026 bytes once Format adds padding.
		{"unpadded over decoded limit", "Basic " + strings.TrimRight(b64("u:"+strings.Repeat("p", 761)), "="), "", "", false},
		{"unpadded at decoded limit", "Basic " + b64("u:"+strings.Repeat("p", 760)), "u", strings.Repeat("p", 760), true},
		{"huge", "Basic " + strings.Repeat("A", 1<<20), "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			user, pass, ok := Parse(tc.header)
			if user != tc.user || pass != tc.pass || ok != tc.ok {
				t.Errorf("Parse(%.60q) = %q, %q, %v; want %q, %q, %v",
					tc.header, user, pass, ok, tc.user, tc.pass, tc.ok)
			}
		})
	}
}

func TestMaxHeaderLen(t *testing.T) {
	// Build a header of exactly MaxHeaderLen and MaxHeaderLen+1 bytes by
	// padding the password (4 base64 chars per 3 bytes).
	for _, n := range []int{MaxHeaderLen - 3, MaxHeaderLen + 1} {
		pass := ""
		h := Format("u", pass)
		for len(h) < n {
			pass += "p"
			h = Format("u", pass)
		}
		_, _, ok := Parse(h)
		if want := len(h) <= MaxHeaderLen; ok != want {
			t.Errorf("len %d: ok = %v, want %v", len(h), ok, want)
		}
	}
}

func TestFormat(t *testing.T) {
	if got, want := Format("Aladdin", "open sesame"), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="; got != want {
		t.Fatalf("Format = %q, want %q", got, want)
	}
}

// valid reports whether user and pass satisfy Parse's rules, written
// independently of the implementation.
func valid(user, pass string) bool {
	if user == "" || strings.Contains(user, ":") {
		return false
	}
	if !utf8.ValidString(user + ":" + pass) {
		return false
	}
	for _, r := range user + pass {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return len(Format(user, pass)) <= MaxHeaderLen
}

func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
		"basic YWxpY2U6c2VjcmV0",
		"BASIC    YWxpY2U6c2VjcmV0",
		"Basic YWxpY2U6c2VjcmV0=",
		"Basic YWxpY2U6c2VjcmV0IA",
		"Basic !!!!",
		"Basic YWxpY2VzZWNyZXQ=",
		"Basic OnNlY3JldA==",
		"Basic YWxp\nY2U6c2VjcmV0",
		"Basic ",
		"Basic",
		"",
		"Bearer smtpk_abc",
		"Basic " + strings.Repeat("QUFB", 300),
		"Basic " + b64("jörg@example.org:pässwörd€"),
		"Basic " + b64("alice:sec\x00ret"),
		"Basic " + b64("alice:\xff"),
		"Baſic " + b64("alice:secret"),
		// Regression seed: unpadded 1024-byte header whose padded
		// re-encoding would exceed MaxHeaderLen.
		"Basic " + strings.TrimRight(b64("u:"+strings.Repeat("p", 761)), "="),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, header string) {
		user, pass, ok := Parse(header)
		if !ok {
			if user != "" || pass != "" {
				t.Fatalf("Parse(%q) failed but returned %q, %q", header, user, pass)
			}
			return
		}
		if len(header) > MaxHeaderLen {
			t.Fatalf("Parse accepted a %d-byte header", len(header))
		}
		if !valid(user, pass) {
			t.Fatalf("Parse(%q) = %q, %q: violates the rules", header, user, pass)
		}
		u2, p2, ok2 := Parse(Format(user, pass))
		if !ok2 || u2 != user || p2 != pass {
			t.Fatalf("Parse(Format(%q, %q)) = %q, %q, %v", user, pass, u2, p2, ok2)
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	for _, seed := range [][2]string{
		{"alice", "secret"},
		{"alice", ""},
		{"alice", "a:b:c"},
		{"a:b", "c"},
		{"", "secret"},
		{"jörg", "pässwörd€"},
		{"alice", "sec\x00ret"},
		{"alice", "\xff"},
		{"alice", strings.Repeat("x", 800)},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, user, pass string) {
		u, p, ok := Parse(Format(user, pass))
		same := ok && u == user && p == pass
		if valid(user, pass) {
			if !same {
				t.Fatalf("Parse(Format(%q, %q)) = %q, %q, %v; want the input back", user, pass, u, p, ok)
			}
			return
		}
		// Invalid input must never come back as-is. It may still parse
		// differently: Format("a:b", "c") is a valid header for user "a".
		if same {
			t.Fatalf("Parse(Format(%q, %q)) accepted invalid credentials", user, pass)
		}
		if ok && !valid(u, p) {
			t.Fatalf("Parse(Format(%q, %q)) = %q, %q: violates the rules", user, pass, u, p)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	h := Format("alice@example.org", "smtpk_0123456789abcdefghijklmnopqrstuv")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := Parse(h); !ok {
			b.Fatal("rejected")
		}
	}
}
