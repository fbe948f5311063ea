package snapshot

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/smtpcreds/smtpcreds/internal/syncer"
)

// Merging the changed credentials' rows into the parts read back must give
// exactly what a whole-scope read of the new state gives, whatever the
// changes: new logins, new hashes, deletions, a login taken over by a new
// credential whose predecessor's deletion is not among the changes; and the
// parts a merge returns must be exactly those of the changed logins.
func TestHeldMergeEqualsFullRead(t *testing.T) {
	t.Run("one part", func(t *testing.T) { testHeldMerge(t, nil) })
	t.Run("parts", func(t *testing.T) {
		testHeldMerge(t, func(login string) string { return login[len(login)-13 : len(login)-12] }) // last digit
	})
}

func testHeldMerge(t *testing.T, partOf func(string) string) {
	rng := rand.New(rand.NewPCG(1, 2))
	type row struct {
		id int64
		syncer.Entry
	}
	db := map[int64]row{} // the "database": id -> active row
	nextID := int64(1)
	rowsOf := func() []syncer.Entry {
		var rows []syncer.Entry
		for _, r := range db {
			rows = append(rows, r.Entry)
		}
		return rows
	}
	loginTaken := func(login string) (int64, bool) {
		for id, r := range db {
			if r.Login == login {
				return id, true
			}
		}
		return 0, false
	}
	key := func(login string) string {
		if partOf == nil {
			return ""
		}
		return partOf(login)
	}
	h := &heldParts{partOf: key, parts: map[string][]syncer.Entry{}}
	type db0 struct {
		id    int64
		login string
	}
	var gone []db0 // deleted credentials
	addOnlyParts, otherParts := 0, 0
	defer func() {
		if !t.Failed() && (addOnlyParts < 20 || otherParts < 20) {
			t.Errorf("the rounds changed %d parts by additions only and %d otherwise: too few of one kind to test AddOnly", addOnlyParts, otherParts)
		}
	}()
	for round := range 300 {
		var changed []int64
		var logins []string // the events' logins
		for range 1 + rng.IntN(6) {
			login := fmt.Sprintf("u%03d@example.com", rng.IntN(60))
			switch id, taken := loginTaken(login); {
			case taken && rng.IntN(3) == 0: // delete
				delete(db, id)
				changed, logins = append(changed, id), append(logins, login)
				gone = append(gone, db0{id, login})
			case len(gone) > 0 && rng.IntN(8) == 0: // a late job of a deleted credential, whose login may have a new owner
				g := gone[rng.IntN(len(gone))]
				changed, logins = append(changed, g.id), append(logins, g.login)
			case taken && rng.IntN(2) == 0: // reset
				r := db[id]
				r.Hash = fmt.Sprintf("{SSHA512}%d", rng.Int())
				db[id] = r
				changed, logins = append(changed, id), append(logins, login)
			case taken: // deleted, and its login created again; the deletion's job is elsewhere
				delete(db, id)
				gone = append(gone, db0{id, login})
				fallthrough
			default: // create
				db[nextID] = row{nextID, syncer.Entry{Login: login, Hash: fmt.Sprintf("{SSHA512}%d", rng.Int())}}
				changed, logins = append(changed, nextID), append(logins, login)
				nextID++
			}
		}
		// As Batch.Changes returns them: once each, the active credentials
		// changed and those that hold a changed login now.
		var rows []syncer.Entry
		for _, r := range db {
			if slices.Contains(changed, r.id) || slices.Contains(logins, r.Login) {
				rows = append(rows, r.Entry)
			}
		}
		before := map[string][]syncer.Entry{}
		for _, p := range h.all() {
			before[p.Key] = slices.Clone(p.Entries)
		}
		parts := h.merge(logins, rows)
		for _, p := range parts {
			// AddOnly exactly when every entry the part had is still there,
			// unchanged, and Added is then what it did not have.
			var added []syncer.Entry
			addOnly := true
			for _, e := range before[p.Key] {
				if !slices.Contains(p.Entries, e) {
					addOnly = false
				}
			}
			for _, e := range p.Entries {
				if !slices.Contains(before[p.Key], e) {
					added = append(added, e)
				}
			}
			if p.AddOnly != addOnly || addOnly && !slices.Equal(p.Added, added) || !addOnly && p.Added != nil {
				t.Fatalf("round %d: part %q from %v to %v: AddOnly %v, Added %v; want %v, %v",
					round, p.Key, before[p.Key], p.Entries, p.AddOnly, p.Added, addOnly, added)
			}
			if addOnly {
				addOnlyParts++
			} else {
				otherParts++
			}
		}
		whole := &heldParts{partOf: key, parts: map[string][]syncer.Entry{}}
		for _, r := range rowsOf() {
			whole.parts[key(r.Login)] = append(whole.parts[key(r.Login)], r)
		}
		for _, es := range whole.parts {
			slices.SortFunc(es, byLogin)
		}
		full := whole.all()
		if got := h.all(); !slices.EqualFunc(got, full, equalPart) {
			t.Fatalf("round %d: merged state differs from a full read:\n got %v\nwant %v", round, got, full)
		}
		wantKeys := map[string]bool{}
		for _, login := range logins {
			wantKeys[key(login)] = true
		}
		var gotKeys []string
		for _, p := range parts {
			gotKeys = append(gotKeys, p.Key)
			i := slices.IndexFunc(full, func(f Part) bool { return f.Key == p.Key })
			if len(p.Entries) > 0 && (i < 0 || !equalPart(p, full[i])) || len(p.Entries) == 0 && i >= 0 {
				t.Fatalf("round %d: part %q returned as %v, a full read has it as %v", round, p.Key, p.Entries, full)
			}
		}
		if !slices.IsSorted(gotKeys) || len(gotKeys) != len(wantKeys) {
			t.Fatalf("round %d: merge returned parts %q, want the %d parts of the changed logins %v", round, gotKeys, len(wantKeys), wantKeys)
		}
		for _, k := range gotKeys {
			if !wantKeys[k] {
				t.Fatalf("round %d: merge returned part %q, which no changed login is in", round, k)
			}
		}
	}
}

func equalPart(a, b Part) bool { return a.Key == b.Key && slices.Equal(a.Entries, b.Entries) }

// heldParts is a scope's parts as a backend holds them, changed by
// changedParts as a PartStore's are.
type heldParts struct {
	partOf func(string) string
	parts  map[string][]syncer.Entry
}

func (h *heldParts) merge(logins []string, rows []syncer.Entry) []Part {
	parts, err := changedParts(h.partOf, logins, rows, func(k string) ([]syncer.Entry, error) {
		return slices.Clone(h.parts[k]), nil
	}, nil)
	if err != nil {
		panic(err)
	}
	for _, p := range parts {
		h.parts[p.Key] = p.Entries
	}
	return parts
}

// all returns every non-empty part, by key.
func (h *heldParts) all() []Part {
	var out []Part
	for k, es := range h.parts {
		if len(es) > 0 {
			out = append(out, Part{Key: k, Entries: es})
		}
	}
	slices.SortFunc(out, byKey)
	return out
}
