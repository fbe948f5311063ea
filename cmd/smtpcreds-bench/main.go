// Command smtpcreds-bench measures smtpcreds against the physical limit, so
// that performance claims are ratios measured in one run (make bench).
//
// It runs pgbench with the SQL of one credential create, the same creates
// through the HTTP API (with the passwd-file sync target, the default, then
// again with the dovecot-sql target), read latency as a domain grows to a
// million credentials, the memory and cold paths (for every sync target:
// bulk loads, a real 1M-line import, restarts), creates spread over 100
// domains (the default configuration, and the cap off), the idle cost with
// 2 million credentials, a real Dovecot's authentications against the
// passwd-file (both layouts) and the dovecot-sql view, and the packages'
// micro-benchmarks. It prints a table with the
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
	"strings"
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
	serverBin   string
	skipMemory  bool
	// memoryTargets are the sync targets of the memory bench.
	memoryTargets string
	onlyMemory    bool
	skipSpread    bool
	onlySpread    bool
	skipIdle      bool
	onlyIdle      bool
	skipDovecot   bool
	// dovecotTargets are the sync targets of the Dovecot bench.
	dovecotTargets string
	onlyDovecot    bool
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "duration of each create run (pgbench and API)")
	flag.IntVar(&o.concurrency, "concurrency", 16, "concurrency of the create runs")
	flag.BoolVar(&o.skipReads, "skip-reads", false, "skip the read-growth benchmark")
	flag.BoolVar(&o.quick, "quick", false, "smoke run: short runs, small data sizes (a few minutes)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (cluster, server log, pgbench script)")
	flag.StringVar(&o.out, "out", "bench/results.md", "results file (read first for the comparison, then overwritten)")
	flag.StringVar(&o.plot, "plot", "bench/latency.png", "PNG plot")
	flag.StringVar(&o.layout, "passwd-layout", "%d", `the passwd-file path below the bench directory: "%d" (a file per domain), "%d/%2Mu" (256 shard files per domain)`)
	flag.StringVar(&o.serverBin, "server-bin", "", "the smtpcreds binary to measure (default: built from this tree), e.g. one built from an earlier commit")
	flag.BoolVar(&o.skipMemory, "skip-memory", false, "skip the memory and cold-path bench (1M credentials in one domain, an import of 1M, 1M over 10,000 domains; each target of -memory-targets)")
	flag.StringVar(&o.memoryTargets, "memory-targets", "passwd-file,passwd-file-shards,dovecot-sql,webhook", "the sync targets of the memory bench, comma-separated: passwd-file (a file per domain), passwd-file-shards (%d/%2Mu), dovecot-sql, webhook")
	flag.BoolVar(&o.onlyMemory, "only-memory", false, "run only the memory and cold-path bench; print its table, and write it to -out only when -out is given")
	flag.BoolVar(&o.skipSpread, "skip-spread", false, "skip the creates spread over 100 domains (default configuration, and cap off)")
	flag.BoolVar(&o.onlySpread, "only-spread", false, "run only the creates spread over 100 domains; print their table, and write it to -out only when -out is given")
	flag.BoolVar(&o.skipIdle, "skip-idle", false, "skip the idle bench (2M credentials, nothing changing for a minute)")
	flag.BoolVar(&o.onlyIdle, "only-idle", false, "run only the idle bench; print its table, and write it to -out only when -out is given")
	flag.BoolVar(&o.skipDovecot, "skip-dovecot", false, "skip the Dovecot bench (authentications/s against 1k and 1M credentials, create to first authentication)")
	flag.StringVar(&o.dovecotTargets, "dovecot-targets", "passwd-file,passwd-file-shards,dovecot-sql", "the sync targets of the Dovecot bench, comma-separated: passwd-file (a file per domain), passwd-file-shards (%d/%2Mu), dovecot-sql")
	flag.BoolVar(&o.onlyDovecot, "only-dovecot", false, "run only the Dovecot bench; print its table, and write it to -out only when -out is given")
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

	createRun              // with the passwd-file target (the default)
	SQL       *createRun   // with the dovecot-sql target
	Sweep     []loadResult // API throughput by concurrency (passwd-file)
	Reads     []readPoint
	Memory    []memPoint     // the memory and cold-path bench, each target
	Spread    []spreadRun    // creates over 100 domains: default configuration, cap off
	Idle      *idleResult    // 2M credentials, nothing changing
	Dovecot   []dovecotPoint // a real Dovecot on each target: 1k, 1M (pairs)
	Micro     []microResult
	Notes     []string
}

// createRun is the creates with one sync target: the API at the bench
// concurrency, and pgbench running the same SQL in the same proportions.
type createRun struct {
	Target     string
	Statements []serverStmt
	ScriptErr  string
	// Per create at the bench concurrency: requests that ran the sync
	// claim, and applies (a request's turn serves the creates committed
	// meanwhile); pgbench claims in the same share.
	ClaimShare, ApplyShare float64
	Pgbench                pgbenchResult
	API                    loadResult
	// Creates one at a time into the reads domain at its largest size
	// (measured for dovecot-sql here; the passwd-file's are in Reads).
	Grow struct {
		Size     int
		P50, P99 time.Duration
		Errors   int
	}
}

