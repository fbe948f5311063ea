package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/localpg"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// step is one line of the pgbench script. A server step holds the SQL text
// exactly as the server sends it (with $n placeholders) and the pgbench
// variables bound to $1..$n; a harness step is SQL the server does not issue
// but pgbench needs to carry values between statements (the server computes
// them in Go); a meta step is a pgbench backslash command.
type step struct {
	comment string
	sql     string   // server SQL, or harness SQL already in pgbench syntax
	args    []string // pgbench variables for $1..$n (server steps)
	suffix  string   // \gset / \aset, replacing the semicolon
	harness bool
	meta    string
	target  string // only in the script of this sync target ("": every target's)
}

// createSteps is what one POST /api/domains/{domain}/credentials issues with
// the bench configuration and sync target: a high rate limit (one counter
// upsert), the default failed-login limit and the token cache (both
// answered in process once warm, no SQL), a credential cap far above the
// domain's count (the shared cap lock and one count, inside the create
// statement's credential_cap_room), the passwd-file sync target with
// file(s) per domain or the dovecot-sql target (scope: the domain;
// dovecot-sql adds its lookup).
// Transaction boundaries are the server's: the rate counter runs on its own,
// the create is one statement, the request's sync claim and apply are one
// transaction: for the passwd-file, a grouped apply (syncer.applyGrouped)
// of the scopes with jobs pending, for dovecot-sql the scope's own apply.
// (Under load the server does less: a request whose job another request's
// turn or group applied is woken in process without any of the sync SQL;
// pgbench clients claim in the share the API run measured.)
func createSteps(target string) []step {
	steps := make([]step, 0, len(allCreateSteps))
	for _, s := range allCreateSteps {
		if s.target == "" || s.target == target {
			steps = append(steps, s)
		}
	}
	return steps
}

// The sync targets the bench measures.
const (
	targetFile = "passwd-file"
	targetSQL  = "dovecot-sql"
)

