// Package apitoken creates and checks API tokens, in a format that secret
// scanners recognise and that rejects typos without a database lookup.
//
// A token looks like
//
//	smtpk_<24 random base62 chars><6 base62 checksum chars>
//
// for a total of Len (36) characters. The random part carries
// 24*log2(62) ≈ 142.9 bits from crypto/rand. The checksum is the CRC-32
// (IEEE) of the prefix and random part, written in base62, most significant
// digit first, zero-padded to 6 characters. The fixed prefix lets secret
// scanners recognise leaked tokens, and the checksum lets WellFormed reject
// typos and garbage without a database lookup. The checksum is not a MAC:
// anyone can compute it, so it proves nothing about authenticity.
//
// Tokens are stored only as Digest(key, token) and compared with Equal.
package apitoken

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"hash/crc32"
	"io"
)

// Prefix starts every token.
const Prefix = "smtpk_"

// Len is the length in bytes (and characters) of every token.
const Len = len(Prefix) + randomLen + checksumLen

const (
	randomLen   = 24
	checksumLen = 6 // 62^6 > 2^32, so any CRC-32 fits
	alphabet    = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	// Bytes >= 248 (4*62) are rejected so that b%62 is uniform.
	rejectAbove = 4 * len(alphabet)
)

// randReader is the entropy source; tests may replace it.
var randReader io.Reader = rand.Reader

// New returns a fresh, WellFormed token. The only possible error is a
// failure to read from crypto/rand; the returned string is then empty.
func New() (string, error) {
	var tok [Len]byte
	copy(tok[:], Prefix)
	body := tok[len(Prefix) : len(Prefix)+randomLen]

	var buf [randomLen + randomLen/4]byte
	for n := 0; n < randomLen; {
		if _, err := io.ReadFull(randReader, buf[:]); err != nil {
			return "", fmt.Errorf("apitoken: reading random bytes: %w", err)
		}
		for _, b := range buf {
			if int(b) < rejectAbove {
				body[n] = alphabet[int(b)%len(alphabet)]
				n++
				if n == randomLen {
					break
				}
			}
		}
	}
	putChecksum(tok[len(Prefix)+randomLen:], tok[:len(Prefix)+randomLen])
	return string(tok[:]), nil
}

// putChecksum writes the base62 CRC-32 of data into dst (checksumLen bytes).
func putChecksum(dst, data []byte) {
	encodeChecksum(dst, crc32.ChecksumIEEE(data))
}

// encodeChecksum writes c in base62, most significant digit first,
// zero-padded to checksumLen bytes of dst.
func encodeChecksum(dst []byte, c uint32) {
	for i := checksumLen - 1; i >= 0; i-- {
		dst[i] = alphabet[c%uint32(len(alphabet))]
		c /= uint32(len(alphabet))
	}
}

// WellFormed reports whether tok has the shape of a token produced by New:
// exactly Len bytes, the Prefix, base62 characters only, and a matching
// checksum. It says nothing about whether the token was ever issued or is
// still valid. Any single-character substitution of a well-formed token
// makes it not well-formed. WellFormed does not need to run in constant
// time: everything it checks is public.
func WellFormed(tok string) bool {
	if len(tok) != Len || tok[:len(Prefix)] != Prefix {
		return false
	}
	for i := len(Prefix); i < Len; i++ {
		if !isBase62(tok[i]) {
			return false
		}
	}
	var want [checksumLen]byte
	putChecksum(want[:], []byte(tok[:len(Prefix)+randomLen]))
	return string(want[:]) == tok[len(Prefix)+randomLen:]
}

func isBase62(c byte) bool {
	return '0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z'
}

// Digest returns HMAC-SHA256(key, tok), the 32-byte value to store and
// look tokens up by instead of the token itself. key must be a secret
// (server-side pepper) of at least 32 random bytes; Digest does not check
// it, nor whether tok is WellFormed. Different keys give unrelated digests.
func Digest(key []byte, tok string) []byte {
	m := hmac.New(sha256.New, key)
	io.WriteString(m, tok)
	return m.Sum(nil)
}

// Equal reports, in time that depends only on the lengths, whether a and b
// hold the same bytes and are non-empty. Treating two empty inputs as
// unequal keeps a missing stored digest from ever matching.
func Equal(a, b []byte) bool {
	return len(a) > 0 && subtle.ConstantTimeCompare(a, b) == 1
}
