package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/dovecottest"
)

// The Dovecot bench (issue 19): a real Dovecot (internal/dovecottest's
// auth-only instance, the one the tests use) reading what the server's
// sync target keeps, for each target of -dovecot-targets: the passwd-file
// with a file per domain, with 256 shards per domain, and dovecot-sql (the
// passdb of deploy/dovecot, reading the database's view):
// authentications per second at the bench concurrency against a domain of
// 1k credentials and one of 1M (a fresh connection per authentication,
// PLAIN, as dovecottest.Server.Auth speaks the auth protocol), and the
// time from a create's request to the first successful authentication of
// the new login.

// dovecotPoint is the figures of one domain with one target.
type dovecotPoint struct {
	Target, Layout string
	Size           int
	AuthPerSec     float64
	Auths, Failed  int // failed: refused or an error (none expected)
	FirstErr       string
	// Create to first successful authentication.
	Creates            int
	FirstP50, FirstP99 time.Duration
	NeverMs            int // creates whose login never authenticated within 10 s
}

// benchTB lets the bench use the test fixture: dovecottest takes a
// testing.TB for its failures and cleanups. Fatalf panics with a
// tbFatal, which runDovecot recovers into an error.
type benchTB struct {
	testing.TB // nil: the methods the fixture uses are below
	mu         sync.Mutex
	cleanups   []func()
	errs       []string
}

type tbFatal string

func (t *benchTB) Helper()                         {}
func (t *benchTB) Logf(format string, args ...any) { logf("dovecot: "+format, args...) }
func (t *benchTB) Fatalf(format string, args ...any) {
	panic(tbFatal(fmt.Sprintf(format, args...)))
}
func (t *benchTB) Errorf(format string, args ...any) {
	t.mu.Lock()
	t.errs = append(t.errs, fmt.Sprintf(format, args...))
	t.mu.Unlock()
}
func (t *benchTB) Cleanup(f func()) {
	t.mu.Lock()
	t.cleanups = append(t.cleanups, f)
	t.mu.Unlock()
}

// cleanup runs the registered cleanups, last first.
func (t *benchTB) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	for _, e := range t.errs {
		logf("dovecot cleanup: %s", e)
	}
}

// startDovecot starts the fixture with opt, recovering its Fatalf.
func startDovecot(tb *benchTB, opt dovecottest.Options) (s *dovecottest.Server, err error) {
	defer func() {
		if p := recover(); p != nil {
			f, ok := p.(tbFatal)
			if !ok {
				panic(p)
			}
			err = fmt.Errorf("%s", string(f))
		}
	}()
	return dovecottest.Start(tb, opt), nil
}

// authVSZ is the auth service's address-space limit in the bench. With
// Dovecot's default, 256 MB, the auth process dies (out of memory) loading
// a passwd-file of a million lines: the passwd-file driver holds every file
// it has read, parsed, in that process.
const authVSZ = "1G"

// dovecotConf is the fixture's own configuration (dovecottest.Config: auth
// only, auth cache off, the passwd-file passdb) with the auth service's
// vsz_limit raised to authVSZ.
func dovecotConf(passwd string) string {
	return `protocols =
listen = 127.0.0.1
auth_failure_delay = 0
auth_mechanisms = plain login
disable_plaintext_auth = no
ssl = no
auth_cache_size = 0
passdb {
  driver = passwd-file
  args = scheme=SSHA512 username_format=%u ` + passwd + `
}
service auth {
  vsz_limit = ` + authVSZ + `
}
`
}

// benchPassword is the password of every bulk-loaded credential.
const benchPassword = "bench-password-0123456789"

// dovecotTargets parses -dovecot-targets (the memory bench's names, but
// the webhook: Dovecot cannot read what it sends).
func dovecotTargets(list string) ([]memTarget, error) {
	ts, err := memTargets(list)
	if err != nil {
		return nil, fmt.Errorf("-dovecot-targets: %w", err)
	}
	for _, t := range ts {
		if t.target == targetWebhook {
			return nil, fmt.Errorf("-dovecot-targets: Dovecot does not read the webhook target")
		}
	}
	return ts, nil
}

