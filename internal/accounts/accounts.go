// Package accounts holds API accounts and their tokens, so that every API
// request can be resolved to the one account it acts for.
//
// A token is shown once when it is made; the database keeps only its
// HMAC-SHA256 digest under a server key that lives outside the database, so a
// leaked database does not leak usable tokens and checking a token costs one
// HMAC, not a KDF.
package accounts

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/apitoken"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

var (
	// ErrUnauthorized: unknown account, wrong or malformed token. One error
	// for every cause, so callers cannot tell them apart.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrNameTaken: an account with that name exists.
	ErrNameTaken = errors.New("account name taken")
	// ErrNotFound: no account has that name.
	ErrNotFound = errors.New("account not found")
	// ErrInvalidName: the name breaks the rules of ValidName.
	ErrInvalidName = errors.New("account names are 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit")
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// Account is an API tenant.
type Account struct {
	ID   int64
	Name string
}

// Service creates accounts and authenticates API calls.
type Service struct {
	db    *sqlx.DB
	repo  postgres.AccountRepo
	key   []byte
	cache *postgres.Cache[postgres.AccountRow] // by name; nil unless CacheTokens was called
}

// NewService returns a Service whose token digests are keyed by key (at least
// 32 bytes, kept outside the database).
func NewService(db *sqlx.DB, key []byte) (*Service, error) {
	if len(key) < 32 {
		return nil, fmt.Errorf("token key must be at least 32 bytes, got %d", len(key))
	}
	return &Service{db: db, key: key}, nil
}

// NormalizeName lowercases an account name and checks it (ErrInvalidName).
// Names are case-insensitive; they never contain ':', so they fit Basic auth.
func NormalizeName(name string) (string, error) {
	name = strings.ToLower(name)
	if !nameRE.MatchString(name) {
		return "", ErrInvalidName
	}
	return name, nil
}

// Create makes an account and returns it with its API token, which exists
// nowhere else. ErrInvalidName or ErrNameTaken.
func (s *Service) Create(ctx context.Context, name string) (Account, string, error) {
	name, err := NormalizeName(name)
	if err != nil {
		return Account{}, "", err
	}
	tok, err := apitoken.New()
	if err != nil {
		return Account{}, "", fmt.Errorf("create account: %w", err)
	}
	row, err := s.repo.Insert(ctx, s.db, name, apitoken.Digest(s.key, tok))
	if errors.Is(err, postgres.ErrConflict) {
		return Account{}, "", ErrNameTaken
	}
	if err != nil {
		return Account{}, "", fmt.Errorf("create account: %w", err)
	}
	return Account{ID: row.ID, Name: row.Name}, tok, nil
}

// RotateToken gives the account a new token; the old one stops working at
// once. ErrInvalidName or ErrNotFound.
func (s *Service) RotateToken(ctx context.Context, name string) (string, error) {
	name, err := NormalizeName(name)
	if err != nil {
		return "", err
	}
	tok, err := apitoken.New()
	if err != nil {
		return "", fmt.Errorf("rotate token: %w", err)
	}
	err = s.repo.SetTokenDigest(ctx, s.db, name, apitoken.Digest(s.key, tok))
	if s.cache != nil {
		s.cache.Drop(name) // here at once; elsewhere when the announcement arrives
	}
	if errors.Is(err, postgres.ErrNotFound) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("rotate token: %w", err)
	}
	return tok, nil
}

// Authenticate returns the account whose name and token these are, or
// ErrUnauthorized. Malformed tokens are refused without a database round trip;
// digests are compared in constant time.
func (s *Service) Authenticate(ctx context.Context, name, token string) (Account, error) {
	if !apitoken.WellFormed(token) {
		return Account{}, ErrUnauthorized
	}
	name, err := NormalizeName(name)
	if err != nil {
		return Account{}, ErrUnauthorized
	}
	digest := apitoken.Digest(s.key, token)
	var gen uint64
	if s.cache != nil {
		var row postgres.AccountRow
		var ok bool
		if row, gen, ok = s.cache.Get(name); ok && apitoken.Equal(digest, row.TokenDigest) {
			return Account{ID: row.ID, Name: row.Name}, nil
		}
		// Not cached, or another token: the database decides.
	}
	row, err := s.repo.ByName(ctx, s.db, name)
	if errors.Is(err, postgres.ErrNotFound) {
		return Account{}, ErrUnauthorized
	}
	if err != nil {
		return Account{}, fmt.Errorf("authenticate: %w", err)
	}
	if !apitoken.Equal(digest, row.TokenDigest) {
		return Account{}, ErrUnauthorized
	}
	if s.cache != nil {
		s.cache.Put(row.Name, row, gen)
	}
	return Account{ID: row.ID, Name: row.Name}, nil
}

// Summary is an account as the operator's listing shows it.
type Summary struct {
	Account
	CreatedAt time.Time
	Domains   int64 // how many domains it owns
}

// Directory reads accounts for the operator (the CLI's listings). It never
// touches tokens, so it needs no token key.
type Directory struct {
	db   *sqlx.DB
	repo postgres.AccountRepo
}

// NewDirectory returns a Directory over db.
func NewDirectory(db *sqlx.DB) *Directory { return &Directory{db: db} }

// List returns every account by name, with the number of its domains.
func (d *Directory) List(ctx context.Context) ([]Summary, error) {
	rows, err := d.repo.List(ctx, d.db)
	if err != nil {
		return nil, err
	}
	out := make([]Summary, len(rows))
	for i, r := range rows {
		out[i] = Summary{Account: Account{ID: r.ID, Name: r.Name}, CreatedAt: r.CreatedAt, Domains: r.Domains}
	}
	return out, nil
}

// ByName returns the account called name (case-insensitive).
// ErrInvalidName or ErrNotFound.
func (d *Directory) ByName(ctx context.Context, name string) (Account, error) {
	name, err := NormalizeName(name)
	if err != nil {
		return Account{}, err
	}
	row, err := d.repo.ByName(ctx, d.db, name)
	if errors.Is(err, postgres.ErrNotFound) {
		return Account{}, ErrNotFound
	}
	if err != nil {
		return Account{}, fmt.Errorf("account by name: %w", err)
	}
	return Account{ID: row.ID, Name: row.Name}, nil
}
