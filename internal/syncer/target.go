package syncer

import (
	"context"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// Target is a backend smtpcreds keeps in sync. Adding one (an LDAP
// directory, another MTA's API) means implementing these three methods, in
// a subpackage of syncer; the composition root picks the one configured.
type Target interface {
	// Name identifies the target in the outbox.
	Name() string
	// Scope is the coalescing key of a change to domain: jobs with the same
	// scope are applied together and never concurrently. A target that
	// reads state (Batch.Changes, Batch.Scan) must use the domain, or ""
	// for every domain.
	Scope(domain string) string
	// Apply makes the backend reflect the batch. It must be idempotent: a
	// batch may be applied again after a crash. Its error text is shown to
	// API users, so it must not carry secrets.
	Apply(ctx context.Context, b Batch) error
}

// StateReader is implemented by targets whose Apply reads the changed
// credentials' current state (Batch.Changes) instead of replaying the
// events: a request's claim then reads them in its own statement, which
// saves the apply a round trip.
type StateReader interface {
	Target
	ReadsState()
}

// Live is implemented by targets whose backend reads smtpcreds' database
// itself (the dovecot-sql view): whatever is committed is in the backend
// while Check passes. The worker then marks synced, when it starts, the
// credentials no apply of the target has marked: those made with sync off
// or under another target, which have no job of this target to apply.
type Live interface {
	Target
	// Check reports an error while the backend cannot read the database.
	Check(ctx context.Context, q sqlx.QueryerContext) error
}

// Batch is what a target applies at once: the events of one scope, in
// order, and the means to read the scope's current state in the apply's
// transaction.
type Batch struct {
	Scope  string
	JobIDs []int64
	Events []Event
	// Continues reports that the scope's last committed apply was made by
	// this Service (this process): a target that keeps what it wrote
	// between applies may trust it. It is false for the first apply, after
	// a failed one, and when another process applied the scope since.
	Continues bool
	// Tx is the apply's transaction, which holds the scope's lock: for a
	// target kept in smtpcreds' own database. Its commit records the batch
	// as applied.
	Tx sqlx.QueryerContext

	reads *reads
}

// Changes returns the logins the events change and the current entries of
// the changed credentials and of the credentials that hold those logins
// now: a login without an entry is gone. ok is false when an event changes
// more than single credentials (a domain's deletion): read the scope whole
// with Scan instead.
//
// The versions a target reads through Changes or Scan are what the apply
// confirms as synced; a target that reads neither confirms the versions
// its events carry.
func (b Batch) Changes(ctx context.Context) (logins []string, current []Entry, ok bool, err error) {
	ids, logins, ok := changedCredentials(b.Events)
	if !ok {
		return nil, nil, false, nil
	}
	rows, err := b.reads.changes(ctx, ids, logins)
	if err != nil {
		return nil, nil, false, err
	}
	b.reads.read = true // what was read is confirmed, even nothing
	current = make([]Entry, len(rows))
	for i, r := range rows {
		b.reads.note(r)
		current[i] = Entry{Login: r.Login, Hash: r.Hash}
	}
	// The previous password of a login (PreviousSuffix) changes with any
	// change but a create (version 1: it has none), and may be there only
	// after a change that leaves the credential active (upserted).
	var again []int64
	for _, e := range b.Events {
		if e.Version != 1 {
			logins = append(logins, e.Login+PreviousSuffix)
			if e.Type == CredentialUpserted {
				again = append(again, e.CredentialID)
			}
		}
	}
	if len(again) > 0 {
		prev, err := b.reads.repo.PreviousOf(ctx, b.reads.tx, again)
		if err != nil {
			return nil, nil, false, err
		}
		for _, p := range prev {
			current = append(current, Entry{Login: p.Login + PreviousSuffix, Hash: p.Hash})
		}
	}
	return logins, current, true, nil
}

// Scan calls fn with each current entry of the scope (every domain when
// the scope is ""), in no particular order, streamed: a scope of a million
// credentials costs the caller only what it keeps. An error from fn stops
// the scan. What Scan reads replaces what Changes read.
func (b Batch) Scan(ctx context.Context, fn func(Entry) error) error {
	r := b.reads
	r.ids, r.versions = r.ids[:0], r.versions[:0]
	r.read = true
	err := r.repo.Snapshot(ctx, r.tx, b.Scope, func(row postgres.SnapshotRow) error {
		r.note(row)
		return fn(Entry{Login: row.Login, Hash: row.Hash})
	})
	if err != nil {
		return err
	}
	return r.repo.PreviousIn(ctx, r.tx, b.Scope, func(p postgres.PreviousRow) error {
		return fn(Entry{Login: p.Login + PreviousSuffix, Hash: p.Hash})
	})
}

// reads is a batch's access to the scope's state, and the versions read.
type reads struct {
	repo postgres.SyncRepo
	tx   sqlx.QueryerContext
	// changes returns the current rows of the changed credentials and
	// logins: given by the claim, or read on demand.
	changes func(ctx context.Context, ids []int64, logins []string) ([]postgres.SnapshotRow, error)
	// read is set once the target read state; ids and versions are then
	// what the apply confirms.
	read          bool
	ids, versions []int64
	// seen has the credentials of the batch's events that carry a
	// version, true once the target read them.
	seen map[int64]bool
}

func (r *reads) note(row postgres.SnapshotRow) {
	r.read = true
	if row.SyncedVersion < row.Version { // only these need marking
		r.ids, r.versions = append(r.ids, row.CredentialID), append(r.versions, row.Version)
	}
	if r.seen != nil {
		if _, ok := r.seen[row.CredentialID]; ok {
			r.seen[row.CredentialID] = true
		}
	}
}

// confirmed returns the credential versions the apply of b confirms: what
// the target read, and the versions the events carry of credentials it did
// not read (disabled or expired ones, which the backend no longer holds:
// that is their state), or, for a target that read nothing, the versions
// the events carry.
func (b Batch) confirmed() (ids, versions []int64) {
	if b.reads.read {
		ids, versions = b.reads.ids, b.reads.versions
		for _, e := range b.Events {
			if seen, ok := b.reads.seen[e.CredentialID]; ok && !seen && e.Version > 0 {
				ids, versions = append(ids, e.CredentialID), append(versions, e.Version)
			}
		}
		return ids, versions
	}
	for _, e := range b.Events {
		if e.Version > 0 && (e.Type == CredentialUpserted || e.Type == CredentialDeleted) {
			ids, versions = append(ids, e.CredentialID), append(versions, e.Version)
		}
	}
	return ids, versions
}