// runDovecot measures Dovecot against each target of -dovecot-targets, each
// on a database of its own.
func runDovecot(ctx context.Context, o options, hash string) (points []dovecotPoint, err error) {
	targets, err := dovecotTargets(o.dovecotTargets)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, t := range targets {
		logf("dovecot (%s)", memLabel(t.target, t.layout))
		pts, err := dovecotRun(ctx, o, t, hash)
		points = append(points, pts...)
		if err != nil {
			// The other targets still run.
			errs = append(errs, fmt.Errorf("dovecot bench (%s): %w", memLabel(t.target, t.layout), err))
			if ctx.Err() != nil {
				break
			}
		}
	}
	return points, errors.Join(errs...)
}

// dovecotSQLQuery is the password_query of deploy/dovecot's
// dovecot-sql.conf.ext, the file operators copy: the bench runs Dovecot
// with it.
func dovecotSQLQuery() (string, error) {
	b, err := os.ReadFile(filepath.Join("deploy", "dovecot", "dovecot-sql.conf.ext"))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "password_query"); ok {
			if v, ok = strings.CutPrefix(strings.TrimSpace(v), "="); ok {
				return strings.TrimSpace(v), nil
			}
		}
	}
	return "", fmt.Errorf("deploy/dovecot/dovecot-sql.conf.ext has no password_query")
}

func dovecotRun(ctx context.Context, o options, t memTarget, hash string) (points []dovecotPoint, err error) {
	big, authDur, creates := 1_000_000, 10*time.Second, 50
	if o.quick {
		big, authDur, creates = 20_000, 3*time.Second, 10
	}
	tb := &benchTB{}
	defer tb.cleanup()
	err = withEnv(ctx, o, t.layout, func(e *env) error {
		e.target = t.target
		var dc *dovecottest.Server
		if t.target == targetSQL {
			// Dovecot's role, as the README sets it up, with a password for
			// the driver's connect string.
			if err := e.prepareTarget(ctx); err != nil {
				return err
			}
			pw := randHex(16)
			if _, err := e.db.ExecContext(ctx, `ALTER ROLE dovecot PASSWORD '`+pw+`'`); err != nil {
				return err
			}
			query, err := dovecotSQLQuery()
			if err != nil {
				return err
			}
			u, err := url.Parse(e.dbURL)
			if err != nil {
				return err
			}
			if dc, err = startDovecot(tb, dovecottest.Options{Scheme: "SSHA512", SQL: &dovecottest.SQLPassdb{
				Connect:       fmt.Sprintf("host=%s port=%s dbname=%s user=dovecot password=%s", u.Hostname(), u.Port(), strings.TrimPrefix(u.Path, "/"), pw),
				PasswordQuery: query,
			}}); err != nil {
				return err
			}
		} else {
			// The passwd directory must be searchable by Dovecot's auth user.
			if err := os.MkdirAll(filepath.Join(e.tmp, "passwd"), 0o755); err != nil {
				return err
			}
			if dc, err = startDovecot(tb, dovecottest.Options{Config: dovecotConf(filepath.Join(e.tmp, "passwd", e.layout))}); err != nil {
				return err
			}
			e.passwdGroup = dc.Group()
		}
		sizes := map[string]int{smallDomain: 1000, bigDomain: big}
		for _, d := range []string{smallDomain, bigDomain} {
			if _, err := e.cli(ctx, "domains", "add", e.account, d, "--verified"); err != nil {
				return err
			}
			logf("dovecot: loading %d credentials into %s", sizes[d], d)
			if err := e.fillDomain(ctx, d, sizes[d], hash); err != nil {
				return err
			}
		}
		if err := e.startServer(ctx); err != nil {
			return err
		}
		client := newClient(o.concurrency)
		for _, d := range []string{smallDomain, bigDomain} {
			// One create writes the domain's file whole.
			if _, _, err := e.createAndAuth(ctx, client, dc, d, "dfirst"); err != nil {
				return err
			}
			if err := e.waitSynced(ctx, 5*time.Minute); err != nil {
				return err
			}
			if err := e.checkTarget(ctx, d); err != nil {
				return err
			}
		}
		for _, d := range []string{smallDomain, bigDomain} {
			p := dovecotPoint{Target: t.target, Layout: t.layout, Size: sizes[d]}
			logf("dovecot: authentications at c=%d for %s against %s (%d credentials)", o.concurrency, authDur, d, p.Size)
			p.Auths, p.Failed, p.FirstErr, p.AuthPerSec = authLoad(ctx, dc, d, p.Size, o.concurrency, authDur)
			logf("  %.0f auth/s, %d of %d failed %s", p.AuthPerSec, p.Failed, p.Auths, p.FirstErr)
			logf("dovecot: %d creates into %s, each until Dovecot accepts its login", creates, d)
			var lat []time.Duration
			for i := range creates {
				// Dovecot looks at a file at most once a wall-clock second:
				// creates back to back would all land at the same point of
				// the second. A random pause spreads them over it, as
				// creates come (the same for every target, so that the
				// figures compare).
				time.Sleep(rand.N(time.Second))
				dur, ok, err := e.createAndAuth(ctx, client, dc, d, fmt.Sprintf("d%d", i))
				if err != nil {
					return err
				}
				p.Creates++
				if !ok {
					p.NeverMs++
					continue
				}
				lat = append(lat, dur)
			}
			p.FirstP50, p.FirstP99 = percentile(lat, .5), percentile(lat, .99)
			logf("  create to first authentication p50 %s p99 %s, %d never", p.FirstP50, p.FirstP99, p.NeverMs)
			points = append(points, p)
		}
		return nil
	})
	return points, err
}

