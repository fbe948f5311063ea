package password

import (
	"errors"
	"strings"
	"testing"
)

func TestCanonical(t *testing.T) {
	sha, _ := Hash(SHA512Crypt, "pw")
	blf, _ := Hash(BLFCrypt, "pw")
	argon, _ := Hash(Argon2ID, "pw")
	ssha, _ := Hash(SSHA512, "pw")
	shaBody := strings.TrimPrefix(sha, "{SHA512-CRYPT}")
	blfBody := strings.TrimPrefix(blf, "{BLF-CRYPT}")
	argonBody := strings.TrimPrefix(argon, "{ARGON2ID}")
	good := map[string]string{
		sha: sha, blf: blf, argon: argon, ssha: ssha,
		"{sha512-crypt}" + shaBody: sha, // scheme in any case
		shaBody:                    sha, // bare crypt strings
		blfBody:                    blf,
		argonBody:                  argon,
		"{CRYPT}" + shaBody:        sha,
		"{crypt}" + strings.Replace(blfBody, "$2y$", "$2a$", 1): "{BLF-CRYPT}" + strings.Replace(blfBody, "$2y$", "$2a$", 1),
	}
	for in, want := range good {
		_, got, err := Canonical(in)
		if err != nil || got != want {
			t.Errorf("Canonical(%q) = %q, %v; want %q", in, got, err, want)
			continue
		}
		if ok, err := Verify(got, "pw"); !ok || err != nil {
			t.Errorf("Verify(Canonical(%q)) = %v, %v", in, ok, err)
		}
	}
	unknown := []string{"{PLAIN}pw", "{CRAM-MD5}abc", "{CRYPT}$1$salt$hash", "pw", "$5$salt$hash", ""}
	for _, in := range unknown {
		if _, _, err := Canonical(in); !errors.Is(err, ErrUnknownScheme) {
			t.Errorf("Canonical(%q): %v, want ErrUnknownScheme", in, err)
		}
	}
	malformedIn := []string{"{SSHA512}not base64!", "{SSHA512}YWJj", "$6$salt$short", "{BLF-CRYPT}$2y$99$" + blfBody[7:],
		"{BLF-CRYPT}$2y$10$" + strings.Repeat("!", 53), "$argon2id$v=16$m=65536,t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"}
	for _, in := range malformedIn {
		if _, _, err := Canonical(in); !errors.Is(err, ErrMalformedHash) {
			t.Errorf("Canonical(%q): %v, want ErrMalformedHash", in, err)
		}
	}
	for _, s := range []string{"PLAIN", "clear", "PLAIN-MD5", "plain.b64", "CLEARTEXT"} {
		if !IsPlain(s) {
			t.Errorf("IsPlain(%q) = false", s)
		}
	}
	if IsPlain("SHA512-CRYPT") || IsPlain("SSHA512") {
		t.Error("IsPlain of a salted scheme")
	}
}
