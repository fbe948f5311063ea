package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/syncer"
)

// The memory and cold-path bench (issue 19): the server's peak RSS
// (VmHWM) through a million credentials in one domain and a million over
// 10,000 domains, with bulk loads behind the server's back (an import), a
// restart, and the whole writes they cause; and the creates of the first
// minute after a restart into the large domain, beside creates into a
// domain of 1,000 in the same minute.

// memPoint is one phase of the memory bench with one sync target (and,
// for the passwd-file, one layout). The server is a fresh process at each
// restart, so HWM is the peak of the phases since the last one.
type memPoint struct {
	Target, Layout, Phase string
	HWMMB                 float64
	Creates               int
	Unsynced              int // answered remote_synced false (or failed)
	Late                  int // took longer than the server's request timeout, or got no answer
	P50, P99              time.Duration
	// Creates into the 1k domain, alternating with those measured (the
	// cold-path phases only).
	SmallP50, SmallP99 time.Duration
	Took               time.Duration // until every job was applied
	// The import phase: what `smtpcreds credentials import` took, and its
	// own peak RSS (not the server's: a one-off command).
	ImportTook  time.Duration
	ImportRSSMB float64
	ImportOut   string
	Cold        string // the cold path measured: "restart" or "import"
	// NotApplied: the phase's jobs were not all applied in time (the
	// bench stopped there).
	NotApplied bool
}

// label names the target (and layout) of p in the tables.
func (p memPoint) label() string { return memLabel(p.Target, p.Layout) }

func memLabel(target, layout string) string {
	if target == targetFile {
		return "passwd-file `" + layout + "`"
	}
	return target
}

// memKey is the suffix of the figures of a target in the results data (the
// passwd-file's keep their earlier names: the layout alone).
func memKey(target, layout string) string {
	if target == targetFile {
		return layout
	}
	return target
}

// memPhases is how many phases (rows) a complete run of one target has.
const memPhases = 6

const (
	bigDomain    = "big.example"
	smallDomain  = "small.example"
	importDomain = "imp.example"
)

// requestTimeout is the server's default request timeout
// (--request-timeout): a create answered later, or not at all, is late.
const requestTimeout = 5 * time.Second

// memTarget is one configuration the memory bench runs: a sync target and,
// for the passwd-file, its layout.
type memTarget struct{ target, layout string }

// memTargets parses -memory-targets.
func memTargets(list string) ([]memTarget, error) {
	var out []memTarget
	for _, name := range strings.Split(list, ",") {
		switch strings.TrimSpace(name) {
		case "passwd-file":
			out = append(out, memTarget{targetFile, "%d"})
		case "passwd-file-shards":
			out = append(out, memTarget{targetFile, "%d/%2Mu"})
		case targetSQL:
			out = append(out, memTarget{targetSQL, "%d"})
		case targetWebhook:
			out = append(out, memTarget{targetWebhook, "%d"})
		case "":
		default:
			return nil, fmt.Errorf("-memory-targets: unknown %q (want passwd-file, passwd-file-shards, dovecot-sql, webhook)", name)
		}
	}
	return out, nil
}

// runMemory runs the memory bench for each target of -memory-targets, each
// on a database of its own.
func runMemory(ctx context.Context, o options, hash string) ([]memPoint, error) {
	big, spread, domains := 1_000_000, 1_000_000, 10_000
	if o.quick {
		big, spread, domains = 20_000, 20_000, 200
	}
	targets, err := memTargets(o.memoryTargets)
	if err != nil {
		return nil, err
	}
	var out []memPoint
	var errs []error
	for _, t := range targets {
		logf("memory (%s): %d credentials in one domain, an import of %d, then %d over %d domains", memLabel(t.target, t.layout), big, big, spread, domains)
		points, err := memoryRun(ctx, o, t, hash, big, spread, domains)
		out = append(out, points...)
		if err != nil {
			// The other targets still run: their rows compare.
			errs = append(errs, fmt.Errorf("memory bench (%s): %w", memLabel(t.target, t.layout), err))
			if ctx.Err() != nil {
				break
			}
		}
	}
	return out, errors.Join(errs...)
}

