package syncer

import (
	"context"
	"slices"
	"strings"

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
// saves the apply a round trip. Requests' applies of such a target (unless
// it is Live) are grouped: several scopes are applied in one transaction,
// their Apply calls running at the same time, each with a Batch whose Tx is
// nil and whose reads answer from what the group's claim read (see
// group.go); an Apply must then read through the Batch only.
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
	// as applied. It is nil in a grouped apply (see StateReader).
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
	rows, err := b.reads.rows(ctx, ids, logins)
	if err != nil {
		return nil, nil, false, err
	}
	b.reads.read = true // what was read is confirmed, even nothing
	b.reads.ids, b.reads.versions = b.reads.ids[:0], b.reads.versions[:0]
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
		if b.reads.grouped != nil {
			return nil, nil, false, errAlone
		}
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
	if r.grouped != nil {
		return errAlone
	}
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
		r.progress.touch()
		return fn(Entry{Login: p.Login + PreviousSuffix, Hash: p.Hash})
	})
}

// ScanInOrder is Scan with the entries in order: grouped by the first
// md5Digits hex digits of the MD5 of the login (as Dovecot's "%<k>Mu"
// shards them; no grouping when 0), then by domain, then in login order
// (bytewise) within a domain. A target writing files can stream them
// straight in, one file after the other: a whole read of a scope of any
// size then costs it constant memory.
//
// A login's previous password (PreviousSuffix, during a reset's grace
// period) comes right after the login: it sorts there bytewise, and is in
// the login's shard. The scope's previous passwords are read first and
// held until their login comes: only logins in a grace period cost memory.
func (b Batch) ScanInOrder(ctx context.Context, md5Digits int, fn func(Entry) error) error {
	r := b.reads
	if r.grouped != nil {
		return errAlone
	}
	r.ids, r.versions = r.ids[:0], r.versions[:0]
	r.read = true
	prev := map[string]string{}
	if err := r.repo.PreviousIn(ctx, r.tx, b.Scope, func(p postgres.PreviousRow) error {
		r.progress.touch()
		prev[p.Login] = p.Hash
		return nil
	}); err != nil {
		return err
	}
	return r.repo.ScanInOrder(ctx, r.tx, b.Scope, md5Digits, func(row postgres.SnapshotRow) error {
		r.note(row)
		if err := fn(Entry{Login: row.Login, Hash: row.Hash}); err != nil {
			return err
		}
		if h, ok := prev[row.Login]; ok {
			return fn(Entry{Login: row.Login + PreviousSuffix, Hash: h})
		}
		return nil
	})
}

// Prints returns the fingerprints that the scope's applies kept (KeepPrints)
// for the parts keys (every part with one, when keys is nil), and whether
// they can be trusted: the scope's last committed apply kept them, and
// nobody changed the scope's token behind the syncer's back since. A part
// without a fingerprint then has nothing in the backend. The fingerprint's
// format is the target's.
func (b Batch) Prints(ctx context.Context, keys []string) (map[string]string, bool, error) {
	r := b.reads
	if !r.partsTrusted {
		return nil, false, nil
	}
	if g := r.grouped; g != nil {
		if keys == nil { // every part, which the claim did not read
			return nil, false, errAlone
		}
		prints := make(map[string]string, len(keys))
		for _, k := range keys {
			if !g.parts[k] {
				return nil, false, errAlone
			}
			if p, ok := g.prints[k]; ok {
				prints[k] = p
			}
		}
		return prints, true, nil
	}
	prints, err := r.repo.Parts(ctx, r.tx, r.target, b.Scope, keys)
	if err != nil {
		return nil, false, err
	}
	return prints, true, nil
}

// KeepPrints records, when the apply commits, the fingerprints of the parts
// the target wrote (an empty one: the part is gone), and that every part's
// fingerprint is true; with whole, the parts not in prints are gone. A
// target that does not call it leaves the scope's fingerprints untrusted.
func (b Batch) KeepPrints(prints map[string]string, whole bool) {
	b.reads.keep, b.reads.prints, b.reads.printsWhole = true, prints, whole
}