// allCreateSteps are the steps of every target; a step with a target is
// only that target's.
var allCreateSteps = []step{
	{meta: `\set u random(1, 999999999999)`},
	{harness: true, comment: "harness: a fresh credential guid (the server makes it in Go)",
		sql: `SELECT gen_random_uuid() AS g`, suffix: `\gset`},
	{harness: true, comment: "harness: the server's rate-limit pool runs with synchronous_commit off", sql: `SET synchronous_commit = off`},
	{comment: "ratelimit.Limiter.Account (postgres.RateCounterRepo.Hit): the account's per-minute counter",
		sql: `
		INSERT INTO rate_counters AS r (key, window_start, hits)
		VALUES ($1, floor(extract(epoch FROM now()) / 60)::bigint, 1)
		ON CONFLICT (key) DO UPDATE
		SET hits = CASE WHEN r.window_start = EXCLUDED.window_start THEN r.hits + 1 ELSE 1 END,
		    window_start = EXCLUDED.window_start
		RETURNING hits, ((window_start + 1) * 60 - extract(epoch FROM now()))::float8`,
		args: []string{"ratekey"}},
	{harness: true, sql: `SET synchronous_commit = on`},
	{comment: "credentials.Service.Create (postgres.CredentialRepo.InsertVerified): the credential and its sync job, one statement",
		sql:  postgres.InsertVerifiedSQL,
		args: []string{"g", "aid", "dom", "u", "hash", "cap", "target", "dom", "event", "idkey"}},
	{comment: "the share of creates whose request claims (measured from the API run at the same concurrency:\n" +
		"-- a request whose job another request's turn applied does no sync SQL)", meta: `\set r random(1, 1000000)`},
	{meta: `\if :r <= :claimppm`},
	{comment: "syncer.Service.applyGroup or applyGrouped: one transaction", sql: `BEGIN READ WRITE`},
	{target: targetFile, harness: true,
		comment: "harness: one grouped apply at a time, as the server's one group runner per process applies one group at a time\n" +
			"-- (LockScopes skips a scope another transaction holds: without this, pgbench's claimers would skip each other's\n" +
			"-- scopes instead of waiting their turn as the server's requests do)",
		sql: `SELECT pg_advisory_xact_lock(1919)`},
	{target: targetFile, harness: true,
		comment: "harness: the scopes of the grouped apply (syncer.Service.applyGrouped): those with jobs pending, as the server's\n" +
			"-- group has those of the requests that came while the group before it ran, and its own",
		sql:    `SELECT array(SELECT :dom::text UNION SELECT DISTINCT scope FROM sync_jobs WHERE target = :target AND done_at IS NULL)::text AS scopes`,
		suffix: `\gset`},
	{meta: `\set tok random(1, 4611686018427387904)`},
	{target: targetSQL, comment: "postgres.SyncRepo.LockScope: the scope's row lock and token",
		sql:  postgres.LockScopeSQL,
		args: []string{"target", "dom", "tok"}, suffix: `\gset l_`},
	{target: targetSQL,
		comment: "postgres.SyncRepo.ClaimLocked: in its scope's turn, claims the scope's pending jobs (row locks)",
		sql:     postgres.ClaimLockedSQL,
		args:    []string{"target", "dom", "changes", "idkey", "loginkey"}},
	{target: targetFile, comment: "postgres.SyncRepo.LockScopes: the group's scopes, locked in order",
		sql: postgres.LockScopesSQL, args: []string{"target", "scopes"}},
	{target: targetFile,
		comment: "postgres.SyncRepo.ClaimGroup: claims the scopes' pending jobs (row locks), with the changed credentials,\n" +
			"-- whether another job is pending for their logins, and the stored fingerprints of their parts (files)",
		sql: postgres.ClaimGroupSQL, args: []string{"target", "scopes", "idkey", "loginkey", "digits"}},
	{target: targetSQL, harness: true, comment: "harness: the jobs this transaction holds, and which of their credentials are not yet marked synced\n" +
		"-- (the server has both in Go from the claim; this also takes any job committed since, as the next claim would)",
		sql: `SELECT count(*) AS n, coalesce(array_agg(id)::text, '{}') AS cids,
		coalesce((SELECT array_agg(c.id)::text FROM credentials c WHERE c.id = ANY(array_agg((h.event->>'credential_id')::bigint))
		          AND c.status AND c.synced_version < c.version), '{}') AS sids,
		coalesce((SELECT array_agg(c.version)::text FROM credentials c WHERE c.id = ANY(array_agg((h.event->>'credential_id')::bigint))
		          AND c.status AND c.synced_version < c.version), '{}') AS svers,
		coalesce(array_agg(h.event->>'login')::text, '{}') AS logins
		FROM (SELECT id, event FROM sync_jobs
		      WHERE target = :target AND scope = :dom AND done_at IS NULL AND (locked_until IS NULL OR locked_until < now())
		      FOR UPDATE SKIP LOCKED) h`, suffix: `\gset`},
	{target: targetFile, harness: true, comment: "harness: the jobs this transaction holds, which of their credentials are not yet marked synced,\n" +
		"-- the scopes with their new tokens, and the files (parts) of the new logins with fingerprints to store\n" +
		"-- (the server has all of it in Go; this also takes any job committed since, as the next claim would)",
		sql: `WITH h AS (
			SELECT id, scope, event FROM sync_jobs
			WHERE target = :target AND scope = ANY(:scopes::text[]) AND done_at IS NULL AND (locked_until IS NULL OR locked_until < now())
			FOR UPDATE SKIP LOCKED),
		s AS (SELECT DISTINCT scope FROM h),
		p AS (SELECT DISTINCT scope, CASE WHEN :digits > 0 THEN left(md5(event->>'login'), :digits) ELSE '' END AS part FROM h),
		c AS (SELECT c.id, c.version FROM credentials c
		      WHERE c.id IN (SELECT (event->>'credential_id')::bigint FROM h) AND c.status AND c.synced_version < c.version)
		SELECT (SELECT count(*) FROM h) AS n, (SELECT coalesce(array_agg(id)::text, '{}') FROM h) AS cids,
		       (SELECT coalesce(array_agg(id)::text, '{}') FROM c) AS sids, (SELECT coalesce(array_agg(version)::text, '{}') FROM c) AS svers,
		       (SELECT coalesce(array_agg(scope)::text, '{}') FROM s) AS gscopes, (SELECT coalesce(array_agg(:tok::bigint)::text, '{}') FROM s) AS gtoks,
		       (SELECT coalesce(array_agg(true)::text, '{}') FROM s) AS gkeep,
		       (SELECT coalesce(array_agg(scope)::text, '{}') FROM p) AS pscopes, (SELECT coalesce(array_agg(part)::text, '{}') FROM p) AS parts,
		       (SELECT coalesce(array_agg('v1 1 1 1 1 1'::text)::text, '{}') FROM p) AS prints`, suffix: `\gset`},
	{comment: "only when the claim got jobs (a concurrent request may have claimed ours)", meta: `\if :n > 0`},
	{target: targetSQL,
		comment: "dovecotsql.Target.Apply (postgres.PassdbRepo.CheckPassdb): Dovecot's role may read the view, and Dovecot's lookup\n" +
			"-- of the batch's logins through it (pgbench's logins are the jobs' warm-up event's: the same cost)",
		sql: `
		SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)
		            THEN has_schema_privilege($1, (SELECT relnamespace FROM pg_class WHERE oid = 'dovecot_passdb'::regclass), 'USAGE')
		                 AND has_table_privilege($1, 'dovecot_passdb'::regclass, 'SELECT')
		            ELSE false END,
		       (SELECT count(p.password)
		        FROM unnest($2::text[]) AS l(login)
		        JOIN dovecot_passdb p ON p.username = split_part(l.login, '@', 1) AND p.domain = split_part(l.login, '@', 2))`,
		args: []string{"role", "logins"}},
	{target: targetSQL, comment: "postgres.SyncRepo.Finish: credentials synced, jobs done",
		sql: `
		WITH synced AS (
			UPDATE credentials c SET synced_version = v.version, synced_at = now(), sync_error = NULL
			FROM unnest($1::bigint[], $2::bigint[]) AS v(id, version)
			WHERE c.id = v.id AND c.synced_version < v.version)
		UPDATE sync_jobs SET done_at = now(), locked_until = NULL, last_error = NULL WHERE id = ANY($3)`,
		args: []string{"sids", "svers", "cids"}},
	{target: targetFile, comment: "postgres.SyncRepo.FinishGroup: the files' new fingerprints, the scopes' tokens, credentials synced, jobs done",
		sql:  postgres.FinishGroupSQL,
		args: []string{"target", "gscopes", "gtoks", "gkeep", "pscopes", "parts", "prints", "sids", "svers", "cids"}},
	{sql: `COMMIT`},
	{meta: `\else`},
	{harness: true, comment: "nothing claimed: the server rolls back, keeping the scope's token (rare in the warm-up, so not checked)", sql: `ROLLBACK`},
	{meta: `\endif`},
	{meta: `\endif`},
}

