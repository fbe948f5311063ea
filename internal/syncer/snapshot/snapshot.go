// Package snapshot applies sync batches to targets that render a scope's
// whole state (files) rather than replay events, reading from the database
// only what a batch changed while what this process last wrote can be trusted.
//
// A Renderer is given, for each batch, the current entries of every part
// (for example a passwd-file shard) that holds a login the batch changed.
// While the scope's last apply was this process's (syncer.Batch.Continues)
// and the scope was read whole less than a minute ago, a batch costs the
// database O(changes): the changed credentials are merged into what this
// process holds of the scope, or, for a PartStore, into the changed parts
// read back from the backend (then nothing of the scope is held in memory).
// Otherwise the scope is read whole, and every part is given.
package snapshot

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/syncer"
)

// Renderer is a backend that holds each scope's state whole, e.g. as files.
type Renderer interface {
	// Name and Scope are as for syncer.Target; a scope must be a domain,
	// or "" for every domain.
	Name() string
	Scope(domain string) string
	// Render makes the backend hold the batch's parts. It must be
	// idempotent. Its error text is shown to API users.
	Render(ctx context.Context, b Batch) error
}

// Partitioner is implemented by renderers that keep a scope's state in
// parts, e.g. the passwd-file target's shards: a login's part is
// Partition(login), and a batch carries only the parts it changed. A
// renderer without it has one part, "", holding the scope's whole state.
type Partitioner interface {
	Partition(login string) string
}

// PartStore is implemented by partitioned renderers that can return a
// part's current state cheaply, e.g. by reading a small shard file: the
// Target then keeps no copy of a scope's state (memory O(changes), not
// O(credentials)) and builds a batch's parts from what ReadPart returns
// plus the changes. An error from ReadPart makes the apply read the scope
// whole.
type PartStore interface {
	Partitioner
	// ReadPart returns the entries the backend holds in part key of scope,
	// sorted by login (none for a part it does not have).
	ReadPart(scope, key string) ([]syncer.Entry, error)
}

// Batch is a syncer batch with the state to render.
type Batch struct {
	syncer.Batch
	// Parts holds the whole current state of each part that holds a login
	// the events changed, by key; a part may now be empty. Read-only.
	Parts []Part
	// Whole means that Parts holds every non-empty part of the scope, and
	// any other part is empty (the scope was read whole: the backend may
	// hold anything, e.g. after a restart).
	Whole bool
}

// Part is the state of one part of a scope: its entries, sorted by login.
// AddOnly says that Entries is the part's entries as the last batch applied
// in this process left them (or as the PartStore returned them) plus
// exactly Added, sorted, none of them there before: nothing else changed.
// A renderer may then add Added instead of replacing the part.
type Part struct {
	Key     string
	Entries []syncer.Entry
	AddOnly bool
	Added   []syncer.Entry
}

// fullReadEvery bounds how long a process trusts what it holds of a scope:
// the first apply after it reads the whole scope again, which also catches
// changes made to the database behind smtpcreds' back.
const fullReadEvery = time.Minute

// Target is the syncer.Target of a Renderer.
type Target struct {
	r   Renderer
	log *slog.Logger

	mu sync.Mutex
	// held is what this process last wrote to each scope; an entry is taken
	// out while its scope is being applied, and put back when the render
	// succeeded (a later failure of the apply's commit makes the next batch
	// not continue, which discards it).
	held map[string]*held
}

var _ syncer.StateReader = (*Target)(nil)

// New returns the target rendering through r; log gets the warnings of
// parts that could not be read back.
func New(r Renderer, log *slog.Logger) *Target {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Target{r: r, log: log, held: map[string]*held{}}
}

// Name implements syncer.Target.
func (t *Target) Name() string { return t.r.Name() }

// Scope implements syncer.Target.
func (t *Target) Scope(domain string) string { return t.r.Scope(domain) }

// ReadsState implements syncer.StateReader.
func (*Target) ReadsState() {}

// Apply implements syncer.Target: it renders the parts b changed, read as
// the package documentation says.
func (t *Target) Apply(ctx context.Context, b syncer.Batch) error {
	store, _ := t.r.(PartStore)
	sb := Batch{Batch: b}
	h := t.take(b.Scope)
	if h != nil && (!b.Continues || time.Since(h.readAt) >= fullReadEvery) {
		h = nil
	}
	if h != nil {
		logins, rows, ok, err := b.Changes(ctx)
		switch {
		case err != nil:
			return err
		case !ok:
			h = nil
		case store == nil:
			sb.Parts = h.merge(logins, rows)
		default:
			sb.Parts, err = changedParts(store.Partition, logins, rows, func(k string) ([]syncer.Entry, error) {
				return store.ReadPart(b.Scope, k)
			}, nil)
			if err != nil {
				t.log.Warn("sync: reading the parts to change failed, reading the scope whole",
					"target", t.r.Name(), "scope", b.Scope, "error", err.Error())
				h = nil
			}
		}
	}
	if h == nil {
		var partOf func(string) string
		if p, ok := t.r.(Partitioner); ok {
			partOf = p.Partition
		}
		h = newHeld(time.Now(), partOf)
		if err := b.Scan(ctx, func(e syncer.Entry) error { h.add(e); return nil }); err != nil {
			return err
		}
		sb.Parts, sb.Whole = h.done().all(), true
		if store != nil {
			// The renderer keeps the state: hold only when it was read.
			h = &held{readAt: h.readAt}
		}
	}
	if err := t.r.Render(ctx, sb); err != nil {
		return err
	}
	t.put(b.Scope, h)
	return nil
}

func (t *Target) take(scope string) *held {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.held[scope]
	delete(t.held, scope)
	return h
}

func (t *Target) put(scope string, h *held) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.held[scope] = h
}
