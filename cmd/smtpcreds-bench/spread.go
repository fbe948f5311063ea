package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// The creates spread over 100 domains (issue 19): the API at the bench
// concurrency, each create into the next of 100 fresh domains, beside
// pgbench running the same SQL with each transaction's domain picked at
// random among them; once with the server's default configuration (its
// default credential cap per domain, 1000: 100 domains hold the run's
// creates well below it) and once with the cap off. The rate limit stays
// on but set high, as in the one-domain runs: the default, 120 a minute
// per account, would refuse the bench.

// spreadDomains is how many domains the spread creates go into.
const spreadDomains = 100

// spreadRun is one configuration of the spread creates.
type spreadRun struct {
	Label string // the configuration
	createRun
}

// runSpread measures the spread creates on a database of its own.
func runSpread(ctx context.Context, o options, hash string) (runs []spreadRun, err error) {
	err = withEnv(ctx, o, "%d", func(e *env) error {
		if _, err := e.db.ExecContext(ctx, fmt.Sprintf(`
		INSERT INTO domains (account_id, name, is_verified)
		SELECT a.id, 'sp' || g || '.example', true FROM accounts a, generate_series(1, %d) g WHERE a.name = $1`, spreadDomains), e.account); err != nil {
			return fmt.Errorf("spread domains: %w", err)
		}
		e.spread = spreadDomains
		for i, c := range []struct{ label, cap string }{
			{fmt.Sprintf("the default configuration: cap %d per domain", defaultCap), capDefault},
			{"cap off", "0"},
		} {
			e.capSetting = c.cap
			logf("spread creates over %d domains, %s", spreadDomains, c.label)
			if err := e.startServer(ctx); err != nil {
				return err
			}
			// A domain's first apply writes its file whole (another set of
			// statements): one create into each first, so that the recorded
			// warm-up runs the steady path, as the one-domain warm-up does.
			client := newClient(1)
			for d := 1; d <= spreadDomains; d++ {
				st, msg, err := e.do(ctx, client, http.MethodPost, e.baseURL+"/api/domains/"+spreadDomain(d)+"/credentials",
					fmt.Appendf(nil, `{"username":"sp%dpre"}`, i))
				if err != nil || st != http.StatusCreated {
					e.stopServer()
					return fmt.Errorf("first create into %s: status %d %v %s", spreadDomain(d), st, err, msg)
				}
			}
			run := spreadRun{Label: c.label}
			baseID, err := e.measureCreates(ctx, o, hash, fmt.Sprintf("sp%dw", i), &run.createRun)
			e.stopServer()
			if err != nil {
				return err
			}
			if err := e.checkSpreadCap(ctx); err != nil {
				return err
			}
			runs = append(runs, run)
			if err := e.resetCreates(ctx, baseID); err != nil {
				return err
			}
		}
		return nil
	})
	return runs, err
}

// checkSpreadCap makes sure that no spread domain went past the default
// cap (the runs would then have measured refusals, not creates).
func (e *env) checkSpreadCap(ctx context.Context) error {
	var most int
	if err := e.db.GetContext(ctx, &most, `
		SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM credentials c JOIN domains d ON d.id = c.domain_id
		WHERE d.name ~ '^sp[0-9]+\.example$' GROUP BY d.id) x`); err != nil {
		return err
	}
	logf("  the fullest spread domain holds %d credentials (cap %d)", most, defaultCap)
	if most > defaultCap {
		return fmt.Errorf("a spread domain holds %d credentials, more than the default cap %d: use more domains", most, defaultCap)
	}
	return nil
}

// spreadHeadline writes the headline rows of the spread creates.
func spreadHeadline(b *strings.Builder, runs []spreadRun, conc int, add func(string, float64, bool)) {
	for i, r := range runs {
		label := fmt.Sprintf("passwd-file, spread over %d domains, %s", spreadDomains, r.Label)
		if r.Pgbench.TPS > 0 {
			ratio := r.API.RPS / r.Pgbench.TPS
			fmt.Fprintf(b, "| **create: API rps / pgbench tps** (%s, c=%d) | **%.2fx** (%.0f / %.0f) | >= 0.8x | %s |\n",
				label, conc, ratio, r.API.RPS, r.Pgbench.TPS, mark(ratio >= 0.8))
			if add != nil {
				add(fmt.Sprintf("create_ratio_spread%d", i), ratio, true)
			}
		} else {
			fmt.Fprintf(b, "| **create: API rps / pgbench tps** (%s) | not measured (%s) | >= 0.8x | **not met** |\n", label, firstLine(r.ScriptErr))
		}
		fmt.Fprintf(b, "| create errors (%s) | %d of %d | 0 | %s |\n", label, r.API.Errors, r.API.Requests, mark(r.API.Errors == 0 && r.API.Requests > 0))
	}
}

// spreadTable writes the spread creates' headline rows and their table.
func spreadTable(b *strings.Builder, runs []spreadRun, conc int) {
	spreadHeadline(b, runs, conc, nil)
	fmt.Fprintf(b, "\n## Creates spread over %d domains (passwd-file, a file per domain, c=%d)\n\n", spreadDomains, conc)
	b.WriteString("| configuration | run | req/s | p50 | p95 | p99 | errors | sync claims / create | server CPU s / 1000 req |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range runs {
		if r.Pgbench.TPS > 0 {
			fmt.Fprintf(b, "| %s | pgbench, same SQL | %.0f tps | %s | %s | %s | %s | %.3f | |\n", r.Label, r.Pgbench.TPS,
				pgbenchP50(r.Pgbench), msOrBlank(r.Pgbench.P95), msOrBlank(r.Pgbench.P99), orNone(r.Pgbench.Failed), r.ClaimShare)
		}
		l := r.API
		fmt.Fprintf(b, "| %s | API (%s) | %.0f | %.2f ms | %.2f ms | %.2f ms | %d | %.3f | %.3f |\n",
			r.Label, l.Duration.Round(time.Second), l.RPS, ms(l.P50), ms(l.P95), ms(l.P99), l.Errors, r.ClaimShare, l.CPUPer1000)
		if r.API.FirstError != "" {
			fmt.Fprintf(b, "\nFirst API error (%s): `%s`\n\n", r.Label, strings.ReplaceAll(r.API.FirstError, "\n", " "))
		}
		if r.ScriptErr != "" {
			fmt.Fprintf(b, "\npgbench script mismatch (%s): %s\n\n", r.Label, strings.ReplaceAll(r.ScriptErr, "\n", " "))
		}
	}
}