func run(ctx context.Context, o options) error {
	if _, err := os.Stat("go.mod"); err != nil {
		return fmt.Errorf("run from the repository root: %w", err)
	}
	var failed error
	r := &results{Date: time.Now(), Cores: runtime.NumCPU(), Quick: o.quick, Duration: o.duration, Concurrency: o.concurrency, Layout: o.layout}
	if o.onlyMemory {
		return runOnlyMemory(ctx, o, r)
	}
	if o.onlySpread || o.onlyIdle || o.onlyDovecot {
		return runOnly(ctx, o, r)
	}

	hash, err := password.Hash(password.SSHA512, "bench-password-0123456789")
	if err != nil {
		return err
	}
	if err := withEnv(ctx, o, o.layout, func(e *env) error { return e.mainRuns(ctx, o, r, hash, &failed) }); err != nil {
		return err
	}

	if !o.skipMemory {
		// A target that does not converge is a finding, not the end of
		// the bench: its rows say so, and the bench fails at the end.
		if r.Memory, err = runMemory(ctx, o, hash); err != nil {
			if ctx.Err() != nil {
				return err
			}
			failed = err
			r.Notes = append(r.Notes, err.Error())
		}
	}
	if !o.skipSpread {
		if r.Spread, err = runSpread(ctx, o, hash); err != nil {
			return err
		}
		for _, s := range r.Spread {
			if s.ScriptErr != "" {
				failed = fmt.Errorf("the pgbench script no longer matches the server's SQL")
			}
		}
	}
	if !o.skipIdle {
		if r.Idle, err = runIdle(ctx, o, hash); err != nil {
			return err
		}
	}
	if !o.skipDovecot {
		if r.Dovecot, err = runDovecot(ctx, o, hash); err != nil {
			if ctx.Err() != nil {
				return err
			}
			failed = err
			r.Notes = append(r.Notes, err.Error())
		}
	}

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

// mainRuns runs, on one database, the creates with the passwd-file target
// and their sweep by concurrency, the reads as a domain grows, then the
// creates with the dovecot-sql target; a pgbench script that no longer
// matches the server's SQL sets *failed.
func (e *env) mainRuns(ctx context.Context, o options, r *results, hash string, failed *error) error {
	_ = e.db.GetContext(ctx, &r.PGVersion, `SHOW server_version`)
	_ = e.db.GetContext(ctx, &r.SyncCommit, `SHOW synchronous_commit`)
	if err := e.startServer(ctx); err != nil {
		return err
	}

	baseID, err := e.measureCreates(ctx, o, hash, "warm", &r.createRun)
	if err != nil {
		return err
	}
	if r.ScriptErr != "" {
		*failed = fmt.Errorf("the pgbench script no longer matches the server's SQL")
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
	// The same creates with the dovecot-sql target, on the same database
	// (after the reads, so that the reads and the creates by size above
	// are the passwd-file's): its role for Dovecot, as the README sets up.
	logf("sync target dovecot-sql: restarting the server")
	e.stopServer()
	e.target = targetSQL // startServer creates Dovecot's role
	if err := e.startServer(ctx); err != nil {
		return err
	}
	r.SQL = &createRun{}
	if _, err := e.measureCreates(ctx, options{duration: o.duration, concurrency: o.concurrency, quick: o.quick}, hash, "sqlwarm", r.SQL); err != nil {
		return err
	}
	if len(r.Reads) > 0 {
		g := &r.SQL.Grow
		g.Size = r.Reads[len(r.Reads)-1].Size
		logf("dovecot-sql: creates one at a time into %s (%d credentials)", readsDomain, g.Size)
		if g.P50, g.P99, g.Errors, err = e.createsInto(ctx, newClient(1), "sqlgrow", o.quick); err != nil {
			return err
		}
		logf("  p50 %s p99 %s, %d errors", g.P50, g.P99, g.Errors)
	}
	if r.SQL.ScriptErr != "" {
		*failed = fmt.Errorf("the pgbench script no longer matches the server's SQL")
	}
	return nil
}

// measureCreates measures creates with the server's sync target into cr:
// sequential warm-up creates (usernames warmPrefix0, 1, ...) whose SQL
// pg_stat_statements records and the pgbench script is checked against,
// the API at the bench concurrency, then pgbench with the same SQL. It
// returns the last credential id of the warm-up, below which the bench
// domain is kept between runs.
func (e *env) measureCreates(ctx context.Context, o options, hash, warmPrefix string, cr *createRun) (int64, error) {
	cr.Target = e.target
	warm := 200
	if o.quick {
		warm = 60
	}
	logf("warm-up (%s): %d sequential creates, recording their SQL", e.target, warm)
	if _, err := e.db.ExecContext(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
		return 0, err
	}
	client := newClient(1)
	for i := range warm {
		st, msg, err := e.do(ctx, client, "POST", e.createURL(int64(i)), []byte(`{"username":"`+warmPrefix+strconv.Itoa(i)+`"}`))
		if err != nil || st != 201 {
			return 0, fmt.Errorf("warm-up create: status %d %v %s", st, err, msg)
		}
	}
	var err error
	if cr.Statements, err = e.captureStatements(ctx, warm); err != nil {
		return 0, err
	}
	if err := checkScript(cr.Statements, e.target); err != nil {
		cr.ScriptErr = err.Error()
		fmt.Fprintln(os.Stderr, "MISMATCH:", err)
	}
	var baseID int64
	if err := e.db.GetContext(ctx, &baseID, `SELECT max(id) FROM credentials`); err != nil {
		return 0, err
	}

	// The API at the bench concurrency, counting how many of its requests
	// ran the sync claim (the rest were served by another request's apply).
	if err := e.resetCreates(ctx, baseID); err != nil {
		return 0, err
	}
	if _, err := e.db.ExecContext(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
		return 0, err
	}
	logf("API (%s): creates at c=%d for %s", e.target, o.concurrency, o.duration)
	profiled := make(chan error, 1)
	if o.cpuProfile != "" {
		go func() { profiled <- e.cpuProfile(ctx, o.cpuProfile, o.duration) }()
	} else {
		profiled <- nil
	}
	if cr.API, err = e.runCreates(ctx, "c", o.concurrency, o.duration); err != nil {
		return 0, err
	}
	if err := <-profiled; err != nil {
		return 0, fmt.Errorf("cpu profile: %w", err)
	}
	logf("  %.0f req/s, p50 %s p99 %s, %d errors %s", cr.API.RPS, cr.API.P50, cr.API.P99, cr.API.Errors, cr.API.FirstError)
	if cr.ClaimShare, cr.ApplyShare, err = e.syncShares(ctx, cr.API.Requests); err != nil {
		return 0, err
	}
	logf("  sync: %.3f claims and %.3f applies per create", cr.ClaimShare, cr.ApplyShare)

	// The physical limit: the same SQL, in the same proportions.
	if cr.ScriptErr == "" {
		vars, err := e.pgbenchVars(ctx, hash)
		if err != nil {
			return 0, err
		}
		vars["claimppm"] = strconv.Itoa(int(math.Round(cr.ClaimShare * 1e6)))
		if err := e.resetCreates(ctx, baseID); err != nil {
			return 0, err
		}
		logf("pgbench (%s): the create's SQL at c=%d for %s", e.target, o.concurrency, o.duration)
		if cr.Pgbench, err = e.runPgbench(ctx, vars, o.concurrency, o.duration); err != nil {
			return 0, err
		}
		logf("  %.0f tps, latency %.2f ms, p99 %s %s", cr.Pgbench.TPS, cr.Pgbench.LatencyMs, cr.Pgbench.P99, cr.Pgbench.Failed)
	}
	return baseID, nil
}

// runOnlyMemory runs the memory and cold-path bench alone (-only-memory).
func runOnlyMemory(ctx context.Context, o options, r *results) error {
	hash, err := password.Hash(password.SSHA512, "bench-password-0123456789")
	if err != nil {
		return err
	}
	r.Memory, err = runMemory(ctx, o, hash)
	var b strings.Builder
	memoryTable(&b, r.Memory)
	fmt.Println(b.String())
	if err == nil && isSet("out") {
		err = os.WriteFile(o.out, []byte(b.String()), 0o644)
	}
	return err
}

// runOnly runs the spread creates (-only-spread), the idle bench
// (-only-idle) and/or the Dovecot bench (-only-dovecot) alone, printing their tables (written to -out only when
// -out is given).
func runOnly(ctx context.Context, o options, r *results) error {
	hash, err := password.Hash(password.SSHA512, "bench-password-0123456789")
	if err != nil {
		return err
	}
	var b strings.Builder
	if o.onlySpread {
		r.Spread, err = runSpread(ctx, o, hash)
		spreadTable(&b, r.Spread, o.concurrency)
		for _, s := range r.Spread {
			if err == nil && s.ScriptErr != "" {
				err = fmt.Errorf("the pgbench script no longer matches the server's SQL")
			}
		}
	}
	if o.onlyIdle && err == nil {
		r.Idle, err = runIdle(ctx, o, hash)
		idleTable(&b, r.Idle)
	}
	if o.onlyDovecot && err == nil {
		r.Dovecot, err = runDovecot(ctx, o, hash)
		dovecotTable(&b, r.Dovecot, o.concurrency)
	}
	fmt.Println(b.String())
	if err == nil && isSet("out") {
		err = os.WriteFile(o.out, []byte(b.String()), 0o644)
	}
	return err
}
