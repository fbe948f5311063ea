// Package credentials is the use cases of SMTP logins (create, list, get,
// reset, delete), so that every rule about them is kept in one place.
//
// It decides who may change a credential, how usernames and passwords are
// made, and the transaction boundaries of each change, whose sync job goes
// through the outbox (internal/syncer) in the same transaction.
package credentials

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/hostname"
	"github.com/smtpcreds/smtpcreds/internal/idempotency"
	"github.com/smtpcreds/smtpcreds/internal/password"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/syncer"
	"github.com/smtpcreds/smtpcreds/internal/validation"
)

var (
	// ErrDomainNotFound: the domain does not exist or another account owns it.
	ErrDomainNotFound = errors.New("domain not found")
	// ErrNotFound: the credential does not exist in that domain of the account.
	ErrNotFound = errors.New("credential not found")
)

// Credential is an SMTP login, <Username>@<Domain>. It never carries a password.
type Credential struct {
	ID                int64
	GUID              uuid.UUID
	Domain            string
	Username          string
	Active            bool
	CreatedAt         time.Time
	ModifiedAt        time.Time
	PasswordChangedAt *time.Time
	// RemoteSynced says whether the SMTP server's auth backend has the
	// credential's current state.
	RemoteSynced bool
	// LastSyncedAt is when the backend last confirmed a version of it.
	LastSyncedAt *time.Time
	// SyncError is the last failed attempt's error while unsynced.
	SyncError *string
	// ExpiresAt is when the login stops authenticating (nil: never).
	ExpiresAt *time.Time
	// AllowedSenders narrows what the login may send as (nil: not narrowed).
	AllowedSenders []string
	// The relay's sending limits (nil: the server's default, 0: none).
	LimitPerMinute, LimitPerHour, LimitPerDay *int
	// PreviousExpiresAt is when the password a reset replaced stops
	// authenticating (nil: no grace period was given).
	PreviousExpiresAt *time.Time
	// Usage is what the relay recorded of the login (zero: nothing yet).
	Usage Usage
}

// Usage is what the relay (smtpcreds milter) recorded of a login.
type Usage struct {
	// LastUsedAt and LastUsedIP are the time and SMTP client address of
	// the last message it decided on (nil: none).
	LastUsedAt *time.Time
	LastUsedIP *string
	// MessagesQueued and MessagesRefused count the messages it accepted,
	// and refused or deferred.
	MessagesQueued, MessagesRefused int64
}

// Login is the SMTP login, <username>@<domain>.
func (c Credential) Login() string { return c.Username + "@" + c.Domain }

// Issued is a credential with the password generated for it: the only place a
// plaintext password ever exists.
type Issued struct {
	Credential Credential
	Password   string
	Strength   password.StrengthInfo
}

// Page is one page of a domain's credentials.
type Page struct {
	Domain string
	Items  []Credential
	Total  int64
	Page   int
	Limit  int
}

// Config holds the operator's choices.
type Config struct {
	// MaxPerDomain caps the credentials of one domain; 0 means no cap.
	MaxPerDomain int
	// Scheme is the Dovecot password scheme of the stored hash.
	Scheme password.Scheme
	// Idempotency keeps the responses of requests with an idempotency key
	// (nil: CreateOnce and ResetPasswordOnce are not available).
	Idempotency *idempotency.Store
}

// Render turns the outcome of a create or reset into the response sent for
// it, which a request with the same idempotency key replays.
type Render func(Issued) (idempotency.Response, error)

// Service implements the credential use cases.
type Service struct {
	db     *sqlx.DB
	repo   postgres.CredentialRepo
	outbox *syncer.Service // nil: sync disabled
	cfg    Config
}

// NewService returns a Service over db whose changes go through outbox (nil
// disables sync: nothing is enqueued, and no change reports remote_synced).
func NewService(db *sqlx.DB, outbox *syncer.Service, cfg Config) *Service {
	return &Service{db: db, outbox: outbox, cfg: cfg}
}

// CompactCounts folds the per-bucket credential count deltas that creates
// and deletes leave, so that counting and finding a page stay cheap; run it
// every few seconds.
func (s *Service) CompactCounts(ctx context.Context) error {
	return s.repo.CompactCounts(ctx, s.db, 10000)
}

// PrunePrevious deletes the previous passwords whose grace period ended
// (they no longer authenticate anywhere: the targets left them out at the
// end); run it every minute or so.
func (s *Service) PrunePrevious(ctx context.Context) error {
	for {
		n, err := s.repo.PrunePrevious(ctx, s.db, 10000)
		if err != nil || n < 10000 {
			return err
		}
	}
}