var wsRe = regexp.MustCompile(`\s+`)

// normSQL makes SQL comparable: whitespace collapsed, no trailing semicolon.
func normSQL(s string) string {
	s = strings.TrimSpace(wsRe.ReplaceAllString(s, " "))
	return strings.TrimSpace(strings.TrimSuffix(s, ";"))
}

var (
	stringLitRe = regexp.MustCompile(`'(?:[^']|'')*'`)
	extractRe   = regexp.MustCompile(`(?i)extract\(\s*\w+\s+FROM`)
	paramRe     = regexp.MustCompile(`\$\d+`)
	nullRe      = regexp.MustCompile(`(?i)\b(?:NULL|true|false)\b`)
	numberLitRe = regexp.MustCompile(`\b\d+(?:\.\d+)?\b`)
)

// shapeSQL is normSQL with every constant and parameter replaced by "?", as
// pg_stat_statements stores statements with their constants as $n.
func shapeSQL(s string) string {
	s = normSQL(s)
	s = stringLitRe.ReplaceAllString(s, "?")
	s = extractRe.ReplaceAllString(s, "extract(? FROM")
	s = paramRe.ReplaceAllString(s, "?")
	s = nullRe.ReplaceAllString(s, "?")
	return numberLitRe.ReplaceAllString(s, "?")
}

var placeholderRe = regexp.MustCompile(`\$(\d+)`)

