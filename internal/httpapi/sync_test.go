package httpapi_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/app"
	"github.com/smtpcreds/smtpcreds/internal/dovecottest"
	"github.com/smtpcreds/smtpcreds/internal/syncer"
	"github.com/smtpcreds/smtpcreds/internal/syncer/passwdfile"
)

// syncWorld is a world whose credentials are synced to a Dovecot passwd-file
// read by a real, running Dovecot.
type syncWorld struct {
	world
	dovecot *dovecottest.Server
	dir     string // holds the passwd file(s)
	files   *passwdfile.Writer
}

// The passwd-file layouts: one file, one per domain, shards per domain.
const (
	oneFile   = "passwd"
	perDomain = "%d"
	sharded   = "%d/%2Mu"
)

// newSyncWorld syncs to the passwd-file(s) layout (oneFile, perDomain or
// sharded) under a temporary directory; o's other options go to the world.
func newSyncWorld(t *testing.T, layout string, o ...opts) syncWorld {
	t.Helper()
	dir := dovecottest.TempDir(t)
	tmpl := filepath.Join(dir, "auth", layout)
	// With the second passdb for previous passwords, as the README's
	// configuration has it.
	dc := dovecottest.Start(t, dovecottest.Options{PasswdFile: tmpl, Scheme: "SSHA512", Previous: true})
	// The server writes through its own Writer; this one only names the
	// files and shards.
	w, err := passwdfile.New(tmpl, dc.Group())
	if err != nil {
		t.Fatal(err)
	}
	wo := opts{}
	if len(o) > 0 {
		wo = o[0]
	}
	pace := wo.sync // a Timeout set: the worker paced by the caller, zeros the syncer's defaults
	wo.sync = fastSync(app.SyncConfig{Target: "passwd-file", PasswdFile: tmpl, PasswdGroup: dc.Group()})
	if pace.Timeout != 0 {
		wo.sync.Timeout, wo.sync.PollInterval, wo.sync.BaseBackoff, wo.sync.MaxBackoff =
			pace.Timeout, pace.PollInterval, pace.BaseBackoff, pace.MaxBackoff
	}
	return syncWorld{
		world:   newWorld(t, wo),
		dovecot: dc, dir: dir, files: w,
	}
}

// read returns the content of domain's passwd file(s), all shards
// concatenated, and checks that each shard's lines belong in it.
func (s syncWorld) read(domain string) []byte {
	s.t.Helper()
	var all []byte
	for _, shard := range s.files.Shards() {
		data, err := os.ReadFile(s.files.Path(domain, shard))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			s.t.Fatal(err)
		}
		entries, err := passwdfile.Parse(data)
		if err != nil {
			s.t.Fatalf("passwd file %q does not parse: %v\n%s", shard, err, data)
		}
		for _, e := range entries {
			if got := s.files.Shard(e.Login); got != shard {
				s.t.Errorf("%s is in shard %q, belongs in %q", e.Login, shard, got)
			}
		}
		all = append(all, data...)
	}
	return all
}

// auth asks Dovecot, after the passwd file's changes became visible to it.
func (s syncWorld) auth(login, pw string) bool {
	s.t.Helper()
	s.dovecot.WaitNextSecond()
	ok, err := s.dovecot.Auth(login, pw)
	if err != nil {
		s.t.Fatalf("dovecot auth %s: %v\ndovecot log:\n%s", login, err, s.dovecot.Log())
	}
	return ok
}

