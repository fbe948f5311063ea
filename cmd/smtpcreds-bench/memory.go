package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The memory and cold-path bench (issue 19): the server's peak RSS
// (VmHWM) through a million credentials in one domain and a million over
// 10,000 domains, with bulk loads behind the server's back (an import), a
// restart, and the whole writes they cause; and the creates of the first
// minute after a restart into the large domain, beside creates into a
// domain of 1,000 in the same minute.

// memPoint is one phase of the memory bench on one passwd-file layout.
// The server is a fresh process at each restart, so HWM is the peak of the
// phases since the last one.
type memPoint struct {
	Layout, Phase string
	HWMMB         float64
	Creates       int
	Unsynced      int // answered remote_synced false (or failed)
	P50, P99      time.Duration
	// Creates into the 1k domain, alternating with those measured (the
	// cold-path phase only).
	SmallP50, SmallP99 time.Duration
	Took               time.Duration // until every job was applied
}

const (
	bigDomain   = "big.example"
	smallDomain = "small.example"
)

// runMemory runs the memory bench for each layout, on a database of its
// own.
func runMemory(ctx context.Context, o options, hash string) ([]memPoint, error) {
	big, spread, domains := 1_000_000, 1_000_000, 10_000
	if o.quick {
		big, spread, domains = 20_000, 20_000, 200
	}
	var out []memPoint
	for _, layout := range []string{"%d", "%d/%2Mu"} {
		logf("memory (passwd-file %s): %d credentials in one domain, then %d over %d domains", layout, big, spread, domains)
		points, err := memoryRun(ctx, o, layout, hash, big, spread, domains)
		out = append(out, points...)
		if err != nil {
			return out, fmt.Errorf("memory bench (%s): %w", layout, err)
		}
	}
	return out, nil
}

