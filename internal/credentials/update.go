package credentials

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/smtpcreds/smtpcreds/internal/hostname"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/syncer"
	"github.com/smtpcreds/smtpcreds/internal/validation"
)

// MaxAllowedSenders bounds a credential's allowed_senders.
const MaxAllowedSenders = 100

// Field is an optional field of a Patch: Set says the request named it
// (with Value, which may be nil: cleared).
type Field[T any] struct {
	Set   bool
	Value T
}

// Patch is a partial update of a credential; unset fields are kept.
type Patch struct {
	// Status false disables the credential, true enables it.
	Status *bool
	// ExpiresAt is when the login stops authenticating (nil: never); it
	// must be in the future.
	ExpiresAt Field[*time.Time]
	// AllowedSenders narrows the addresses the login may send as: exact
	// addresses or "*@domain", of verified domains of the account (nil or
	// empty: no narrowing).
	AllowedSenders Field[[]string]
	// The relay's sending limits (nil: the server's default, 0: none).
	LimitPerMinute, LimitPerHour, LimitPerDay Field[*int]
}

// Update applies p to a credential and returns it as updated, with
// RemoteSynced set when the SMTP server's auth backend confirmed the
// change within the outbox's deadline (or had nothing to learn).
//
// A disabled or expired credential keeps its row and stops authenticating:
// the change goes through the outbox like a deletion (the backend drops
// the login), and enabling it (or clearing or moving its expiry) puts the
// login back. A future expiry is carried by a sync job due at that moment,
// which the worker applies then (no cron). ErrDomainNotFound,
// ErrNotFound as for Get; a *validation.Error for a bad field.
func (s *Service) Update(ctx context.Context, accountID int64, domain string, guid uuid.UUID, p Patch) (Credential, error) {
	domain, err := lookupName(domain)
	if err != nil {
		return Credential{}, err
	}
	now := time.Now()
	u, err := s.validatePatch(ctx, accountID, p, now)
	if err != nil {
		return Credential{}, err
	}
	tx, err := postgres.Begin(ctx, s.db)
	if err != nil {
		return Credential{}, fmt.Errorf("update credential: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	row, err := s.repo.Update(ctx, tx, accountID, domain, guid, u)
	if err != nil {
		return Credential{}, s.credentialErr(ctx, tx, "update credential", accountID, domain, err)
	}
	var jobs syncer.Pending
	if row.AuthChanged {
		if jobs, err = s.enqueueState(ctx, tx, row.CredentialRow, row.Hash, now); err != nil {
			return Credential{}, fmt.Errorf("update credential: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return Credential{}, fmt.Errorf("update credential: commit: %w", err)
	}
	c := fromRow(row.CredentialRow)
	if row.AuthChanged && s.outbox.Apply(ctx, jobs) {
		c.RemoteSynced, c.LastSyncedAt, c.SyncError = true, &now, nil
	}
	return c, nil
}

// validatePatch checks p and returns it as the repository stores it.
func (s *Service) validatePatch(ctx context.Context, accountID int64, p Patch, now time.Time) (postgres.CredentialUpdate, error) {
	verr := &validation.Error{}
	u := postgres.CredentialUpdate{Status: p.Status}
	if p.ExpiresAt.Set {
		u.SetExpiresAt, u.ExpiresAt = true, p.ExpiresAt.Value
		if t := p.ExpiresAt.Value; t != nil && !t.After(now) {
			verr.Add("expires_at", "The expires_at must be a date-time in the future (or null for no expiry).")
		}
	}
	for _, l := range []struct {
		name string
		f    Field[*int]
		set  *bool
		to   **int
	}{
		{"limit_per_minute", p.LimitPerMinute, &u.SetLimitPerMinute, &u.LimitPerMinute},
		{"limit_per_hour", p.LimitPerHour, &u.SetLimitPerHour, &u.LimitPerHour},
		{"limit_per_day", p.LimitPerDay, &u.SetLimitPerDay, &u.LimitPerDay},
	} {
		if !l.f.Set {
			continue
		}
		if v := l.f.Value; v != nil && (*v < 0 || *v > math.MaxInt32) {
			verr.Add(l.name, fmt.Sprintf("The %s must be an integer between 0 (no limit) and %d, or null for the server's default.", l.name, math.MaxInt32))
			continue
		}
		*l.set, *l.to = true, l.f.Value
	}
	if p.AllowedSenders.Set {
		senders, err := s.allowedSenders(ctx, accountID, p.AllowedSenders.Value)
		if err != nil {
			return u, err
		}
		if senders.err != "" {
			verr.Add("allowed_senders", senders.err)
		}
		u.SetAllowedSenders, u.AllowedSenders = true, senders.list
	}
	if len(verr.Fields) > 0 {
		return u, verr
	}
	return u, nil
}

type senders struct {
	list []string // nil: none (NULL)
	err  string   // the rule broken, if any
}

// allowedSenders normalises a list of allowed senders: exact addresses
// ("local@domain") or "*@domain", each domain lowercased (punycode) and a
// verified domain of accountID, without duplicates. An empty list is none.
func (s *Service) allowedSenders(ctx context.Context, accountID int64, in []string) (senders, error) {
	if len(in) == 0 {
		return senders{}, nil
	}
	if len(in) > MaxAllowedSenders {
		return senders{err: fmt.Sprintf("The allowed_senders may hold at most %d entries.", MaxAllowedSenders)}, nil
	}
	out := make([]string, 0, len(in))
	var domains []string
	for i, a := range in {
		at := strings.LastIndexByte(a, '@')
		if at <= 0 || !validLocal(a[:at]) {
			return senders{err: fmt.Sprintf("The allowed_senders entry %d must be an address local@domain or *@domain.", i+1)}, nil
		}
		d, err := hostname.Normalize(a[at+1:])
		if err != nil {
			return senders{err: fmt.Sprintf("The allowed_senders entry %d must be an address local@domain or *@domain.", i+1)}, nil
		}
		if e := a[:at] + "@" + d; !slices.Contains(out, e) {
			out = append(out, e)
		}
		if !slices.Contains(domains, d) {
			domains = append(domains, d)
		}
	}
	verified, err := s.repo.VerifiedDomains(ctx, s.db, accountID, domains)
	if err != nil {
		return senders{}, fmt.Errorf("update credential: %w", err)
	}
	for _, d := range domains {
		if !slices.Contains(verified, d) {
			return senders{err: "Every allowed_senders entry must be at a verified domain of the account."}, nil
		}
	}
	return senders{list: out}, nil
}

// validLocal reports whether s is "*" or an RFC 5321 dot-atom local part
// of at most 64 characters.
func validLocal(s string) bool {
	if s == "*" {
		return true
	}
	if len(s) == 0 || len(s) > MaxUsernameLen || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && !strings.ContainsRune("!#$%&'*+-/=?^_`{|}~.", rune(c)) {
			return false
		}
	}
	return true
}

// enqueueState enqueues, in tx, the job that brings the backend to the
// credential's state now, and schedules the jobs of the changes that time
// will make: the end of its grace period, its expiry. The scheduled jobs
// check, when they come due, that they still apply (see syncer).
func (s *Service) enqueueState(ctx context.Context, tx *postgres.Tx, r postgres.CredentialRow, hash string, now time.Time) (syncer.Pending, error) {
	jobs, err := s.outbox.Enqueue(ctx, tx, stateEvent(r, hash, now))
	if err != nil || !r.Active(now) {
		return jobs, err
	}
	if r.InGrace(now) {
		e := upserted(r, hash)
		e.Reason = syncer.ReasonGraceEnded
		if err := s.outbox.Schedule(ctx, tx, *r.PreviousExpiresAt, e); err != nil {
			return jobs, err
		}
	}
	if r.ExpiresAt != nil {
		if err := s.outbox.Schedule(ctx, tx, *r.ExpiresAt, stateEvent(r, "", *r.ExpiresAt)); err != nil {
			return jobs, err
		}
	}
	return jobs, nil
}

// stateEvent is the event that brings a backend to the credential's state
// at `at`: its login and hash (and its previous password in a grace
// period) while it is active, the login's removal while it is disabled or
// expired.
func stateEvent(r postgres.CredentialRow, hash string, at time.Time) syncer.Event {
	if r.Active(at) {
		e := upserted(r, hash)
		if r.InGrace(at) {
			e.PreviousPasswordHash, e.PreviousPasswordExpiresAt = *r.PreviousHash, r.PreviousExpiresAt.Unix()
		}
		return e
	}
	reason := syncer.ReasonExpired
	if !r.Status {
		reason = syncer.ReasonDisabled
	}
	return syncer.Event{
		Type: syncer.CredentialDeleted, Domain: r.Domain, Username: r.Username, Login: r.Username + "@" + r.Domain,
		CredentialID: r.ID, GUID: r.GUID.String(), Version: r.Version, Reason: reason,
	}
}