// script renders createSteps(target) as a pgbench script; with spread > 0
// each transaction creates into one of the domains sp1.example ...
// sp<spread>.example, picked at random (the harness statement that makes
// the guid also names the domain: no extra round trip).
func script(target string, spread int) (string, error) {
	var b strings.Builder
	b.WriteString("-- Generated by cmd/smtpcreds-bench: the SQL of one POST /api/domains/{domain}/credentials,\n")
	b.WriteString("-- with the server's transaction boundaries. Statements marked \"harness\" are not issued\n")
	b.WriteString("-- by the server (it computes those values in Go); they are cheap and make pgbench's\n")
	b.WriteString("-- figure, if anything, a little lower.\n")
	for _, s := range createSteps(target) {
		if spread > 0 && s.harness && s.suffix == `\gset` && strings.Contains(s.sql, "gen_random_uuid() AS g") {
			b.WriteString(`\set dn random(1, ` + strconv.Itoa(spread) + ")\n")
			s.comment += "; and the domain of this create, one of the spread domains"
			s.sql = `SELECT gen_random_uuid() AS g, 'sp' || :dn::int || '.example' AS dom`
		}
		if s.comment != "" {
			b.WriteString("-- " + s.comment + "\n")
		}
		if s.meta != "" {
			b.WriteString(s.meta + "\n")
			continue
		}
		sql := normSQL(s.sql)
		if !s.harness {
			var bad error
			sql = placeholderRe.ReplaceAllStringFunc(sql, func(m string) string {
				n, _ := strconv.Atoi(m[1:])
				if n < 1 || n > len(s.args) {
					bad = fmt.Errorf("statement %q: no variable for %s", sql, m)
					return m
				}
				if a := s.args[n-1]; strings.HasPrefix(a, "'") {
					return a // a constant pgbench cannot pass as a variable (empty)
				}
				return ":" + s.args[n-1]
			})
			if bad != nil {
				return "", bad
			}
		}
		if s.suffix != "" {
			b.WriteString(sql + " " + s.suffix + "\n")
		} else {
			b.WriteString(sql + ";\n")
		}
	}
	return b.String(), nil
}

// serverStmt is a statement the server ran during the warm-up.
type serverStmt struct {
	SQL         string
	CallsPerReq float64
	MeanMs      float64
	InScript    bool
}

// captureStatements reads pg_stat_statements after n sequential creates and
// returns the statements run about once per request.
func (e *env) captureStatements(ctx context.Context, n int) ([]serverStmt, error) {
	rows := []struct {
		Query string  `db:"query"`
		Calls int64   `db:"calls"`
		Mean  float64 `db:"mean_exec_time"`
	}{}
	err := e.db.SelectContext(ctx, &rows, `
		SELECT query, calls, mean_exec_time FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND query NOT ILIKE '%pg_stat_statements%'`)
	if err != nil {
		return nil, err
	}
	// BEGIN/COMMIT are counted together; fold identical normalized texts.
	calls := map[string]int64{}
	means := map[string]float64{}
	for _, r := range rows {
		k := shapeSQL(r.Query)
		calls[k] += r.Calls
		means[k] = r.Mean
	}
	var out []serverStmt
	for k, c := range calls {
		per := float64(c) / float64(n)
		if per < 0.9 {
			continue // background work (sync worker polls, metrics), not per request
		}
		out = append(out, serverStmt{SQL: k, CallsPerReq: per, MeanMs: means[k]})
	}
	slices.SortFunc(out, func(a, b serverStmt) int { return strings.Compare(a.SQL, b.SQL) })
	return out, nil
}

// checkScript compares the server's per-request statements with the
// script's server steps for target; the error lists every difference.
func checkScript(got []serverStmt, target string) error {
	want := map[string]int{}
	for _, s := range createSteps(target) {
		if s.meta == "" && !s.harness {
			want[shapeSQL(s.sql)]++
		}
	}
	var msgs []string
	seen := map[string]bool{}
	for i := range got {
		if _, ok := want[got[i].SQL]; ok {
			got[i].InScript = true
			seen[got[i].SQL] = true
			// The script runs BEGIN/COMMIT twice per create, like the server.
			if w := float64(want[got[i].SQL]); got[i].CallsPerReq < w-0.1 || got[i].CallsPerReq > w+0.1 {
				msgs = append(msgs, fmt.Sprintf("  calls per request %.2f, script has %v: %s", got[i].CallsPerReq, w, got[i].SQL))
			}
			continue
		}
		msgs = append(msgs, "  the server runs, the script lacks: "+got[i].SQL)
	}
	for k := range want {
		if !seen[k] {
			msgs = append(msgs, "  the script has, the server no longer runs: "+k)
		}
	}
	if len(msgs) > 0 {
		slices.Sort(msgs)
		return fmt.Errorf("pgbench script does not match the SQL the server runs for one create "+
			"(update createSteps in cmd/smtpcreds-bench/pgbench.go):\n%s", strings.Join(msgs, "\n"))
	}
	return nil
}

