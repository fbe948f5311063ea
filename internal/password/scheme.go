package password

import (
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Scheme is a Dovecot password scheme name, as written between braces at
// the start of a hashed password ("{SHA512-CRYPT}$6$...").
type Scheme string

// The password schemes supported by Hash and Verify.
const (
	// SSHA512 is salted SHA-512: base64(SHA512(password || salt) || salt),
	// with a 16-byte random salt.
	SSHA512 Scheme = "SSHA512"
	// SHA512Crypt is the glibc/Drepper SHA-512 crypt ("$6$"), 5000 rounds,
	// 16-character salt.
	SHA512Crypt Scheme = "SHA512-CRYPT"
	// BLFCrypt is bcrypt ("$2y$") with cost 10.
	BLFCrypt Scheme = "BLF-CRYPT"
	// Argon2ID is Argon2id v19 in PHC string format with m=65536 KiB, t=3,
	// p=1, a 16-byte salt and a 32-byte key. Each Hash or Verify call
	// allocates 64 MiB.
	Argon2ID Scheme = "ARGON2ID"
)

// schemes lists every supported scheme, in the order error messages show.
var schemes = []Scheme{SSHA512, SHA512Crypt, BLFCrypt, Argon2ID}

// Errors returned (wrapped) by ParseScheme, Hash and Verify. Test for them
// with errors.Is.
var (
	// ErrUnknownScheme reports a scheme name that is not one of the
	// supported Scheme constants, or a hashed password without a
	// "{SCHEME}" prefix.
	ErrUnknownScheme = errors.New("password: unknown scheme")
	// ErrMalformedHash reports a hashed password with a known scheme whose
	// body cannot be parsed: bad encoding, wrong lengths, bad or
	// out-of-range parameters.
	ErrMalformedHash = errors.New("password: malformed hash")
	// ErrInvalidPassword reports a password that cannot be hashed: it
	// contains a NUL byte (Dovecot and crypt(3) see C strings, so such a
	// password could never be verified), or it is longer than 72 bytes for
	// BLF-CRYPT (bcrypt ignores everything after byte 72).
	ErrInvalidPassword = errors.New("password: invalid password")
)

// Parameters of the generated hashes.
const (
	ssha512SaltLen = 16

	bcryptCost = 10
	// bcryptVerifyMaxCost bounds the work Verify does for a foreign hash.
	bcryptVerifyMaxCost = 16

	argon2Version = argon2.Version // 0x13 = 19
	argon2Memory  = 64 * 1024      // KiB
	argon2Time    = 3
	argon2Threads = 1
	argon2SaltLen = 16
	argon2KeyLen  = 32

	// Bounds Verify accepts for foreign ARGON2ID hashes.
	argon2MaxMemory = 1024 * 1024 // KiB = 1 GiB
	argon2MaxTime   = 100
	argon2MinSalt   = 8
	argon2MinKey    = 16
	argon2MaxKey    = 128
)

// ParseScheme returns the Scheme named by s, compared case-insensitively
// ("sha512-crypt" yields SHA512Crypt). Any other input yields an error
// wrapping ErrUnknownScheme that lists the valid names.
func ParseScheme(s string) (Scheme, error) {
	for _, sc := range schemes {
		if strings.EqualFold(s, string(sc)) {
			return sc, nil
		}
	}
	names := make([]string, len(schemes))
	for i, sc := range schemes {
		names[i] = string(sc)
	}
	return "", fmt.Errorf("%w %q: valid schemes are %s", ErrUnknownScheme, s, strings.Join(names, ", "))
}

// Hash hashes password with scheme s (matched case-insensitively, like
// ParseScheme) using a fresh random salt and returns
// the result exactly as Dovecot's passwd-file expects it in the password
// field, prefixed with "{SCHEME}":
//
//	{SSHA512}<base64(SHA512(password||salt)||salt)>
//	{SHA512-CRYPT}$6$<16-char salt>$<86-char hash>
//	{BLF-CRYPT}$2y$10$<22-char salt><31-char hash>
//	{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$<salt>$<hash>
//
// The result never contains ':' or whitespace. BLF-CRYPT hashes carry the
// "$2y$" prefix that doveadm pw writes. golang.org/x/crypto/bcrypt emits
// "$2a$" for the identical computation and only the prefix is rewritten.
// Dovecot accepts either; "$2y$" is preferred because crypt_blowfish-based
// implementations (Dovecot's, libxcrypt) apply a compatibility tweak to
// "$2a$" for certain passwords with bytes >= 0x80, while "$2y$" always means
// the plain algorithm x/crypto implements. (A test cross-checks "$2y$"
// hashes of non-ASCII passwords against the system crypt(3) when available.)
//
// Errors: ErrUnknownScheme if s is not a supported scheme,
// ErrInvalidPassword for a password that Dovecot could never match (see
// ErrInvalidPassword), or a wrapped error if the random source fails.
// The empty password is accepted.
func Hash(s Scheme, password string) (string, error) {
	s, err := ParseScheme(string(s))
	if err != nil {
		return "", err
	}
	if strings.IndexByte(password, 0) >= 0 {
		return "", fmt.Errorf("%w: contains a NUL byte", ErrInvalidPassword)
	}
	switch s {
	case SSHA512:
		return hashSSHA512(password)
	case SHA512Crypt:
		salt, err := newSHACryptSalt()
		if err != nil {
			return "", err
		}
		set := shaCryptSetting{rounds: shaCryptDefaultRounds, salt: salt}
		return "{" + string(SHA512Crypt) + "}" + shaCrypt(password, set), nil
	case BLFCrypt:
		if len(password) > 72 {
			return "", fmt.Errorf("%w: BLF-CRYPT passwords are limited to 72 bytes", ErrInvalidPassword)
		}
		h, err := bcrypt.GenerateFromPassword([]byte(password), bcryptCost)
		if err != nil {
			return "", fmt.Errorf("password: bcrypt: %w", err)
		}
		// "$2a$" -> "$2y$": same algorithm in x/crypto, see doc comment.
		h[2] = 'y'
		return "{" + string(BLFCrypt) + "}" + string(h), nil
	default: // Argon2ID
		var salt [argon2SaltLen]byte
		if err := readRandom(salt[:]); err != nil {
			return "", err
		}
		key := argon2.IDKey([]byte(password), salt[:], argon2Time, argon2Memory, argon2Threads, argon2KeyLen)
		return fmt.Sprintf("{%s}$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", Argon2ID, argon2Version,
			argon2Memory, argon2Time, argon2Threads,
			base64.RawStdEncoding.EncodeToString(salt[:]),
			base64.RawStdEncoding.EncodeToString(key)), nil
	}
}

func hashSSHA512(password string) (string, error) {
	buf := make([]byte, sha512.Size+ssha512SaltLen)
	salt := buf[sha512.Size:]
	if err := readRandom(salt); err != nil {
		return "", err
	}
	sum := ssha512(password, salt)
	copy(buf, sum[:])
	return "{" + string(SSHA512) + "}" + base64.StdEncoding.EncodeToString(buf), nil
}

func ssha512(password string, salt []byte) [sha512.Size]byte {
	h := sha512.New()
	io.WriteString(h, password)
	h.Write(salt)
	var sum [sha512.Size]byte
	h.Sum(sum[:0])
	return sum
}

// Verify reports whether password matches hashed, a "{SCHEME}..." string in
// any of the formats Hash produces. It also accepts what Dovecot/crypt(3)
// produce for these schemes: SHA512-CRYPT with "rounds=N$" and salts of up
// to 16 characters, BLF-CRYPT with "$2a$", "$2b$" or "$2y$" and costs up to 16,
// SSHA512 with any salt length, and ARGON2ID with other m, t, p and
// salt/key lengths. The scheme name is matched case-insensitively. The
// final comparison is constant-time.
//
// A mismatching password yields (false, nil). An error (and false) is
// returned only when hashed cannot be checked: ErrUnknownScheme for an
// unsupported or missing scheme, ErrMalformedHash for a hash that does not
// parse or whose cost parameters exceed the limits Verify enforces to bound
// its own CPU and memory use (SHA512-CRYPT rounds > 10,000,000, bcrypt cost
// > 16, Argon2 memory > 1 GiB or t > 100).
func Verify(hashed, password string) (bool, error) {
	name, body, ok := splitScheme(hashed)
	if !ok {
		return false, fmt.Errorf("%w: missing {SCHEME} prefix", ErrUnknownScheme)
	}
	scheme, err := ParseScheme(name)
	if err != nil {
		return false, err
	}
	switch scheme {
	case SSHA512:
		return verifySSHA512(body, password)
	case SHA512Crypt:
		return verifySHA512Crypt(body, password)
	case BLFCrypt:
		return verifyBcrypt(body, password)
	default: // Argon2ID; ParseScheme returns nothing else
		return verifyArgon2ID(body, password)
	}
}

// splitScheme splits "{NAME}body".
func splitScheme(hashed string) (name, body string, ok bool) {
	rest, ok := strings.CutPrefix(hashed, "{")
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, "}")
}

