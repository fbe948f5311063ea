package syncer

import (
	"cmp"
	"slices"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// fullReadEvery bounds how long a process trusts what it holds of a scope:
// the first apply after it reads the whole scope again, which also catches
// changes made to the database behind smtpcreds' back.
const fullReadEvery = time.Minute

// held is what this process last wrote to one scope of a snapshot target,
// in the target's parts. While no other process has applied the scope since
// (the scope's token is still ours), the next apply reads only the
// credentials its jobs changed and merges them into their parts, instead of
// reading the whole scope: an apply then costs the database O(changes), not
// O(credentials), and the process O(changes + size of the parts changed).
// For a PartStore target, which keeps the state itself, only token and
// readAt are set.
type held struct {
	token   int64     // the token this process stamped on the scope
	readAt  time.Time // when the whole scope was last read
	partOf  func(login string) string
	byLogin map[string]heldEntry
	ids     map[int64]string // credential id -> login
	parts   map[string]*part
}

type heldEntry struct {
	id   int64
	hash string
}

// part is the entries of one part, sorted by login. spare is the previous
// entries, whose array the next merge of the part reuses (the apply that
// was given them is over by then).
type part struct {
	entries, spare []Entry
}

// newHeld is the state of a whole-scope read, split by partOf (nil: one
// part, ""), for rows to be added with add and then done.
func newHeld(now time.Time, partOf func(string) string) *held {
	if partOf == nil {
		partOf = func(string) string { return "" }
	}
	return &held{readAt: now, partOf: partOf, byLogin: map[string]heldEntry{},
		ids: map[int64]string{}, parts: map[string]*part{}}
}

// add adds a row of the whole-scope read.
func (h *held) add(r postgres.SnapshotRow) {
	h.byLogin[r.Login] = heldEntry{r.CredentialID, r.Hash}
	h.ids[r.CredentialID] = r.Login
	k := h.partOf(r.Login)
	p := h.parts[k]
	if p == nil {
		p = &part{}
		h.parts[k] = p
	}
	p.entries = append(p.entries, Entry{Login: r.Login, Hash: r.Hash})
}

// done sorts the parts once every row is added.
func (h *held) done() *held {
	for _, p := range h.parts {
		slices.SortFunc(p.entries, byLogin)
	}
	return h
}

// grouping is a whole-scope read split into parts, for a target that keeps
// the state itself (a PartStore): no maps, only the entries, for the time
// of one apply.
type grouping struct {
	partOf func(string) string
	parts  map[string][]Entry
}

func (g grouping) add(r postgres.SnapshotRow) {
	k := g.partOf(r.Login)
	g.parts[k] = append(g.parts[k], Entry{Login: r.Login, Hash: r.Hash})
}

// all returns the parts, by key, each sorted by login.
func (g grouping) all() []Part {
	out := make([]Part, 0, len(g.parts))
	for k, entries := range g.parts {
		slices.SortFunc(entries, byLogin)
		out = append(out, Part{Key: k, Entries: entries})
	}
	slices.SortFunc(out, func(a, b Part) int { return cmp.Compare(a.Key, b.Key) })
	return out
}

func byLogin(a, b Entry) int { return cmp.Compare(a.Login, b.Login) }

// all returns every non-empty part, by key.
func (h *held) all() []Part {
	out := make([]Part, 0, len(h.parts))
	for k, p := range h.parts {
		if len(p.entries) > 0 {
			out = append(out, Part{Key: k, Entries: p.entries})
		}
	}
	slices.SortFunc(out, func(a, b Part) int { return cmp.Compare(a.Key, b.Key) })
	return out
}

// merge brings h up to date with the current rows of the changed
// credentials (a changed credential without a row is gone) and returns the
// parts that hold a changed login, by key, with their new entries (possibly
// none). It costs O(changes log changes) plus memory copies of the parts
// returned.
func (h *held) merge(changed []int64, rows []postgres.SnapshotRow) []Part {
	dirty := map[string]bool{}
	for _, id := range changed {
		if login, ok := h.ids[id]; ok {
			delete(h.ids, id)
			delete(h.byLogin, login)
			dirty[login] = true
		}
	}
	for _, r := range rows {
		// A login belongs to one credential at a time: one that now holds
		// it replaces a deleted one whose job is not in this batch.
		if old, ok := h.byLogin[r.Login]; ok && old.id != r.CredentialID {
			delete(h.ids, old.id)
		}
		h.byLogin[r.Login] = heldEntry{r.CredentialID, r.Hash}
		h.ids[r.CredentialID] = r.Login
		dirty[r.Login] = true
	}
	added := map[string][]Entry{} // part -> its changed logins still present
	for login := range dirty {
		k := h.partOf(login)
		if e, ok := h.byLogin[login]; ok {
			added[k] = append(added[k], Entry{Login: login, Hash: e.hash})
		} else if _, ok := added[k]; !ok {
			added[k] = nil
		}
	}
	out := make([]Part, 0, len(added))
	for k, add := range added {
		p := h.parts[k]
		if p == nil {
			p = &part{}
			h.parts[k] = p
		}
		slices.SortFunc(add, byLogin)
		merged := slices.Grow(p.spare[:0], len(p.entries)+len(add))
		i := 0
		for _, e := range p.entries {
			if dirty[e.Login] {
				continue
			}
			for i < len(add) && add[i].Login < e.Login {
				merged = append(merged, add[i])
				i++
			}
			merged = append(merged, e)
		}
		p.spare, p.entries = p.entries, append(merged, add[i:]...)
		out = append(out, Part{Key: k, Entries: p.entries})
	}
	slices.SortFunc(out, func(a, b Part) int { return cmp.Compare(a.Key, b.Key) })
	return out
}

// changedCredentials returns the credentials the events change, or false
// when an event changes more than single credentials (a domain deletion),
// which calls for a whole-scope read.
func changedCredentials(events []Event) ([]int64, bool) {
	ids := make([]int64, 0, len(events))
	for _, e := range events {
		if e.Type != CredentialUpserted && e.Type != CredentialDeleted || e.CredentialID == 0 {
			return nil, false
		}
		ids = append(ids, e.CredentialID)
	}
	return ids, true
}