func memoryRun(ctx context.Context, o options, t memTarget, hash string, big, spread, domains int) (points []memPoint, err error) {
	err = withEnv(ctx, o, t.layout, func(e *env) error {
		e.target = t.target
		for _, d := range []string{bigDomain, smallDomain, importDomain} {
			if _, err := e.cli(ctx, "domains", "add", e.account, d, "--verified"); err != nil {
				return err
			}
		}
		for d, n := range map[string]int{smallDomain: 1000, bigDomain: big} {
			if err := e.fillDomain(ctx, d, n, hash); err != nil {
				return err
			}
		}
		point := func(phase string, pt memPoint, t0 time.Time) {
			pt.Target, pt.Layout, pt.Phase = t.target, t.layout, phase
			pt.Took = time.Since(t0)
			pt.HWMMB, _ = procHWM(e.srv.Process.Pid)
			logf("  %s: VmHWM %.1f MB; %d creates, %d unsynced, %d late, p50 %s p99 %s (1k domain p99 %s); %s",
				phase, pt.HWMMB, pt.Creates, pt.Unsynced, pt.Late, pt.P50, pt.P99, pt.SmallP99, pt.Took.Round(time.Millisecond))
			points = append(points, pt)
		}
		// settle waits until every job is applied (for up to limit) and
		// the target holds domain ("": not checked), then records the
		// phase; a phase whose jobs are not all applied in time is
		// recorded too, saying so, before the bench stops on it.
		settle := func(phase string, pt memPoint, t0 time.Time, limit time.Duration, domain string) error {
			err := e.waitSynced(ctx, limit)
			if err == nil && domain != "" {
				err = e.checkTarget(ctx, domain)
			}
			if err != nil {
				phase += " — **not applied: " + err.Error() + "**"
				pt.NotApplied = true
			}
			point(phase, pt, t0)
			return err
		}
		client := newClient(1)
		n := 0
		create := func(domain string) (time.Duration, bool, bool) {
			n++
			var body struct {
				Data struct {
					RemoteSynced bool `json:"remote_synced"`
				} `json:"data"`
			}
			t0 := time.Now()
			st, err := e.sendJSON(ctx, client, http.MethodPost, e.baseURL+"/api/domains/"+domain+"/credentials",
				fmt.Appendf(nil, `{"username":"m%d"}`, n), &body)
			d := time.Since(t0)
			return d, err == nil && st == http.StatusCreated && body.Data.RemoteSynced, err != nil || d > requestTimeout
		}
		seq := func(domain string, k int) memPoint {
			var pt memPoint
			var lat []time.Duration
			for range k {
				d, ok, late := create(domain)
				lat = append(lat, d)
				pt.Creates++
				if !ok {
					pt.Unsynced++
				}
				if late {
					pt.Late++
				}
			}
			pt.P50, pt.P99 = percentile(lat, .5), percentile(lat, .99)
			return pt
		}
		// cold: creates into domain alternating with creates into the 1k
		// domain, as they come in the first minute.
		rounds := 100
		if o.quick {
			rounds = 20
		}
		cold := func(domain string) memPoint {
			var bigLat, smallLat []time.Duration
			var pt memPoint
			for range rounds {
				for _, d := range []string{domain, smallDomain} {
					dur, ok, late := create(d)
					if d == domain {
						bigLat = append(bigLat, dur)
						pt.Creates++
					} else {
						smallLat = append(smallLat, dur)
					}
					if !ok {
						pt.Unsynced++
					}
					if late {
						pt.Late++
					}
				}
			}
			pt.P50, pt.P99 = percentile(bigLat, .5), percentile(bigLat, .99)
			pt.SmallP50, pt.SmallP99 = percentile(smallLat, .5), percentile(smallLat, .99)
			return pt
		}

		// 1. The server starts on a target that does not hold the bulk load:
		// with the passwd-file, its first creates write the large domain
		// whole.
		if err := e.startServer(ctx); err != nil {
			return err
		}
		t0 := time.Now()
		pt := seq(bigDomain, 5)
		if err := settle(count(big)+" domain: first creates after a bulk load in SQL (passwd-file: a whole write)", pt, t0, 5*time.Minute, bigDomain); err != nil {
			return err
		}

		// 2. A restart, then the creates of the first minute: into the large
		// domain, alternating with creates into the 1k domain.
		e.stopServer()
		if err := e.startServer(ctx); err != nil {
			return err
		}
		t0 = time.Now()
		pt = cold(bigDomain)
		pt.Cold = "restart"
		if err := settle("restart, creates in the first minute ("+count(big)+" domain vs 1k domain)", pt, t0, time.Minute, ""); err != nil {
			return err
		}

		// 3. An import of big lines with the real command into a domain of
		// its own, the server running, then the creates of the first minute
		// after the command returns, into that domain and the 1k domain.
		imp, err := e.importLines(ctx, importDomain, big, hash)
		if err != nil {
			return err
		}
		t0 = time.Now()
		pt = cold(importDomain)
		pt.Cold = "import"
		pt.ImportTook, pt.ImportRSSMB, pt.ImportOut = imp.took, imp.rssMB, imp.sync
		if err := settle(fmt.Sprintf("`credentials import` of %s lines into a new domain (%s), then creates in the first minute (vs 1k domain)", count(big), imp.took.Round(time.Second)), pt, t0, 5*time.Minute, importDomain); err != nil {
			return err
		}

		// 4. A bulk load in SQL behind the server's back (1,000 rows and a
		// new scope token, as the bench's bulk loads do): with the passwd-file
		// the next apply writes the domain whole again, in the running process.
		if err := e.fillDomain(ctx, bigDomain, big+1000, hash); err != nil {
			return err
		}
		t0 = time.Now()
		pt = seq(bigDomain, 5)
		if err := settle(count(big)+" domain: bulk load in SQL, then creates (passwd-file: a whole write in the running process)", pt, t0, 5*time.Minute, bigDomain); err != nil {
			return err
		}

		// 5. A million credentials over many domains, loaded behind the
		// server's back; a restart; then a create into every domain (with the
		// passwd-file each domain's first apply writes it whole), 16 at a
		// time. With shards a domain of 100 logins is some 80 files, each
		// written and fsynced: creates go into a sample of 1,000 of the
		// domains (the server's memory does not depend on how many it visits:
		// it holds none of them).
		visit := domains
		if strings.Contains(t.layout, "Mu") && t.target == targetFile {
			visit = min(domains, 1000)
		}
		e.stopServer()
		if err := e.fillSpread(ctx, domains, spread/domains, hash); err != nil {
			return err
		}
		if err := e.startServer(ctx); err != nil {
			return err
		}
		t0 = time.Now()
		pt = e.createInEach(ctx, visit, 16)
		if err := settle(fmt.Sprintf("%s over %s domains: restart, a create into %s of them (passwd-file: whole writes)", count(spread), count(domains), count(visit)), pt, t0, 10*time.Minute, ""); err != nil {
			return err
		}

		// 6. And again after a restart: each domain's files are trusted by
		// their fingerprints.
		e.stopServer()
		if err := e.startServer(ctx); err != nil {
			return err
		}
		t0 = time.Now()
		pt = e.createInEach(ctx, visit, 16)
		if err := settle(fmt.Sprintf("%s over %s domains: restart, a create into the same %s again", count(spread), count(domains), count(visit)), pt, t0, 10*time.Minute, "s1.example"); err != nil {
			return err
		}
		if e.hook != nil {
			logf("  webhook receiver: %s", e.hook.summary())
		}
		return nil
	})
	return points, err
}

