package password

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// plainSchemes are Dovecot schemes that keep the password in clear (or
// trivially reversible): never accepted as a stored hash.
var plainSchemes = map[string]bool{
	"PLAIN": true, "CLEAR": true, "CLEARTEXT": true, "PLAIN-TRUNC": true,
	"PLAIN-MD4": true, "PLAIN-MD5": true, "LDAP-MD5": true, "MD5": true,
}

// IsPlain reports whether the Dovecot scheme name (any case, with or
// without an encoding suffix such as ".b64") stores passwords in clear or
// as an unsalted MD4/MD5 digest that is as good as clear.
func IsPlain(scheme string) bool {
	name, _, _ := strings.Cut(strings.ToUpper(scheme), ".")
	return plainSchemes[name]
}

// Canonical checks a hashed password written by Dovecot (doveadm pw) or
// crypt(3) without computing it, and returns it in the form Verify and
// Dovecot's passwd-file accept: "{SCHEME}body" with the scheme's canonical
// name. It accepts the "{SCHEME}..." forms of the supported schemes, and a
// bare crypt string or one under Dovecot's generic {CRYPT} scheme whose
// prefix names a supported scheme: "$6$" (SHA512-CRYPT), "$2a$", "$2b$",
// "$2y$" (BLF-CRYPT), "$argon2id$" (ARGON2ID).
//
// Errors: ErrUnknownScheme for a scheme that is not supported (or no
// scheme at all), ErrMalformedHash for a body that Verify could not check
// (the same rules and cost limits).
func Canonical(hashed string) (Scheme, string, error) {
	name, body, ok := splitScheme(hashed)
	if !ok || strings.EqualFold(name, "CRYPT") {
		if !ok {
			body = hashed
		}
		switch {
		case strings.HasPrefix(body, shaCryptPrefix):
			name = string(SHA512Crypt)
		case strings.HasPrefix(body, "$2a$"), strings.HasPrefix(body, "$2b$"), strings.HasPrefix(body, "$2y$"):
			name = string(BLFCrypt)
		case strings.HasPrefix(body, "$argon2id$"):
			name = string(Argon2ID)
		case !ok:
			return "", "", fmt.Errorf("%w: no {SCHEME} prefix and not a $6$, $2y$ or $argon2id$ crypt string", ErrUnknownScheme)
		default:
			return "", "", fmt.Errorf("%w: {CRYPT} hash of an unsupported algorithm", ErrUnknownScheme)
		}
	}
	scheme, err := ParseScheme(name)
	if err != nil {
		return "", "", err
	}
	if err := checkBody(scheme, body); err != nil {
		return "", "", err
	}
	return scheme, "{" + string(scheme) + "}" + body, nil
}

// checkBody applies Verify's parsing rules to body, without hashing.
func checkBody(scheme Scheme, body string) error {
	switch scheme {
	case SSHA512:
		raw, err := base64.StdEncoding.Strict().DecodeString(body)
		if err != nil {
			return malformed(SSHA512, "invalid base64")
		}
		if len(raw) <= 64 {
			return malformed(SSHA512, "too short to contain a salt")
		}
	case SHA512Crypt:
		set, want, hasHash, err := parseSHACryptSetting(body)
		switch {
		case err != nil:
			return malformed(SHA512Crypt, `expected "$6$[rounds=N$]salt$hash"`)
		case !hasHash || len(want) != shaCryptHashLen || strings.Trim(want, crypt64) != "":
			return malformed(SHA512Crypt, "hash must be 86 crypt64 characters")
		case set.rounds > shaCryptVerifyMaxRounds:
			return malformed(SHA512Crypt, "rounds exceed the verification limit")
		case set.truncated:
			return malformed(SHA512Crypt, "salt longer than 16 characters")
		}
	case BLFCrypt:
		if len(body) != 60 || body[0] != '$' || body[1] != '2' || body[3] != '$' || body[6] != '$' ||
			strings.IndexByte("aby", body[2]) < 0 {
			return malformed(BLFCrypt, `expected "$2a$", "$2b$" or "$2y$" bcrypt hash`)
		}
		cost, err := strconv.Atoi(body[4:6])
		if err != nil || cost < bcrypt.MinCost || cost > bcryptVerifyMaxCost {
			return malformed(BLFCrypt, "invalid cost (4 to 16)")
		}
		if strings.Trim(body[7:], bcryptAlphabet) != "" {
			return malformed(BLFCrypt, "invalid bcrypt base64")
		}
	default: // Argon2ID
		parts := strings.Split(body, "$")
		if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
			return malformed(Argon2ID, `expected "$argon2id$v=19$m=M,t=T,p=P$salt$hash"`)
		}
		if parts[2] != "v="+strconv.Itoa(argon2Version) {
			return malformed(Argon2ID, "unsupported version (only v=19)")
		}
		m, t, _, ok := parseArgon2Params(parts[3])
		if !ok {
			return malformed(Argon2ID, "invalid m,t,p parameters")
		}
		if m > argon2MaxMemory || t > argon2MaxTime {
			return malformed(Argon2ID, "parameters exceed the verification limit")
		}
		salt, err1 := base64.RawStdEncoding.Strict().DecodeString(parts[4])
		want, err2 := base64.RawStdEncoding.Strict().DecodeString(parts[5])
		if err1 != nil || err2 != nil {
			return malformed(Argon2ID, "invalid unpadded base64")
		}
		if len(salt) < argon2MinSalt || len(want) < argon2MinKey || len(want) > argon2MaxKey {
			return malformed(Argon2ID, "salt or hash length out of range")
		}
	}
	return nil
}

// bcryptAlphabet is bcrypt's base64 alphabet.
const bcryptAlphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
