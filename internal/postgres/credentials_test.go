package postgres_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/smtpcreds/smtpcreds/internal/dbtest"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

// Paging through the counts returns exactly what OFFSET over the
// credentials would, and the count is exact, whatever the history: ids of
// two domains interleaved across several buckets and ranges, deletions,
// delta rows before and after a compaction.
func TestListPagesMatchOffset(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	var account, a, b int64
	must(t, db.Get(&account, `INSERT INTO accounts (name, token_digest) VALUES ('acct', '\x00') RETURNING id`))
	must(t, db.Get(&a, `INSERT INTO domains (account_id, name, is_verified) VALUES ($1, 'a.example', true) RETURNING id`, account))
	must(t, db.Get(&b, `INSERT INTO domains (account_id, name, is_verified) VALUES ($1, 'b.example', true) RETURNING id`, account))
	insert := func(domain int64, n int, prefix string) {
		t.Helper()
		_, err := db.Exec(`
			INSERT INTO credentials (guid, account_id, domain_id, username, password_hash)
			SELECT gen_random_uuid(), $1, $2, $3 || g, 'x' FROM generate_series(1, $4) g`, account, domain, prefix, n)
		must(t, err)
	}
	repo := postgres.CredentialRepo{}
	check := func(stage string) {
		t.Helper()
		var want []int64
		must(t, db.Select(&want, `SELECT id FROM credentials WHERE domain_id = $1 ORDER BY id`, a))
		n, err := repo.Count(ctx, db, a)
		must(t, err)
		if n != int64(len(want)) {
			t.Fatalf("%s: count %d, want %d", stage, n, len(want))
		}
		rng := rand.New(rand.NewPCG(uint64(len(want)), 7))
		for _, limit := range []int{1, 15, 100} {
			offsets := []int64{0, int64(len(want)) - 1, int64(len(want)), int64(len(want)) + 5}
			for range 60 {
				offsets = append(offsets, rng.Int64N(int64(len(want))+1))
			}
			for _, off := range offsets {
				rows, err := repo.List(ctx, db, account, a, limit, off)
				must(t, err)
				got := make([]int64, len(rows))
				for i, r := range rows {
					got[i] = r.ID
				}
				exp := want[min(int(off), len(want)):min(int(off)+limit, len(want))]
				if !slices.Equal(got, exp) {
					t.Fatalf("%s: limit %d offset %d: got ids %v, want %v", stage, limit, off, got, exp)
				}
			}
		}
	}
	for i := range 6 { // interleave the two domains' ids over several buckets of 1024
		insert(a, 500, "a"+string(rune('0'+i))+"-")
		insert(b, 300, "b"+string(rune('0'+i))+"-")
		if i == 3 { // and over two ranges of 65536 ids
			insert(b, 70000, "bulk-")
		}
	}
	check("after inserts")
	_, err := db.Exec(`DELETE FROM credentials WHERE domain_id = $1 AND id % 7 = 0`, a)
	must(t, err)
	check("after deletes")
	must(t, repo.CompactCounts(ctx, db, 10000))
	var rows int
	must(t, db.Get(&rows, `SELECT count(*) FROM credential_counts c WHERE domain_id = $1
		AND EXISTS (SELECT 1 FROM credential_counts o WHERE o.domain_id = c.domain_id AND o.level = c.level AND o.bucket = c.bucket AND o.ctid <> c.ctid)`, a))
	if rows != 0 {
		t.Errorf("after compaction %d rows share a bucket", rows)
	}
	check("after compaction")
	insert(a, 700, "late-")
	_, err = db.Exec(`DELETE FROM credentials WHERE domain_id = $1 AND id % 5 = 0`, a)
	must(t, err)
	check("deltas after a compaction")
	_, err = db.Exec(`DELETE FROM domains WHERE id = $1`, b)
	must(t, err)
	must(t, repo.CompactCounts(ctx, db, 10000))
	must(t, db.Get(&rows, `SELECT count(*) FROM credential_counts WHERE domain_id = $1`, b))
	if rows != 0 {
		t.Errorf("a deleted domain keeps %d count rows after compaction", rows)
	}
	check("after another domain's deletion")
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A reset with a grace period keeps the replaced hash as the previous
// password until then; a reset without ends it; the housekeeping deletes
// those whose grace ended, and only those.
func TestPreviousPassword(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	ctx := context.Background()
	var account int64
	must(t, db.Get(&account, `INSERT INTO accounts (name, token_digest) VALUES ('acct', '\x00') RETURNING id`))
	_, err := db.Exec(`INSERT INTO domains (account_id, name, is_verified) VALUES ($1, 'a.example', true)`, account)
	must(t, err)
	var guids []uuid.UUID
	must(t, db.Select(&guids, `
		INSERT INTO credentials (guid, account_id, domain_id, username, password_hash)
		SELECT gen_random_uuid(), $1, d.id, 'u' || g, 'h0' FROM domains d, generate_series(1, 2) g RETURNING guid`, account))
	repo := postgres.CredentialRepo{}
	r, err := repo.SetPassword(ctx, db, account, "a.example", guids[0], "h1", time.Hour)
	must(t, err)
	if r.PreviousHash == nil || *r.PreviousHash != "h0" || r.PreviousExpiresAt == nil || !r.InGrace(time.Now()) {
		t.Fatalf("after a reset with grace: previous %v until %v", r.PreviousHash, r.PreviousExpiresAt)
	}
	_, err = repo.SetPassword(ctx, db, account, "a.example", guids[1], "h1", time.Hour)
	must(t, err)
	if r, err = repo.SetPassword(ctx, db, account, "a.example", guids[1], "h2", time.Hour); err != nil || *r.PreviousHash != "h1" {
		t.Fatalf("a second reset keeps the password it replaced: %v %v", r.PreviousHash, err)
	}
	if r, err = repo.Get(ctx, db, account, "a.example", guids[1]); err != nil || *r.PreviousHash != "h1" {
		t.Fatalf("Get: %v %v", r.PreviousHash, err)
	}
	_, err = db.Exec(`UPDATE credential_previous_passwords SET expires_at = now() - interval '1 second'
		WHERE credential_id = (SELECT id FROM credentials WHERE guid = $1)`, guids[0])
	must(t, err)
	n, err := repo.PrunePrevious(ctx, db, 10)
	must(t, err)
	var left int
	must(t, db.Get(&left, `SELECT count(*) FROM credential_previous_passwords`))
	if n != 1 || left != 1 {
		t.Errorf("pruned %d, %d left; want 1 and 1", n, left)
	}
	if r, err = repo.SetPassword(ctx, db, account, "a.example", guids[1], "h3", 0); err != nil || r.PreviousHash != nil {
		t.Fatalf("a reset without grace leaves a previous password: %v %v", r.PreviousHash, err)
	}
	must(t, db.Get(&left, `SELECT count(*) FROM credential_previous_passwords`))
	if left != 0 {
		t.Errorf("%d previous passwords after a reset without grace", left)
	}
}
