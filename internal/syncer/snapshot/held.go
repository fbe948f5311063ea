package snapshot

import (
	"cmp"
	"slices"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/syncer"
)

// held is what this process last wrote to one scope of a snapshot target,
// in the target's parts. While no other process has applied the scope since
// (syncer.Batch.Continues), the next apply reads only the
// credentials its jobs changed and merges them into their parts, instead of
// reading the whole scope: an apply then costs the database O(changes), not
// O(credentials), and the process O(changes + size of the parts changed).
// For a PartStore target, which keeps the state itself, only readAt is set.
type held struct {
	readAt time.Time // when the whole scope was last read
	partOf func(login string) string
	parts  map[string]*part
}

// part is the entries of one part, sorted by login. spare is the previous
// entries, whose array the next merge of the part reuses (the apply that
// was given them is over by then).
type part struct {
	entries, spare []syncer.Entry
}

// newHeld is the state of a whole-scope read, split by partOf (nil: one
// part, ""), for rows to be added with add and then done.
func newHeld(now time.Time, partOf func(string) string) *held {
	if partOf == nil {
		partOf = func(string) string { return "" }
	}
	return &held{readAt: now, partOf: partOf, parts: map[string]*part{}}
}

// add adds an entry of the whole-scope read.
func (h *held) add(e syncer.Entry) {
	k := h.partOf(e.Login)
	p := h.parts[k]
	if p == nil {
		p = &part{}
		h.parts[k] = p
	}
	p.entries = append(p.entries, e)
}

// done sorts the parts once every row is added.
func (h *held) done() *held {
	for _, p := range h.parts {
		slices.SortFunc(p.entries, byLogin)
	}
	return h
}

// all returns every non-empty part, by key.
func (h *held) all() []Part {
	out := make([]Part, 0, len(h.parts))
	for k, p := range h.parts {
		if len(p.entries) > 0 {
			out = append(out, Part{Key: k, Entries: p.entries})
		}
	}
	slices.SortFunc(out, byKey)
	return out
}

// merge brings h up to date with the changed logins, given the current
// entries of the changed credentials and of those holding a changed login
// now (as Batch.Changes returns them: a changed login without one is gone), and
// returns the parts that hold a changed login, by key, with their new
// entries (possibly none). It costs O(changes log changes) plus a copy of
// the parts returned.
func (h *held) merge(logins []string, rows []syncer.Entry) []Part {
	parts, _ := changedParts(h.partOf, logins, rows,
		func(k string) ([]syncer.Entry, error) {
			if p := h.parts[k]; p != nil {
				return p.entries, nil
			}
			return nil, nil
		},
		func(k string) []syncer.Entry {
			if p := h.parts[k]; p != nil {
				return p.spare[:0]
			}
			return nil
		})
	for _, np := range parts {
		p := h.parts[np.Key]
		if p == nil {
			p = &part{}
			h.parts[np.Key] = p
		}
		p.spare, p.entries = p.entries, np.Entries
	}
	return parts
}

// changedParts returns the new state of each part that holds one of the
// changed logins, by key: the part's current entries (from read) without
// the changed logins, plus rows, the current entries of the changed
// credentials and of those holding a changed login now. buf, if
// not nil, gives the array to build a part's new entries in. The unchanged
// runs of a part are copied whole, found by binary search: O(changes log
// entries) comparisons, plus the copy. A part whose current entries all stay,
// unchanged, is AddOnly, with the entries it did not have as Added.
func changedParts(partOf func(string) string, logins []string, rows []syncer.Entry,
	read func(key string) ([]syncer.Entry, error), buf func(key string) []syncer.Entry) ([]Part, error) {
	type change struct {
		gone []string       // the changed logins: dropped from the current entries
		add  []syncer.Entry // their current entries
	}
	changes := map[string]*change{} // by part; a part changes even if nothing is added to it
	at := func(login string) *change {
		k := partOf(login)
		c := changes[k]
		if c == nil {
			c = &change{}
			changes[k] = c
		}
		return c
	}
	for _, l := range logins {
		c := at(l)
		c.gone = append(c.gone, l)
	}
	for _, r := range rows {
		c := at(r.Login)
		c.gone = append(c.gone, r.Login)
		c.add = append(c.add, r)
	}
	parts := make([]Part, 0, len(changes))
	for k, c := range changes {
		cur, err := read(k)
		if err != nil {
			return nil, err
		}
		slices.Sort(c.gone)
		gone := slices.Compact(c.gone)
		// A login has one active credential, so rows have distinct logins;
		// should one repeat, the last row wins.
		slices.SortStableFunc(c.add, byLogin)
		add := lastOfEach(c.add) // in the order of gone, which holds each of them
		var out []syncer.Entry
		if buf != nil {
			out = buf(k)
		}
		out = slices.Grow(out, len(cur)+len(add))
		pos, i := 0, 0
		addOnly, added := true, []syncer.Entry{} // the logins new to the part, if that is the whole change
		for _, l := range gone {
			j, found := slices.BinarySearchFunc(cur[pos:], l, func(e syncer.Entry, l string) int { return cmp.Compare(e.Login, l) })
			out = append(out, cur[pos:pos+j]...)
			var was *syncer.Entry
			if pos += j; found {
				was = &cur[pos]
				pos++
			}
			switch {
			case i < len(add) && add[i].Login == l:
				if was == nil {
					added = append(added, add[i])
				} else if was.Hash != add[i].Hash {
					addOnly = false
				}
				out = append(out, add[i])
				i++
			case was != nil: // gone
				addOnly = false
			}
		}
		p := Part{Key: k, Entries: append(out, cur[pos:]...), AddOnly: addOnly}
		if addOnly {
			p.Added = added
		}
		parts = append(parts, p)
	}
	slices.SortFunc(parts, byKey)
	return parts, nil
}

// lastOfEach keeps, of each run of entries with one login, the last.
func lastOfEach(sorted []syncer.Entry) []syncer.Entry {
	out := sorted[:0]
	for i, e := range sorted {
		if i+1 < len(sorted) && sorted[i+1].Login == e.Login {
			continue
		}
		out = append(out, e)
	}
	return out
}

func byLogin(a, b syncer.Entry) int { return cmp.Compare(a.Login, b.Login) }

func byKey(a, b Part) int { return cmp.Compare(a.Key, b.Key) }