// lookupName turns a domain name from a path into its stored form (lowercase
// punycode, no trailing dot); ErrDomainNotFound when it cannot be a domain.
func lookupName(name string) (string, error) {
	n, err := hostname.Normalize(name)
	if err != nil {
		return "", ErrDomainNotFound
	}
	return n, nil
}

// List returns one page (1-based) of the domain's credentials, oldest first.
// ErrDomainNotFound unless accountID owns the domain.
func (s *Service) List(ctx context.Context, accountID int64, domain string, page, limit int) (Page, error) {
	return s.ListStatus(ctx, accountID, domain, page, limit, nil)
}

// ListStatus is List with a filter: with status, only the credentials
// enabled (true) or disabled (false).
func (s *Service) ListStatus(ctx context.Context, accountID int64, domain string, page, limit int, status *bool) (Page, error) {
	domain, err := lookupName(domain)
	if err != nil {
		return Page{}, err
	}
	d, err := s.repo.Domain(ctx, s.db, accountID, domain)
	if err != nil {
		return Page{}, s.domainErr("list credentials", err)
	}
	total, err := s.repo.Count(ctx, s.db, d.ID)
	if err != nil {
		return Page{}, fmt.Errorf("list credentials: %w", err)
	}
	if status != nil {
		disabled, err := s.repo.CountDisabled(ctx, s.db, d.ID)
		if err != nil {
			return Page{}, fmt.Errorf("list credentials: %w", err)
		}
		total = map[bool]int64{true: total - disabled, false: disabled}[*status]
	}
	offset := int64(page-1) * int64(limit)
	items := []Credential{}
	if offset < total {
		var rows []postgres.CredentialRow
		if status != nil {
			rows, err = s.repo.ListStatus(ctx, s.db, accountID, d.ID, *status, limit, offset)
		} else {
			rows, err = s.repo.List(ctx, s.db, accountID, d.ID, limit, offset)
		}
		if err != nil {
			return Page{}, fmt.Errorf("list credentials: %w", err)
		}
		items = make([]Credential, len(rows))
		for i, r := range rows {
			items[i] = fromRow(r)
		}
	}
	return Page{Domain: d.Name, Items: items, Total: total, Page: page, Limit: limit}, nil
}

// Create makes the credential <username>@<domain> with a fresh password.
// ErrDomainNotFound unless accountID owns the domain; a *validation.Error when
// the domain is not verified, the username breaks the rules or is taken, or
// the domain is at its cap.
//
// One statement finds the verified domain, checks its cap, inserts the
// credential and its sync job, and commits: one round trip, with or
// without a cap. The cap is exact under concurrent creates, which do not
// wait for each other while the domain is far from it (see
// postgres.CredentialRepo.InsertVerified). Concurrent creates of one
// username yield exactly one success: the insert waits on the unique index
// and then reports the conflict.
func (s *Service) Create(ctx context.Context, accountID int64, domain, username string) (Issued, error) {
	c, err := s.newCreate(accountID, domain, username)
	if err != nil {
		return Issued{}, err
	}
	row, jobID, err := s.repo.InsertVerified(ctx, s.db, c.cred, c.domain, int64(s.cfg.MaxPerDomain), c.draft)
	if err != nil {
		return Issued{}, s.whyNotInserted(c.domain, err)
	}
	return s.issued(ctx, row, c.pw, s.outbox.Drafted(jobID, c.draft)), nil
}

// CreateOnce is Create for a request with the idempotency key key: the
// first request with the key creates the credential and stores its
// response, render's, in the create's transaction; a later one (or a
// concurrent one, once the first commits) gets that response back
// (replayed true) without creating anything. Errors as for Create (which
// store nothing: a request that failed may be sent again with its key),
// and a *validation.Error on idempotency.Field for a malformed key or one
// first used for another request.
func (s *Service) CreateOnce(ctx context.Context, accountID int64, domain, username, key string, render Render) (r idempotency.Response, replayed bool, err error) {
	c, err := s.newCreate(accountID, domain, username)
	if err != nil {
		return idempotency.Response{}, false, err
	}
	k, err := idempotency.NewKey(accountID, key, "credential.create", c.domain, c.cred.Username)
	if err != nil {
		return idempotency.Response{}, false, err
	}
	return s.once(ctx, k, "create credential", render, func(tx *postgres.Tx) (postgres.CredentialRow, string, syncer.Pending, error) {
		row, jobID, err := s.repo.InsertVerified(ctx, tx, c.cred, c.domain, int64(s.cfg.MaxPerDomain), c.draft)
		if err != nil {
			return row, "", syncer.Pending{}, s.whyNotInserted(c.domain, err)
		}
		return row, c.pw, s.outbox.Drafted(jobID, c.draft), nil
	})
}