// pgbenchResult is one pgbench run.
type pgbenchResult struct {
	TPS       float64
	LatencyMs float64
	// P50, P95, P99 are percentiles of the transactions' latencies, from
	// pgbench's per-transaction log (zero when it could not be read).
	P50, P95, P99 time.Duration
	Failed        string
}

func pgbenchPath() (string, error) {
	dir, err := localpg.BinDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "pgbench")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("pgbench not found next to initdb: %w", err)
	}
	return p, nil
}

var tpsRe = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
var latRe = regexp.MustCompile(`latency average = ([0-9.]+) ms`)

// runPgbench runs the create script at concurrency conc for dur.
func (e *env) runPgbench(ctx context.Context, vars map[string]string, conc int, dur time.Duration) (pgbenchResult, error) {
	pb, err := pgbenchPath()
	if err != nil {
		return pgbenchResult{}, err
	}
	spread, _ := strconv.Atoi(vars["spread"])
	sc, err := script(vars["target"], spread)
	if err != nil {
		return pgbenchResult{}, err
	}
	path := filepath.Join(e.tmp, "create.sql")
	if err := os.WriteFile(path, []byte(sc), 0o644); err != nil {
		return pgbenchResult{}, err
	}
	logs, err := os.MkdirTemp(e.tmp, "pgbench-log-")
	if err != nil {
		return pgbenchResult{}, err
	}
	// -l: one line per transaction, with its latency, for the percentiles
	// the API's rows show (the summary gives only the average).
	args := []string{"-n", "-M", "prepared", "-l", "--log-prefix", filepath.Join(logs, "tx"),
		"-c", strconv.Itoa(conc), "-j", strconv.Itoa(min(conc, runtime.NumCPU())),
		"-T", strconv.Itoa(max(1, int(dur.Round(time.Second)/time.Second))), "-f", path,
		"-h", "127.0.0.1", "-p", strconv.Itoa(e.cluster.Port()), "-U", "postgres"}
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		args = append(args, "-D", k+"="+vars[k])
	}
	args = append(args, "smtpcreds")
	cmd := exec.CommandContext(ctx, pb, args...)
	out, err := cmd.CombinedOutput()
	m := tpsRe.FindSubmatch(out)
	if m == nil {
		return pgbenchResult{}, fmt.Errorf("pgbench: %v\n%s", err, out)
	}
	r := pgbenchResult{}
	r.TPS, _ = strconv.ParseFloat(string(m[1]), 64)
	if l := latRe.FindSubmatch(out); l != nil {
		r.LatencyMs, _ = strconv.ParseFloat(string(l[1]), 64)
	}
	if err != nil || strings.Contains(string(out), "aborted") {
		r.Failed = fmt.Sprintf("pgbench reported errors (%v); see %s.out", err, path)
		_ = os.WriteFile(path+".out", out, 0o644)
	}
	if lat, err := txLatencies(logs); err != nil {
		logf("pgbench: no latency percentiles: %v", err)
	} else {
		r.P50, r.P95, r.P99 = percentile(lat, 0.50), percentile(lat, 0.95), percentile(lat, 0.99)
	}
	return r, nil
}

// txLatencies reads the latencies of pgbench's per-transaction logs in dir
// (one file per thread; the third field of a line is the transaction's
// latency in microseconds).
func txLatencies(dir string) ([]time.Duration, error) {
	files, err := filepath.Glob(filepath.Join(dir, "tx.*"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no transaction log in %s (%v)", dir, err)
	}
	var lat []time.Duration
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for line := range strings.Lines(string(data)) {
			fields := strings.Fields(line)
			if len(fields) < 3 {
				return nil, fmt.Errorf("%s: line %q", f, line)
			}
			us, err := strconv.ParseInt(fields[2], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s: line %q: %w", f, line, err)
			}
			lat = append(lat, time.Duration(us)*time.Microsecond)
		}
	}
	if len(lat) == 0 {
		return nil, fmt.Errorf("empty transaction logs in %s", dir)
	}
	return lat, nil
}

