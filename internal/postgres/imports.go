package postgres

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// ImportRepo adds credentials in bulk (an import), a batch per
// transaction, through two temporary tables of one session: import_batch
// (the batch, copied in) and import_seen (every login of the import so
// far, to find duplicates without the caller holding them). Hold one
// connection (sqlx.Conn) from Start to End.
type ImportRepo struct{}

// BulkJobs is how an import's credentials reach the sync target (nil: no
// sync). With PerCredential the insert writes one job per credential, its
// event built from Type and Keys (the JSON keys of the event's fields);
// otherwise it writes none and the caller enqueues jobs per scope.
type BulkJobs struct {
	Target        string
	PerCredential bool
	Type          string
	Keys          BulkKeys
}

// BulkKeys are the JSON keys of a per-credential event's fields.
type BulkKeys struct {
	Type, Domain, Login, Username, ID, GUID, Version, Hash, OccurredAt string
}

// ImportRow is one line of an import with a valid login. Hash is nil for a
// line already refused (kept so that a later line with its login is a
// duplicate).
type ImportRow struct {
	Line             int64
	Domain, Username string
	Hash             *string
}

// ImportRefusal is a line ImportBatch did not add, and why: Dup (a line
// number: the login's first line), Foreign (the domain is not the
// account's: Unverified says it is, not verified) or OverCap.
type ImportRefusal struct {
	Line       int64  `db:"line"`
	Domain     string `db:"domain"`
	Dup        int64  `db:"dup"`
	Foreign    bool   `db:"foreign"`
	Unverified bool   `db:"unverified"`
	OverCap    bool   `db:"over_cap"`
}

// ImportOutcome is what ImportBatch did with a batch.
type ImportOutcome struct {
	Refused []ImportRefusal
	// Created counts the credentials added per domain; Skipped the lines
	// whose login existed.
	Created map[string]int64
	Skipped int64
	// JobIDs are the per-credential jobs written (BulkJobs.PerCredential).
	JobIDs []int64
}

// StartImport creates the session's temporary tables.
func (ImportRepo) StartImport(ctx context.Context, q sqlx.ExecerContext) error {
	_, err := q.ExecContext(ctx, `
		CREATE TEMP TABLE import_batch (
			line bigint PRIMARY KEY, domain text NOT NULL, username text NOT NULL, hash text) ON COMMIT DELETE ROWS;
		CREATE TEMP TABLE import_seen (
			domain text NOT NULL, username text NOT NULL, line bigint NOT NULL, PRIMARY KEY (domain, username))`)
	if err != nil {
		return fmt.Errorf("start import: %w", translate(err))
	}
	return nil
}

// EndImport drops them (the connection goes back to the pool).
func (ImportRepo) EndImport(ctx context.Context, q sqlx.ExecerContext) error {
	_, err := q.ExecContext(ctx, `DROP TABLE IF EXISTS import_batch, import_seen`)
	if err != nil {
		return fmt.Errorf("end import: %w", translate(err))
	}
	return nil
}

