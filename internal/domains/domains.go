// Package domains is the service for sending domains: names, DKIM keys, the
// DNS records owners publish and their checks, kept out of the HTTP layer.
//
// A domain belongs to at most one account. domains.go holds the service and
// its CRUD, names.go the name rules, keys.go the DKIM keys, verify.go the
// DNS verifications and subdomains.go the auth and tracking domains.
package domains

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/dkim"
	"github.com/smtpcreds/smtpcreds/internal/dnscheck"
	"github.com/smtpcreds/smtpcreds/internal/idempotency"
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

// Config is the operator's DNS setup: what the records users publish point at.
type Config struct {
	Selector       string // DKIM selector, e.g. "smtpcreds"
	SPFInclude     string // SPF include: domain, e.g. "_spf.mail.example.net"; may be empty if MXHost is set
	MXHost         string // the relay's MX host, e.g. "mx.mail.example.net"
	TrackingTarget string // CNAME target of tracking domains, e.g. "track.mail.example.net"
	// Idempotency keeps the responses of creates with an idempotency key
	// (nil: CreateOnce is not available).
	Idempotency *idempotency.Store
}

// Checker looks records up in DNS; dnscheck.Checker implements it.
type Checker interface {
	DKIM(ctx context.Context, name, publicKeyB64 string) dnscheck.Result
	SPF(ctx context.Context, domain, include, mxHost string) dnscheck.Result
	MX(ctx context.Context, domain, host string) dnscheck.Result
	CNAME(ctx context.Context, name, target string) dnscheck.Result
}

// Service manages sending domains.
type Service struct {
	db     *sqlx.DB
	repo   postgres.DomainRepo
	sealer *dkim.Sealer
	dns    Checker
	outbox *syncer.Service // nil: sync disabled
	cfg    Config
}

// NewService returns a Service. sealer encrypts DKIM private keys; dns may be
// nil for callers that never verify; outbox nil disables sync.
func NewService(db *sqlx.DB, sealer *dkim.Sealer, dns Checker, outbox *syncer.Service, cfg Config) *Service {
	return &Service{db: db, sealer: sealer, dns: dns, outbox: outbox, cfg: cfg}
}

// Config returns the operator DNS setup the service checks against.
func (s *Service) Config() Config { return s.cfg }

// ErrTaken: another account, or this one, has the domain (a *validation.Error on
// the field domain).
var ErrTaken = validation.New("domain", "The domain has already been taken.")

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
		return Domain{}, ErrTaken
	}
	if err != nil {
		return Domain{}, fmt.Errorf("create domain: %w", err)
	}
	return s.fromRow(row), nil
}