func malformed(scheme Scheme, why string) error {
	return fmt.Errorf("%w: %s: %s", ErrMalformedHash, scheme, why)
}

func verifySSHA512(body, password string) (bool, error) {
	raw, err := base64.StdEncoding.Strict().DecodeString(body)
	if err != nil {
		return false, malformed(SSHA512, "invalid base64")
	}
	if len(raw) <= sha512.Size {
		return false, malformed(SSHA512, "too short to contain a salt")
	}
	sum := ssha512(password, raw[sha512.Size:])
	return subtle.ConstantTimeCompare(sum[:], raw[:sha512.Size]) == 1, nil
}

func verifySHA512Crypt(body, password string) (bool, error) {
	set, want, hasHash, err := parseSHACryptSetting(body)
	if err != nil {
		return false, malformed(SHA512Crypt, `expected "$6$[rounds=N$]salt$hash"`)
	}
	if !hasHash || len(want) != shaCryptHashLen || strings.Trim(want, crypt64) != "" {
		return false, malformed(SHA512Crypt, "hash must be 86 crypt64 characters")
	}
	if set.rounds > shaCryptVerifyMaxRounds {
		return false, malformed(SHA512Crypt, "rounds exceed the verification limit")
	}
	// crypt(3) truncates long salts when hashing, so a valid hash never
	// contains more than 16 salt characters.
	if set.truncated {
		return false, malformed(SHA512Crypt, "salt longer than 16 characters")
	}
	d := shaCryptDigest([]byte(password), []byte(set.salt), set.rounds)
	got := shaCryptEncode(&d)
	return subtle.ConstantTimeCompare(got, []byte(want)) == 1, nil
}