// NewLogins reports whether the batch only adds logins that no apply can
// have given the backend yet, and returns their entries, sorted by login:
// every event is an upsert of a credential that is active, holds its login,
// and was never confirmed synced (synced_version 0), and no other job of
// the scope is pending for those logins (a deletion a worker holds). A
// target that still holds exactly what the last apply gave it may then add
// these entries and touch nothing else. What it returns is confirmed as
// Changes' would be.
func (b Batch) NewLogins(ctx context.Context) ([]Entry, bool, error) {
	ids, logins, ok := changedCredentials(b.Events)
	if !ok {
		return nil, false, nil
	}
	want := make(map[string]int64, len(logins)) // login -> credential
	for _, e := range b.Events {
		if e.Type != CredentialUpserted {
			return nil, false, nil
		}
		if id, seen := want[e.Login]; seen && id != e.CredentialID {
			return nil, false, nil
		}
		want[e.Login] = e.CredentialID
	}
	rows, err := b.reads.rows(ctx, ids, logins)
	if err != nil {
		return nil, false, err
	}
	if len(rows) != len(want) {
		return nil, false, nil
	}
	for _, r := range rows {
		if id, ok := want[r.Login]; !ok || id != r.CredentialID || r.SyncedVersion != 0 {
			return nil, false, nil
		}
	}
	r := b.reads
	if g := r.grouped; g != nil {
		if g.pending {
			return nil, false, nil
		}
	} else if pending, err := r.repo.PendingFor(ctx, r.tx, r.target, b.Scope, b.JobIDs, logins, eventKeys.Login); err != nil || pending {
		return nil, false, err
	}
	r.read = true
	entries := make([]Entry, len(rows))
	for i, row := range rows {
		r.note(row)
		entries[i] = Entry{Login: row.Login, Hash: row.Hash}
	}
	slices.SortFunc(entries, func(a, b Entry) int { return strings.Compare(a.Login, b.Login) })
	return entries, true, nil
}

// Progress reports that the apply is making progress: an apply ends once
// the syncer's lease passes without any (a hung backend), however long it
// has run. Each row read (Changes, Scan, ScanInOrder) is progress; a target
// calls Progress in long work of its own, such as one send per event.
func (b Batch) Progress() {
	b.reads.progress.touch()
}

// reads is a batch's access to the scope's state, and the versions read.
type reads struct {
	repo   postgres.SyncRepo
	tx     sqlx.QueryerContext
	target string
	// changes returns the current rows of the changed credentials and
	// logins: given by the claim, or read on demand.
	changes func(ctx context.Context, ids []int64, logins []string) ([]postgres.SnapshotRow, error)
	changed []postgres.SnapshotRow // what changes returned, once called
	asked   bool
	// read is set once the target read state; ids and versions are then
	// what the apply confirms.
	read          bool
	ids, versions []int64
	// seen has the credentials of the batch's events that carry a
	// version, true once the target read them.
	seen map[int64]bool
	// partsTrusted: the scope's stored fingerprints are its last apply's.
	partsTrusted bool
	// progress is the apply's (see leased); each row read is progress.
	progress *progress
	// keep is set by KeepPrints, with what it was given.
	keep        bool
	prints      map[string]string
	printsWhole bool
	// grouped is set in a grouped apply: what its claim read, which the
	// reads answer from; what it did not read, they answer with errAlone.
	grouped *groupReads
}

// groupReads is what a grouped apply's claim read of one scope
// (postgres.ClaimGroup).
type groupReads struct {
	pending bool              // another job is pending for a login of the batch
	parts   map[string]bool   // the parts of the batch's logins
	prints  map[string]string // their stored fingerprints
}

// rows returns what changes returns, read once.
func (r *reads) rows(ctx context.Context, ids []int64, logins []string) ([]postgres.SnapshotRow, error) {
	if !r.asked {
		rows, err := r.changes(ctx, ids, logins)
		if err != nil {
			return nil, err
		}
		r.changed, r.asked = rows, true
	}
	return r.changed, nil
}

// expect records the credentials of events that carry a version, which
// the target has not read yet (see confirmed).
func (r *reads) expect(events []Event) {
	for _, e := range events {
		if e.Version > 0 && e.CredentialID != 0 {
			if r.seen == nil {
				r.seen = map[int64]bool{}
			}
			r.seen[e.CredentialID] = false
		}
	}
}

func (r *reads) note(row postgres.SnapshotRow) {
	r.progress.touch()
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
