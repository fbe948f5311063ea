package domains

import (
	"strings"

	"github.com/smtpcreds/smtpcreds/internal/hostname"
	"github.com/smtpcreds/smtpcreds/internal/validation"
)

const nameRule = "The domain must be a fully qualified domain name such as example.com."

// Normalize returns the ASCII (punycode), lowercase form of a domain name
// without a trailing dot, or a *validation.Error on field "domain" when the
// name is not a fully qualified host name (see hostname.Normalize): at most
// 253 characters, labels of 1-63 letters, digits and inner hyphens, at least
// two labels, not all-numeric at the top.
func Normalize(name string) (string, error) {
	return normalizeField("domain", name)
}

func normalizeField(field, name string) (string, error) {
	ascii, err := hostname.Normalize(name)
	if err != nil {
		return "", validation.New(field, strings.Replace(nameRule, "domain", strings.ReplaceAll(field, "_", " "), 1))
	}
	return ascii, nil
}

// lookupName turns a domain name from a path into its stored form;
// ErrNotFound when it cannot be a domain name.
func lookupName(name string) (string, error) {
	n, err := Normalize(name)
	if err != nil {
		return "", ErrNotFound
	}
	return n, nil
}

// subdomainOf normalises sub (field names the API field) and checks that it is
// parent or below it.
func subdomainOf(field, sub, parent string) (string, error) {
	n, err := normalizeField(field, sub)
	if err != nil {
		return "", err
	}
	if n != parent && !strings.HasSuffix(n, "."+parent) {
		return "", validation.New(field, "The "+strings.ReplaceAll(field, "_", " ")+" must be "+parent+" or a subdomain of it.")
	}
	return n, nil
}
