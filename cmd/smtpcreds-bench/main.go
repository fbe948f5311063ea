// Command smtpcreds-bench measures smtpcreds against the physical limit
// (issue 5): pgbench running the SQL of one credential create, the same
// creates through the HTTP API, read latency as a domain grows to a million
// credentials, and the packages' micro-benchmarks. It prints a table with the
// budget next to each figure, writes it to bench/results.md (comparing with
// the previous one) and draws bench/latency.png.
//
// Run it from the repository root: go run ./cmd/smtpcreds-bench [-quick].
package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/password"
)

type options struct {
	duration    time.Duration
	concurrency int
	skipReads   bool
	quick       bool
	keep        bool
	out         string
	plot        string
	cpuProfile  string
	layout      string
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "duration of each create run (pgbench and API)")
	flag.IntVar(&o.concurrency, "concurrency", 16, "concurrency of the create runs")
	flag.BoolVar(&o.skipReads, "skip-reads", false, "skip the read-growth benchmark")
	flag.BoolVar(&o.quick, "quick", false, "smoke run: short runs, small data sizes (under 2 minutes)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (cluster, server log, pgbench script)")
	flag.StringVar(&o.out, "out", "bench/results.md", "results file (read first for the comparison, then overwritten)")
	flag.StringVar(&o.plot, "plot", "bench/latency.png", "PNG plot")
	flag.StringVar(&o.layout, "passwd-layout", "%d", `the passwd-file path below the bench directory: "%d" (a file per domain), "%d/%2Mu" (256 shard files per domain)`)
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write the server's CPU profile during the c=N create run to this file (go tool pprof)")
	flag.Parse()
	if o.quick && !isSet("duration") {
		o.duration = 4 * time.Second
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "smtpcreds-bench:", err)
		os.Exit(1)
	}
}

func isSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// results is everything one run measured.
type results struct {
	Date        time.Time
	Cores       int
	PGVersion   string
	SyncCommit  string
	Quick       bool
	Duration    time.Duration
	Concurrency int
	Layout      string // of the passwd-file sync target

	Statements []serverStmt
	ScriptErr  string
	// Per create at the bench concurrency: requests that ran the sync
	// claim, and applies (a request's turn serves the creates committed
	// meanwhile); pgbench claims in the same share.
	ClaimShare, ApplyShare float64
	Pgbench                pgbenchResult
	API                    loadResult
	Sweep                  []loadResult // API throughput by concurrency
	Reads                  []readPoint
	Micro                  []microResult
	Notes                  []string
}

