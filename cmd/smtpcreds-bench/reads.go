package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"time"
)

// readsDomain holds the bulk-inserted credentials of the read benchmark.
const readsDomain = "reads.example"

// readPoint is the read latencies at one data size.
type readPoint struct {
	Size               int
	FirstP50, FirstP99 time.Duration
	DeepP50, DeepP99   time.Duration
	GetP50, GetP99     time.Duration
	// Creates into the domain, one at a time, through the sync target:
	// what a change costs at this size.
	CreateP50, CreateP99 time.Duration
	// RSSMB is the server's VmHWM after them.
	RSSMB    float64
	DeepPage int
	Errors   int
}

// fillTo bulk-inserts credentials into readsDomain until it holds n, in
// batches of at most 100 000 rows, every row with the same valid hash.
func (e *env) fillTo(ctx context.Context, n int, hash string, logf func(string, ...any)) error {
	var have int
	if err := e.db.GetContext(ctx, &have, `
		SELECT count(*) FROM credentials c JOIN domains d ON d.id = c.domain_id WHERE d.name = $1`, readsDomain); err != nil {
		return err
	}
	for have < n {
		batch := min(n-have, 100_000)
		t0 := time.Now()
		_, err := e.db.ExecContext(ctx, `
			INSERT INTO credentials (guid, account_id, domain_id, username, password_hash, synced_version)
			SELECT gen_random_uuid(), d.account_id, d.id, 'u' || g, $2, 1
			FROM domains d, generate_series($3::int + 1, $3::int + $4::int) g
			WHERE d.name = $1`, readsDomain, hash, have, batch)
		if err != nil {
			return fmt.Errorf("bulk insert: %w", err)
		}
		have += batch
		logf("  %d credentials in %s (batch of %d in %s)", have, readsDomain, batch, time.Since(t0).Round(time.Millisecond))
	}
	// The rows went in behind the server's back: a new token on the
	// domain's sync scope tells it (as another process's apply would) to
	// read the domain whole at its next apply, so that its file(s) hold
	// every credential from then on.
	if _, err := e.db.ExecContext(ctx, `UPDATE sync_scopes SET token = token + 1 WHERE scope = $1`, readsDomain); err != nil {
		return err
	}
	// Vacuumed, and written out by a checkpoint, so that the reads do not
	// meet the bulk load's background writes.
	for _, q := range []string{`VACUUM ANALYZE credentials`, `VACUUM ANALYZE credential_counts`, `CHECKPOINT`} {
		if _, err := e.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

// measure repeats fn sequentially up to max times or for budget, at least
// min times, and returns p50 and p99.
func measure(ctx context.Context, minN, maxN int, budget time.Duration, fn func() error) (p50, p99 time.Duration, errs int) {
	var lat []time.Duration
	start := time.Now()
	for i := 0; i < maxN && ctx.Err() == nil; i++ {
		if i >= minN && time.Since(start) > budget {
			break
		}
		t0 := time.Now()
		if err := fn(); err != nil {
			errs++
			continue
		}
		lat = append(lat, time.Since(t0))
	}
	return percentile(lat, .50), percentile(lat, .99), errs
}

// measureReads measures list (first and deepest page, limit 15) and get at
// the current size of readsDomain, one request at a time.
func (e *env) measureReads(ctx context.Context, size int, quick bool) (readPoint, error) {
	client := newClient(1)
	var guids []string
	if err := e.db.SelectContext(ctx, &guids, `
		SELECT c.guid::text FROM credentials c JOIN domains d ON d.id = c.domain_id
		WHERE d.name = $1 ORDER BY random() LIMIT 500`, readsDomain); err != nil {
		return readPoint{}, err
	}
	base := e.baseURL + "/api/domains/" + readsDomain + "/credentials"
	p := readPoint{Size: size, DeepPage: (size + 14) / 15}
	minN, maxN, budget := 100, 2000, 6*time.Second
	if quick {
		minN, maxN, budget = 20, 100, 2*time.Second
	}
	check := func(url string) func() error {
		return func() error {
			st, err := e.getJSON(ctx, client, url, nil)
			if err != nil {
				return err
			}
			if st != http.StatusOK {
				return fmt.Errorf("GET %s: status %d", url, st)
			}
			return nil
		}
	}
	// Warm the connection and caches.
	for range 5 {
		_ = check(base + "?page=1&limit=15")()
	}
	var errs int
	p.FirstP50, p.FirstP99, errs = measure(ctx, minN, maxN, budget, check(base+"?page=1&limit=15"))
	p.Errors += errs
	p.DeepP50, p.DeepP99, errs = measure(ctx, minN, maxN, budget, check(fmt.Sprintf("%s?page=%d&limit=15", base, p.DeepPage)))
	p.Errors += errs
	p.GetP50, p.GetP99, errs = measure(ctx, minN, maxN, budget, func() error {
		return check(base + "/" + guids[rand.IntN(len(guids))])()
	})
	p.Errors += errs

	var err error
	if p.CreateP50, p.CreateP99, errs, err = e.createsInto(ctx, client, fmt.Sprintf("grow%d", size), quick); err != nil {
		return p, err
	}
	p.Errors += errs
	// The creates measured paid for a file of the domain's real size.
	if err := e.checkDomainFiles(ctx, readsDomain); err != nil {
		return p, err
	}
	if e.srv != nil {
		p.RSSMB, _ = procHWM(e.srv.Process.Pid)
	}
	return p, nil
}

// createsInto times creates into readsDomain, one at a time, through the
// server's sync target (usernames tag-1, tag-2, ...): with the passwd-file,
// the first after the bulk insert makes the server read the domain whole
// and write its file(s), and the ones measured apply one change each. A
// create not synced within the sync timeout counts as an error.
func (e *env) createsInto(ctx context.Context, client *http.Client, tag string, quick bool) (p50, p99 time.Duration, errs int, err error) {
	base := e.baseURL + "/api/domains/" + readsDomain + "/credentials"
	n := 0
	create := func() error {
		n++
		var out struct {
			Data struct {
				RemoteSynced bool `json:"remote_synced"`
			} `json:"data"`
		}
		st, err := e.sendJSON(ctx, client, http.MethodPost, base, fmt.Appendf(nil, `{"username":"%s-%d"}`, tag, n), &out)
		if err != nil || st != http.StatusCreated || !out.Data.RemoteSynced {
			return fmt.Errorf("create: status %d, remote_synced %v, %v", st, out.Data.RemoteSynced, err)
		}
		return nil
	}
	for range 2 {
		_ = create() // may time out while the whole domain is read and written
	}
	if err := e.waitSynced(ctx, time.Minute); err != nil {
		return 0, 0, 0, err
	}
	minC, maxC, budgetC := 10, 300, 4*time.Second
	if quick {
		minC, maxC, budgetC = 5, 50, time.Second
	}
	p50, p99, errs = measure(ctx, minC, maxC, budgetC, create)
	return p50, p99, errs, e.waitSynced(ctx, time.Minute)
}

// waitSynced waits until the outbox has no pending job.
func (e *env) waitSynced(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		var pending int
		if err := e.db.GetContext(ctx, &pending, `SELECT count(*) FROM sync_jobs WHERE done_at IS NULL`); err != nil {
			return err
		}
		if pending == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d sync jobs still pending after %s", pending, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

var shardVarRe = regexp.MustCompile(`%[1-3]Mu`)
