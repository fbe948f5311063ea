package snapshot

import (
	"cmp"
	"slices"

	"github.com/smtpcreds/smtpcreds/internal/syncer"
)

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