// CreateOnce is Create for a request with the idempotency key key: the
// first request with the key adds the domain and stores render's response
// to it in the same transaction; a later one (or a concurrent one, once the
// first commits) gets that response back (replayed true) without adding
// anything. Errors as for Create (which store nothing), and a
// *validation.Error on idempotency.Field for a malformed key or one first
// used for another request.
func (s *Service) CreateOnce(ctx context.Context, accountID int64, name string, bits int, key string,
	render func(Domain) (idempotency.Response, error)) (idempotency.Response, bool, error) {
	var none idempotency.Response
	store := s.cfg.Idempotency
	if store == nil {
		return none, false, errors.New("create domain: no idempotency store")
	}
	if name == "" {
		return none, false, validation.New("domain", "The domain field is required.")
	}
	name, err := Normalize(name)
	if err != nil {
		return none, false, err
	}
	k, err := idempotency.NewKey(accountID, key, "domain.create", name, fmt.Sprint(bits))
	if err != nil {
		return none, false, err
	}
	// The key is made before the transaction, which holds the claim (and
	// makes concurrent requests with the key wait) only for the insert.
	nd, err := s.newDomain(name, bits, false)
	if err != nil {
		return none, false, fmt.Errorf("create domain: %w", err)
	}
	tx, err := postgres.Begin(ctx, s.db)
	if err != nil {
		return none, false, fmt.Errorf("create domain: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	claimed, err := store.Claim(ctx, tx, k)
	if err != nil {
		return none, false, fmt.Errorf("create domain: %w", err)
	}
	if !claimed {
		_ = tx.Rollback()
		r, err := store.Replay(ctx, k)
		return r, err == nil, err
	}
	row, err := s.repo.Insert(ctx, tx, accountID, nd)
	if errors.Is(err, postgres.ErrConflict) {
		return none, false, ErrTaken
	}
	if err != nil {
		return none, false, fmt.Errorf("create domain: %w", err)
	}
	r, err := render(s.fromRow(row))
	if err != nil {
		return none, false, fmt.Errorf("create domain: %w", err)
	}
	if err := store.Save(ctx, tx, k, r, true); err != nil {
		return none, false, fmt.Errorf("create domain: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return none, false, fmt.Errorf("create domain: commit: %w", err)
	}
	return r, false, nil
}

// AddForAccount attaches the domain name to the account called accountName
// (the operator path), with a DKIM key like Create. verified marks it
// verified by the operator, without DNS checks; when the account already
// has the domain, verified marks that domain (as SetVerified does) and
// keeps its key and credentials. A *validation.Error for a bad name or one
// taken (by another account, or by this one without verified),
// ErrAccountNotFound when there is no such account.
func (s *Service) AddForAccount(ctx context.Context, accountName, name string, verified bool) (Domain, error) {
	name, err := Normalize(name)
	if err != nil {
		return Domain{}, err
	}
	accountName = strings.ToLower(accountName)
	if verified {
		row, err := s.repo.SetVerifiedByOperator(ctx, s.db, accountName, name, true)
		if err == nil {
			return s.fromRow(row), nil
		}
		if !errors.Is(err, postgres.ErrNotFound) {
			return Domain{}, fmt.Errorf("add domain: %w", err)
		}
	}
	nd, err := s.newDomain(name, dkim.Bits2048, verified)
	if err != nil {
		return Domain{}, fmt.Errorf("add domain: %w", err)
	}
	row, err := s.repo.InsertForAccountName(ctx, s.db, accountName, nd)
	switch {
	case errors.Is(err, postgres.ErrConflict):
		return Domain{}, ErrTaken
	case errors.Is(err, postgres.ErrNotFound):
		return Domain{}, ErrAccountNotFound
	case err != nil:
		return Domain{}, fmt.Errorf("add domain: %w", err)
	}
	return s.fromRow(row), nil
}

// SetVerified marks the domain called name verified by the operator
// (verified), or withdraws its verification (not verified: it is then
// unverified until a DNS check passes), whichever account owns it: the
// operator's path. ErrNotFound when there is no such domain.
func (s *Service) SetVerified(ctx context.Context, name string, verified bool) (OwnedDomain, error) {
	name, err := lookupName(name)
	if err != nil {
		return OwnedDomain{}, err
	}
	row, err := s.repo.SetVerifiedByOperator(ctx, s.db, "", name, verified)
	if err != nil {
		return OwnedDomain{}, notFound("set verified", err)
	}
	return s.ByName(ctx, row.Name)
}

// ByName returns the domain called name with its account's name, whichever
// account owns it: the operator's path. ErrNotFound.
func (s *Service) ByName(ctx context.Context, name string) (OwnedDomain, error) {
	name, err := lookupName(name)
	if err != nil {
		return OwnedDomain{}, err
	}
	row, err := s.repo.ByName(ctx, s.db, name)
	if err != nil {
		return OwnedDomain{}, notFound("domain by name", err)
	}
	return OwnedDomain{Domain: s.fromRow(row.DomainRow), Account: row.AccountName, accountID: row.AccountID}, nil
}

// ListAll returns every domain, or those of the account called accountName
// when it is not empty, by account and name: the operator's path.
func (s *Service) ListAll(ctx context.Context, accountName string) ([]OwnedDomain, error) {
	rows, err := s.repo.ListAll(ctx, s.db, strings.ToLower(accountName))
	if err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	out := make([]OwnedDomain, len(rows))
	for i, r := range rows {
		out[i] = OwnedDomain{Domain: s.fromRow(r.DomainRow), Account: r.AccountName, accountID: r.AccountID}
	}
	return out, nil
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
	tx, err := postgres.Begin(ctx, s.db)
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

func notFoundOr(op string, err error) error {
	if err == nil {
		return nil
	}
	return notFound(op, err)
}
