package password

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

func TestGenerateLengthAndAlphabet(t *testing.T) {
	for range 1000 {
		pw, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		if len(pw) != Length {
			t.Fatalf("len(%q) = %d, want %d", pw, len(pw), Length)
		}
		if strings.Trim(pw, Alphabet) != "" {
			t.Fatalf("%q contains characters outside Alphabet", pw)
		}
	}
}

func TestGenerateUnique(t *testing.T) {
	const n = 20000
	seen := make(map[string]bool, n)
	for range n {
		pw, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		if seen[pw] {
			t.Fatalf("duplicate password %q", pw)
		}
		seen[pw] = true
	}
}

// TestFillRejectsBiasedBytes feeds every byte value equally often and
// checks that, after rejection, every symbol comes out exactly equally
// often. Plain b%62 would give symbols 0-7 five times and the rest four.
func TestFillRejectsBiasedBytes(t *testing.T) {
	var all []byte
	for range 8 {
		for b := range 256 {
			all = append(all, byte(b))
		}
	}
	// 8*248 accepted bytes = 62 full passwords worth of symbols.
	const want = 8 * 248
	dst := make([]byte, want)
	if err := fill(bytes.NewReader(all), dst); err != nil {
		t.Fatal(err)
	}
	counts := map[byte]int{}
	for _, c := range dst {
		counts[c]++
	}
	if len(counts) != len(Alphabet) {
		t.Fatalf("got %d distinct symbols, want %d", len(counts), len(Alphabet))
	}
	for c, n := range counts {
		if n != want/len(Alphabet) {
			t.Errorf("symbol %q: %d occurrences, want %d", c, n, want/len(Alphabet))
		}
	}
}

func TestFillReadError(t *testing.T) {
	dst := make([]byte, Length)
	// Only rejected bytes, then EOF: must report an error, not loop or
	// return a short password.
	err := fill(bytes.NewReader(bytes.Repeat([]byte{255}, 100)), dst)
	if err == nil {
		t.Fatal("fill succeeded on an exhausted reader")
	}
}

// TestGenerateDistribution is a chi-square test on symbol frequencies, both
// overall and per position. Modulo bias (b%62 without rejection) makes 8
// symbols 25% more likely, which pushes the statistics far past the bounds;
// a correct generator exceeds them with probability far below 1e-9.
func TestGenerateDistribution(t *testing.T) {
	const samples = 20000
	k := len(Alphabet)
	index := [256]int{}
	for i := range index {
		index[i] = -1
	}
	for i := range k {
		index[Alphabet[i]] = i
	}
	perPos := make([][]int, Length)
	for i := range perPos {
		perPos[i] = make([]int, k)
	}
	total := make([]int, k)
	for range samples {
		pw, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		for pos := range len(pw) {
			s := index[pw[pos]]
			perPos[pos][s]++
			total[s]++
		}
	}
	chi2 := func(counts []int, n int) float64 {
		exp := float64(n) / float64(k)
		var x float64
		for _, c := range counts {
			d := float64(c) - exp
			x += d * d / exp
		}
		return x
	}
	df := float64(k - 1)

	// Overall: 640,000 symbols, df=61. Biased generator: ~4000.
	overall := chi2(total, samples*Length)
	if bound := df + 10*math.Sqrt(2*df); overall > bound {
		t.Errorf("overall chi-square %.1f > %.1f (df=%v): symbols not uniform", overall, bound, df)
	}
	// Per position, summed: df=32*61=1952. Biased generator: ~6000.
	var sum float64
	for pos := range Length {
		sum += chi2(perPos[pos], samples)
	}
	dfAll := df * Length
	if bound := dfAll + 10*math.Sqrt(2*dfAll); sum > bound {
		t.Errorf("per-position chi-square sum %.1f > %.1f (df=%v): positions not uniform", sum, bound, dfAll)
	}
	t.Logf("chi-square overall %.1f (df %v), per-position sum %.1f (df %v)", overall, df, sum, dfAll)
}

func TestStrength(t *testing.T) {
	got := Strength()
	want := StrengthInfo{Length: 32, Alphabet: "base62", AlphabetSize: 62, EntropyBits: 190.5, Strength: "very strong"}
	if got != want {
		t.Fatalf("Strength() = %+v, want %+v", got, want)
	}
	js, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	const wantJSON = `{"length":32,"alphabet":"base62","alphabet_size":62,"entropy_bits":190.5,"strength":"very strong"}`
	if string(js) != wantJSON {
		t.Fatalf("JSON = %s, want %s", js, wantJSON)
	}
}