// pgbenchVars are the constants of the script, read from the database as
// the warm-up left it.
func (e *env) pgbenchVars(ctx context.Context, hash string) (map[string]string, error) {
	var ids struct {
		AID int64 `db:"aid"`
		DID int64 `db:"did"`
	}
	err := e.db.GetContext(ctx, &ids, `
		SELECT a.id AS aid, d.id AS did FROM accounts a JOIN domains d ON d.account_id = a.id
		WHERE a.name = $1 AND d.name = $2`, e.account, e.domain)
	if err != nil {
		return nil, err
	}
	var event string
	err = e.db.GetContext(ctx, &event, `SELECT event::text FROM sync_jobs ORDER BY id DESC LIMIT 1`)
	if err != nil {
		return nil, fmt.Errorf("a sync job of the warm-up: %w", err)
	}
	return map[string]string{
		"ratekey":  "account:" + strconv.FormatInt(ids.AID, 10),
		"aid":      strconv.FormatInt(ids.AID, 10),
		"did":      strconv.FormatInt(ids.DID, 10),
		"dom":      e.domain,
		"hash":     hash,
		"target":   e.target,
		"role":     "dovecot", // Dovecot's role (dovecot-sql), as the bench creates it
		"event":    event,
		"cap":      strconv.Itoa(e.capValue()),
		"idkey":    "credential_id",                            // the key of the new credential's id in the event (syncer.Event's tag)
		"loginkey": "login",                                    // and of its login
		"changes":  strconv.FormatBool(e.target == targetFile), // the passwd-file target renders state
		"digits":   strconv.Itoa(shardDigits(e.layout)),        // the passwd-file's shard digits (its parts)
		"claimppm": "1000000",                                  // every create claims, unless the API run measured otherwise
		"spread":   strconv.Itoa(e.spread),                     // > 0: each transaction picks one of the spread domains
	}, nil
}

// resetCreates brings the bench domain back to the first n credentials and
// empties the outbox, so that the pgbench and API runs start equal.
func (e *env) resetCreates(ctx context.Context, keepBelowID int64) error {
	for _, q := range []string{
		// No job left for the server's worker to claim (it was still
		// syncing pgbench's creates).
		`DELETE FROM sync_jobs`,
		`DELETE FROM credentials c USING domains d WHERE d.id = c.domain_id AND (d.name = '` + e.domain + `' OR d.name ~ '^sp[0-9]+\.example$') AND c.id > ` + strconv.FormatInt(keepBelowID, 10),
		// Waits for an apply in flight (it holds its scope's row), and,
		// since the rows above went behind the server's back, makes the
		// next apply read its scope whole instead of merging into a state
		// that still has them: every run starts from the same file.
		`UPDATE sync_scopes SET token = token + 1`,
		`VACUUM ANALYZE credentials`,
		`VACUUM ANALYZE sync_jobs`,
		`CHECKPOINT`,
	} {
		if _, err := e.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

// syncShares returns, per create of a run of creates requests, how many sync
// claims and applies the server ran (pg_stat_statements since its reset).
func (e *env) syncShares(ctx context.Context, creates int) (claims, applies float64, err error) {
	if creates == 0 {
		return 0, 0, nil
	}
	var n struct {
		Claims  int64 `db:"claims"`
		Applies int64 `db:"applies"`
	}
	err = e.db.GetContext(ctx, &n, `
		SELECT coalesce(sum(calls) FILTER (WHERE query ILIKE '%scope = $2 AND done_at IS NULL%FOR UPDATE SKIP LOCKED%'
		                                     OR query ILIKE '%scope = ANY($2::text[]) AND done_at IS NULL%FOR UPDATE SKIP LOCKED%'), 0)::bigint AS claims,
		       coalesce(sum(calls) FILTER (WHERE query ILIKE 'INSERT INTO sync_scopes%'
		                                     OR query ILIKE '%FROM sync_scopes WHERE target = $1 AND scope = ANY($2::text[])%FOR UPDATE SKIP LOCKED'), 0)::bigint AS applies
		FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`)
	if err != nil {
		return 0, 0, fmt.Errorf("sync shares: %w", err)
	}
	return float64(n.Claims) / float64(creates), float64(n.Applies) / float64(creates), nil
}

// shardDigits is the k of a layout's "%<k>Mu" (0: none).
func shardDigits(layout string) int {
	if m := shardVarRe.FindString(layout); m != "" {
		return int(m[1] - '0')
	}
	return 0
}