func verifyBcrypt(body, password string) (bool, error) {
	// $2?$cc$ + 22 salt + 31 hash
	if len(body) != 60 || body[0] != '$' || body[1] != '2' || body[3] != '$' || body[6] != '$' ||
		strings.IndexByte("aby", body[2]) < 0 {
		return false, malformed(BLFCrypt, `expected "$2a$", "$2b$" or "$2y$" bcrypt hash`)
	}
	cost, err := strconv.Atoi(body[4:6])
	if err != nil || cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
		return false, malformed(BLFCrypt, "invalid cost")
	}
	if cost > bcryptVerifyMaxCost {
		return false, malformed(BLFCrypt, "cost exceeds the verification limit")
	}
	err = bcrypt.CompareHashAndPassword([]byte(body), []byte(password))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, bcrypt.ErrMismatchedHashAndPassword):
		return false, nil
	default:
		return false, malformed(BLFCrypt, err.Error())
	}
}

func verifyArgon2ID(body, password string) (bool, error) {
	// "$argon2id$v=19$m=65536,t=3,p=1$salt$hash"
	parts := strings.Split(body, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return false, malformed(Argon2ID, `expected "$argon2id$v=19$m=M,t=T,p=P$salt$hash"`)
	}
	if parts[2] != "v="+strconv.Itoa(argon2Version) {
		return false, malformed(Argon2ID, "unsupported version (only v=19)")
	}
	m, t, p, ok := parseArgon2Params(parts[3])
	if !ok {
		return false, malformed(Argon2ID, "invalid m,t,p parameters")
	}
	if m > argon2MaxMemory || t > argon2MaxTime {
		return false, malformed(Argon2ID, "parameters exceed the verification limit")
	}
	salt, err1 := base64.RawStdEncoding.Strict().DecodeString(parts[4])
	want, err2 := base64.RawStdEncoding.Strict().DecodeString(parts[5])
	if err1 != nil || err2 != nil {
		return false, malformed(Argon2ID, "invalid unpadded base64")
	}
	if len(salt) < argon2MinSalt || len(want) < argon2MinKey || len(want) > argon2MaxKey {
		return false, malformed(Argon2ID, "salt or hash length out of range")
	}
	got := argon2.IDKey([]byte(password), salt, t, m, uint8(p), uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// parseArgon2Params parses "m=M,t=T,p=P" (in that order, decimal, no
// leading '+'), requiring t >= 1, 1 <= p <= 255 and m >= 8*p.
func parseArgon2Params(s string) (m, t, p uint32, ok bool) {
	fields := strings.Split(s, ",")
	if len(fields) != 3 {
		return 0, 0, 0, false
	}
	var vals [3]uint32
	for i, key := range []string{"m=", "t=", "p="} {
		v, found := strings.CutPrefix(fields[i], key)
		if !found || v == "" || strings.Trim(v, "0123456789") != "" {
			return 0, 0, 0, false
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return 0, 0, 0, false
		}
		vals[i] = uint32(n)
	}
	m, t, p = vals[0], vals[1], vals[2]
	if t < 1 || p < 1 || p > 255 || m < 8*p {
		return 0, 0, 0, false
	}
	return m, t, p, true
}

// readRandom fills b from the package's random source.
func readRandom(b []byte) error {
	if _, err := io.ReadFull(randReader, b); err != nil {
		return fmt.Errorf("password: reading random bytes: %w", err)
	}
	return nil
}
