package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// The idle cost (issue 19): a server holding 2 million credentials (1M in
// one domain, 1M over 1,000 domains, bulk-loaded behind its back as the
// memory bench does, then each domain's files written by one create and
// the server restarted, so the process watched never wrote them) in which
// nothing changes for a minute: its CPU time over that minute as a share
// of one core, and the whole reads of a scope it ran (the server's one
// whole-read statement, postgres.ScopeScanSQL, counted in
// pg_stat_statements), with every statement it ran meanwhile.

// idleResult is the idle bench's figures.
type idleResult struct {
	Credentials int
	Domains     int
	Window      time.Duration
	CPUSeconds  float64
	WholeReads  int64 // calls of the whole-read statement in the window
	// WholeReadsWriting is the same count while the files were written
	// (a whole read per domain expected): the count can see them.
	WholeReadsWriting int64
	Statements        int64 // calls of every statement of the server's database in the window
	Top               []idleStmt
	HWMMB             float64
}

type idleStmt struct {
	Calls int64  `db:"calls"`
	Query string `db:"query"`
}

// CorePercent is the server's CPU time as a percentage of one core.
func (r idleResult) CorePercent() float64 { return r.CPUSeconds / r.Window.Seconds() * 100 }

// runIdle measures the idle cost on a database of its own.
func runIdle(ctx context.Context, o options, hash string) (res *idleResult, err error) {
	big, spread, domains, window := 1_000_000, 1_000_000, 1_000, time.Minute
	if o.quick {
		big, spread, domains, window = 20_000, 20_000, 100, 10*time.Second
	}
	err = withEnv(ctx, o, "%d", func(e *env) error {
		logf("idle: loading %d credentials into %s and %d over %d domains", big, bigDomain, spread, domains)
		if _, err := e.cli(ctx, "domains", "add", e.account, bigDomain, "--verified"); err != nil {
			return err
		}
		if err := e.fillDomain(ctx, bigDomain, big, hash); err != nil {
			return err
		}
		if err := e.fillSpread(ctx, domains, spread/domains, hash); err != nil {
			return err
		}
		// Every domain's files written, then a restart.
		if err := e.startServer(ctx); err != nil {
			return err
		}
		logf("idle: a create into each domain, so that the server writes every file")
		if _, err := e.db.ExecContext(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
			return err
		}
		if st, err := e.sendJSON(ctx, newClient(1), "POST", e.baseURL+"/api/domains/"+bigDomain+"/credentials", []byte(`{"username":"idle0"}`), nil); err != nil || st != 201 {
			return fmt.Errorf("create into %s: status %d %v", bigDomain, st, err)
		}
		if pt := e.createInEach(ctx, domains, 16); pt.Creates != domains {
			return fmt.Errorf("%d of %d creates", pt.Creates, domains)
		}
		if err := e.waitSynced(ctx, 10*time.Minute); err != nil {
			return err
		}
		if err := e.checkDomainFiles(ctx, bigDomain); err != nil {
			return err
		}
		res = &idleResult{Credentials: big + spread, Domains: domains + 1, Window: window}
		if res.WholeReadsWriting, err = e.wholeReads(ctx); err != nil {
			return err
		}
		logf("  %d whole reads while writing the files of %d domains", res.WholeReadsWriting, domains+1)
		if res.WholeReadsWriting < int64(domains+1) {
			return fmt.Errorf("%d whole reads counted while %d domains were written whole: the count misses them", res.WholeReadsWriting, domains+1)
		}
		e.stopServer()
		if err := e.startServer(ctx); err != nil {
			return err
		}
		if _, err := e.db.ExecContext(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
			return err
		}
		pid := e.srv.Process.Pid
		cpu0, err := procCPU(pid)
		if err != nil {
			return err
		}
		logf("idle: restarted; watching the server for %s", window)
		t0 := time.Now()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(window):
		}
		cpu1, err := procCPU(pid)
		if err != nil {
			return err
		}
		res.Window = time.Since(t0)
		res.CPUSeconds = cpu1 - cpu0
		res.HWMMB, _ = procHWM(pid)
		if res.WholeReads, err = e.wholeReads(ctx); err != nil {
			return err
		}
		if err := e.db.GetContext(ctx, &res.Statements, `SELECT coalesce(sum(calls), 0)::bigint `+idleStatsFrom); err != nil {
			return err
		}
		if err := e.db.SelectContext(ctx, &res.Top, `SELECT calls, regexp_replace(query, '\s+', ' ', 'g') AS query `+idleStatsFrom+` ORDER BY calls DESC, query LIMIT 8`); err != nil {
			return err
		}
		logf("  %.3f CPU s in %s (%.3f%% of a core), %d whole reads, %d statements, VmHWM %.1f MB",
			res.CPUSeconds, res.Window.Round(time.Millisecond), res.CorePercent(), res.WholeReads, res.Statements, res.HWMMB)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// idleStatsFrom is the FROM of the server database's statements in
// pg_stat_statements.
const idleStatsFrom = `FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND query NOT ILIKE '%pg_stat_statements%'`

// wholeReads counts the calls of the server's whole-read statement since
// pg_stat_statements was reset (it keeps the statement's text as the
// server sent it, parameters as $n).
func (e *env) wholeReads(ctx context.Context) (int64, error) {
	if !strings.Contains(normSQL(postgres.ScopeScanSQL("")), wholeReadMarker) {
		return 0, fmt.Errorf("postgres.ScopeScanSQL no longer has %q: update wholeReadMarker", wholeReadMarker)
	}
	var n int64
	err := e.db.GetContext(ctx, &n, `SELECT coalesce(sum(calls), 0)::bigint `+idleStatsFrom+
		` AND regexp_replace(query, '\s+', ' ', 'g') LIKE '%' || $1 || '%'`, wholeReadMarker)
	return n, err
}

// wholeReadMarker is the part of postgres.ScopeScanSQL that no other
// statement has: the domain's id looked up apart, for the whole read.
const wholeReadMarker = `OR c.domain_id = (SELECT id FROM domains WHERE name = $1))`

// idleHeadline writes the idle bench's headline rows.
func idleHeadline(b *strings.Builder, r *idleResult, add func(string, float64, bool)) {
	if r == nil {
		return
	}
	pct := r.CorePercent()
	fmt.Fprintf(b, "| **idle cost: server CPU with %s credentials (%s domains) and nothing changing** (the %s after a restart) | **%.2f%% of a core** (%.3f CPU s) | < 1%% | %s |\n",
		count(r.Credentials), count(r.Domains), r.Window.Round(time.Second), pct, r.CPUSeconds, mark(pct < 1))
	fmt.Fprintf(b, "| idle: whole reads of a scope in that window (`postgres.ScopeScanSQL` calls in pg_stat_statements; %d counted while the files were written) | %d (%d statements in all) | 0 | %s |\n",
		r.WholeReadsWriting, r.WholeReads, r.Statements, mark(r.WholeReads == 0))
	if add != nil {
		add("idle_core_percent", pct, false)
	}
}

// idleTable writes the idle bench's headline rows and its statements.
func idleTable(b *strings.Builder, r *idleResult) {
	if r == nil {
		return
	}
	idleHeadline(b, r, nil)
	fmt.Fprintf(b, "\n## Idle (%s credentials bulk-loaded, %s domains, passwd-file a file per domain, every file written by a create; the %s after a restart)\n\n",
		count(r.Credentials), count(r.Domains), r.Window.Round(time.Second))
	fmt.Fprintf(b, "Server CPU %.3f s (%.2f%% of a core), VmHWM %.1f MB, %d statements. The statements it ran most:\n\n| calls | statement |\n|---|---|\n",
		r.CPUSeconds, r.CorePercent(), r.HWMMB, r.Statements)
	for _, s := range r.Top {
		q := s.Query
		if len(q) > 110 {
			q = q[:110] + "…"
		}
		fmt.Fprintf(b, "| %d | `%s` |\n", s.Calls, strings.ReplaceAll(q, "|", "\\|"))
	}
}