// wantFileMatchesDB checks that the passwd file of domain holds exactly the
// domain's active credentials as the database has them, and no plaintext.
func (s syncWorld) wantFileMatchesDB(domain string, plaintexts ...string) {
	s.t.Helper()
	data := s.read(domain)
	var entries []syncer.Entry
	for line := range strings.Lines(string(data)) {
		login, hash, _ := strings.Cut(strings.TrimSuffix(line, "\n"), ":")
		entries = append(entries, syncer.Entry{Login: login, Hash: hash})
	}
	slices.SortFunc(entries, func(a, b syncer.Entry) int { return strings.Compare(a.Login, b.Login) })
	var want []syncer.Entry
	if err := s.db.Select(&want, `
		SELECT c.username || '@' || d.name AS login, c.password_hash AS hash
		FROM credentials c JOIN domains d ON d.id = c.domain_id
		WHERE d.name = $1 AND c.status AND (c.expires_at IS NULL OR c.expires_at > now())
		ORDER BY login`, domain); err != nil {
		s.t.Fatal(err)
	}
	if len(entries) != len(want) {
		s.t.Fatalf("file has %d lines, database %d active credentials\n%s", len(entries), len(want), data)
	}
	for i := range want {
		if entries[i] != want[i] {
			s.t.Errorf("line %d = %+v, database %+v", i, entries[i], want[i])
		}
	}
	for _, p := range plaintexts {
		if strings.Contains(string(data), p) {
			s.t.Error("the passwd file contains a plaintext password")
		}
	}
}

func TestSyncCreateAuthenticatesInDovecot(t *testing.T) {
	t.Parallel()
	s := newSyncWorld(t, oneFile)
	d := s.MustCreateCredential("mailer")
	pw := d["password"].(string)
	if d["remote_synced"] != true || dig(d, "credential", "remote_synced") != true {
		t.Fatalf("remote_synced should be true with a healthy passwd-file: %v", d)
	}
	if !s.auth("mailer@example.com", pw) {
		t.Fatalf("Dovecot refuses the password the API returned\n%s", s.dovecot.Log())
	}
	if s.auth("mailer@example.com", wrongPassword(pw)) {
		t.Error("Dovecot accepts a wrong password")
	}
	if s.auth("nobody@example.com", pw) {
		t.Error("Dovecot accepts an unknown login")
	}
	g := s.do(req{method: "GET", path: credsPath + "/" + str(d, "credential", "user_smtp_guid"), auth: s.alice.auth})
	if dig(g.body, "data", "remote_synced") != true || dig(g.body, "data", "last_synced_at") == nil || dig(g.body, "data", "sync_error") != nil {
		t.Errorf("GET sync state: %s", g.raw)
	}
	fi, err := os.Stat(s.files.Path("example.com", ""))
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("passwd file mode %v (%v), want 0640", fi.Mode(), err)
	}
	s.wantFileMatchesDB("example.com", pw)
}

// Two resets in one second: only the newest password works (the rewrite
// bumps the file's mtime so that Dovecot re-reads a same-size file).
func TestSyncResetTwiceInOneSecond(t *testing.T) {
	t.Parallel()
	s := newSyncWorld(t, oneFile)
	d := s.MustCreateCredential("rot")
	first := d["password"].(string)
	guid := str(d, "credential", "user_smtp_guid")
	if !s.auth("rot@example.com", first) {
		t.Fatal("created password refused")
	}
	pws := s.resetTwice(guid, "rot@example.com", first, s.auth, s.dovecot)
	s.wantFileMatchesDB("example.com", first, pws[0], pws[1])
}

func TestSyncDeleteCredentialAndDomain(t *testing.T) {
	t.Parallel()
	for name, layout := range map[string]string{"one file": oneFile, "file per domain": perDomain, "shards": sharded} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newSyncWorld(t, layout)
			a := s.MustCreateCredential("gone")
			b := s.MustCreateCredential("stays")
			c := s.MustCreateCredential("withdomain")
			del := s.do(req{method: "DELETE", path: credsPath + "/" + str(a, "credential", "user_smtp_guid"), auth: s.alice.auth})
			wantStatus(t, del, http.StatusOK)
			if dig(del.body, "data", "remote_synced") != true {
				t.Errorf("remote_synced should be true with a healthy passwd-file: %s", del.raw)
			}
			if s.auth("gone@example.com", a["password"].(string)) {
				t.Error("a deleted credential still authenticates")
			}
			if !s.auth("stays@example.com", b["password"].(string)) {
				t.Error("deleting one credential broke another")
			}
			s.wantFileMatchesDB("example.com")

			wantStatus(t, s.do(req{method: "DELETE", path: "/api/domains/example.com", auth: s.alice.auth}), http.StatusOK)
			for login, pw := range map[string]string{"stays@example.com": b["password"].(string), "withdomain@example.com": c["password"].(string)} {
				if s.auth(login, pw) {
					t.Errorf("%s still authenticates after its domain was deleted", login)
				}
			}
			if data := s.read("example.com"); strings.Contains(string(data), "@example.com") {
				t.Errorf("lines remain after the domain was deleted:\n%s", data)
			}
		})
	}
}

