// Package snapshot applies sync batches to targets that render a scope's
// whole state (files) rather than replay events, without holding any of it
// in memory: a batch costs the process O(changes), a whole write of a
// scope of any size constant memory.
//
// Each part (a file) of a scope has a fingerprint, recorded with the apply
// that wrote it (syncer.Batch.KeepPrints). While a part's backend still
// matches its fingerprint, which the Renderer checks without reading it,
// the part holds exactly what the last apply gave it, whichever process
// wrote it and however long ago; an apply then costs the database and the
// process O(changes):
//
//   - a batch that only adds new logins (syncer.Batch.NewLogins: the
//     common create) is appended to their parts;
//   - any other change of single credentials is merged into the changed
//     parts, read back from the renderer (a PartStore, whose parts are
//     small: the passwd-file's shards);
//   - anything else, or a part in doubt (its backend no longer matches
//     its fingerprint, or the scope's fingerprints cannot be trusted),
//     makes the apply stream the scope whole from the database into the
//     renderer (Renderer.Stream), in order, which leaves alone the parts
//     that already hold what they should.
//
// Nothing is read whole on a timer: a part is read again only when in
// doubt.
package snapshot

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"

	"github.com/smtpcreds/smtpcreds/internal/syncer"
)

// Renderer is a backend that holds each scope's state whole, in parts,
// e.g. as files.
type Renderer interface {
	// Name and Scope are as for syncer.Target; a scope must be a domain,
	// or "" for every domain.
	Name() string
	Scope(domain string) string
	// Partition returns the part that holds login: "" when a scope is one
	// part, or the first MD5Digits hex digits of the MD5 of the login.
	Partition(login string) string
	// MD5Digits is the number of hex digits of the MD5 of a login that
	// name its part (0: one part per scope).
	MD5Digits() int
	// Holds reports whether part key of scope is still as print (the
	// fingerprint the renderer returned when it last wrote it; "": no part)
	// says, without reading it.
	Holds(scope, key, print string) bool
	// Render writes the parts of b, and returns the fingerprint of each
	// part it left ("" for a part left empty or removed). It must be
	// idempotent. It returns an error for which errors.Is(err, ErrInDoubt)
	// when an AddOnly part without Entries no longer matches its Print:
	// the Target then writes the scope whole. Its error text is shown to
	// API users.
	Render(ctx context.Context, b Batch) (map[string]string, error)
	// Stream writes the scope whole: scan calls fn with every entry of the
	// scope, grouped by part in the order of syncer.Batch.ScanInOrder with
	// MD5Digits; known is the fingerprints of the parts as the scope's last
	// apply left them (nil when they cannot be trusted). It returns the
	// fingerprint of every part that has entries. It must be idempotent.
	// (b.Parts is nil: b gives the scope and the events.)
	Stream(ctx context.Context, b Batch, known map[string]string, scan func(fn func(syncer.Entry) error) error) (map[string]string, error)
}

// PartStore is implemented by renderers that can return a part's current
// state cheaply, e.g. by reading a small shard file: a change that is not
// only additions is merged into the changed parts read back, instead of
// the scope being written whole.
type PartStore interface {
	Renderer
	// ReadPart returns the entries the backend holds in part key of scope,
	// sorted by login (none for a part it does not have), and an error if
	// they are not what print says.
	ReadPart(scope, key, print string) ([]syncer.Entry, error)
}

// ErrInDoubt is what Render wraps when a part is not as its fingerprint
// says.
var ErrInDoubt = errors.New("snapshot: part not as its fingerprint says")

// Batch is a syncer batch with the state to render.
type Batch struct {
	syncer.Batch
	// Parts holds the state of each part that holds a login the events
	// changed, by key; a part may now be empty. Read-only.
	Parts []Part
}

// Part is the state of one part of a scope: its entries, sorted by login.
// AddOnly says that the part holds what Print describes plus exactly
// Added, sorted, none of them there before: nothing else changed. A
// renderer may then add Added instead of replacing the part, when the part
// still matches Print. Entries is then nil when the part was not read (the
// batch only adds new logins): a part that no longer matches Print is then
// in doubt.
type Part struct {
	Key     string
	Entries []syncer.Entry
	AddOnly bool
	Added   []syncer.Entry
	Print   string
}

// Target is the syncer.Target of a Renderer.
type Target struct {
	r   Renderer
	log *slog.Logger
}

var (
	_ syncer.StateReader = (*Target)(nil)
	_ syncer.MD5Parts    = (*Target)(nil)
)

