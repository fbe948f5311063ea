// The path template: which file holds a login, by domain and shard, as
// Dovecot expands the same template.

package passwdfile

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/smtpcreds/smtpcreds/internal/hostname"
	"github.com/smtpcreds/smtpcreds/internal/syncer"
)

// domainVar is the Dovecot variable of the domain a path template may
// contain.
const domainVar = "%d"

// MaxShardDigits is the largest k of a "%<k>Mu" shard variable: 16^3 files
// per domain at most, so that a whole-state write can visit every name.
const MaxShardDigits = 3

// checkTemplate checks t and returns the largest k of its "%<k>Mu", or 0.
func checkTemplate(t string) (digits int, err error) {
	if t == "" {
		return 0, errors.New("passwdfile: empty path template")
	}
	if strings.ContainsRune(t, 0) {
		return 0, errors.New("passwdfile: path template contains NUL")
	}
	for rest := t; ; {
		i := strings.IndexByte(rest, '%')
		if i < 0 {
			break
		}
		rest = rest[i:]
		switch {
		case strings.HasPrefix(rest, domainVar):
			rest = rest[len(domainVar):]
		case len(rest) >= 4 && rest[1] >= '1' && rest[1] <= '0'+MaxShardDigits && rest[2:4] == "Mu":
			digits = max(digits, int(rest[1]-'0'))
			rest = rest[4:]
		default:
			return 0, fmt.Errorf("passwdfile: path template %q: only the variables %%d and %%1Mu to %%%dMu are supported", t, MaxShardDigits)
		}
	}
	if strings.HasSuffix(t, "/") {
		return 0, fmt.Errorf("passwdfile: path template %q names a directory", t)
	}
	if b := filepath.Base(t); b == "." || b == ".." {
		return 0, fmt.Errorf("passwdfile: path template %q does not name a file", t)
	}
	return digits, nil
}

// PerDomain reports whether the Writer keeps one file per domain (the
// template contains "%d").
func (w *Writer) PerDomain() bool { return w.perDomain }

// Template returns the path template the Writer was made with.
func (w *Writer) Template() string { return w.template }

// Sharded reports whether the template splits logins over shards ("%<k>Mu").
func (w *Writer) Sharded() bool { return w.shardDigits > 0 }

// Shard returns the shard that holds login: the first k hex digits of the
// MD5 of login, as Dovecot expands "%<k>Mu" (k the largest in the
// template), or "" when the template has no shard variable.
func (w *Writer) Shard(login string) string {
	if w.shardDigits == 0 {
		return ""
	}
	// A previous password is in its login's shard: Dovecot expands the
	// path with the login, and only the key with "%u/previous".
	login = strings.TrimSuffix(login, syncer.PreviousSuffix)
	sum := md5.Sum([]byte(login))
	return hex.EncodeToString(sum[:2])[:w.shardDigits]
}

// Shards returns every shard name of the template in order ("" alone when
// it has no shard variable).
func (w *Writer) Shards() []string {
	if w.shardDigits == 0 {
		return []string{""}
	}
	n := 1 << (4 * w.shardDigits)
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("%0*x", w.shardDigits, i)
	}
	return names
}

// Path returns the file that holds the logins of domain in shard: the
// template with every "%d" replaced by domain and every "%<k>Mu" by the
// first k characters of shard. Without "%d", domain is ignored (and may be
// empty); without a shard variable, shard must be "". A domain that is not
// a plain lowercase host name (hostname.ValidASCII: so no '/', "..", or
// empty name), or a shard that is not one of Shards, yields "",
// which no file has; Write and Remove report ErrInvalidDomain or
// ErrInvalidShard for it.
func (w *Writer) Path(domain, shard string) string {
	p, err := w.path(domain, shard)
	if err != nil {
		return ""
	}
	return p
}

func (w *Writer) path(domain, shard string) (string, error) {
	if w.perDomain && !hostname.ValidASCII(domain) {
		return "", fmt.Errorf("%w: %q", ErrInvalidDomain, domain)
	}
	if !w.validShard(shard) {
		return "", fmt.Errorf("%w: %q", ErrInvalidShard, shard)
	}
	if !w.perDomain && w.shardDigits == 0 {
		return w.template, nil
	}
	var b strings.Builder
	for rest := w.template; ; {
		i := strings.IndexByte(rest, '%')
		if i < 0 {
			b.WriteString(rest)
			break
		}
		b.WriteString(rest[:i])
		if rest = rest[i:]; strings.HasPrefix(rest, domainVar) {
			b.WriteString(domain)
			rest = rest[len(domainVar):]
		} else { // "%<k>Mu", as checkTemplate made sure
			b.WriteString(shard[:rest[1]-'0'])
			rest = rest[4:]
		}
	}
	return b.String(), nil
}

func (w *Writer) validShard(s string) bool {
	if len(s) != w.shardDigits {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