// authLoad authenticates random bulk-loaded logins of domain (u1 ... un)
// at concurrency conc for dur.
func authLoad(ctx context.Context, dc *dovecottest.Server, domain string, n, conc int, dur time.Duration) (auths, failed int, firstErr string, perSec float64) {
	var ok, bad atomic.Int64
	var once sync.Once
	stop := time.Now().Add(dur)
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for time.Now().Before(stop) && ctx.Err() == nil {
				user := fmt.Sprintf("u%d@%s", 1+rand.IntN(n), domain)
				good, err := dc.Auth(user, benchPassword)
				if err != nil || !good {
					bad.Add(1)
					once.Do(func() { firstErr = fmt.Sprintf("%s: %v %v", user, good, err) })
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	return int(ok.Load() + bad.Load()), int(bad.Load()), firstErr, float64(ok.Load()) / el.Seconds()
}

// createAndAuth creates a credential in domain and authenticates its login
// at Dovecot until it is accepted: a new attempt every 25 ms while earlier
// ones are in flight (Dovecot answers a refusal only after half a second),
// for up to 10 s. It returns the time from the create's request to the end
// of the first accepted authentication.
func (e *env) createAndAuth(ctx context.Context, client *http.Client, dc *dovecottest.Server, domain, name string) (time.Duration, bool, error) {
	var body struct {
		Data struct {
			Password string `json:"password"`
		} `json:"data"`
	}
	t0 := time.Now()
	st, err := e.sendJSON(ctx, client, http.MethodPost, e.baseURL+"/api/domains/"+domain+"/credentials",
		fmt.Appendf(nil, `{"username":"%s"}`, name), &body)
	if err != nil || st != http.StatusCreated || body.Data.Password == "" {
		return 0, false, fmt.Errorf("create %s@%s: status %d %v", name, domain, st, err)
	}
	login := strings.ToLower(name + "@" + domain)
	done := make(chan time.Duration, 1)
	var mu sync.Mutex
	var errs int
	var firstErr error
	var wg sync.WaitGroup
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	var got time.Duration
	ok := false
	// At most 8 attempts in flight: while Dovecot re-reads a large file
	// its auth process answers nothing, and attempts would pile up.
	slots := make(chan struct{}, 8)
loop:
	for {
		select {
		case slots <- struct{}{}:
		default:
			goto wait
		}
		wg.Go(func() {
			defer func() { <-slots }()
			good, err := dc.Auth(login, body.Data.Password)
			if err != nil {
				mu.Lock()
				if errs++; firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
			if good {
				select {
				case done <- time.Since(t0):
				default:
				}
			}
		})
	wait:
		select {
		case got = <-done:
			ok = true
			break loop
		case <-deadline:
			break loop
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
	}
	wg.Wait()
	if errs > 0 {
		log := dc.Log()
		if i := strings.LastIndex(log[:max(0, len(log)-2000)], "\n"); i >= 0 {
			log = log[i+1:]
		}
		return 0, false, fmt.Errorf("authenticating %s: %d errors, the first: %v\n--- the end of Dovecot's log ---\n%s", login, errs, firstErr, log)
	}
	return got, ok, nil
}

// dovecotKey is the suffix of a target's figures in the results data (the
// passwd-file with a file per domain keeps the names it had alone).
func dovecotKey(target, layout string) string {
	if target == targetFile && layout == "%d" {
		return ""
	}
	if target == targetFile {
		return "_shards"
	}
	return "_" + target
}

// dovecotHeadline writes the Dovecot bench's headline rows: for each
// target, the authentications per second with 1M credentials against
// those with 1k, and create to first authentication in each domain.
func dovecotHeadline(b *strings.Builder, points []dovecotPoint, add func(string, float64, bool)) {
	var labels []string
	byLabel := map[string][]dovecotPoint{}
	for _, p := range points {
		l := memLabel(p.Target, p.Layout)
		if _, ok := byLabel[l]; !ok {
			labels = append(labels, l)
		}
		byLabel[l] = append(byLabel[l], p)
	}
	for _, label := range labels {
		pts := byLabel[label] // 1k, then 1M (only 1k when the bench stopped)
		key := dovecotKey(pts[0].Target, pts[0].Layout)
		if len(pts) >= 2 {
			lo, hi := pts[0], pts[len(pts)-1]
			ratio := hi.AuthPerSec / max(lo.AuthPerSec, 1e-9)
			fmt.Fprintf(b, "| **Dovecot authentications/s** (%s, c=16, a connection each) %s vs %s credentials | **%.2fx** (%.0f vs %.0f /s), %d failed | | |\n",
				label, count(hi.Size), count(lo.Size), ratio, hi.AuthPerSec, lo.AuthPerSec, hi.Failed+lo.Failed)
		}
		for _, p := range pts {
			fmt.Fprintf(b, "| create → first successful Dovecot authentication (%s, %s domain) | p50 %.0f ms, p99 %.0f ms (%d creates, %d never within 10 s) | | |\n",
				label, count(p.Size), ms(p.FirstP50), ms(p.FirstP99), p.Creates, p.NeverMs)
			if add != nil {
				add(fmt.Sprintf("dovecot_auth_per_s_%d%s", p.Size, key), p.AuthPerSec, true)
				add(fmt.Sprintf("dovecot_first_auth_p99_ms_%d%s", p.Size, key), ms(p.FirstP99), false)
			}
		}
	}
}

// dovecotTable writes the Dovecot bench's headline rows and its table.
func dovecotTable(b *strings.Builder, points []dovecotPoint, conc int) {
	dovecotHeadline(b, points, nil)
	fmt.Fprintf(b, "\n## Dovecot (a real Dovecot 2.3, auth cache off; passwd-file: auth vsz_limit %s; dovecot-sql: deploy/dovecot's password_query)\n\n", authVSZ)
	fmt.Fprintf(b, "| target | credentials in the domain | authentications/s at c=%d | failed | create → first authentication p50 / p99 | never within 10 s |\n|---|---|---|---|---|---|\n", conc)
	for _, p := range points {
		fmt.Fprintf(b, "| %s | %s | %.0f | %d of %d | %.0f / %.0f ms | %d of %d |\n",
			memLabel(p.Target, p.Layout), count(p.Size), p.AuthPerSec, p.Failed, p.Auths, ms(p.FirstP50), ms(p.FirstP99), p.NeverMs, p.Creates)
		if p.FirstErr != "" {
			fmt.Fprintf(b, "\nFirst failed authentication (%s, %s): `%s`\n\n", memLabel(p.Target, p.Layout), count(p.Size), p.FirstErr)
		}
	}
}
