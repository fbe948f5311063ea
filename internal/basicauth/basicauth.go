// Package basicauth parses and formats HTTP Basic credentials (RFC 7617),
// strictly enough to run on untrusted headers before anything else sees them.
//
// Parse is strict and allocation-light: it bounds the header size, accepts
// only canonical base64, requires valid UTF-8 and rejects control characters.
//
// Parse is strict and allocation-light so it can run on untrusted input
// before anything else looks at it: it bounds the header size, accepts only
// canonical base64, requires valid UTF-8 and rejects control characters.
package basicauth

import (
	"encoding/base64"
	"strings"
	"unicode/utf8"
)

// MaxHeaderLen is the longest Authorization header value Parse accepts, in
// bytes.
const MaxHeaderLen = 1024

const scheme = "Basic"

// maxDecodedLen is the most credential bytes a MaxHeaderLen-byte header in
// canonical form ("Basic " + padded base64, as Format writes) can carry:
// 254 base64 quanta of 3 bytes. Longer credentials are rejected even when
// they arrive in a shorter unpadded header, so that every accepted
// user/password pair can be re-encoded by Format within the limit.
const maxDecodedLen = (MaxHeaderLen - len(scheme) - 1) / 4 * 3

// Parse extracts the user-id and password from an HTTP Authorization header
// value of the form "Basic <base64(user:pass)>".
//
// The rules, all of which must hold for ok to be true:
//   - header is at most MaxHeaderLen bytes, and the credentials decode to at
//     most 762 bytes, the most Format can fit in MaxHeaderLen bytes (this
//     only matters for unpadded input);
//   - the scheme is "Basic", matched ASCII case-insensitively, followed by
//     one or more spaces (0x20; no tabs) and then the credentials with
//     nothing after them (no trailing whitespace);
//   - the credentials are standard base64 (RFC 4648 §4, '+' and '/'),
//     canonical (unused bits zero). Padding '=' is expected as RFC 7617
//     specifies, but unpadded input is accepted as well;
//   - the decoded bytes are valid UTF-8 and contain a ':'; they are split
//     at the first ':', so the user-id cannot contain one but the password
//     may;
//   - the user-id is non-empty; the password may be empty;
//   - neither contains a control character (0x00-0x1F or 0x7F).
//
// On failure Parse returns "", "", false and does not say why, so callers
// cannot leak details to clients. Parse never panics.
func Parse(header string) (user, pass string, ok bool) {
	if len(header) > MaxHeaderLen || len(header) <= len(scheme) {
		return "", "", false
	}
	if !asciiEqualFold(header[:len(scheme)], scheme) || header[len(scheme)] != ' ' {
		return "", "", false
	}
	enc := strings.TrimLeft(header[len(scheme):], " ")
	// Validate the alphabet up front: the base64 decoder silently skips
	// '\r' and '\n', which must not be accepted here.
	for i := 0; i < len(enc); i++ {
		if !isBase64Char(enc[i]) {
			return "", "", false
		}
	}
	codec := base64.StdEncoding.Strict()
	if len(enc)%4 != 0 {
		codec = base64.RawStdEncoding.Strict()
	}
	raw, err := codec.DecodeString(enc)
	if err != nil || len(raw) > maxDecodedLen || !utf8.Valid(raw) {
		return "", "", false
	}
	u, p, found := strings.Cut(string(raw), ":")
	if !found || u == "" || hasControl(u) || hasControl(p) {
		return "", "", false
	}
	return u, p, true
}

// Format returns the Authorization header value "Basic " followed by the
// padded standard base64 of user + ":" + pass. It does not validate its
// arguments; Parse(Format(user, pass)) returns user and pass unchanged
// whenever they satisfy Parse's rules.
func Format(user, pass string) string {
	return scheme + " " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// asciiEqualFold compares ASCII-case-insensitively. strings.EqualFold would
// also apply Unicode folding (e.g. 'ſ' matches 's'), which HTTP does not.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func isBase64Char(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '+' || c == '/' || c == '='
}

// hasControl reports whether s contains a byte in 0x00-0x1F or 0x7F.
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}
