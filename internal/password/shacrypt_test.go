package password

import (
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// shaCryptVectors are the SHA-512 test vectors published in Ulrich
// Drepper's "Unix crypt using SHA-256 and SHA-512" specification.
var shaCryptVectors = []struct {
	setting, password, want string
}{
	{"$6$saltstring", "Hello world!",
		"$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"},
	{"$6$rounds=10000$saltstringsaltstring", "Hello world!",
		"$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."},
	{"$6$rounds=5000$toolongsaltstring", "This is just a test",
		"$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0"},
	{"$6$rounds=1400$anotherlongsaltstring", "a very much longer text to encrypt.  This one even stretches over morethan one line.",
		"$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1"},
	{"$6$rounds=77777$short", "we have a short salt string but not a short password",
		"$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0"},
	{"$6$rounds=123456$asaltof16chars..", "a short string",
		"$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1"},
	{"$6$rounds=10$roundstoolow", "the minimum number is still observed",
		"$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX."},
}

func TestSHACryptSpecVectors(t *testing.T) {
	for _, v := range shaCryptVectors {
		set, _, _, err := parseSHACryptSetting(v.setting)
		if err != nil {
			t.Fatalf("parse %q: %v", v.setting, err)
		}
		if got := shaCrypt(v.password, set); got != v.want {
			t.Errorf("crypt(%q, %q)\n got %s\nwant %s", v.password, v.setting, got, v.want)
		}
		// The full output is itself a valid setting (crypt(3) convention).
		set2, _, _, err := parseSHACryptSetting(v.want)
		if err != nil {
			t.Fatalf("parse %q: %v", v.want, err)
		}
		if got := shaCrypt(v.password, set2); got != v.want {
			t.Errorf("crypt(%q, %q) = %s, want itself", v.password, v.want, got)
		}
		// Verify accepts every vector whose salt fits in 16 characters.
		if ok, err := Verify("{SHA512-CRYPT}"+v.want, v.password); !ok || err != nil {
			t.Errorf("Verify(%q) = %v, %v", v.want, ok, err)
		}
		if ok, _ := Verify("{SHA512-CRYPT}"+v.want, v.password+" "); ok {
			t.Errorf("Verify(%q) accepted a wrong password", v.want)
		}
	}
}

func TestSHACryptRoundsClamp(t *testing.T) {
	for in, want := range map[string]int{
		"$6$rounds=0$s":                       1000,
		"$6$rounds=999$s":                     1000,
		"$6$rounds=1000$s":                    1000,
		"$6$rounds=5000$s":                    5000,
		"$6$rounds=999999999$s":               999999999,
		"$6$rounds=1000000000$s":              999999999,
		"$6$rounds=99999999999999999999999$s": 999999999,
		"$6$s":                                5000,
	} {
		set, _, _, err := parseSHACryptSetting(in)
		if err != nil || set.rounds != want || set.salt != "s" {
			t.Errorf("parse(%q) = %+v, %v; want rounds %d, salt s", in, set, err, want)
		}
	}
}

func TestSHA512CryptFormat(t *testing.T) {
	h, err := Hash(SHA512Crypt, "secret")
	if err != nil {
		t.Fatal(err)
	}
	body, ok := strings.CutPrefix(h, "{SHA512-CRYPT}$6$")
	if !ok {
		t.Fatalf("bad prefix: %q", h)
	}
	salt, hash, ok := strings.Cut(body, "$")
	if !ok || len(salt) != 16 || len(hash) != 86 ||
		strings.Trim(salt, crypt64) != "" || strings.Trim(hash, crypt64) != "" {
		t.Fatalf("bad format: %q", h)
	}
}

// TestSHA512CryptAgainstPython cross-checks against the system crypt(3)
// through Python's crypt module. It skips only when python3 or its crypt
// module (removed in Python 3.13) is unavailable.
func TestSHA512CryptAgainstPython(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found")
	}
	probe := exec.Command(python, "-W", "ignore", "-c", "import crypt")
	if out, err := probe.CombinedOutput(); err != nil {
		if strings.Contains(string(out), "ModuleNotFoundError") || strings.Contains(string(out), "ImportError") {
			t.Skipf("python3 has no crypt module: %s", strings.TrimSpace(string(out)))
		}
		t.Fatalf("probing python3: %v: %s", err, out)
	}

	pw, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	type item struct{ Password, Hash string }
	var items []item
	add := func(s Scheme, p string) {
		h, err := Hash(s, p)
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, item{p, h[strings.IndexByte(h, '}')+1:]})
	}
	add(SHA512Crypt, pw)
	add(SHA512Crypt, "pässwörd: with €uro and spaces")
	add(SHA512Crypt, strings.Repeat("long", 50))
	items = append(items, item{"x", shaCrypt("x", shaCryptSetting{rounds: 1234, custom: true, salt: "abc./XYZ"})})
	// BLF-CRYPT as written by Hash ($2y$), including 8-bit characters.
	add(BLFCrypt, pw)
	add(BLFCrypt, "pässwörd€ÿ")

	in, err := json.Marshal(items)
	if err != nil {
		t.Fatal(err)
	}
	const script = `
import crypt, json, sys
for it in json.load(sys.stdin):
    print(crypt.crypt(it["Password"], it["Hash"]))
`
	cmd := exec.Command(python, "-W", "ignore", "-c", script)
	cmd.Stdin = strings.NewReader(string(in))
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("python3: %v: %s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) != len(items) {
		t.Fatalf("python3 returned %d lines, want %d: %q", len(lines), len(items), out)
	}
	for i, it := range items {
		if lines[i] != it.Hash {
			t.Errorf("password %q:\n  ours   %s\n  crypt3 %s", it.Password, it.Hash, lines[i])
		}
	}
}
