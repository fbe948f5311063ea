// Package password generates SMTP passwords and hashes them in the formats
// Dovecot's passwd-file passdb understands, so the SMTP server can check them.
//
// Generated passwords are Length characters drawn uniformly from the base62
// Alphabet using crypto/rand, giving about 190 bits of entropy. Hash produces
// "{SCHEME}..." strings ready to be written into the password field of a
// passwd-file line, and Verify checks a password against such a string.
package password

import (
	"crypto/rand"
	"fmt"
	"io"
	"math"
)

// Length is the number of characters in a password returned by Generate.
const Length = 32

// Alphabet is the set of characters generated passwords are drawn from:
// the 62 ASCII digits and letters, in base62 digit order.
const Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// rejectAbove is the smallest byte value that is discarded when sampling:
// 248 = 4*62 is the largest multiple of len(Alphabet) not above 256, so
// accepting only bytes below it makes b%62 uniform.
const rejectAbove = 4 * len(Alphabet)

// randReader is the entropy source; tests may replace it.
var randReader io.Reader = rand.Reader

// Generate returns a new random password of Length characters from Alphabet.
//
// Characters are chosen by rejection sampling of bytes from crypto/rand, so
// every character of Alphabet is equally likely at every position. The only
// possible error is a failure to read from the random source; the returned
// string is then empty.
func Generate() (string, error) {
	var out [Length]byte
	if err := fill(randReader, out[:]); err != nil {
		return "", err
	}
	return string(out[:]), nil
}

// fill writes uniformly chosen Alphabet characters into dst, reading random
// bytes from r in batches and discarding bytes >= rejectAbove.
func fill(r io.Reader, dst []byte) error {
	// 8 spare bytes per 32 wanted: with a 31/32 acceptance rate a second
	// read is needed only rarely.
	var buf [Length + Length/4]byte
	n := 0
	for n < len(dst) {
		if _, err := io.ReadFull(r, buf[:]); err != nil {
			return fmt.Errorf("password: reading random bytes: %w", err)
		}
		for _, b := range buf {
			if int(b) >= rejectAbove {
				continue
			}
			dst[n] = Alphabet[int(b)%len(Alphabet)]
			n++
			if n == len(dst) {
				break
			}
		}
	}
	return nil
}

// StrengthInfo describes the passwords produced by Generate. It is meant to
// be returned as-is by the API, hence the JSON tags.
type StrengthInfo struct {
	// Length is the number of characters in a generated password.
	Length int `json:"length"`
	// Alphabet names the character set, e.g. "base62".
	Alphabet string `json:"alphabet"`
	// AlphabetSize is the number of distinct characters in the set.
	AlphabetSize int `json:"alphabet_size"`
	// EntropyBits is Length*log2(AlphabetSize), rounded to one decimal.
	EntropyBits float64 `json:"entropy_bits"`
	// Strength is a human-readable rating such as "very strong".
	Strength string `json:"strength"`
}

// Strength describes the passwords produced by Generate: 32 base62
// characters, 190.5 bits of entropy, rated "very strong".
func Strength() StrengthInfo {
	bits := float64(Length) * math.Log2(float64(len(Alphabet)))
	return StrengthInfo{
		Length:       Length,
		Alphabet:     "base62",
		AlphabetSize: len(Alphabet),
		EntropyBits:  math.Round(bits*10) / 10,
		Strength:     rating(bits),
	}
}

// rating maps an entropy estimate to a coarse human-readable label.
func rating(bits float64) string {
	switch {
	case bits >= 128:
		return "very strong"
	case bits >= 80:
		return "strong"
	case bits >= 60:
		return "moderate"
	default:
		return "weak"
	}
}