// New returns the target rendering through r; log gets the warnings of
// parts in doubt.
func New(r Renderer, log *slog.Logger) *Target {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Target{r: r, log: log}
}

// Name implements syncer.Target.
func (t *Target) Name() string { return t.r.Name() }

// Scope implements syncer.Target.
func (t *Target) Scope(domain string) string { return t.r.Scope(domain) }

// ReadsState implements syncer.StateReader.
func (*Target) ReadsState() {}

// MD5Digits implements syncer.MD5Parts: the renderer's parts are named so.
func (t *Target) MD5Digits() int { return t.r.MD5Digits() }

// errWhole is returned by the cheap ways of applying a batch when only a
// whole write can.
var errWhole = errors.New("snapshot: write the scope whole")

// Apply implements syncer.Target, as the package documentation says.
func (t *Target) Apply(ctx context.Context, b syncer.Batch) error {
	err := t.applyNew(ctx, b)
	if errors.Is(err, errWhole) {
		err = t.applyChanges(ctx, b)
	}
	if errors.Is(err, errWhole) || errors.Is(err, ErrInDoubt) {
		err = t.applyWhole(ctx, b)
	}
	return err
}

// applyNew appends a batch of new logins to their parts.
func (t *Target) applyNew(ctx context.Context, b syncer.Batch) error {
	added, ok, err := b.NewLogins(ctx)
	if err != nil || !ok {
		return cmp.Or(err, errWhole)
	}
	byPart := map[string][]syncer.Entry{}
	for _, e := range added {
		k := t.r.Partition(e.Login)
		byPart[k] = append(byPart[k], e)
	}
	prints, trusted, err := b.Prints(ctx, keysOf(byPart))
	if err != nil || !trusted {
		return cmp.Or(err, errWhole)
	}
	parts := make([]Part, 0, len(byPart))
	for k, es := range byPart {
		parts = append(parts, Part{Key: k, AddOnly: true, Added: es, Print: prints[k]})
	}
	slices.SortFunc(parts, byKey)
	return t.render(ctx, b, parts)
}

// applyChanges merges a batch of single credentials' changes into their
// parts, read back from a PartStore.
func (t *Target) applyChanges(ctx context.Context, b syncer.Batch) error {
	store, ok := t.r.(PartStore)
	if !ok {
		return errWhole
	}
	logins, rows, ok, err := b.Changes(ctx)
	if err != nil || !ok {
		return cmp.Or(err, errWhole)
	}
	keys := map[string][]syncer.Entry{}
	for _, l := range logins {
		keys[t.r.Partition(l)] = nil
	}
	for _, r := range rows {
		keys[t.r.Partition(r.Login)] = nil
	}
	prints, trusted, err := b.Prints(ctx, keysOf(keys))
	if err != nil || !trusted {
		return cmp.Or(err, errWhole)
	}
	parts, err := changedParts(t.r.Partition, logins, rows, func(k string) ([]syncer.Entry, error) {
		if !t.r.Holds(b.Scope, k, prints[k]) {
			return nil, ErrInDoubt
		}
		return store.ReadPart(b.Scope, k, prints[k])
	}, nil)
	if err != nil {
		t.log.Warn("sync: a part to change is in doubt, writing the scope whole",
			"target", t.r.Name(), "scope", b.Scope, "error", err.Error())
		return errWhole
	}
	for i := range parts {
		parts[i].Print = prints[parts[i].Key]
	}
	return t.render(ctx, b, parts)
}

// render renders parts and keeps their new fingerprints.
func (t *Target) render(ctx context.Context, b syncer.Batch, parts []Part) error {
	prints, err := t.r.Render(ctx, Batch{Batch: b, Parts: parts})
	if err != nil {
		if errors.Is(err, ErrInDoubt) {
			t.log.Warn("sync: a part is not as its fingerprint says, writing the scope whole",
				"target", t.r.Name(), "scope", b.Scope, "error", err.Error())
		}
		return err
	}
	b.KeepPrints(prints, false)
	return nil
}

// applyWhole streams the scope whole into the renderer.
func (t *Target) applyWhole(ctx context.Context, b syncer.Batch) error {
	known, trusted, err := b.Prints(ctx, nil)
	if err != nil {
		return err
	}
	if !trusted {
		known = nil
	}
	prints, err := t.r.Stream(ctx, Batch{Batch: b}, known, func(fn func(syncer.Entry) error) error {
		return b.ScanInOrder(ctx, t.r.MD5Digits(), fn)
	})
	if err != nil {
		return err
	}
	b.KeepPrints(prints, true)
	return nil
}

func keysOf[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
