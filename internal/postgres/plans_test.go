package postgres_test

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/dbtest"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// A prepared statement keeps, on each pooled connection, the generic plan
// it made there first, often while the tables were nearly empty (a new
// deployment, the bench's start). The hot statements must then still find
// rows by key: credentials by id or by the whole unique (domain_id,
// username), domains by id or by name. A probe by a key's prefix (a
// domain_id alone, an account's domains) reads a whole domain per login, or
// all of an account's domains per create, once they have grown.
func TestHotGenericPlansProbeByKey(t *testing.T) {
	db := dbtest.New(t)
	var account, domain int64
	must(t, db.Get(&account, `INSERT INTO accounts (name, token_digest) VALUES ('acct', '\x00') RETURNING id`))
	must(t, db.Get(&domain, `INSERT INTO domains (account_id, name, is_verified) VALUES ($1, 'a.example', true) RETURNING id`, account))
	statements := map[string]struct{ sql, args string }{
		"ClaimLocked":    {postgres.ClaimLockedSQL, `('t', 'a.example', true, 'credential_id', 'login')`},
		"SnapshotOf":     {postgres.SnapshotOfSQL, `('{1}', '{u}', '{a.example}')`},
		"InsertVerified": {postgres.InsertVerifiedSQL, fmt.Sprintf(`(gen_random_uuid(), %d, 'a.example', 'u', 'x', 1000, NULL, NULL, NULL, NULL)`, account)},
		"Finish":         {postgres.FinishSQL, `('{1}', '{2}', '{3}')`},
	}
	byKey := map[string]*regexp.Regexp{
		"credentials_pkey":                regexp.MustCompile(`^\(id = `),
		"credentials_domain_username_key": regexp.MustCompile(`^\(\(domain_id = .*\) AND \(username = .*\)\)$`),
		"domains_pkey":                    regexp.MustCompile(`^\(id = `),
		"domains_name_key":                regexp.MustCompile(`^\(name = `),
	}
	// Index names start with their table's.
	scan := regexp.MustCompile(`(?:Index Scan|Index Only Scan|Bitmap Index Scan) (?:using|on) ((?:credentials|domains)_\S+).*\n\s*Index Cond: (.*)`)
	// Sizes at which plain joins' generic plans went wrong (0 to 60 rows)
	// and larger ones; the account's other domains, none and many.
	for _, f := range []struct{ creds, domains int }{{0, 0}, {60, 0}, {1000, 300}} {
		_, err := db.Exec(`DELETE FROM credentials`)
		must(t, err)
		_, err = db.Exec(`DELETE FROM domains WHERE id <> $1`, domain)
		must(t, err)
		_, err = db.Exec(`INSERT INTO credentials (guid, account_id, domain_id, username, password_hash)
			SELECT gen_random_uuid(), $1, $2, 'u' || g, 'x' FROM generate_series(1, $3) g`, account, domain, f.creds)
		must(t, err)
		_, err = db.Exec(`INSERT INTO domains (account_id, name, is_verified)
			SELECT $1, 'd' || g || '.example', true FROM generate_series(1, $2) g`, account, f.domains)
		must(t, err)
		for name, st := range statements {
			plan := genericPlan(t, db, st.sql, st.args)
			probes := scan.FindAllStringSubmatch(plan, -1)
			if len(probes) == 0 {
				t.Fatalf("%s at %+v: no index scan in\n%s", name, f, plan)
			}
			for _, p := range probes {
				index, cond := p[1], p[2]
				if key := byKey[index]; key == nil || !key.MatchString(cond) {
					t.Errorf("%s at %+v: probed by %s on %s, not by key; plan:\n%s", name, f, cond, index, plan)
				}
			}
		}
	}
}

// credential_cap_room (sqlmigrations/00007) counts a domain's credentials
// on every capped create; its PL/pgSQL statements keep generic plans too,
// made with sequential scans off (a setting of the function). The count
// reads the domain's level-1 rows of credential_counts by key.
func TestCapCountProbesByKey(t *testing.T) {
	db := dbtest.New(t)
	const count = `SELECT coalesce(sum(n), 0) FROM credential_counts WHERE domain_id = for_domain AND level = 1`
	var fn struct {
		Src    string `db:"prosrc"`
		Config string `db:"config"`
	}
	must(t, db.Get(&fn, `SELECT prosrc, coalesce(array_to_string(proconfig, ','), '') AS config
		FROM pg_proc WHERE proname = 'credential_cap_room'`))
	if strings.Count(fn.Src, count) != 2 || fn.Config != "enable_seqscan=off" {
		t.Fatalf("credential_cap_room has config %q and not twice the count\n%s\nin\n%s", fn.Config, count, fn.Src)
	}
	for _, rows := range []int{0, 60, 20000} {
		_, err := db.Exec(`DELETE FROM credential_counts`)
		must(t, err)
		_, err = db.Exec(`INSERT INTO credential_counts (domain_id, level, bucket, n)
			SELECT g % 7, g % 2, g, 1 FROM generate_series(1, $1) g`, rows)
		must(t, err)
		_, err = db.Exec(`ANALYZE credential_counts`)
		must(t, err)
		plan := genericPlan(t, db, strings.ReplaceAll(count, "for_domain", "$1::bigint"), "(1)")
		if !regexp.MustCompile(`(?:Bitmap Index Scan on|Index (?:Only )?Scan using) credential_counts_idx .*\n\s*Index Cond: \(\(domain_id = \$1\) AND \(level = 1\)\)`).MatchString(plan) {
			t.Errorf("with %d count rows the count is not by key:\n%s", rows, plan)
		}
	}
}