// ImportBatch adds the rows of one batch to accountID's verified domains,
// in tx (READ COMMITTED, on the session of StartImport), skipping the
// logins that exist. It refuses a row whose login an earlier row of the
// import had, whose domain is not a verified domain of the account, or,
// with a limit (above 0), that would take its domain past limit
// credentials: the batch then takes each of its domains' cap locks
// exclusively (see credential_cap_room) until the commit, so that the
// cap holds exactly against concurrent creates. scopes maps each domain
// of the batch to its sync scope, for per-credential jobs.
func (ImportRepo) ImportBatch(ctx context.Context, tx *sqlx.Tx, accountID int64, rows []ImportRow, limit int64,
	jobs *BulkJobs, scopes map[string]string) (ImportOutcome, error) {
	out := ImportOutcome{Created: map[string]int64{}}
	fail := func(step string, err error) (ImportOutcome, error) {
		return ImportOutcome{}, fmt.Errorf("import batch: %s: %w", step, translate(err))
	}
	st, err := tx.PrepareContext(ctx, `COPY import_batch (line, domain, username, hash) FROM STDIN`)
	if err != nil {
		return fail("copy", err)
	}
	for _, r := range rows {
		if _, err := st.ExecContext(ctx, r.Line, r.Domain, r.Username, r.Hash); err != nil {
			st.Close()
			return fail("copy", err)
		}
	}
	if _, err := st.ExecContext(ctx); err != nil {
		st.Close()
		return fail("copy", err)
	}
	if err := st.Close(); err != nil {
		return fail("copy", err)
	}
	if _, err := tx.ExecContext(ctx, `ANALYZE import_batch`); err != nil {
		return fail("analyze", err)
	}
	// Duplicates: of an earlier batch's line, or of an earlier line of
	// this one. The first lines of this batch's logins join the seen.
	var dups []ImportRefusal
	if err := sqlx.SelectContext(ctx, tx, &dups, `
		WITH dup AS (
			SELECT DISTINCT ON (line) line, first FROM (
				SELECT b.line, s.line AS first FROM import_batch b JOIN import_seen s USING (domain, username)
				UNION ALL
				SELECT b.line, f.first FROM import_batch b
				JOIN (SELECT domain, username, min(line) AS first FROM import_batch GROUP BY 1, 2 HAVING count(*) > 1) f
				  USING (domain, username)
				WHERE b.line <> f.first) x
			ORDER BY line, first),
		gone AS (DELETE FROM import_batch b USING dup WHERE b.line = dup.line RETURNING b.line, b.domain)
		SELECT gone.line, gone.domain, dup.first AS dup FROM gone JOIN dup USING (line)`); err != nil {
		return fail("duplicates", err)
	}
	out.Refused = append(out.Refused, dups...)
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO import_seen (domain, username, line) SELECT domain, username, line FROM import_batch;
		DELETE FROM import_batch WHERE hash IS NULL`); err != nil {
		return fail("seen", err)
	}
	var foreign []ImportRefusal
	if err := sqlx.SelectContext(ctx, tx, &foreign, `
		DELETE FROM import_batch b
		WHERE NOT EXISTS (SELECT FROM domains d WHERE d.account_id = $1 AND d.name = b.domain AND d.is_verified)
		RETURNING b.line, b.domain, true AS foreign,
		          EXISTS (SELECT FROM domains d WHERE d.account_id = $1 AND d.name = b.domain) AS unverified`, accountID); err != nil {
		return fail("domains", err)
	}
	out.Refused = append(out.Refused, foreign...)
	if limit > 0 {
		// The lock first, the counts in the next statement: its snapshot
		// sees every create committed before the lock was granted.
		if _, err := tx.ExecContext(ctx, `
			SELECT pg_advisory_xact_lock(1, (id % 2147483648)::int4) FROM (
				SELECT DISTINCT d.id FROM import_batch b JOIN domains d ON d.account_id = $1 AND d.name = b.domain
				ORDER BY d.id) d`, accountID); err != nil {
			return fail("cap lock", err)
		}
		var over []ImportRefusal
		if err := sqlx.SelectContext(ctx, tx, &over, `
			WITH dom AS (
				SELECT d.id, d.name, $2 - (SELECT coalesce(sum(n), 0) FROM credential_counts cc
				                          WHERE cc.domain_id = d.id AND cc.level = 1) AS room
				FROM domains d WHERE d.account_id = $1 AND d.name IN (SELECT DISTINCT domain FROM import_batch)),
			new AS (
				SELECT b.line, dom.room, row_number() OVER (PARTITION BY dom.id ORDER BY b.line) AS k
				FROM import_batch b JOIN dom ON dom.name = b.domain
				WHERE NOT EXISTS (SELECT FROM credentials c WHERE c.domain_id = dom.id AND c.username = b.username))
			DELETE FROM import_batch b USING new WHERE b.line = new.line AND new.k > new.room
			RETURNING b.line, b.domain, true AS over_cap`, accountID, limit); err != nil {
			return fail("cap", err)
		}
		out.Refused = append(out.Refused, over...)
	}
	var perCred bool
	var target string
	var k BulkKeys
	var typ string
	if jobs != nil && jobs.PerCredential {
		perCred, target, k, typ = true, jobs.Target, jobs.Keys, jobs.Type
	}
	var doms, scs []string
	for d, s := range scopes {
		doms, scs = append(doms, d), append(scs, s)
	}
	var res struct {
		Considered int64         `db:"considered"`
		Created    []byte        `db:"created"`
		JobIDs     pq.Int64Array `db:"job_ids"`
	}
	if err := sqlx.GetContext(ctx, tx, &res, `
		WITH ins AS (
			INSERT INTO credentials (guid, account_id, domain_id, username, password_hash)
			SELECT gen_random_uuid(), $1, d.id, b.username, b.hash
			FROM import_batch b JOIN domains d ON d.account_id = $1 AND d.name = b.domain
			ORDER BY b.line
			ON CONFLICT (domain_id, username) DO NOTHING
			RETURNING id, guid, domain_id, username, version, password_hash),
		named AS (SELECT ins.*, d.name AS domain FROM ins JOIN domains d ON d.id = ins.domain_id),
		j AS (
			INSERT INTO sync_jobs (target, scope, event)
			SELECT $2, s.scope, jsonb_build_object(
				$5::text, $4::text, $6::text, n.domain, $7::text, n.username || '@' || n.domain,
				$8::text, n.username, $9::text, n.id, $10::text, n.guid, $11::text, n.version,
				$12::text, n.password_hash, $13::text, extract(epoch FROM now())::bigint)
			FROM named n JOIN unnest($14::text[], $15::text[]) AS s(domain, scope) ON s.domain = n.domain
			WHERE $3
			ORDER BY n.id
			RETURNING id)
		SELECT (SELECT count(*) FROM import_batch) AS considered,
		       (SELECT coalesce(json_object_agg(domain, n), '{}') FROM (SELECT domain, count(*) AS n FROM named GROUP BY 1) x) AS created,
		       (SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM j) AS job_ids`,
		accountID, target, perCred, typ, k.Type, k.Domain, k.Login, k.Username, k.ID, k.GUID, k.Version, k.Hash, k.OccurredAt,
		pq.Array(doms), pq.Array(scs)); err != nil {
		return fail("insert", err)
	}
	if err := json.Unmarshal(res.Created, &out.Created); err != nil {
		return fail("insert", err)
	}
	var created int64
	for _, n := range out.Created {
		created += n
	}
	out.Skipped = res.Considered - created
	out.JobIDs = res.JobIDs
	return out, nil
}
