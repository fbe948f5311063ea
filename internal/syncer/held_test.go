package syncer

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// Merging the changed credentials' rows into what was held must give
// exactly what a whole-scope read of the new state gives, whatever the
// changes: new logins, new hashes, deletions, a login taken over by a new
// credential whose predecessor's deletion is not among the changes.
func TestHeldMergeEqualsFullRead(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	db := map[int64]postgres.SnapshotRow{} // the "database": id -> active row
	nextID := int64(1)
	rowsOf := func() []postgres.SnapshotRow {
		var rows []postgres.SnapshotRow
		for _, r := range db {
			rows = append(rows, r)
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
	h := newHeld(nil, time.Now())
	for round := range 300 {
		var changed []int64
		for range 1 + rng.IntN(6) {
			login := fmt.Sprintf("u%03d@example.com", rng.IntN(60))
			switch id, taken := loginTaken(login); {
			case taken && rng.IntN(3) == 0: // delete
				delete(db, id)
				changed = append(changed, id)
			case taken && rng.IntN(2) == 0: // reset
				r := db[id]
				r.Hash = fmt.Sprintf("{SSHA512}%d", rng.Int())
				db[id] = r
				changed = append(changed, id)
			case taken: // deleted, and its login created again; the deletion's job is elsewhere
				delete(db, id)
				fallthrough
			default: // create
				db[nextID] = postgres.SnapshotRow{CredentialID: nextID, Login: login, Hash: fmt.Sprintf("{SSHA512}%d", rng.Int())}
				changed = append(changed, nextID)
				nextID++
			}
		}
		var rows []postgres.SnapshotRow
		for _, id := range changed {
			if r, ok := db[id]; ok {
				rows = append(rows, r)
			}
		}
		h.merge(changed, rows)
		want := newHeld(rowsOf(), time.Now()).entries
		if !slices.Equal(h.entries, want) {
			t.Fatalf("round %d: merged %d entries, a full read has %d:\n got %v\nwant %v", round, len(h.entries), len(want), h.entries, want)
		}
	}
}

func TestChangedCredentials(t *testing.T) {
	ids, ok := changedCredentials([]Event{{Type: CredentialUpserted, CredentialID: 3}, {Type: CredentialDeleted, CredentialID: 4}})
	if !ok || !slices.Equal(ids, []int64{3, 4}) {
		t.Errorf("got %v %v", ids, ok)
	}
	if _, ok := changedCredentials([]Event{{Type: CredentialUpserted, CredentialID: 3}, {Type: DomainDeleted, Domain: "example.com"}}); ok {
		t.Error("a domain deletion must call for a whole-scope read")
	}
}