// genericPlan is EXPLAIN of query's generic plan for args, with sequential
// scans off (as LockScope leaves the apply's transaction; elsewhere a scan
// is what the check is about).
func genericPlan(t *testing.T, db *sqlx.DB, query, args string) string {
	t.Helper()
	tx, err := db.Beginx()
	must(t, err)
	defer tx.Rollback() //nolint:errcheck // only read
	_, err = tx.Exec(`SET LOCAL enable_seqscan = off`)
	must(t, err)
	_, err = tx.Exec(`SET LOCAL plan_cache_mode = force_generic_plan`)
	must(t, err)
	_, err = tx.Exec(`PREPARE s AS ` + query)
	must(t, err)
	var lines []string
	must(t, tx.Select(&lines, `EXPLAIN EXECUTE s `+args))
	_, err = tx.Exec(`DEALLOCATE s`) // the session's, not the transaction's
	must(t, err)
	return strings.Join(lines, "\n")
}

// The apply's transaction plans its keyed statements without sequential
// scans, also after a whole read (which scans) in the same transaction:
// Finish follows it, and its generic plan may be made right there.
func TestScansStayOffAfterAWholeRead(t *testing.T) {
	db := dbtest.New(t)
	ctx := t.Context()
	tx, err := postgres.Begin(ctx, db)
	must(t, err)
	defer tx.Rollback() //nolint:errcheck // only read
	repo := postgres.SyncRepo{}
	_, _, err = repo.LockScope(ctx, tx, "t", "a.example", 1)
	must(t, err)
	must(t, repo.Snapshot(ctx, tx, "a.example", func(postgres.SnapshotRow) error { return nil }))
	var setting string
	must(t, tx.Get(&setting, `SHOW enable_seqscan`))
	if setting != "off" {
		t.Errorf("enable_seqscan = %s after Snapshot, want off", setting)
	}
}

// A whole read of one domain (or all) for files without shards streams it
// in login order from credentials_domain_login_idx, with no sort (which
// would hold the domain in PostgreSQL's memory or on its disk first); the
// order is the bytewise login order the passwd-file writer checks.
func TestScanInOrderReadsTheDomainIndexInOrder(t *testing.T) {
	db := dbtest.New(t)
	ctx := t.Context()
	var account, domain int64
	must(t, db.Get(&account, `INSERT INTO accounts (name, token_digest) VALUES ('acct', '\x00') RETURNING id`))
	must(t, db.Get(&domain, `INSERT INTO domains (account_id, name, is_verified) VALUES ($1, 'a.example', true) RETURNING id`, account))
	_, err := db.Exec(`INSERT INTO domains (account_id, name, is_verified) VALUES ($1, 'b.example', true)`, account)
	must(t, err)
	_, err = db.Exec(`INSERT INTO credentials (guid, account_id, domain_id, username, password_hash)
		SELECT gen_random_uuid(), $1, d.id, u, 'x' FROM domains d,
		       unnest(ARRAY['u1', 'u10', 'u1.x', 'u1-y', 'a', 'z', 'u2']) u`, account)
	must(t, err)
	_, err = db.Exec(`INSERT INTO credentials (guid, account_id, domain_id, username, password_hash)
		SELECT gen_random_uuid(), $1, $2, 'n' || g, 'x' FROM generate_series(1, 20000) g`, account, domain)
	must(t, err)
	_, err = db.Exec(`ANALYZE credentials`)
	must(t, err)

	tx, err := postgres.Begin(ctx, db)
	must(t, err)
	defer tx.Rollback() //nolint:errcheck // only read
	repo := postgres.SyncRepo{}
	_, _, err = repo.LockScope(ctx, tx, "t", "a.example", 1)
	must(t, err)
	_, err = tx.Exec(`SET LOCAL enable_sort = off`) // as ScanInOrder does
	must(t, err)
	for _, domain := range []string{"'a.example'", "''"} {
		var lines []string
		must(t, tx.Select(&lines, `EXPLAIN `+strings.ReplaceAll(strings.ReplaceAll(postgres.ScopeScanSQL(postgres.InOrderSQL), "$1", domain), "$2", "0")))
		plan := strings.Join(lines, "\n")
		if !strings.Contains(plan, "Index Scan using credentials_domain_login_idx") || strings.Contains(plan, "Sort") {
			t.Errorf("the ordered read of %s is not the index's order:\n%s", domain, plan)
		}
	}
	_, err = tx.Exec(`SET LOCAL enable_sort = on`)
	must(t, err)

	for _, tc := range []struct {
		domain string
		digits int
	}{{"a.example", 0}, {"a.example", 2}, {"", 0}, {"", 1}} {
		var got []string
		must(t, repo.ScanInOrder(ctx, tx, tc.domain, tc.digits, func(r postgres.SnapshotRow) error {
			got = append(got, r.Login)
			return nil
		}))
		// Each run of one domain (and shard) must be strictly increasing, bytewise.
		for i := 1; i < len(got); i++ {
			prev, cur := got[i-1], got[i]
			_, pd, _ := strings.Cut(prev, "@")
			_, cd, _ := strings.Cut(cur, "@")
			if pd == cd && shardOf(prev, tc.digits) == shardOf(cur, tc.digits) && prev >= cur {
				t.Fatalf("%+v: %q before %q", tc, prev, cur)
			}
			if shardOf(prev, tc.digits) > shardOf(cur, tc.digits) {
				t.Fatalf("%+v: shard of %q after that of %q", tc, cur, prev)
			}
		}
		want := 20007
		if tc.domain == "" {
			want += 7
		}
		if len(got) != want {
			t.Fatalf("%+v: %d rows, want %d", tc, len(got), want)
		}
	}
}

func shardOf(login string, digits int) string {
	sum := md5.Sum([]byte(login))
	return hex.EncodeToString(sum[:])[:digits]
}
