package relay

import (
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"

	"golang.org/x/net/idna"
)

// Login is an SMTP login as the sender policy sees it.
type Login struct {
	Name      string // username@domain
	AccountID int64
	DomainID  int64
	Domain    string
	// AllowedSenders narrows what the login may send as: exact addresses
	// or "*@domain", lowercase; empty means no narrowing.
	AllowedSenders []string
}

// Domain is what the policy needs of a sender address's domain; nil when
// no such domain is known.
type Domain struct {
	ID        int64
	AccountID int64
	Verified  bool
	Active    bool
}

// Policy decides which addresses a login may send as.
type Policy struct {
	// AccountSenders widens a login's senders from its own domain to every
	// verified domain of its account.
	AccountSenders bool
}

// Refusal is why an address was refused, as the SMTP reply and the log
// say it.
type Refusal struct {
	Address string
	Why     string
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("sender <%s> refused: %s", r.Address, r.Why)
}

// SplitAddress returns the local part and the lowercase ASCII domain of an
// addr-spec, or ok false when it is not one.
func SplitAddress(addr string) (local, domain string, ok bool) {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", "", false
	}
	local, domain = addr[:at], strings.TrimSuffix(addr[at+1:], ".")
	ascii, err := idna.Lookup.ToASCII(domain)
	if err != nil || ascii == "" || strings.ContainsAny(local, " \t\r\n<>") {
		return "", "", false
	}
	return local, strings.ToLower(ascii), true
}

// Check returns nil when l may send as addr, whose domain is dom (nil when
// unknown), and a *Refusal saying why not otherwise.
func (p Policy) Check(l Login, addr string, dom *Domain) error {
	local, domain, ok := SplitAddress(addr)
	if !ok {
		return &Refusal{addr, "not an address of a domain"}
	}
	norm := strings.ToLower(local) + "@" + domain
	if len(l.AllowedSenders) > 0 && !allowed(l.AllowedSenders, norm, domain) {
		return &Refusal{addr, fmt.Sprintf("not among the allowed senders of login %s", l.Name)}
	}
	switch {
	case dom == nil || dom.AccountID != l.AccountID:
		if p.AccountSenders {
			return &Refusal{addr, fmt.Sprintf("%s is not a domain of the account of login %s", domain, l.Name)}
		}
		return &Refusal{addr, fmt.Sprintf("login %s may send only as %s", l.Name, l.Domain)}
	case !p.AccountSenders && dom.ID != l.DomainID:
		return &Refusal{addr, fmt.Sprintf("login %s may send only as %s", l.Name, l.Domain)}
	case !dom.Verified:
		return &Refusal{addr, fmt.Sprintf("%s is not verified", domain)}
	case !dom.Active:
		return &Refusal{addr, fmt.Sprintf("%s is disabled", domain)}
	}
	return nil
}

func allowed(list []string, addr, domain string) bool {
	for _, a := range list {
		if a == addr || a == "*@"+domain {
			return true
		}
	}
	return false
}

// FromAddresses parses the values of a message's From: fields into their
// addresses. A message must have exactly one From: field (RFC 5322 3.6)
// holding at least one address; anything else, or a field that does not
// parse, is an error. Display names are decoded (RFC 2047), and one that
// holds an address is returned too, so that "=?utf-8?q?ceo=40bank.example?=
// <me@shop.example>" is checked for bank.example as well: a reader sees
// that address.
func FromAddresses(fields []string) ([]string, error) {
	switch len(fields) {
	case 0:
		return nil, fmt.Errorf("the message has no From: header")
	case 1:
	default:
		return nil, fmt.Errorf("the message has %d From: headers", len(fields))
	}
	p := mail.AddressParser{WordDecoder: &mime.WordDecoder{CharsetReader: anyCharset}}
	list, err := p.ParseList(fields[0])
	if err != nil || len(list) == 0 {
		return nil, fmt.Errorf("the From: header is not a list of addresses")
	}
	var out []string
	for _, a := range list {
		out = append(out, a.Address)
		for _, w := range strings.FieldsFunc(a.Name, func(r rune) bool {
			return r == ' ' || r == '<' || r == '>' || r == '"' || r == '(' || r == ')' || r == ',' || r == ';'
		}) {
			w = strings.Trim(w, "'[]")
			if _, _, ok := SplitAddress(w); ok && strings.Contains(w, ".") {
				out = append(out, w)
			}
		}
	}
	return out, nil
}

// anyCharset lets display names in charsets net/mail does not know decode
// as their bytes: what matters here is whether they hold an address.
func anyCharset(_ string, r io.Reader) (io.Reader, error) { return r, nil }
