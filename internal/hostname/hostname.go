// Package hostname is the one set of host-name rules (syntax, FQDN, IDNA
// normalisation) that domains, credentials and the sync targets share.
//
// It exists so that those rules cannot drift apart. ValidASCII is the syntax
// every stored name has (and the only one a file path may be built from);
// ValidFQDN adds what a sending domain needs; and Normalize turns user input,
// Unicode or not, into that stored form. The package depends only on the
// standard library and golang.org/x/net/idna.
//
// ValidASCII is the syntax every stored name has (and the only one a file
// path may be built from); ValidFQDN adds what a sending domain needs; and
// Normalize turns user input, Unicode or not, into that stored form. The
// package depends only on the standard library and golang.org/x/net/idna.
package hostname

import (
	"errors"
	"strings"

	"golang.org/x/net/idna"
)

// ErrInvalid is returned by Normalize for a name that is not a fully
// qualified host name.
var ErrInvalid = errors.New("not a fully qualified host name")

// MaxLen is the longest host name in bytes, without a trailing dot.
const MaxLen = 253

// MaxLabelLen is the longest label in bytes.
const MaxLabelLen = 63

var profile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.Transitional(false))

// ValidASCII reports whether s is a plain lowercase ASCII host name: 1 to
// MaxLen bytes of labels separated by single dots, each label 1 to
// MaxLabelLen bytes of a-z, 0-9 and '-', not starting or ending with '-'.
// No trailing dot, no upper case, no '_', so no '/', ".." or empty name
// either. A single label ("localhost") and an all-numeric top label pass:
// see ValidFQDN for the stricter rule.
func ValidASCII(s string) bool {
	if len(s) == 0 || len(s) > MaxLen {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if len(l) == 0 || len(l) > MaxLabelLen || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// ValidFQDN reports whether s is a fully qualified host name in stored form:
// ValidASCII, at least two labels, and a top label that is not all digits
// (so that it cannot be read as an IPv4 address).
func ValidFQDN(s string) bool {
	if !ValidASCII(s) {
		return false
	}
	i := strings.LastIndexByte(s, '.')
	if i < 0 {
		return false
	}
	return strings.Trim(s[i+1:], "0123456789") != ""
}

// Normalize returns the stored form of a domain name: one trailing dot
// dropped, Unicode labels converted to punycode (IDNA 2008 lookup mapping,
// which also lowercases), and the result checked with ValidFQDN. It returns
// ErrInvalid when the name cannot be converted or is not a fully qualified
// host name.
func Normalize(name string) (string, error) {
	ascii, err := profile.ToASCII(strings.TrimSuffix(name, "."))
	if err != nil || !ValidFQDN(ascii) {
		return "", ErrInvalid
	}
	return ascii, nil
}
