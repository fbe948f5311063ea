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

// held is what this process last wrote to one scope of a snapshot target.
// While no other process has applied the scope since (the scope's token is
// still ours), the next apply reads only the credentials its jobs changed
// and merges them in, instead of reading the whole scope: an apply then
// costs the database O(changes), not O(credentials).
type held struct {
	token   int64     // the token this process stamped on the scope
	readAt  time.Time // when the whole scope was last read
	byLogin map[string]heldEntry
	ids     map[int64]string // credential id -> login
	entries []Entry          // sorted by login
	spare   []Entry          // the previous entries, whose array the next merge reuses
}

type heldEntry struct {
	id   int64
	hash string
}

// newHeld is the state of a whole-scope read.
func newHeld(rows []postgres.SnapshotRow, now time.Time) *held {
	h := &held{readAt: now, byLogin: make(map[string]heldEntry, len(rows)), ids: make(map[int64]string, len(rows))}
	h.entries = make([]Entry, 0, len(rows))
	for _, r := range rows {
		h.byLogin[r.Login] = heldEntry{r.CredentialID, r.Hash}
		h.ids[r.CredentialID] = r.Login
		h.entries = append(h.entries, Entry{Login: r.Login, Hash: r.Hash})
	}
	slices.SortFunc(h.entries, func(a, b Entry) int { return cmp.Compare(a.Login, b.Login) })
	return h
}

// merge brings h up to date with the current rows of the changed
// credentials: a changed credential without a row is gone. It costs
// O(entries) in memory copies and O(changes log changes) otherwise. The
// entries of the merge before are overwritten (their apply is over).
func (h *held) merge(changed []int64, rows []postgres.SnapshotRow) {
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
	var added []Entry
	for login := range dirty {
		if e, ok := h.byLogin[login]; ok {
			added = append(added, Entry{Login: login, Hash: e.hash})
		}
	}
	slices.SortFunc(added, func(a, b Entry) int { return cmp.Compare(a.Login, b.Login) })
	out := slices.Grow(h.spare[:0], len(h.byLogin))
	i := 0
	for _, e := range h.entries {
		if dirty[e.Login] {
			continue
		}
		for i < len(added) && added[i].Login < e.Login {
			out = append(out, added[i])
			i++
		}
		out = append(out, e)
	}
	h.spare, h.entries = h.entries, append(out, added[i:]...)
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