// With the target unavailable, a delete still succeeds and says so: the
// credential is gone from the API (GET 404) but remote_synced is false and
// /metrics shows the pending deletion; once the target is back the worker
// removes the login. (Breaking the directory also stops Dovecot reading it,
// so that the login still authenticating meanwhile is shown with a webhook
// agent: TestWebhookDeleteWhileAgentDown.)
func TestSyncDeleteWhileTargetDown(t *testing.T) {
	t.Parallel()
	s := newSyncWorld(t, oneFile)
	d := s.MustCreateCredential("lingers")
	pw, guid := d["password"].(string), str(d, "credential", "user_smtp_guid")
	if !s.auth("lingers@example.com", pw) {
		t.Fatal("created password refused")
	}
	restore := s.breakTarget()

	r := s.do(req{method: "DELETE", path: credsPath + "/" + guid, auth: s.alice.auth})
	wantStatus(t, r, http.StatusOK)
	if r.body["message"] != "Credential deleted successfully." || dig(r.body, "data", "remote_synced") != false {
		t.Fatalf("delete while the target is down: %s", r.raw)
	}
	wantError(t, s.do(req{method: "GET", path: credsPath + "/" + guid, auth: s.alice.auth}), http.StatusNotFound, "Credential not found")
	depth, age := s.syncBacklog()
	if depth != 1 || age <= 0 {
		t.Errorf("metrics while the deletion is pending: queue depth %v, oldest age %v; want 1 and > 0", depth, age)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.outbox.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	restore()
	deadline := time.Now().Add(10 * time.Second)
	for depth, _ := s.syncBacklog(); depth != 0; depth, _ = s.syncBacklog() {
		if time.Now().After(deadline) {
			t.Fatalf("the deletion was not applied 10s after recovery (queue depth %v)", depth)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s.auth("lingers@example.com", pw) {
		t.Error("the login still authenticates after the worker applied its deletion")
	}
	if _, age := s.syncBacklog(); age != 0 {
		t.Errorf("oldest pending age %v with nothing pending", age)
	}
	s.wantFileMatchesDB("example.com", pw)
}

// breakTarget makes every write of the passwd file fail, even as root (a
// plain file where its directory was); the returned func undoes it.
func (s syncWorld) breakTarget() (restore func()) {
	s.t.Helper()
	authDir := filepath.Join(s.dir, "auth")
	away := filepath.Join(s.dir, "auth.away")
	if err := os.Rename(authDir, away); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(authDir, []byte("x"), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return func() {
		s.t.Helper()
		if err := os.Remove(authDir); err != nil {
			s.t.Fatal(err)
		}
		if err := os.Rename(away, authDir); err != nil {
			s.t.Fatal(err)
		}
	}
}

// syncBacklog scrapes /metrics for the sync queue's depth and the age of its
// oldest job.
func (w world) syncBacklog() (depth, age float64) {
	w.t.Helper()
	rec := httptest.NewRecorder()
	w.metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	found := 0
	for line := range strings.Lines(rec.Body.String()) {
		name, value, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		var dst *float64
		switch name {
		case "smtpcreds_sync_queue_depth":
			dst = &depth
		case "smtpcreds_sync_oldest_pending_age_seconds":
			dst = &age
		default:
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			w.t.Fatalf("metric %s: %v", line, err)
		}
		*dst = v
		found++
	}
	if found != 2 {
		w.t.Fatalf("/metrics lacks the sync queue metrics:\n%s", rec.Body.String())
	}
	return depth, age
}

// With the target unavailable, a create still succeeds (remote_synced false,
// with the error on GET); once the target is back the worker converges by
// itself and the credential authenticates. Nothing is lost.
func TestSyncTargetDownThenRecovers(t *testing.T) {
	t.Parallel()
	s := newSyncWorld(t, oneFile)
	restore := s.breakTarget()
	pw, guid, g := s.createWhileDown("patient")
	if dig(g.body, "data", "remote_synced") != false || str(g.body, "data", "sync_error") == "" {
		t.Errorf("GET while down: %s", g.raw)
	}
	if strings.Contains(g.raw, s.dir) {
		t.Errorf("sync_error leaks a server path: %s", g.raw)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.outbox.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	restore()
	s.waitRemoteSynced(guid)
	if !s.auth("patient@example.com", pw) {
		t.Errorf("converged credential refused by Dovecot\n%s", s.dovecot.Log())
	}
	s.wantFileMatchesDB("example.com", pw)
}

// After an outage of the passwd-file target during which 1,000 creates failed
// to sync, every credential reaches Dovecot within 10 s of the target's
// recovery, by the worker alone (the syncer's default pace: retries follow
// the time the file has been failing, at most 5 s apart), and the outage cost
// one attempt per request plus a number of worker attempts that grows with
// the log of the outage's length, not with the requests: a busy API does not
// push its own recovery away (the issue saw 10 failed creates put the next
// retry 143 s off).
func TestSyncManyFailedCreatesConvergeAfterOutage(t *testing.T) {
	t.Parallel()
	// A request whose apply failed waits out its timeout for another apply to
	// take its change: short, for 1,000 creates in seconds.
	const timeout = 250 * time.Millisecond
	s := newSyncWorld(t, oneFile, opts{maxPerDomain: -1, sync: app.SyncConfig{Timeout: timeout}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.outbox.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// The outage: a plain file where the directory was, so every write
	// fails, even as root.
	authDir := filepath.Join(s.dir, "auth")
	away := filepath.Join(s.dir, "auth.away")
	if err := os.Mkdir(authDir, 0o750); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	if err := os.Rename(authDir, away); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(authDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	down := time.Now()

	const creates, concurrency = 1000, 16
	passwords := make([]string, creates)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < creates; i = next.Add(1) - 1 {
				r := s.do(req{method: "POST", path: credsPath, auth: s.alice.auth, body: fmt.Sprintf(`{"username":"u%04d"}`, i)})
				if r.status != http.StatusCreated || dig(r.body, "data", "remote_synced") != false {
					s.t.Errorf("create %d while the target is down: %d %s", i, r.status, r.raw)
					return
				}
				passwords[i] = str(r.body, "data", "password")
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	if err := os.Remove(authDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(away, authDir); err != nil {
		t.Fatal(err)
	}
	recovered := time.Now()
	outage := recovered.Sub(down)
	deadline := recovered.Add(10 * time.Second)
	for {
		var unsynced int
		if err := s.db.Get(&unsynced, `SELECT count(*) FROM credentials WHERE synced_version < version`); err != nil {
			t.Fatal(err)
		}
		if unsynced == 0 {
			break
		}
		if time.Now().After(deadline) {
			var jobs string
			_ = s.db.Get(&jobs, `SELECT count(*) || ' pending, attempts ' || max(attempts) || ', next due in ' ||
				(min(available_at) - now())::text FROM sync_jobs WHERE done_at IS NULL`)
			t.Fatalf("%d credentials not synced 10 s after the target's recovery (%s)", unsynced, jobs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	converged := time.Since(recovered)
	// Marked synced means written before: Dovecot reads the file as it is.
	s.dovecot.WaitNextSecond()
	for i, pw := range passwords {
		ok, err := s.dovecot.Auth(fmt.Sprintf("u%04d@example.com", i), pw)
		if err != nil || !ok {
			t.Fatalf("u%04d refused by Dovecot after convergence (%v)\n%s", i, err, s.dovecot.Log())
		}
	}
	s.wantFileMatchesDB("example.com", passwords...)

	// The traffic against the target while it was down, from the log.
	var byRequest, byWorker int
	for line := range strings.Lines(s.logs.String()) {
		if strings.Contains(line, `"msg":"sync: apply failed"`) {
			switch {
			case strings.Contains(line, `"by":"request"`):
				byRequest++
			case strings.Contains(line, `"by":"worker"`):
				byWorker++
			}
		}
	}
	if byRequest > creates {
		t.Errorf("%d failed attempts by %d requests: a request tries once", byRequest, creates)
	}
	// A retry waits at least half of max(BaseBackoff, the time failing so
	// far) and MaxBackoff at most (500 ms and 5 s by default): the time
	// failing grows by half at least per retry until the cap (two or three
	// retries below BaseBackoff), then a retry per 2.5 s at most; plus the
	// attempt in hand, and one for jobs a request held while the worker's
	// failure rescheduled the file.
	ramp := min(outage.Seconds(), 5)
	n := 3 + int(math.Ceil(math.Log(max(ramp/0.5, 1))/math.Log(1.5))) + int(math.Ceil((outage.Seconds()-ramp)/2.5))
	bound := n + 2
	if byWorker > bound {
		t.Errorf("the worker tried the failing file %d times in %v; the schedule allows %d", byWorker, outage, bound)
	}
	var most int
	if err := s.db.Get(&most, `SELECT max(attempts) FROM sync_jobs`); err != nil {
		t.Fatal(err)
	}
	if most > 2+byWorker {
		t.Errorf("a job counts %d attempts; its request and the worker made at most %d", most, 2+byWorker)
	}
	t.Logf("outage %v: %d failed attempts by requests, %d by the worker (bound %d), max attempts %d; all synced %v after recovery",
		outage.Round(time.Millisecond), byRequest, byWorker, bound, most, converged.Round(time.Millisecond))
}

// With the files sharded by Dovecot's own "%2Mu", every login is where
// Dovecot looks for it: logins spread over many shards all authenticate,
// and a change rewrites only its own shard.
func TestSyncShardsAreWhereDovecotLooks(t *testing.T) {
	t.Parallel()
	s := newSyncWorld(t, sharded)
	pws := map[string]string{}
	shards := map[string]bool{}
	for i := range 24 {
		user := fmt.Sprintf("tenant%d", i)
		pws[user+"@example.com"] = s.MustCreateCredential(user)["password"].(string)
		shards[s.files.Shard(user+"@example.com")] = true
	}
	if len(shards) < 12 {
		t.Fatalf("24 logins fell into only %d shards", len(shards))
	}
	s.wantFileMatchesDB("example.com")
	s.dovecot.WaitNextSecond()
	for login, pw := range pws {
		ok, err := s.dovecot.Auth(login, pw)
		if err != nil || !ok {
			t.Fatalf("Dovecot refuses %s (%v): it looks for it in another file than %q\n%s", login, err, s.files.Shard(login), s.dovecot.Log())
		}
	}

	// A reset touches one file: the others keep their inode.
	inodes := map[string]uint64{}
	for shard := range shards {
		inodes[shard] = inodeOf(t, s.files.Path("example.com", shard))
	}
	d := s.MustCreateCredential("resetme")
	r := s.do(req{method: "PUT", path: credsPath + "/" + str(d, "credential", "user_smtp_guid") + "/reset-password", auth: s.alice.auth})
	wantStatus(t, r, http.StatusOK)
	own := s.files.Shard("resetme@example.com")
	for shard, ino := range inodes {
		if shard != own && inodeOf(t, s.files.Path("example.com", shard)) != ino {
			t.Errorf("shard %q was rewritten for a change in shard %q", shard, own)
		}
	}
	if !s.auth("resetme@example.com", str(r.body, "data", "new_password")) {
		t.Errorf("reset password refused\n%s", s.dovecot.Log())
	}
	s.wantFileMatchesDB("example.com")
}

// A domain's file large enough to be written with O_DIRECT (over 256 KiB)
// is what Dovecot reads: logins in its first blocks and at its end work,
// also after a reset rewrites it.
func TestSyncLargeFileAuthenticatesInDovecot(t *testing.T) {
	t.Parallel()
	s := newSyncWorld(t, perDomain, opts{maxPerDomain: -1})
	if _, err := s.db.Exec(`
		INSERT INTO credentials (guid, account_id, domain_id, username, password_hash)
		SELECT gen_random_uuid(), d.account_id, d.id, 'bulk' || g, '{SSHA512}' || repeat('A', 100)
		FROM domains d, generate_series(1, 3000) g WHERE d.name = 'example.com'`); err != nil {
		t.Fatal(err)
	}
	first, last := s.MustCreateCredential("aaa"), s.MustCreateCredential("zzz")
	if fi, err := os.Stat(s.files.Path("example.com", "")); err != nil || fi.Size() < 256<<10 {
		t.Fatalf("the domain's file: %v, %v; want over 256 KiB", fi, err)
	}
	for login, d := range map[string]map[string]any{"aaa@example.com": first, "zzz@example.com": last} {
		if d["remote_synced"] != true || !s.auth(login, d["password"].(string)) {
			t.Errorf("Dovecot refuses %s from a large file (remote_synced %v)\n%s", login, d["remote_synced"], s.dovecot.Log())
		}
	}
	r := s.do(req{method: "PUT", path: credsPath + "/" + str(first, "credential", "user_smtp_guid") + "/reset-password", auth: s.alice.auth})
	wantStatus(t, r, http.StatusOK)
	if !s.auth("aaa@example.com", str(r.body, "data", "new_password")) || s.auth("aaa@example.com", first["password"].(string)) {
		t.Errorf("after the reset Dovecot does not take only the new password\n%s", s.dovecot.Log())
	}
	s.wantFileMatchesDB("example.com")
}

// Creates append their lines to the file Dovecot has open (it keeps its
// inode); Dovecot takes every appended login, and a reset or a deletion
// after appends (which rewrites the file whole) takes effect, as does an
// append after such a rewrite.
func TestSyncAppendsThenRewrites(t *testing.T) {
	t.Parallel()
	for name, layout := range map[string]string{"file per domain": perDomain, "shards": "%d/%1Mu"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newSyncWorld(t, layout)
			pws := map[string]string{}
			guids := map[string]string{}
			create := func(user string) {
				d := s.MustCreateCredential(user)
				if d["remote_synced"] != true {
					t.Fatalf("create %s: remote_synced %v", user, d["remote_synced"])
				}
				pws[user+"@example.com"], guids[user] = d["password"].(string), str(d, "credential", "user_smtp_guid")
			}
			// Enough logins that every one of the 16 shards has a file before
			// the appends.
			for i := range 48 {
				create(fmt.Sprintf("first%02d", i))
			}
			// Held open, a file that is replaced loses its last link (its
			// inode number alone may be reused by the replacement).
			open := map[string]*os.File{}
			for _, shard := range s.files.Shards() {
				f, err := os.Open(s.files.Path("example.com", shard))
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				open[shard] = f
			}
			for i := range 16 {
				create(fmt.Sprintf("appended%02d", i))
			}
			for shard, f := range open {
				if fi, err := f.Stat(); err != nil || fi.Sys().(*syscall.Stat_t).Nlink == 0 {
					t.Errorf("shard %q was replaced (%v): creates should append to it", shard, err)
				}
			}
			s.wantFileMatchesDB("example.com")
			s.dovecot.WaitNextSecond()
			for login, pw := range pws {
				if ok, err := s.dovecot.Auth(login, pw); err != nil || !ok {
					t.Fatalf("Dovecot refuses %s (%v)\n%s", login, err, s.dovecot.Log())
				}
			}

			// A reset rewrites its file, appended lines included.
			r := s.do(req{method: "PUT", path: credsPath + "/" + guids["appended03"] + "/reset-password", auth: s.alice.auth})
			wantStatus(t, r, http.StatusOK)
			old := pws["appended03@example.com"]
			pws["appended03@example.com"] = str(r.body, "data", "new_password")
			// A deletion of another appended login, then a create appended
			// to the rewritten file.
			wantStatus(t, s.do(req{method: "DELETE", path: credsPath + "/" + guids["appended07"], auth: s.alice.auth}), http.StatusOK)
			gone := pws["appended07@example.com"]
			delete(pws, "appended07@example.com")
			create("late")
			s.wantFileMatchesDB("example.com")
			if s.auth("appended03@example.com", old) {
				t.Error("the password before the reset still works")
			}
			if s.auth("appended07@example.com", gone) {
				t.Error("a deleted appended login still authenticates")
			}
			for login, pw := range pws {
				if ok, err := s.dovecot.Auth(login, pw); err != nil || !ok {
					t.Fatalf("Dovecot refuses %s after the rewrites (%v)\n%s", login, err, s.dovecot.Log())
				}
			}
			if strings.Contains(s.dovecot.Log(), "more than once") {
				t.Errorf("Dovecot saw a login twice:\n%s", s.dovecot.Log())
			}
		})
	}
}

func inodeOf(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// waitRemoteSynced polls GET of alice's credential guid on example.com
// until it reports remote_synced (a worker converging after an outage), and
// checks that the sync error is gone then; it fails the test after 10 s.
func (w world) waitRemoteSynced(guid string) {
	w.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g := w.do(req{method: "GET", path: credsPath + "/" + guid, auth: w.alice.auth})
		if dig(g.body, "data", "remote_synced") == true {
			if dig(g.body, "data", "sync_error") != nil {
				w.t.Errorf("sync_error after convergence: %s", g.raw)
			}
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("not converged 10s after recovery: %s", g.raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// resetTwice resets alice's credential guid (login, first its password)
// twice in a row and checks through auth that Dovecot accepts only the
// newest password; it returns the two new passwords.
func (w world) resetTwice(guid, login, first string, auth func(login, pw string) bool, dc *dovecottest.Server) []string {
	w.t.Helper()
	var pws []string
	for range 2 {
		r := w.do(req{method: "PUT", path: credsPath + "/" + guid + "/reset-password", auth: w.alice.auth})
		wantStatus(w.t, r, http.StatusOK)
		if dig(r.body, "data", "remote_synced") != true {
			w.t.Fatalf("reset not synced: %s", r.raw)
		}
		pws = append(pws, str(r.body, "data", "new_password"))
	}
	if !auth(login, pws[1]) {
		w.t.Errorf("newest password refused\n%s", dc.Log())
	}
	for i, old := range []string{first, pws[0]} {
		if auth(login, old) {
			w.t.Errorf("old password %d still works after the resets", i)
		}
	}
	return pws
}

// createWhileDown creates username on example.com as alice while the sync
// target is down, checks that the answer says remote_synced false, and
// returns the password, the guid and a GET of the credential.
func (w world) createWhileDown(username string) (pw, guid string, get resp) {
	w.t.Helper()
	r := w.do(req{method: "POST", path: credsPath, auth: w.alice.auth, body: `{"username":"` + username + `"}`})
	wantStatus(w.t, r, http.StatusCreated)
	if dig(r.body, "data", "remote_synced") != false {
		w.t.Fatalf("remote_synced true while the target is down: %s", r.raw)
	}
	pw, guid = str(r.body, "data", "password"), str(r.body, "data", "credential", "user_smtp_guid")
	return pw, guid, w.do(req{method: "GET", path: credsPath + "/" + guid, auth: w.alice.auth})
}

// wrongPassword is pw (a password or token) with its last character changed
// to a different one; always writing the same letter would leave pw valid
// whenever it already ended in it.
func wrongPassword(pw string) string {
	last := byte('x')
	if pw[len(pw)-1] == last {
		last = 'y'
	}
	return pw[:len(pw)-1] + string(last)
}