func memoryRun(ctx context.Context, o options, layout, hash string, big, spread, domains int) (points []memPoint, err error) {
	e, err := setupEnvBin(ctx, layout, o.serverBin, logf)
	defer func() {
		if e != nil {
			e.close(o.keep)
		}
	}()
	if err != nil {
		return nil, err
	}
	for _, d := range []string{bigDomain, smallDomain} {
		if _, err := e.cli(ctx, "domains", "add", e.account, d, "--verified"); err != nil {
			return nil, err
		}
	}
	for d, n := range map[string]int{smallDomain: 1000, bigDomain: big} {
		if err := e.fillDomain(ctx, d, n, hash); err != nil {
			return nil, err
		}
	}
	point := func(phase string, pt memPoint, t0 time.Time) {
		pt.Layout, pt.Phase = layout, phase
		pt.Took = time.Since(t0)
		pt.HWMMB, _ = procHWM(e.srv.Process.Pid)
		logf("  %s: VmHWM %.1f MB; %d creates, %d unsynced, p50 %s p99 %s (1k domain p99 %s); %s",
			phase, pt.HWMMB, pt.Creates, pt.Unsynced, pt.P50, pt.P99, pt.SmallP99, pt.Took.Round(time.Millisecond))
		points = append(points, pt)
	}
	client := newClient(1)
	n := 0
	create := func(domain string) (time.Duration, bool) {
		n++
		var body struct {
			Data struct {
				RemoteSynced bool `json:"remote_synced"`
			} `json:"data"`
		}
		t0 := time.Now()
		st, err := e.sendJSON(ctx, client, http.MethodPost, e.baseURL+"/api/domains/"+domain+"/credentials",
			fmt.Appendf(nil, `{"username":"m%d"}`, n), &body)
		return time.Since(t0), err == nil && st == http.StatusCreated && body.Data.RemoteSynced
	}
	seq := func(domain string, k int) memPoint {
		var pt memPoint
		var lat []time.Duration
		for range k {
			d, ok := create(domain)
			lat = append(lat, d)
			pt.Creates++
			if !ok {
				pt.Unsynced++
			}
		}
		pt.P50, pt.P99 = percentile(lat, .5), percentile(lat, .99)
		return pt
	}

	// 1. The server starts on files that do not hold the bulk load: its
	// first creates write the large domain whole.
	if err := e.startServer(ctx); err != nil {
		return points, err
	}
	t0 := time.Now()
	pt := seq(bigDomain, 5)
	if err := e.waitSynced(ctx, 5*time.Minute); err != nil {
		return points, err
	}
	if err := e.checkDomainFiles(ctx, bigDomain); err != nil {
		return points, err
	}
	point(count(big)+" domain: first creates after the bulk load (whole write)", pt, t0)

	// 2. A restart, then the creates of the first minute: into the large
	// domain, alternating with creates into the 1k domain.
	e.stopServer()
	if err := e.startServer(ctx); err != nil {
		return points, err
	}
	t0 = time.Now()
	var bigLat, smallLat []time.Duration
	pt = memPoint{}
	rounds := 100
	if o.quick {
		rounds = 20
	}
	for range rounds {
		d, ok := create(bigDomain)
		bigLat = append(bigLat, d)
		pt.Creates++
		if !ok {
			pt.Unsynced++
		}
		d, ok = create(smallDomain)
		smallLat = append(smallLat, d)
		if !ok {
			pt.Unsynced++
		}
	}
	pt.P50, pt.P99 = percentile(bigLat, .5), percentile(bigLat, .99)
	pt.SmallP50, pt.SmallP99 = percentile(smallLat, .5), percentile(smallLat, .99)
	if err := e.waitSynced(ctx, time.Minute); err != nil {
		return points, err
	}
	point("restart, creates in the first minute ("+count(big)+" domain vs 1k domain)", pt, t0)

	// 3. An import behind the server's back (1,000 rows and a new scope
	// token, as the bench's bulk loads do): the next apply writes the
	// domain whole again, in the running process.
	if err := e.fillDomain(ctx, bigDomain, big+1000, hash); err != nil {
		return points, err
	}
	t0 = time.Now()
	pt = seq(bigDomain, 5)
	if err := e.waitSynced(ctx, 5*time.Minute); err != nil {
		return points, err
	}
	if err := e.checkDomainFiles(ctx, bigDomain); err != nil {
		return points, err
	}
	point(count(big)+" domain: import, then creates (whole write in the running process)", pt, t0)

	// 4. A million credentials over many domains, loaded behind the
	// server's back; a restart; then a create into every domain (each
	// domain's first apply writes it whole), 16 at a time. With shards a
	// domain of 100 logins is some 80 files, each written and fsynced:
	// creates go into a sample of 1,000 of the domains (the server's memory
	// does not depend on how many it visits: it holds none of them).
	visit := domains
	if strings.Contains(layout, "Mu") {
		visit = min(domains, 1000)
	}
	e.stopServer()
	if err := e.fillSpread(ctx, domains, spread/domains, hash); err != nil {
		return points, err
	}
	if err := e.startServer(ctx); err != nil {
		return points, err
	}
	t0 = time.Now()
	pt = e.createInEach(ctx, visit, 16)
	if err := e.waitSynced(ctx, 10*time.Minute); err != nil {
		return points, err
	}
	point(fmt.Sprintf("%s over %s domains: restart, a create into %s of them (whole writes)", count(spread), count(domains), count(visit)), pt, t0)

	// 5. And again after a restart: each domain's files are trusted by
	// their fingerprints.
	e.stopServer()
	if err := e.startServer(ctx); err != nil {
		return points, err
	}
	t0 = time.Now()
	pt = e.createInEach(ctx, visit, 16)
	if err := e.waitSynced(ctx, 10*time.Minute); err != nil {
		return points, err
	}
	point(fmt.Sprintf("%s over %s domains: restart, a create into the same %s again", count(spread), count(domains), count(visit)), pt, t0)
	return points, nil
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
	b.WriteString("\n## Memory and cold paths (passwd-file; the server restarts where a phase says so, VmHWM is the peak since)\n\n")
	b.WriteString("| layout | phase | VmHWM | creates | unsynced | p50 | p99 | 1k domain p50 / p99 | until all applied |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range points {
		small := ""
		if p.SmallP99 > 0 {
			small = fmt.Sprintf("%.2f / %.2f ms", ms(p.SmallP50), ms(p.SmallP99))
		}
		fmt.Fprintf(b, "| `%s` | %s | %.1f MB | %d | %d | %.2f ms | %.2f ms | %s | %.1f s |\n",
			p.Layout, p.Phase, p.HWMMB, p.Creates, p.Unsynced, ms(p.P50), ms(p.P99), small, p.Took.Seconds())
	}
}

// memoryHeadline writes the budget rows of the memory bench (and adds
// their figures when add is not nil).
func memoryHeadline(b *strings.Builder, points []memPoint, add func(string, float64, bool)) {
	if len(points) == 0 {
		return
	}
	peak := map[string]float64{}
	var layouts []string
	for _, p := range points {
		if _, ok := peak[p.Layout]; !ok {
			layouts = append(layouts, p.Layout)
		}
		peak[p.Layout] = max(peak[p.Layout], p.HWMMB)
	}
	for _, l := range layouts {
		fmt.Fprintf(b, "| **server peak RSS through 1M credentials in one domain and 1M over 10,000 domains** (passwd-file `%s`: imports, restarts, whole writes) | **%.1f MB** | <= 150 MB | %s |\n",
			l, peak[l], mark(peak[l] > 0 && peak[l] <= 150))
		if add != nil {
			add("memory_peak_mb_"+l, peak[l], false)
		}
	}
	for _, p := range points {
		if p.SmallP99 == 0 {
			continue
		}
		ratio := float64(p.P99) / float64(max(p.SmallP99, time.Microsecond))
		fmt.Fprintf(b, "| **cold path: creates into the 1M domain in the first minute after a restart** (`%s`), p99 vs the 1k domain's in the same minute | **%.2fx** (%.2f ms vs %.2f ms), %d of %d unsynced | <= 3x, none unsynced | %s |\n",
			p.Layout, ratio, ms(p.P99), ms(p.SmallP99), p.Unsynced, 2*p.Creates, mark(ratio <= 3 && p.Unsynced == 0))
		if add != nil {
			add("cold_create_p99_ratio_"+p.Layout, ratio, false)
		}
	}
}
