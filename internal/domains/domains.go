// Package domains holds sending domains: how names are normalised, their
// DKIM keys, the DNS records their owners publish, and the DNS checks that
// verify them. A domain belongs to at most one account.
package domains

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/dkim"
	"github.com/smtpcreds/smtpcreds/internal/dnscheck"
	"github.com/smtpcreds/smtpcreds/internal/hostname"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/syncer"
	"github.com/smtpcreds/smtpcreds/internal/validation"
)

var (
	// ErrNotFound: the domain does not exist or another account owns it.
	ErrNotFound = errors.New("domain not found")
	// ErrAccountNotFound: no account has the given name.
	ErrAccountNotFound = errors.New("account not found")
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

// KeyBits turns the API's dkim_key_length into a key size: 0 (or absent)
// means 2048; 1024 and 2048 are accepted; anything else is a
// *validation.Error on field.
func KeyBits(field string, n *int) (int, error) {
	if n == nil || *n == 0 {
		return dkim.Bits2048, nil
	}
	if *n == dkim.Bits1024 || *n == dkim.Bits2048 {
		return *n, nil
	}
	return 0, validation.New(field, "The "+strings.ReplaceAll(field, "_", " ")+" must be 1024 or 2048.")
}

// Config is the operator's DNS setup: what the records users publish point at.
type Config struct {
	Selector       string // DKIM selector, e.g. "smtpcreds"
	SPFInclude     string // SPF include: domain, e.g. "_spf.mail.example.net"; may be empty if MXHost is set
	MXHost         string // the relay's MX host, e.g. "mx.mail.example.net"
	TrackingTarget string // CNAME target of tracking domains, e.g. "track.mail.example.net"
}

// Checker looks records up in DNS; dnscheck.Checker implements it.
type Checker interface {
	DKIM(ctx context.Context, name, publicKeyB64 string) dnscheck.Result
	SPF(ctx context.Context, domain, include, mxHost string) dnscheck.Result
	MX(ctx context.Context, domain, host string) dnscheck.Result
	CNAME(ctx context.Context, name, target string) dnscheck.Result
}

// Repo is the storage the service needs; postgres.DomainRepo implements it.
type Repo interface {
	Insert(ctx context.Context, q sqlx.QueryerContext, accountID int64, d postgres.NewDomain) (postgres.DomainRow, error)
	InsertForAccountName(ctx context.Context, q sqlx.QueryerContext, accountName string, d postgres.NewDomain) (postgres.DomainRow, error)
	Get(ctx context.Context, q sqlx.QueryerContext, accountID int64, name string) (postgres.DomainRow, error)
	List(ctx context.Context, q sqlx.QueryerContext, accountID int64, search string, limit int, offset int64) ([]postgres.DomainRow, int64, error)
	UpdateTracking(ctx context.Context, q sqlx.QueryerContext, accountID int64, name string, open, click, unsub *bool) (postgres.DomainRow, error)
	Delete(ctx context.Context, q sqlx.QueryerContext, accountID int64, name string) (postgres.DomainRow, error)
	Logins(ctx context.Context, q sqlx.QueryerContext, accountID int64, name string) ([]string, error)
	SaveCheck(ctx context.Context, q sqlx.QueryerContext, accountID int64, name string, dkim, spf, mx, verified bool, checks []byte) (postgres.DomainRow, error)
	SetAuthDomain(ctx context.Context, q sqlx.QueryerContext, accountID int64, name, authDomain, selector, publicKey string, sealedKey []byte) (postgres.DomainRow, error)
	SaveAuthCheck(ctx context.Context, q sqlx.QueryerContext, accountID int64, name, authDomain string, verified bool, checks []byte) (postgres.DomainRow, error)
	ClearAuthDomain(ctx context.Context, q sqlx.QueryerContext, accountID int64, name string) (postgres.DomainRow, error)
	SetTrackingDomain(ctx context.Context, q sqlx.QueryerContext, accountID int64, name, tracking string) (postgres.DomainRow, error)
	SaveTrackingCheck(ctx context.Context, q sqlx.QueryerContext, accountID int64, name, tracking string, verified bool, checks []byte) (postgres.DomainRow, error)
	ClearTrackingDomain(ctx context.Context, q sqlx.QueryerContext, accountID int64, name string) (postgres.DomainRow, error)
}

// Outbox carries the removal of a domain's logins to the SMTP server's auth
// backend; *syncer.Service implements it (a nil one is a disabled sync).
type Outbox interface {
	Enqueue(ctx context.Context, q sqlx.QueryerContext, events ...syncer.Event) (syncer.Pending, error)
	Apply(ctx context.Context, p syncer.Pending) bool
}

// Service manages sending domains.
type Service struct {
	db     *sqlx.DB
	repo   Repo
	sealer *dkim.Sealer
	dns    Checker
	outbox Outbox
	cfg    Config
}

// NewService returns a Service. sealer encrypts DKIM private keys; dns may be
// nil for callers that never verify; outbox nil disables sync.
func NewService(db *sqlx.DB, repo Repo, sealer *dkim.Sealer, dns Checker, outbox Outbox, cfg Config) *Service {
	if outbox == nil {
		outbox = (*syncer.Service)(nil)
	}
	return &Service{db: db, repo: repo, sealer: sealer, dns: dns, outbox: outbox, cfg: cfg}
}

// Config returns the operator DNS setup the service checks against.
func (s *Service) Config() Config { return s.cfg }

// newKey makes a DKIM key pair for owner (a domain name, bound into the
// sealed key so that it cannot be moved to another row).
func (s *Service) newKey(purpose, owner string, bits int) (pub string, sealed []byte, err error) {
	priv, err := dkim.GenerateKey(bits)
	if err != nil {
		return "", nil, err
	}
	return s.sealKey(priv, purpose, owner)
}

func (s *Service) sealKey(priv *rsa.PrivateKey, purpose, owner string) (string, []byte, error) {
	pub, err := dkim.PublicKeyBase64(&priv.PublicKey)
	if err != nil {
		return "", nil, err
	}
	sealed, err := s.sealer.SealKey(priv, []byte(purpose+":"+owner))
	if err != nil {
		return "", nil, err
	}
	return pub, sealed, nil
}

func (s *Service) newDomain(name string, bits int, verified bool) (postgres.NewDomain, error) {
	pub, sealed, err := s.newKey("dkim", name, bits)
	if err != nil {
		return postgres.NewDomain{}, fmt.Errorf("dkim key: %w", err)
	}
	return postgres.NewDomain{
		Name: name, Verified: verified, DKIMSelector: s.cfg.Selector, DKIMKeyBits: bits,
		DKIMPublicKey: pub, DKIMSealedKey: sealed,
	}, nil
}

var errTaken = validation.New("domain", "The domain has already been taken.")

// Create adds the domain name to accountID with a fresh DKIM key of bits
// (see KeyBits). A *validation.Error for a bad name, or one another account
// (or this one) already has: concurrent claims of one name yield exactly one
// success.
func (s *Service) Create(ctx context.Context, accountID int64, name string, bits int) (Domain, error) {
	if name == "" {
		return Domain{}, validation.New("domain", "The domain field is required.")
	}
	name, err := Normalize(name)
	if err != nil {
		return Domain{}, err
	}
	nd, err := s.newDomain(name, bits, false)
	if err != nil {
		return Domain{}, fmt.Errorf("create domain: %w", err)
	}
	row, err := s.repo.Insert(ctx, s.db, accountID, nd)
	if errors.Is(err, postgres.ErrConflict) {
		return Domain{}, errTaken
	}
	if err != nil {
		return Domain{}, fmt.Errorf("create domain: %w", err)
	}
	return s.fromRow(row), nil
}

// AddForAccount attaches the domain name to the account called accountName
// (the operator path), with a DKIM key like Create. verified marks it
// verified without DNS checks. A *validation.Error for a bad or taken name,
// ErrAccountNotFound when there is no such account.
func (s *Service) AddForAccount(ctx context.Context, accountName, name string, verified bool) (Domain, error) {
	name, err := Normalize(name)
	if err != nil {
		return Domain{}, err
	}
	nd, err := s.newDomain(name, dkim.Bits2048, verified)
	if err != nil {
		return Domain{}, fmt.Errorf("add domain: %w", err)
	}
	row, err := s.repo.InsertForAccountName(ctx, s.db, strings.ToLower(accountName), nd)
	switch {
	case errors.Is(err, postgres.ErrConflict):
		return Domain{}, errTaken
	case errors.Is(err, postgres.ErrNotFound):
		return Domain{}, ErrAccountNotFound
	case err != nil:
		return Domain{}, fmt.Errorf("add domain: %w", err)
	}
	return s.fromRow(row), nil
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

// Get returns accountID's domain. ErrNotFound otherwise.
func (s *Service) Get(ctx context.Context, accountID int64, name string) (Domain, error) {
	return s.apply(ctx, accountID, name, "get domain", s.repo.Get)
}

// apply runs one scoped single-row repository call on the pool.
func (s *Service) apply(ctx context.Context, accountID int64, name, op string,
	fn func(context.Context, sqlx.QueryerContext, int64, string) (postgres.DomainRow, error)) (Domain, error) {
	name, err := lookupName(name)
	if err != nil {
		return Domain{}, err
	}
	row, err := fn(ctx, s.db, accountID, name)
	if err != nil {
		return Domain{}, notFound(op, err)
	}
	return s.fromRow(row), nil
}

func notFound(op string, err error) error {
	if errors.Is(err, postgres.ErrNotFound) {
		return ErrNotFound
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Page is one page of domains.
type Page struct {
	Items []Domain
	Total int64
	Page  int
	Limit int
}

// List returns one page (1-based) of accountID's domains whose name contains
// search, oldest first. Other accounts' domains never match.
func (s *Service) List(ctx context.Context, accountID int64, search string, page, limit int) (Page, error) {
	rows, total, err := s.repo.List(ctx, s.db, accountID, search, limit, int64(page-1)*int64(limit))
	if err != nil {
		return Page{}, fmt.Errorf("list domains: %w", err)
	}
	items := make([]Domain, len(rows))
	for i, r := range rows {
		items[i] = s.fromRow(r)
	}
	return Page{Items: items, Total: total, Page: page, Limit: limit}, nil
}

// UpdateTracking sets the tracking flags that are not nil. ErrNotFound.
func (s *Service) UpdateTracking(ctx context.Context, accountID int64, name string, open, click, unsub *bool) (Domain, error) {
	return s.apply(ctx, accountID, name, "update tracking",
		func(ctx context.Context, q sqlx.QueryerContext, id int64, n string) (postgres.DomainRow, error) {
			return s.repo.UpdateTracking(ctx, q, id, n, open, click, unsub)
		})
}

// Delete removes the domain and all its credentials, and carries the removal
// of their logins to the SMTP backend through the outbox, like a credential
// deletion. ErrNotFound.
func (s *Service) Delete(ctx context.Context, accountID int64, name string) error {
	name, err := lookupName(name)
	if err != nil {
		return err
	}
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("delete domain: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	logins, err := s.repo.Logins(ctx, tx, accountID, name)
	if err != nil {
		return fmt.Errorf("delete domain: %w", err)
	}
	if _, err := s.repo.Delete(ctx, tx, accountID, name); err != nil {
		return notFound("delete domain", err)
	}
	jobs, err := s.outbox.Enqueue(ctx, tx, syncer.Event{Type: syncer.DomainDeleted, Domain: name, Logins: logins})
	if err != nil {
		return fmt.Errorf("delete domain: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("delete domain: commit: %w", err)
	}
	s.outbox.Apply(ctx, jobs)
	return nil
}

// MandatoryOutcome is the result of VerifyMandatory.
type MandatoryOutcome struct {
	DKIM, SPF, MX dnscheck.Result
	CheckedAt     time.Time
}

// VerifyMandatory looks the domain's DKIM, SPF and MX records up in DNS,
// stores the outcome and returns it with the updated domain. The domain is
// verified while DKIM and SPF pass; MX is reported but not required, since
// a domain may receive its mail elsewhere. ErrNotFound.
func (s *Service) VerifyMandatory(ctx context.Context, accountID int64, name string) (Domain, MandatoryOutcome, error) {
	d, err := s.Get(ctx, accountID, name)
	if err != nil {
		return Domain{}, MandatoryOutcome{}, err
	}
	var out MandatoryOutcome
	v, err := s.verify("verify domain", ErrNotFound, []probe{
		{"dkim", &out.DKIM, func() dnscheck.Result { return s.dns.DKIM(ctx, d.DKIMName(), d.DKIMPublicKey) }},
		{"spf", &out.SPF, func() dnscheck.Result { return s.dns.SPF(ctx, d.Name, s.cfg.SPFInclude, s.cfg.MXHost) }},
		{"mx", &out.MX, func() dnscheck.Result { return s.dns.MX(ctx, d.Name, s.cfg.MXHost) }},
	}, func(checks []byte) (postgres.DomainRow, error) {
		return s.repo.SaveCheck(ctx, s.db, accountID, d.Name, out.DKIM.OK, out.SPF.OK, out.MX.OK, out.DKIM.OK && out.SPF.OK, checks)
	})
	if err != nil {
		return Domain{}, MandatoryOutcome{}, err
	}
	out.CheckedAt = *v.CheckedAt
	return v, out, nil
}

// probe is one DNS check of a verification: the key its result is stored
// under in the checks JSON, where the result goes, and the lookup.
type probe struct {
	key  string
	into *dnscheck.Result
	run  func() dnscheck.Result
}

// verify is what the three verification flows share: it runs the probes side
// by side, so a verification takes one lookup timeout at worst, not three;
// stores their results with save as a JSON object keyed by probe; and returns
// the saved domain. save's postgres.ErrNotFound (the domain, or the auth or
// tracking domain checked, is gone meanwhile) becomes gone; other errors are
// wrapped with op.
func (s *Service) verify(op string, gone error, probes []probe, save func(checks []byte) (postgres.DomainRow, error)) (Domain, error) {
	done := make(chan struct{}, len(probes))
	for _, p := range probes {
		go func() { *p.into = p.run(); done <- struct{}{} }()
	}
	for range probes {
		<-done
	}
	results := make(map[string]dnscheck.Result, len(probes))
	for _, p := range probes {
		results[p.key] = *p.into
	}
	checks, err := json.Marshal(results)
	if err != nil {
		return Domain{}, fmt.Errorf("%s: %w", op, err)
	}
	row, err := save(checks)
	if errors.Is(err, postgres.ErrNotFound) {
		return Domain{}, gone
	}
	if err != nil {
		return Domain{}, fmt.Errorf("%s: %w", op, err)
	}
	return s.fromRow(row), nil
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

// SetupAuthDomain stores the auth (return-path) domain, by default
// bounce.<domain>, with a fresh DKIM key of bits. ErrNotFound; a
// *validation.Error when authDomain is not the domain or below it.
func (s *Service) SetupAuthDomain(ctx context.Context, accountID int64, name string, authDomain *string, bits int) (Domain, error) {
	d, err := s.Get(ctx, accountID, name)
	if err != nil {
		return Domain{}, err
	}
	auth := "bounce." + d.Name
	if authDomain != nil && *authDomain != "" {
		if auth, err = subdomainOf("auth_domain", *authDomain, d.Name); err != nil {
			return Domain{}, err
		}
	}
	pub, sealed, err := s.newKey("auth_dkim", auth, bits)
	if err != nil {
		return Domain{}, fmt.Errorf("setup auth domain: %w", err)
	}
	row, err := s.repo.SetAuthDomain(ctx, s.db, accountID, d.Name, auth, s.cfg.Selector, pub, sealed)
	if err != nil {
		return Domain{}, notFound("setup auth domain", err)
	}
	return s.fromRow(row), nil
}

var (
	errNoAuth     = validation.New("auth_domain", "No auth domain is set up for this domain.")
	errNoTracking = validation.New("tracking_domain", "No tracking domain is set up for this domain.")
)

// AuthOutcome is the result of VerifyAuthDomain.
type AuthOutcome struct {
	DKIM, SPF, MX dnscheck.Result
	CheckedAt     time.Time
}

// VerifyAuthDomain checks the auth domain's DKIM, SPF and MX records; it is
// verified while DKIM and SPF pass. ErrNotFound; a *validation.Error when no
// auth domain is set up (or it was removed or replaced meanwhile).
func (s *Service) VerifyAuthDomain(ctx context.Context, accountID int64, name string) (Domain, AuthOutcome, error) {
	d, err := s.Get(ctx, accountID, name)
	if err != nil {
		return Domain{}, AuthOutcome{}, err
	}
	if d.AuthDomain == "" {
		return Domain{}, AuthOutcome{}, errNoAuth
	}
	var out AuthOutcome
	v, err := s.verify("verify auth domain", errNoAuth, []probe{
		{"auth_dkim", &out.DKIM, func() dnscheck.Result { return s.dns.DKIM(ctx, d.AuthDKIMName(), d.AuthDKIMPublicKey) }},
		{"auth_spf", &out.SPF, func() dnscheck.Result { return s.dns.SPF(ctx, d.AuthDomain, s.cfg.SPFInclude, s.cfg.MXHost) }},
		{"auth_mx", &out.MX, func() dnscheck.Result { return s.dns.MX(ctx, d.AuthDomain, s.cfg.MXHost) }},
	}, func(checks []byte) (postgres.DomainRow, error) {
		return s.repo.SaveAuthCheck(ctx, s.db, accountID, d.Name, d.AuthDomain, out.DKIM.OK && out.SPF.OK, checks)
	})
	if err != nil {
		return Domain{}, AuthOutcome{}, err
	}
	out.CheckedAt = *v.AuthCheckedAt
	return v, out, nil
}

// DeleteAuthDomain removes the auth domain and its key. ErrNotFound; a
// *validation.Error when none is set up.
func (s *Service) DeleteAuthDomain(ctx context.Context, accountID int64, name string) error {
	d, err := s.Get(ctx, accountID, name)
	if err != nil {
		return err
	}
	if d.AuthDomain == "" {
		return errNoAuth
	}
	_, err = s.repo.ClearAuthDomain(ctx, s.db, accountID, d.Name)
	return notFoundOr("delete auth domain", err)
}

// SetupTracking stores the link-tracking domain (the domain or below it).
// ErrNotFound; a *validation.Error for a bad or missing name.
func (s *Service) SetupTracking(ctx context.Context, accountID int64, name, tracking string) (Domain, error) {
	d, err := s.Get(ctx, accountID, name)
	if err != nil {
		return Domain{}, err
	}
	if tracking == "" {
		return Domain{}, validation.New("tracking_domain", "The tracking domain field is required.")
	}
	t, err := subdomainOf("tracking_domain", tracking, d.Name)
	if err != nil {
		return Domain{}, err
	}
	row, err := s.repo.SetTrackingDomain(ctx, s.db, accountID, d.Name, t)
	if err != nil {
		return Domain{}, notFound("setup tracking domain", err)
	}
	return s.fromRow(row), nil
}

// TrackingOutcome is the result of VerifyTracking.
type TrackingOutcome struct {
	CNAME     dnscheck.Result
	CheckedAt time.Time
}

// VerifyTracking checks the tracking domain's CNAME. ErrNotFound; a
// *validation.Error when none is set up (or it was removed or replaced
// meanwhile).
func (s *Service) VerifyTracking(ctx context.Context, accountID int64, name string) (Domain, TrackingOutcome, error) {
	d, err := s.Get(ctx, accountID, name)
	if err != nil {
		return Domain{}, TrackingOutcome{}, err
	}
	if d.TrackingDomain == "" {
		return Domain{}, TrackingOutcome{}, errNoTracking
	}
	var out TrackingOutcome
	v, err := s.verify("verify tracking domain", errNoTracking, []probe{
		{"cname", &out.CNAME, func() dnscheck.Result { return s.dns.CNAME(ctx, d.TrackingDomain, s.cfg.TrackingTarget) }},
	}, func(checks []byte) (postgres.DomainRow, error) {
		return s.repo.SaveTrackingCheck(ctx, s.db, accountID, d.Name, d.TrackingDomain, out.CNAME.OK, checks)
	})
	if err != nil {
		return Domain{}, TrackingOutcome{}, err
	}
	out.CheckedAt = *v.TrackingCheckedAt
	return v, out, nil
}

// DeleteTracking removes the tracking domain. ErrNotFound; a
// *validation.Error when none is set up.
func (s *Service) DeleteTracking(ctx context.Context, accountID int64, name string) error {
	d, err := s.Get(ctx, accountID, name)
	if err != nil {
		return err
	}
	if d.TrackingDomain == "" {
		return errNoTracking
	}
	_, err = s.repo.ClearTrackingDomain(ctx, s.db, accountID, d.Name)
	return notFoundOr("delete tracking domain", err)
}

func notFoundOr(op string, err error) error {
	if err == nil {
		return nil
	}
	return notFound(op, err)
}
