package password

import (
	"crypto/sha512"
	"errors"
	"strconv"
	"strings"
)

// SHA-512 based crypt ("$6$"), following Ulrich Drepper's "Unix crypt using
// SHA-256 and SHA-512" specification.

const (
	shaCryptPrefix        = "$6$"
	shaCryptRoundsPrefix  = "rounds="
	shaCryptDefaultRounds = 5000
	shaCryptMinRounds     = 1000
	shaCryptMaxRounds     = 999999999
	shaCryptMaxSalt       = 16
	shaCryptSaltLen       = 16 // salt length used when generating hashes
	shaCryptHashLen       = 86 // crypt64 characters encoding 64 bytes

	// shaCryptVerifyMaxRounds bounds the work Verify is willing to do for a
	// hash it is handed; the specification allows up to 999999999 rounds,
	// which would take minutes.
	shaCryptVerifyMaxRounds = 10_000_000
)

// crypt64 is the alphabet of the crypt(3) base64 variant.
const crypt64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

var errMalformedSHACrypt = errors.New("password: malformed SHA512-CRYPT hash")

// shaCryptSetting is the parsed "$6$[rounds=N$]salt" part of a hash.
type shaCryptSetting struct {
	rounds int
	custom bool // rounds=N was given and is echoed in the output
	salt   string
	// truncated records that the input salt was longer than 16 bytes.
	truncated bool
}

// parseSHACryptSetting parses "$6$[rounds=N$]salt[$...]". The salt ends at
// the next '$' (or the end of the string) and is truncated to 16 bytes; the
// rounds value is clamped to [1000, 999999999] as the specification
// requires. It returns the setting and whatever follows the salt's
// terminating '$' (the encoded hash, if any) and whether that '$' existed.
func parseSHACryptSetting(s string) (set shaCryptSetting, rest string, hasRest bool, err error) {
	s, ok := strings.CutPrefix(s, shaCryptPrefix)
	if !ok {
		return set, "", false, errMalformedSHACrypt
	}
	set.rounds = shaCryptDefaultRounds
	if r, ok := strings.CutPrefix(s, shaCryptRoundsPrefix); ok {
		digits, after, found := strings.Cut(r, "$")
		if !found || digits == "" || strings.Trim(digits, "0123456789") != "" {
			return set, "", false, errMalformedSHACrypt
		}
		n, err := strconv.ParseUint(digits, 10, 64)
		if err != nil || n > shaCryptMaxRounds {
			// Only possible error left is overflow: clamp like strtoul+min.
			n = shaCryptMaxRounds
		}
		set.rounds = max(int(n), shaCryptMinRounds)
		set.custom = true
		s = after
	}
	salt, rest, hasRest := strings.Cut(s, "$")
	if len(salt) > shaCryptMaxSalt {
		// Truncation drops everything up to the next '$' from the output,
		// exactly as crypt(3) does.
		salt = salt[:shaCryptMaxSalt]
		set.truncated = true
	}
	set.salt = salt
	return set, rest, hasRest, nil
}

// shaCrypt computes the SHA-512 crypt of password with the given setting
// and returns the full "$6$[rounds=N$]salt$hash" string.
func shaCrypt(password string, set shaCryptSetting) string {
	digest := shaCryptDigest([]byte(password), []byte(set.salt), set.rounds)
	var b strings.Builder
	b.Grow(len(shaCryptPrefix) + len(shaCryptRoundsPrefix) + 10 + len(set.salt) + 1 + shaCryptHashLen)
	b.WriteString(shaCryptPrefix)
	if set.custom {
		b.WriteString(shaCryptRoundsPrefix)
		b.WriteString(strconv.Itoa(set.rounds))
		b.WriteByte('$')
	}
	b.WriteString(set.salt)
	b.WriteByte('$')
	b.Write(shaCryptEncode(&digest))
	return b.String()
}

// shaCryptDigest runs the SHA-crypt key derivation and returns the final
// 64-byte digest (steps 1-21 of the specification).
func shaCryptDigest(key, salt []byte, rounds int) [sha512.Size]byte {
	var a, b [sha512.Size]byte
	h := sha512.New()

	// Digest B = H(key || salt || key).
	h.Write(key)
	h.Write(salt)
	h.Write(key)
	h.Sum(b[:0])

	// Digest A = H(key || salt || B repeated to len(key) || one of B/key per
	// bit of len(key), least significant first).
	h.Reset()
	h.Write(key)
	h.Write(salt)
	n := len(key)
	for ; n > sha512.Size; n -= sha512.Size {
		h.Write(b[:])
	}
	h.Write(b[:n])
	for n := len(key); n > 0; n >>= 1 {
		if n&1 != 0 {
			h.Write(b[:])
		} else {
			h.Write(key)
		}
	}
	h.Sum(a[:0])

	// P = H(key repeated len(key) times), stretched/truncated to len(key).
	h.Reset()
	for range len(key) {
		h.Write(key)
	}
	var dp [sha512.Size]byte
	h.Sum(dp[:0])
	p := repeatTo(dp[:], len(key))

	// S = H(salt repeated 16+A[0] times), stretched/truncated to len(salt).
	h.Reset()
	for range 16 + int(a[0]) {
		h.Write(salt)
	}
	var ds [sha512.Size]byte
	h.Sum(ds[:0])
	s := repeatTo(ds[:], len(salt))

	// The rounds loop.
	for i := range rounds {
		h.Reset()
		if i&1 != 0 {
			h.Write(p)
		} else {
			h.Write(a[:])
		}
		if i%3 != 0 {
			h.Write(s)
		}
		if i%7 != 0 {
			h.Write(p)
		}
		if i&1 != 0 {
			h.Write(a[:])
		} else {
			h.Write(p)
		}
		h.Sum(a[:0])
	}
	return a
}

// repeatTo returns a slice of length n filled with repetitions of src.
func repeatTo(src []byte, n int) []byte {
	out := make([]byte, n)
	for i := 0; i < n; i += len(src) {
		copy(out[i:], src)
	}
	return out
}

// shaCryptEncode encodes the final digest with the byte permutation and
// crypt64 alphabet prescribed for SHA-512 crypt: 21 groups of three bytes
// (22i mod 63, 22i+21 mod 63, 22i+42 mod 63), each emitted as 4 characters
// least significant 6 bits first, followed by byte 63 as 2 characters.
func shaCryptEncode(d *[sha512.Size]byte) []byte {
	out := make([]byte, 0, shaCryptHashLen)
	put := func(b2, b1, b0 byte, n int) {
		w := uint32(b2)<<16 | uint32(b1)<<8 | uint32(b0)
		for range n {
			out = append(out, crypt64[w&0x3f])
			w >>= 6
		}
	}
	for i := range 21 {
		j := 22 * i
		put(d[j%63], d[(j+21)%63], d[(j+42)%63], 4)
	}
	put(0, 0, d[63], 2)
	return out
}

// newSHACryptSalt returns a random salt of crypt64 characters.
func newSHACryptSalt() (string, error) {
	var raw [shaCryptSaltLen]byte
	if err := readRandom(raw[:]); err != nil {
		return "", err
	}
	for i, b := range raw {
		raw[i] = crypt64[b&0x3f] // 256 is a multiple of 64: no bias
	}
	return string(raw[:]), nil
}