func TestParseScheme(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Scheme
	}{
		{"SSHA512", SSHA512}, {"ssha512", SSHA512},
		{"SHA512-CRYPT", SHA512Crypt}, {"sha512-crypt", SHA512Crypt},
		{"blf-crypt", BLFCrypt}, {"Argon2id", Argon2ID},
	} {
		got, err := ParseScheme(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseScheme(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "MD5", "SHA512", "sha512crypt", " SSHA512", "ARGON2I"} {
		_, err := ParseScheme(in)
		if !errors.Is(err, ErrUnknownScheme) {
			t.Errorf("ParseScheme(%q) error = %v, want ErrUnknownScheme", in, err)
			continue
		}
		for _, name := range []string{"SSHA512", "SHA512-CRYPT", "BLF-CRYPT", "ARGON2ID"} {
			if !strings.Contains(err.Error(), name) {
				t.Errorf("ParseScheme(%q) error %q does not list %s", in, err, name)
			}
		}
	}
}

func TestHashVerifyRoundTrip(t *testing.T) {
	pw, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	prefixes := map[Scheme]string{
		SSHA512:     "{SSHA512}",
		SHA512Crypt: "{SHA512-CRYPT}$6$",
		BLFCrypt:    "{BLF-CRYPT}$2y$10$",
		Argon2ID:    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$",
	}
	for _, s := range schemes {
		t.Run(string(s), func(t *testing.T) {
			t.Parallel()
			// 72 bytes is the BLF-CRYPT maximum.
			for _, p := range []string{pw, "", "pässwörd:with colon", strings.Repeat("x", 72)} {
				h, err := Hash(s, p)
				if err != nil {
					t.Fatalf("Hash(%q): %v", p, err)
				}
				if !strings.HasPrefix(h, prefixes[s]) {
					t.Fatalf("Hash = %q, want prefix %q", h, prefixes[s])
				}
				if strings.ContainsAny(h, ": \t\n") {
					t.Fatalf("Hash = %q contains passwd-file separators/whitespace", h)
				}
				ok, err := Verify(h, p)
				if err != nil || !ok {
					t.Fatalf("Verify(Hash(%q)) = %v, %v; want true", p, ok, err)
				}
				// Prepend rather than append: bcrypt ignores bytes after 72.
				ok, err = Verify(h, "!"+p)
				if err != nil || ok {
					t.Fatalf("Verify with wrong password = %v, %v; want false, nil", ok, err)
				}
			}
			h, err := Hash(s, pw)
			if err != nil {
				t.Fatal(err)
			}
			if h2, _ := Hash(s, pw); h2 == h {
				t.Fatalf("two hashes of the same password are identical (salt not random): %q", h)
			}
			// Scheme prefix is case-insensitive, as in Dovecot.
			lower := "{" + strings.ToLower(string(s)) + h[len(s)+1:]
			if ok, err := Verify(lower, pw); !ok || err != nil {
				t.Fatalf("Verify(%q) = %v, %v", lower, ok, err)
			}
		})
	}
}

func TestHashErrors(t *testing.T) {
	if _, err := Hash("MD5-CRYPT", "x"); !errors.Is(err, ErrUnknownScheme) {
		t.Errorf("unknown scheme: err = %v", err)
	}
	if h, err := Hash("sha512-crypt", "x"); err != nil || !strings.HasPrefix(h, "{SHA512-CRYPT}$6$") {
		t.Errorf("lower-case scheme: Hash = %q, %v", h, err)
	}
	if _, err := Hash("", "x"); !errors.Is(err, ErrUnknownScheme) {
		t.Errorf("empty scheme: err = %v", err)
	}
	for _, s := range schemes {
		if _, err := Hash(s, "a\x00b"); !errors.Is(err, ErrInvalidPassword) {
			t.Errorf("%s with NUL: err = %v", s, err)
		}
	}
	if _, err := Hash(BLFCrypt, strings.Repeat("x", 73)); !errors.Is(err, ErrInvalidPassword) {
		t.Errorf("BLF-CRYPT 73 bytes: err = %v", err)
	}
	// The other schemes have no length limit.
	if _, err := Hash(SHA512Crypt, strings.Repeat("x", 200)); err != nil {
		t.Errorf("SHA512-CRYPT 200 bytes: %v", err)
	}
}

func TestSSHA512Format(t *testing.T) {
	h, err := Hash(SSHA512, "secret")
	if err != nil {
		t.Fatal(err)
	}
	b64, ok := strings.CutPrefix(h, "{SSHA512}")
	if !ok {
		t.Fatalf("missing prefix: %q", h)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != 64+16 {
		t.Fatalf("decoded length %d, want 80 (64-byte digest + 16-byte salt)", len(raw))
	}
	sum := ssha512("secret", raw[64:])
	if !bytes.Equal(sum[:], raw[:64]) {
		t.Fatal("digest is not SHA512(password || salt)")
	}
}

// TestSSHA512Known checks a hash built by hand from the definition, with a
// 4-byte salt (Dovecot accepts any salt length).
func TestSSHA512Known(t *testing.T) {
	salt := []byte("salt")
	sum := ssha512("password", salt)
	h := "{SSHA512}" + base64.StdEncoding.EncodeToString(append(sum[:], salt...))
	if ok, err := Verify(h, "password"); !ok || err != nil {
		t.Fatalf("Verify = %v, %v", ok, err)
	}
}

func TestVerifyErrors(t *testing.T) {
	for _, tc := range []struct {
		hashed string
		want   error
	}{
		{"", ErrUnknownScheme},
		{"$6$salt$hash", ErrUnknownScheme},
		{"{SSHA512", ErrUnknownScheme},
		{"{MD5}abc", ErrUnknownScheme},
		{"{PLAIN}secret", ErrUnknownScheme},
		{"{SSHA512}!!!", ErrMalformedHash},
		{"{SSHA512}" + base64.StdEncoding.EncodeToString(make([]byte, 64)), ErrMalformedHash},
		{"{SHA512-CRYPT}", ErrMalformedHash},
		{"{SHA512-CRYPT}$5$salt$" + strings.Repeat("a", 43), ErrMalformedHash},
		{"{SHA512-CRYPT}$6$salt", ErrMalformedHash},
		{"{SHA512-CRYPT}$6$salt$short", ErrMalformedHash},
		{"{SHA512-CRYPT}$6$salt$" + strings.Repeat("!", 86), ErrMalformedHash},
		{"{SHA512-CRYPT}$6$rounds=x$salt$" + strings.Repeat("a", 86), ErrMalformedHash},
		{"{SHA512-CRYPT}$6$rounds=$salt$" + strings.Repeat("a", 86), ErrMalformedHash},
		{"{SHA512-CRYPT}$6$rounds=99999999$salt$" + strings.Repeat("a", 86), ErrMalformedHash},
		{"{SHA512-CRYPT}$6$seventeencharsalt$" + strings.Repeat("a", 86), ErrMalformedHash},
		{"{BLF-CRYPT}$2x$10$" + strings.Repeat("a", 53), ErrMalformedHash},
		{"{BLF-CRYPT}$2y$10$short", ErrMalformedHash},
		{"{BLF-CRYPT}$2y$99$" + strings.Repeat("a", 53), ErrMalformedHash},
		{"{BLF-CRYPT}$2y$20$" + strings.Repeat("a", 53), ErrMalformedHash},
		{"{ARGON2ID}$argon2i$v=19$m=65536,t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", ErrMalformedHash},
		{"{ARGON2ID}$argon2id$v=16$m=65536,t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", ErrMalformedHash},
		{"{ARGON2ID}$argon2id$v=19$t=3,m=65536,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", ErrMalformedHash},
		{"{ARGON2ID}$argon2id$v=19$m=65536,t=0,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", ErrMalformedHash},
		{"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=0$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", ErrMalformedHash},
		{"{ARGON2ID}$argon2id$v=19$m=9999999,t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", ErrMalformedHash},
		{"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA", ErrMalformedHash},
		{"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA", ErrMalformedHash},
		{"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdHNhbHQ", ErrMalformedHash},
	} {
		ok, err := Verify(tc.hashed, "password")
		if ok || !errors.Is(err, tc.want) {
			t.Errorf("Verify(%q) = %v, %v; want false, %v", tc.hashed, ok, err, tc.want)
		}
	}
}

// TestVerifyForeignFormats checks hash variants Hash does not emit but
// Dovecot and other tools do.
func TestVerifyForeignFormats(t *testing.T) {
	const pw = "correct horse"
	check := func(name, hashed string) {
		t.Helper()
		if ok, err := Verify(hashed, pw); !ok || err != nil {
			t.Errorf("%s: Verify(%q) = %v, %v; want true", name, hashed, ok, err)
		}
		if ok, err := Verify(hashed, pw+"!"); ok || err != nil {
			t.Errorf("%s: Verify(%q, wrong) = %v, %v; want false, nil", name, hashed, ok, err)
		}
	}

	// bcrypt "$2a$" (x/crypto, most libraries) and "$2b$" (OpenBSD,
	// libxcrypt), low cost.
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	check("bcrypt $2a$", "{BLF-CRYPT}"+string(h))
	h[2] = 'b'
	check("bcrypt $2b$", "{BLF-CRYPT}"+string(h))

	// Argon2id with other parameters and lengths.
	salt := []byte("0123456789abcdef0123")
	key := argon2.IDKey([]byte(pw), salt, 2, 1024, 2, 24)
	check("argon2id m=1024,t=2,p=2", fmt.Sprintf("{ARGON2ID}$argon2id$v=19$m=1024,t=2,p=2$%s$%s",
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)))

	// SHA512-CRYPT with explicit rounds and a short salt.
	check("sha512-crypt rounds=1000", "{SHA512-CRYPT}"+shaCrypt(pw, shaCryptSetting{rounds: 1000, custom: true, salt: "ab"}))
	check("sha512-crypt empty salt", "{SHA512-CRYPT}"+shaCrypt(pw, shaCryptSetting{rounds: 5000}))
}
