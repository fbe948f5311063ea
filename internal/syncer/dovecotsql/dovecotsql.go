// Package dovecotsql is the sync target of a Dovecot whose passdb reads
// smtpcreds' own database: nothing to write, so an apply checks Dovecot can read.
//
// Dovecot's SQL passdb queries the dovecot_passdb view (migration
// 00006_dovecot_passdb.sql), so a change is in Dovecot's view once its
// transaction commits: there is no file to replace and no copy to drift.
// The check itself is postgres.PassdbRepo's statement.
package dovecotsql

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/syncer"
)

// TargetName is the dovecot-sql target's name in the outbox.
const TargetName = "dovecot-sql"

// Target is the dovecot-sql sync target. An apply checks, in the apply's
// transaction, that Dovecot's role may read the view and runs Dovecot's
// lookup through it for (some of) the batch's logins: it fails, and the
// jobs wait, reported as not synced, while the view is gone or broken or
// the role has lost its grant. What the lookup returns is not compared with
// the events, since a later change may already be in the view.
type Target struct {
	role string
	repo postgres.PassdbRepo
}

var _ syncer.Live = (*Target)(nil)

// NewTarget returns the target; role is the database role Dovecot connects as.
func NewTarget(role string) *Target { return &Target{role: role} }

// Name implements syncer.Target.
func (*Target) Name() string { return TargetName }

// Scope implements syncer.Target: one scope per domain, so that a domain's
// applies do not wait for another's.
func (*Target) Scope(domain string) string { return domain }

// maxProbe bounds the logins an apply looks up: the lookup is a probe, and
// a deleted domain's event names all of its logins.
const maxProbe = 16

// Apply implements syncer.Target.
func (t *Target) Apply(ctx context.Context, b syncer.Batch) error {
	var logins []string
	for _, e := range b.Events {
		if e.Login != "" {
			logins = append(logins, e.Login)
		}
		logins = append(logins, e.Logins[:min(len(e.Logins), maxProbe)]...)
	}
	return t.check(ctx, b.Tx, logins[:min(len(logins), maxProbe)])
}

// Check implements syncer.Live.
func (t *Target) Check(ctx context.Context, q sqlx.QueryerContext) error {
	return t.check(ctx, q, nil)
}

func (t *Target) check(ctx context.Context, q sqlx.QueryerContext, logins []string) error {
	readable, err := t.repo.CheckPassdb(ctx, q, t.role, logins)
	if err != nil {
		return viewError{err, "the dovecot_passdb view did not answer Dovecot's lookup"}
	}
	if !readable {
		return viewError{fmt.Errorf("role %q may not read the dovecot_passdb view (or does not exist)", t.role),
			"Dovecot's database role may not read the dovecot_passdb view"}
	}
	return nil
}

// viewError is a failed check of the view: the log gets the cause, API
// users a fixed sentence, without the database's error or the role's name.
type viewError struct {
	err    error
	public string
}

func (e viewError) Error() string  { return "dovecot-sql: " + e.err.Error() }
func (e viewError) Unwrap() error  { return e.err }
func (e viewError) Public() string { return e.public }