func run(ctx context.Context, o options) error {
	if _, err := os.Stat("go.mod"); err != nil {
		return fmt.Errorf("run from the repository root: %w", err)
	}
	var failed error
	r := &results{Date: time.Now(), Cores: runtime.NumCPU(), Quick: o.quick, Duration: o.duration, Concurrency: o.concurrency, Layout: o.layout}

	e, err := setupEnv(ctx, o.layout, logf)
	defer func() {
		if e != nil {
			e.close(o.keep)
			if o.keep {
				logf("kept %s", e.tmp)
			}
		}
	}()
	if err != nil {
		return err
	}
	_ = e.db.GetContext(ctx, &r.PGVersion, `SHOW server_version`)
	_ = e.db.GetContext(ctx, &r.SyncCommit, `SHOW synchronous_commit`)
	if err := e.startServer(ctx); err != nil {
		return err
	}

	// Warm-up: sequential creates, whose SQL pg_stat_statements records.
	warm := 200
	if o.quick {
		warm = 60
	}
	logf("warm-up: %d sequential creates, recording their SQL", warm)
	if _, err := e.db.ExecContext(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
		return err
	}
	client := newClient(1)
	url := e.baseURL + "/api/domains/" + e.domain + "/credentials"
	for i := range warm {
		st, msg, err := e.do(ctx, client, "POST", url, []byte(`{"username":"warm`+strconv.Itoa(i)+`"}`))
		if err != nil || st != 201 {
			return fmt.Errorf("warm-up create: status %d %v %s", st, err, msg)
		}
	}
	if r.Statements, err = e.captureStatements(ctx, warm); err != nil {
		return err
	}
	if err := checkScript(r.Statements); err != nil {
		r.ScriptErr = err.Error()
		fmt.Fprintln(os.Stderr, "MISMATCH:", err)
		failed = fmt.Errorf("the pgbench script no longer matches the server's SQL")
	}
	var baseID int64
	if err := e.db.GetContext(ctx, &baseID, `SELECT max(id) FROM credentials`); err != nil {
		return err
	}
	hash, err := password.Hash(password.SSHA512, "bench-password-0123456789")
	if err != nil {
		return err
	}

	// The API at the bench concurrency, counting how many of its requests
	// ran the sync claim (the rest were served by another request's apply).
	if err := e.resetCreates(ctx, baseID); err != nil {
		return err
	}
	if _, err := e.db.ExecContext(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
		return err
	}
	logf("API: creates at c=%d for %s", o.concurrency, o.duration)
	profiled := make(chan error, 1)
	if o.cpuProfile != "" {
		go func() { profiled <- e.cpuProfile(ctx, o.cpuProfile, o.duration) }()
	} else {
		profiled <- nil
	}
	if r.API, err = e.runCreates(ctx, "c", o.concurrency, o.duration); err != nil {
		return err
	}
	if err := <-profiled; err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	logf("  %.0f req/s, p50 %s p99 %s, %d errors %s", r.API.RPS, r.API.P50, r.API.P99, r.API.Errors, r.API.FirstError)
	if r.ClaimShare, r.ApplyShare, err = e.syncShares(ctx, r.API.Requests); err != nil {
		return err
	}
	logf("  sync: %.3f claims and %.3f applies per create", r.ClaimShare, r.ApplyShare)

	// The physical limit: the same SQL, in the same proportions.
	if r.ScriptErr == "" {
		vars, err := e.pgbenchVars(ctx, hash)
		if err != nil {
			return err
		}
		vars["claimppm"] = strconv.Itoa(int(math.Round(r.ClaimShare * 1e6)))
		if err := e.resetCreates(ctx, baseID); err != nil {
			return err
		}
		logf("pgbench: the create's SQL at c=%d for %s", o.concurrency, o.duration)
		if r.Pgbench, err = e.runPgbench(ctx, vars, o.concurrency, o.duration); err != nil {
			return err
		}
		logf("  %.0f tps, latency %.2f ms %s", r.Pgbench.TPS, r.Pgbench.LatencyMs, r.Pgbench.Failed)
	}

	// Throughput against concurrency.
	sweepDur := max(o.duration/4, 2*time.Second)
	for _, c := range []int{1, 4} {
		if c >= o.concurrency {
			continue
		}
		if err := e.resetCreates(ctx, baseID); err != nil {
			return err
		}
		lr, err := e.runCreates(ctx, "s"+strconv.Itoa(c)+"x", c, sweepDur)
		if err != nil {
			return err
		}
		logf("  c=%d: %.0f req/s, p99 %s", c, lr.RPS, lr.P99)
		r.Sweep = append(r.Sweep, lr)
	}
	r.Sweep = append(r.Sweep, r.API)
	if err := e.resetCreates(ctx, baseID); err != nil {
		return err
	}

	// Reads and growth.
	if !o.skipReads {
		sizes := []int{1_000, 100_000, 1_000_000}
		if o.quick {
			sizes = []int{1_000, 10_000}
		}
		for _, n := range sizes {
			logf("reads: filling %s to %d credentials", readsDomain, n)
			if err := e.fillTo(ctx, n, hash, logf); err != nil {
				return err
			}
			p, err := e.measureReads(ctx, n, o.quick)
			if err != nil {
				return err
			}
			logf("  n=%d: list first p99 %s, deepest (page %d) p99 %s, get p99 %s, %d errors",
				n, p.FirstP99, p.DeepPage, p.DeepP99, p.GetP99, p.Errors)
			r.Reads = append(r.Reads, p)
		}
	}
	e.close(o.keep)
	e = nil

	logf("micro-benchmarks: go test -bench")
	var notes []string
	r.Micro, notes = runMicro(ctx, o.quick)
	r.Notes = append(r.Notes, notes...)

	prev, _ := os.ReadFile(o.out)
	report := render(r, prev)
	fmt.Println(report)
	if err := os.MkdirAll("bench", 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(o.out, []byte(report), 0o644); err != nil {
		return err
	}
	if err := writePlot(o.plot, r); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	logf("wrote %s and %s", o.out, o.plot)
	return failed
}
