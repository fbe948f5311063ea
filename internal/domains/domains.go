// Package domains holds sending domains: how names are normalised and
// checked, and who may attach them. A domain belongs to at most one account.
package domains

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"
	"golang.org/x/net/idna"

	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/validation"
)

var (
	// ErrAccountNotFound: no account has the given name.
	ErrAccountNotFound = errors.New("account not found")
)

const nameRule = "The domain must be a fully qualified domain name such as example.com."

var profile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.Transitional(false))

// Normalize returns the ASCII (punycode), lowercase form of a domain name
// without a trailing dot, or a *validation.Error on field "domain" when the
// name is not a fully qualified host name: at most 253 characters, labels of
// 1-63 letters, digits and inner hyphens, at least two labels, not all-numeric
// at the top.
func Normalize(name string) (string, error) {
	name = strings.TrimSuffix(name, ".")
	ascii, err := profile.ToASCII(name)
	if err != nil || !validHostname(ascii) {
		return "", validation.New("domain", nameRule)
	}
	return ascii, nil
}

func validHostname(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	tld := labels[len(labels)-1]
	return strings.Trim(tld, "0123456789") != ""
}

// Repo is the storage the service needs; postgres.DomainRepo implements it.
type Repo interface {
	InsertForAccountName(ctx context.Context, q sqlx.QueryerContext, accountName, name string, verified bool) (int64, error)
}

// Service manages sending domains.
type Service struct {
	db   *sqlx.DB
	repo Repo
}

// NewService returns a Service over db.
func NewService(db *sqlx.DB, repo Repo) *Service {
	return &Service{db: db, repo: repo}
}

// AddForAccount attaches the domain name to the account called accountName
// (the operator path). verified marks it verified without DNS checks. Returns
// the normalised name; a *validation.Error for a bad or already claimed name,
// ErrAccountNotFound when there is no such account.
func (s *Service) AddForAccount(ctx context.Context, accountName, name string, verified bool) (string, error) {
	name, err := Normalize(name)
	if err != nil {
		return "", err
	}
	_, err = s.repo.InsertForAccountName(ctx, s.db, strings.ToLower(accountName), name, verified)
	switch {
	case errors.Is(err, postgres.ErrConflict):
		return "", validation.New("domain", "The domain has already been taken.")
	case errors.Is(err, postgres.ErrNotFound):
		return "", ErrAccountNotFound
	case err != nil:
		return "", fmt.Errorf("add domain: %w", err)
	}
	return name, nil
}