// importResult is one run of `smtpcreds credentials import`.
type importResult struct {
	took  time.Duration
	rssMB float64 // the command's peak RSS
	sync  string  // its "sync:" line
}

// importLines writes a passwd-file of n new logins of domain (i1@domain
// ... in@domain, every one with hash) and imports it with the real
// command, `smtpcreds credentials import --account NAME FILE`, past the
// per-domain cap and with the server's sync target settings (as an
// operator runs it beside the server), while the server runs.
func (e *env) importLines(ctx context.Context, domain string, n int, hash string) (importResult, error) {
	path := filepath.Join(e.tmp, "import-"+domain+".passwd")
	f, err := os.Create(path)
	if err != nil {
		return importResult{}, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(w, "i%d@%s:%s\n", i, domain, hash)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return importResult{}, err
	}
	if err := f.Close(); err != nil {
		return importResult{}, err
	}
	defer os.Remove(path)
	logf("  import: smtpcreds credentials import --account %s --ignore-cap (%d lines into %s)", e.account, n, domain)
	cmd := exec.CommandContext(ctx, e.bin, "credentials", "import", "--account", e.account, "--ignore-cap", path)
	cmd.Env = append(e.environ(), e.syncEnv()...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err = cmd.Run()
	res := importResult{took: time.Since(t0)}
	if err != nil {
		return res, fmt.Errorf("credentials import: %w\n%s%s", err, stdout.String(), stderr.String())
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		res.rssMB = float64(ru.Maxrss) / 1024 // kB on Linux
	}
	for _, line := range strings.Split(stdout.String(), "\n") {
		if v, ok := strings.CutPrefix(line, "sync:"); ok {
			res.sync = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "created:"); ok && strings.TrimSpace(v) != strconv.Itoa(n) {
			return res, fmt.Errorf("credentials import created %s of %d lines:\n%s", strings.TrimSpace(v), n, stdout.String())
		}
	}
	logf("  import took %s, its peak RSS %.1f MB; sync: %s", res.took.Round(time.Millisecond), res.rssMB, res.sync)
	return res, nil
}

// checkTarget makes sure that the target holds domain's active
// credentials: the passwd-file(s) one line each, the dovecot-sql view one
// row each; the webhook receiver got an event for every job done, and
// refused none.
func (e *env) checkTarget(ctx context.Context, domain string) error {
	switch e.target {
	case targetFile:
		return e.checkDomainFiles(ctx, domain)
	case targetSQL:
		var want, have int
		if err := e.db.GetContext(ctx, &want, `
			SELECT count(*) FROM credentials c JOIN domains d ON d.id = c.domain_id WHERE d.name = $1 AND c.status`, domain); err != nil {
			return err
		}
		if err := e.db.GetContext(ctx, &have, `SELECT count(*) FROM dovecot_passdb WHERE domain = $1`, domain); err != nil {
			return err
		}
		if have != want {
			return fmt.Errorf("dovecot_passdb holds %d rows of %s, the domain %d active credentials", have, domain, want)
		}
	case targetWebhook:
		var done int64
		if err := e.db.GetContext(ctx, &done, `
			SELECT count(*) FROM sync_jobs WHERE target = $1 AND done_at IS NOT NULL AND event->>'type' = $2`, targetWebhook, syncer.CredentialUpserted); err != nil {
			return err
		}
		if got := e.hook.count(syncer.CredentialUpserted); got < done {
			return fmt.Errorf("the webhook receiver got %d upserted events, %d jobs are done", got, done)
		}
		if bad := e.hook.bad.Load(); bad > 0 {
			return fmt.Errorf("the webhook receiver refused %d deliveries", bad)
		}
	}
	return nil
}

// fillDomain bulk-inserts credentials into domain until it holds n, behind
// the server's back, and changes its sync scope's token so that the next
// apply writes it whole (as fillTo does).
func (e *env) fillDomain(ctx context.Context, domain string, n int, hash string) error {
	var have int
	if err := e.db.GetContext(ctx, &have, `
		SELECT count(*) FROM credentials c JOIN domains d ON d.id = c.domain_id WHERE d.name = $1`, domain); err != nil {
		return err
	}
	for have < n {
		batch := min(n-have, 200_000)
		if _, err := e.db.ExecContext(ctx, `
			INSERT INTO credentials (guid, account_id, domain_id, username, password_hash, synced_version)
			SELECT gen_random_uuid(), d.account_id, d.id, 'u' || g, $2, 1
			FROM domains d, generate_series($3::int + 1, $3::int + $4::int) g
			WHERE d.name = $1`, domain, hash, have, batch); err != nil {
			return fmt.Errorf("bulk insert: %w", err)
		}
		have += batch
	}
	for _, q := range []string{`UPDATE sync_scopes SET token = token + 1 WHERE scope = '` + domain + `'`,
		`VACUUM ANALYZE credentials`, `CHECKPOINT`} {
		if _, err := e.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

// fillSpread adds domains domains (s1.example, ...) of per credentials
// each, behind the server's back.
func (e *env) fillSpread(ctx context.Context, domains, per int, hash string) error {
	for _, q := range []string{
		fmt.Sprintf(`INSERT INTO domains (account_id, name, is_verified)
			SELECT a.id, 's' || g || '.example', true FROM accounts a, generate_series(1, %d) g WHERE a.name = '%s'`, domains, e.account),
		fmt.Sprintf(`INSERT INTO credentials (guid, account_id, domain_id, username, password_hash, synced_version)
			SELECT gen_random_uuid(), d.account_id, d.id, 'u' || g, '%s', 1
			FROM domains d, generate_series(1, %d) g WHERE d.name ~ '^s[0-9]+\.example$'`, hash, per),
		`VACUUM ANALYZE credentials`, `VACUUM ANALYZE domains`, `CHECKPOINT`,
	} {
		if _, err := e.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", firstLine(q), err)
		}
	}
	return nil
}

// createInEach creates one credential in each spread domain, conc at a
// time.
func (e *env) createInEach(ctx context.Context, domains, conc int) memPoint {
	client := newClient(conc)
	var next, unsynced atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	tag := time.Now().UnixNano()
	for range conc {
		wg.Go(func() {
			for i := int(next.Add(1)); i <= domains && ctx.Err() == nil; i = int(next.Add(1)) {
				var body struct {
					Data struct {
						RemoteSynced bool `json:"remote_synced"`
					} `json:"data"`
				}
				t0 := time.Now()
				st, err := e.sendJSON(ctx, client, http.MethodPost, fmt.Sprintf("%s/api/domains/s%d.example/credentials", e.baseURL, i),
					fmt.Appendf(nil, `{"username":"e%d-%d"}`, tag, i), &body)
				d := time.Since(t0)
				if err != nil || st != http.StatusCreated || !body.Data.RemoteSynced {
					unsynced.Add(1)
				}
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return memPoint{Creates: len(lat), Unsynced: int(unsynced.Load()), P50: percentile(lat, .5), P99: percentile(lat, .99)}
}

// checkDomainFiles makes sure that the passwd-file(s) of domain hold one
// line per active credential.
func (e *env) checkDomainFiles(ctx context.Context, domain string) error {
	var want int
	if err := e.db.GetContext(ctx, &want, `
		SELECT count(*) FROM credentials c JOIN domains d ON d.id = c.domain_id WHERE d.name = $1 AND c.status`, domain); err != nil {
		return err
	}
	pattern := shardVarRe.ReplaceAllString(strings.ReplaceAll(e.passwd, "%d", domain), "*")
	files, err := filepath.Glob(pattern)
	if err != nil {
		return err
	}
	lines := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		lines += strings.Count(string(b), "\n")
	}
	if lines != want {
		return fmt.Errorf("the passwd-file(s) %s hold %d lines, the domain %d active credentials", pattern, lines, want)
	}
	return nil
}

// memoryTable writes the memory bench's headline rows and its table.
func memoryTable(b *strings.Builder, points []memPoint) {
	memoryHeadline(b, points, nil)
	b.WriteString("\n## Memory and cold paths (each sync target on a database of its own; the server restarts where a phase says so, VmHWM is the peak since)\n\n")
	b.WriteString("| target | phase | VmHWM | creates | unsynced | late (> 5 s) | p50 | p99 | 1k domain p50 / p99 | until all applied |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range points {
		small := ""
		if p.SmallP99 > 0 {
			small = fmt.Sprintf("%.2f / %.2f ms", ms(p.SmallP50), ms(p.SmallP99))
		}
		fmt.Fprintf(b, "| %s | %s | %.1f MB | %d | %d | %d | %.2f ms | %.2f ms | %s | %.1f s |\n",
			p.label(), p.Phase, p.HWMMB, p.Creates, p.Unsynced, p.Late, ms(p.P50), ms(p.P99), small, p.Took.Seconds())
	}
	for _, p := range points {
		if p.Cold == "import" {
			fmt.Fprintf(b, "\nThe import (%s): `smtpcreds credentials import` took %.1f s, its own peak RSS %.1f MB; its sync: %s.\n",
				p.label(), p.ImportTook.Seconds(), p.ImportRSSMB, p.ImportOut)
		}
	}
}

// memoryHeadline writes the budget rows of the memory bench (and adds
// their figures when add is not nil).
func memoryHeadline(b *strings.Builder, points []memPoint, add func(string, float64, bool)) {
	if len(points) == 0 {
		return
	}
	peak := map[string]float64{}
	var labels []string
	keys := map[string]string{}
	phases, stopped := map[string]int{}, map[string]bool{}
	for _, p := range points {
		l := p.label()
		if _, ok := peak[l]; !ok {
			labels = append(labels, l)
			keys[l] = memKey(p.Target, p.Layout)
		}
		peak[l] = max(peak[l], p.HWMMB)
		phases[l]++
		stopped[l] = stopped[l] || p.NotApplied
	}
	for _, l := range labels {
		incomplete := ""
		if stopped[l] || phases[l] < memPhases {
			incomplete = fmt.Sprintf(" (the bench stopped after %d of %d phases)", phases[l], memPhases)
		}
		fmt.Fprintf(b, "| **server peak RSS through 1M credentials in one domain and 1M over 10,000 domains** (%s: an import, bulk loads, restarts, whole writes) | **%.1f MB**%s | <= 150 MB | %s |\n",
			l, peak[l], incomplete, mark(peak[l] > 0 && peak[l] <= 150 && incomplete == ""))
		if add != nil {
			add("memory_peak_mb_"+keys[l], peak[l], false)
		}
	}
	for _, p := range points {
		if p.SmallP99 == 0 {
			continue
		}
		ratio := float64(p.P99) / float64(max(p.SmallP99, time.Microsecond))
		what, key := "after a restart", "cold_create_p99_ratio_"
		if p.Cold == "import" {
			what, key = "right after a 1M-line `credentials import` into it", "cold_import_p99_ratio_"
		}
		fmt.Fprintf(b, "| **cold path: creates into the 1M domain in the first minute %s** (%s), p99 vs the 1k domain's in the same minute | **%.2fx** (%.2f ms vs %.2f ms), %d of %d unsynced, %d past the request timeout | <= 3x, none unsynced or late | %s |\n",
			what, p.label(), ratio, ms(p.P99), ms(p.SmallP99), p.Unsynced, 2*p.Creates, p.Late, mark(ratio <= 3 && p.Unsynced == 0 && p.Late == 0 && !p.NotApplied))
		if add != nil {
			add(key+memKey(p.Target, p.Layout), ratio, false)
		}
	}
}
