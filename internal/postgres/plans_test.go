package postgres_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/smtpcreds/smtpcreds/internal/dbtest"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// A prepared statement keeps, on each pooled connection, the generic plan
// it made there first, often while the tables were nearly empty (a new
// deployment, the bench's start). The statements that look up changed
// credentials must then still probe credentials by key: by id, or by the
// whole unique (domain_id, username). A probe by domain_id or username
// alone reads a whole domain per login once it has grown.
func TestChangedRowsGenericPlansProbeByKey(t *testing.T) {
	db := dbtest.New(t)
	var account, domain int64
	must(t, db.Get(&account, `INSERT INTO accounts (name, token_digest) VALUES ('acct', '\x00') RETURNING id`))
	must(t, db.Get(&domain, `INSERT INTO domains (account_id, name, is_verified) VALUES ($1, 'a.example', true) RETURNING id`, account))
	statements := map[string]struct{ sql, args string }{
		"ClaimLocked": {postgres.ClaimLockedSQL, `('t', 'a.example', true)`},
		"SnapshotOf":  {postgres.SnapshotOfSQL, `('{1}', '{u}', '{a.example}')`},
	}
	scan := regexp.MustCompile(`Index (?:Only )?Scan using (\S+) on credentials .*\n\s*Index Cond: (.*)`)
	// Sizes at which the plain join's generic plan went wrong (0 to 60
	// rows) and one at which it did not.
	for _, size := range []int{0, 60, 1000} {
		_, err := db.Exec(`DELETE FROM credentials`)
		must(t, err)
		_, err = db.Exec(`INSERT INTO credentials (guid, account_id, domain_id, username, password_hash)
			SELECT gen_random_uuid(), $1, $2, 'u' || g, 'x' FROM generate_series(1, $3) g`, account, domain, size)
		must(t, err)
		for name, st := range statements {
			tx, err := db.Beginx()
			must(t, err)
			// As LockScope leaves the apply's transaction.
			_, err = tx.Exec(`SET LOCAL enable_seqscan = off`)
			must(t, err)
			_, err = tx.Exec(`SET LOCAL plan_cache_mode = force_generic_plan`)
			must(t, err)
			_, err = tx.Exec(`PREPARE s AS ` + st.sql)
			must(t, err)
			var lines []string
			must(t, tx.Select(&lines, `EXPLAIN EXECUTE s `+st.args))
			_, err = tx.Exec(`DEALLOCATE s`) // a session's, not the transaction's
			must(t, err)
			must(t, tx.Rollback())
			plan := strings.Join(lines, "\n")
			probes := scan.FindAllStringSubmatch(plan, -1)
			if len(probes) == 0 {
				t.Fatalf("%s at %d rows: no index scan of credentials in\n%s", name, size, plan)
			}
			for _, p := range probes {
				index, cond := p[1], p[2]
				byID := index == "credentials_pkey" && strings.HasPrefix(cond, "(id = ")
				byLogin := index == "credentials_domain_username_key" &&
					strings.Contains(cond, "domain_id = ") && strings.Contains(cond, "username = ")
				if !byID && !byLogin {
					t.Errorf("%s at %d rows: credentials probed by %s on %s, not by key; plan:\n%s", name, size, cond, index, plan)
				}
			}
		}
	}
}