// once runs change, a create or reset, in a transaction that first claims
// k and then saves render's response to the change; after the commit it
// applies the change's sync jobs and, once they are confirmed, saves the
// final response (its remote_synced true). A key already used replays its
// response instead.
func (s *Service) once(ctx context.Context, k idempotency.Key, op string, render Render,
	change func(*postgres.Tx) (postgres.CredentialRow, string, syncer.Pending, error)) (idempotency.Response, bool, error) {
	store := s.cfg.Idempotency
	if store == nil {
		return idempotency.Response{}, false, fmt.Errorf("%s: no idempotency store", op)
	}
	tx, err := postgres.Begin(ctx, s.db)
	if err != nil {
		return idempotency.Response{}, false, fmt.Errorf("%s: begin: %w", op, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	claimed, err := store.Claim(ctx, tx, k)
	if err != nil {
		return idempotency.Response{}, false, fmt.Errorf("%s: %w", op, err)
	}
	if !claimed {
		_ = tx.Rollback() // the connection is not held while the replay waits
		r, err := store.Replay(ctx, k)
		return r, err == nil, err
	}
	row, pw, jobs, err := change(tx)
	if err != nil {
		return idempotency.Response{}, false, err
	}
	first := Issued{Credential: fromRow(row), Password: pw, Strength: password.Strength()}
	r, err := render(first)
	if err != nil {
		return idempotency.Response{}, false, fmt.Errorf("%s: %w", op, err)
	}
	if err := store.Save(ctx, tx, k, r, s.outbox == nil); err != nil {
		return idempotency.Response{}, false, fmt.Errorf("%s: %w", op, err)
	}
	if err := tx.Commit(); err != nil {
		return idempotency.Response{}, false, fmt.Errorf("%s: commit: %w", op, err)
	}
	if s.outbox == nil {
		return r, false, nil
	}
	if issued := s.issued(ctx, row, pw, jobs); issued.Credential.RemoteSynced {
		if final, err := render(issued); err == nil {
			r = final
		}
	}
	// The change is committed: a failure to store the final response leaves
	// the one saved at the commit to be replayed, and is no reason to
	// withhold this one.
	_ = store.Finish(ctx, k, r)
	return r, false, nil
}

// newCreate is what a create inserts: the normalised domain and username,
// a fresh password and hash, and the sync job's draft.
type newCreate struct {
	domain string
	cred   postgres.NewCredential
	pw     string
	draft  *postgres.JobDraft
}

func (s *Service) newCreate(accountID int64, domain, username string) (newCreate, error) {
	domain, err := lookupName(domain)
	if err != nil {
		return newCreate{}, err
	}
	if username == "" {
		return newCreate{}, validation.New("username", "The username field is required.")
	}
	name, ok := NormalizeUsername(username)
	if !ok {
		return newCreate{}, validation.New("username", usernameRule)
	}
	pw, hash, err := s.newPassword()
	if err != nil {
		return newCreate{}, fmt.Errorf("create credential: %w", err)
	}
	c := postgres.NewCredential{GUID: uuid.New(), AccountID: accountID, Username: name, PasswordHash: hash}
	draft, err := s.outbox.Draft(upserted(postgres.CredentialRow{
		GUID: c.GUID, Domain: domain, Username: name, Version: 1}, hash))
	if err != nil {
		return newCreate{}, fmt.Errorf("create credential: %w", err)
	}
	return newCreate{domain: domain, cred: c, pw: pw, draft: draft}, nil
}

// whyNotInserted is the error of an InsertVerified into domain that added
// nothing, which tells why; the messages name the next step.
func (s *Service) whyNotInserted(domain string, err error) error {
	switch {
	case errors.Is(err, postgres.ErrNotFound):
		return ErrDomainNotFound
	case errors.Is(err, postgres.ErrNotVerified):
		return validation.New("domain", "The domain must be verified before credentials can be created: "+
			"publish its DNS records (GET /api/domains/"+domain+"), then call POST /api/domains/"+domain+"/verify-mandatory.")
	case errors.Is(err, postgres.ErrAtCap):
		return validation.New("username",
			fmt.Sprintf("The domain already has the maximum of %d credentials.", s.cfg.MaxPerDomain))
	case errors.Is(err, postgres.ErrConflict):
		return validation.New("username", "The username has already been taken.")
	}
	return fmt.Errorf("create credential: %w", err)
}

// issued applies the change's sync jobs within the outbox's deadline and
// reports the credential as synced only if the backend confirmed.
func (s *Service) issued(ctx context.Context, row postgres.CredentialRow, pw string, jobs syncer.Pending) Issued {
	c := fromRow(row)
	if s.outbox.Apply(ctx, jobs) {
		now := time.Now()
		c.RemoteSynced, c.LastSyncedAt, c.SyncError = true, &now, nil
	}
	return Issued{Credential: c, Password: pw, Strength: password.Strength()}
}

func upserted(r postgres.CredentialRow, hash string) syncer.Event {
	return syncer.Event{
		Type: syncer.CredentialUpserted, Domain: r.Domain, Username: r.Username, Login: r.Username + "@" + r.Domain,
		CredentialID: r.ID, GUID: r.GUID.String(), Version: r.Version, PasswordHash: hash,
	}
}

// Get returns one credential. ErrDomainNotFound unless accountID owns the
// domain, ErrNotFound unless the credential is in it.
func (s *Service) Get(ctx context.Context, accountID int64, domain string, guid uuid.UUID) (Credential, error) {
	domain, err := lookupName(domain)
	if err != nil {
		return Credential{}, err
	}
	row, err := s.repo.Get(ctx, s.db, accountID, domain, guid)
	if err != nil {
		return Credential{}, s.credentialErr(ctx, s.db, "get credential", accountID, domain, err)
	}
	return fromRow(row), nil
}

// Delete removes a credential; its username may then be used again. It
// reports whether the SMTP server's auth backend confirmed the removal within
// the outbox's deadline (remoteSynced); when it did not, the login may still
// authenticate until a worker applies the job (see the sync queue metrics).
// ErrDomainNotFound unless accountID owns the domain, ErrNotFound unless the
// credential is in it.
func (s *Service) Delete(ctx context.Context, accountID int64, domain string, guid uuid.UUID) (remoteSynced bool, err error) {
	domain, err = lookupName(domain)
	if err != nil {
		return false, err
	}
	tx, err := postgres.Begin(ctx, s.db)
	if err != nil {
		return false, fmt.Errorf("delete credential: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	row, err := s.repo.Delete(ctx, tx, accountID, domain, guid)
	if err != nil {
		return false, s.credentialErr(ctx, tx, "delete credential", accountID, domain, err)
	}
	jobs, err := s.outbox.Enqueue(ctx, tx, syncer.Event{
		Type: syncer.CredentialDeleted, Domain: row.Domain, Username: row.Username,
		Login: row.Username + "@" + row.Domain, CredentialID: row.ID, GUID: row.GUID.String(),
	})
	if err != nil {
		return false, fmt.Errorf("delete credential: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("delete credential: commit: %w", err)
	}
	return s.outbox.Apply(ctx, jobs), nil
}

// MaxGracePeriod bounds a reset's grace period.
const MaxGracePeriod = 7 * 24 * time.Hour

// ResetPassword replaces the credential's password with a fresh one. With
// a grace period (0 to MaxGracePeriod), the replaced password keeps
// authenticating until it ends (a job due then removes it from the
// backend); without, it stops at once. Either way a grace period under way
// ends: only the password just replaced can be the previous one. Errors as
// for Get, and a *validation.Error for a grace period out of range.
func (s *Service) ResetPassword(ctx context.Context, accountID int64, domain string, guid uuid.UUID, grace time.Duration) (Issued, error) {
	domain, err := lookupName(domain)
	if err != nil {
		return Issued{}, err
	}
	if err := checkGrace(grace); err != nil {
		return Issued{}, err
	}
	tx, err := postgres.Begin(ctx, s.db)
	if err != nil {
		return Issued{}, fmt.Errorf("reset password: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	row, pw, jobs, err := s.reset(ctx, tx, accountID, domain, guid, grace)
	if err != nil {
		return Issued{}, err
	}
	if err := tx.Commit(); err != nil {
		return Issued{}, fmt.Errorf("reset password: commit: %w", err)
	}
	return s.issued(ctx, row, pw, jobs), nil
}

// ResetPasswordOnce is ResetPassword for a request with the idempotency key
// key, as CreateOnce is for Create: the first request resets and stores
// render's response in the reset's transaction, later ones replay it (the
// same new password) without resetting again.
func (s *Service) ResetPasswordOnce(ctx context.Context, accountID int64, domain string, guid uuid.UUID, grace time.Duration, key string, render Render) (idempotency.Response, bool, error) {
	domain, err := lookupName(domain)
	if err != nil {
		return idempotency.Response{}, false, err
	}
	if err := checkGrace(grace); err != nil {
		return idempotency.Response{}, false, err
	}
	k, err := idempotency.NewKey(accountID, key, "credential.reset-password", domain, guid.String(), grace.String())
	if err != nil {
		return idempotency.Response{}, false, err
	}
	return s.once(ctx, k, "reset password", render, func(tx *postgres.Tx) (postgres.CredentialRow, string, syncer.Pending, error) {
		return s.reset(ctx, tx, accountID, domain, guid, grace)
	})
}

func checkGrace(grace time.Duration) error {
	if grace < 0 || grace > MaxGracePeriod || grace%time.Second != 0 {
		return validation.New("grace_period_seconds",
			fmt.Sprintf("The grace_period_seconds must be an integer between 0 and %d.", int64(MaxGracePeriod/time.Second)))
	}
	return nil
}

// reset stores a fresh password and enqueues its sync jobs in tx.
func (s *Service) reset(ctx context.Context, tx *postgres.Tx, accountID int64, domain string, guid uuid.UUID, grace time.Duration) (postgres.CredentialRow, string, syncer.Pending, error) {
	pw, hash, err := s.newPassword()
	if err != nil {
		return postgres.CredentialRow{}, "", syncer.Pending{}, fmt.Errorf("reset password: %w", err)
	}
	row, err := s.repo.SetPassword(ctx, tx, accountID, domain, guid, hash, grace)
	if err != nil {
		return row, "", syncer.Pending{}, s.credentialErr(ctx, tx, "reset password", accountID, domain, err)
	}
	// A disabled or expired credential gets its new password, and still
	// does not authenticate.
	jobs, err := s.enqueueState(ctx, tx, row, hash, time.Now())
	if err != nil {
		return row, "", syncer.Pending{}, fmt.Errorf("reset password: %w", err)
	}
	return row, pw, jobs, nil
}

func (s *Service) newPassword() (pw, hash string, err error) {
	pw, err = password.Generate()
	if err != nil {
		return "", "", err
	}
	hash, err = password.Hash(s.cfg.Scheme, pw)
	if err != nil {
		return "", "", err
	}
	return pw, hash, nil
}

func (s *Service) domainErr(op string, err error) error {
	if errors.Is(err, postgres.ErrNotFound) {
		return ErrDomainNotFound
	}
	return fmt.Errorf("%s: %w", op, err)
}

// credentialErr tells a missing domain from a missing credential once a
// credential statement matched nothing: the second query runs only on that
// miss, so the hit path stays one statement. q is the caller's connection or
// transaction: a caller in a transaction must not take a second pooled
// connection while it holds one.
func (s *Service) credentialErr(ctx context.Context, q sqlx.QueryerContext, op string, accountID int64, domain string, err error) error {
	if !errors.Is(err, postgres.ErrNotFound) {
		return fmt.Errorf("%s: %w", op, err)
	}
	if _, derr := s.repo.Domain(ctx, q, accountID, domain); derr != nil {
		return s.domainErr(op, derr)
	}
	return ErrNotFound
}

func fromRow(r postgres.CredentialRow) Credential {
	return Credential{
		ID:                r.ID,
		GUID:              r.GUID,
		Domain:            r.Domain,
		Username:          r.Username,
		Active:            r.Status,
		CreatedAt:         r.CreatedAt,
		ModifiedAt:        r.ModifiedAt,
		PasswordChangedAt: r.PasswordChangedAt,
		RemoteSynced:      r.SyncedVersion >= r.Version,
		LastSyncedAt:      r.SyncedAt,
		SyncError:         r.SyncError,
		Usage: Usage{
			LastUsedAt: r.LastUsedAt, LastUsedIP: r.LastUsedIP,
			MessagesQueued: r.MessagesQueued, MessagesRefused: r.MessagesRefused,
		},
		ExpiresAt:         r.ExpiresAt,
		AllowedSenders:    r.AllowedSenders,
		LimitPerMinute:    r.LimitPerMinute,
		LimitPerHour:      r.LimitPerHour,
		LimitPerDay:       r.LimitPerDay,
		PreviousExpiresAt: r.PreviousExpiresAt,
	}
}
