package credentials

import (
	"strings"
	"testing"
)

func TestNormalizeUsername(t *testing.T) {
	good := map[string]string{
		"a": "a", "MyUser": "myuser", "a.b": "a.b", "a_b+c-d": "a_b+c-d", "a.-b": "a.-b",
		"0": "0", strings.Repeat("x", 64): strings.Repeat("x", 64),
	}
	for in, want := range good {
		if got, ok := NormalizeUsername(in); !ok || got != want {
			t.Errorf("NormalizeUsername(%q) = %q, %v; want %q, true", in, got, ok, want)
		}
	}
	bad := []string{
		"", strings.Repeat("x", 65), ".a", "a.", "-a", "a-", "_a", "a+", "a..b", "a:b", "a#b",
		"a b", "a\nb", "a\x00b", "a@b", "a/b", "é", "aé", "a\tb",
	}
	for _, in := range bad {
		if got, ok := NormalizeUsername(in); ok {
			t.Errorf("NormalizeUsername(%q) = %q, true; want rejected", in, got)
		}
	}
}

// FuzzNormalizeUsername checks the validator against an independent
// statement of the rules, and that accepted names are safe in a
// colon-separated passwd-file line.
func FuzzNormalizeUsername(f *testing.F) {
	for _, s := range []string{"a", "MyUser", "a..b", "a.-b", ".a", "a:b", "x#", "ü", strings.Repeat("z", 64), strings.Repeat("z", 65), "a\nb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := NormalizeUsername(s)
		if ok != rulesHold(s) {
			t.Fatalf("NormalizeUsername(%q) ok=%v, rules say %v", s, ok, !ok)
		}
		if !ok {
			return
		}
		if got != strings.ToLower(s) {
			t.Fatalf("NormalizeUsername(%q) = %q, want the lowercase input", s, got)
		}
		if strings.ContainsAny(got, ":#\n\r\t \x00@/") {
			t.Fatalf("accepted %q contains a passwd-file separator", got)
		}
		if again, ok := NormalizeUsername(got); !ok || again != got {
			t.Fatalf("not idempotent: %q -> %q", got, again)
		}
	})
}

// rulesHold restates the rules independently of the implementation.
func rulesHold(s string) bool {
	if len(s) < 1 || len(s) > 64 || strings.Contains(s, "..") {
		return false
	}
	alnum := func(r byte) bool {
		return strings.IndexByte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", r) >= 0
	}
	for i := 0; i < len(s); i++ {
		if !alnum(s[i]) && strings.IndexByte("._+-", s[i]) < 0 {
			return false
		}
	}
	return alnum(s[0]) && alnum(s[len(s)-1])
}
