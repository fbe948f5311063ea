package syncer_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/dbtest"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/syncer"
	"github.com/smtpcreds/smtpcreds/internal/syncer/snapshot"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

// recorder is a backend that records what it is asked to hold (a
// snapshot.Renderer, given to each Service through its own snapshot.Target,
// as each process has its own); it can be told to fail, and it flags
// overlapping applies of one scope. A part's fingerprint is a digest of its
// entries.
type recorder struct {
	mu       sync.Mutex
	batches  []batch
	state    map[string]map[string][]syncer.Entry // scope -> part -> entries
	fail     atomic.Bool
	inFlight map[string]int
	overlap  atomic.Bool
	delay    time.Duration
	partOf   func(string) string // Partition's, for Stream
}

// batch is what one render or stream was given.
type batch struct {
	Whole  bool // streamed whole
	Parts  []snapshot.Part
	Events []syncer.Event
}

func newRecorder() *recorder {
	return &recorder{state: map[string]map[string][]syncer.Entry{}, inFlight: map[string]int{}}
}

// partitioned is a recorder whose scopes are split into parts by the
// login's first letter (which login order groups, as ScanInOrder's).
type partitioned struct{ *recorder }

func (partitioned) Partition(login string) string { return firstLetter(login) }

func firstLetter(login string) string { return login[:1] }

// newPartitioned returns a partitioned recorder.
func newPartitioned() partitioned {
	r := newRecorder()
	r.partOf = firstLetter
	return partitioned{r}
}

// stored is a partitioned recorder that is also a PartStore: the target
// reads the parts it changes back from it. readErr, when set, fails
// ReadPart.
type stored struct {
	partitioned
	readErr atomic.Bool
	reads   atomic.Int64
}

func (s *stored) ReadPart(scope, key, print string) ([]syncer.Entry, error) {
	s.reads.Add(1)
	if s.readErr.Load() {
		return nil, errors.New("part unreadable")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.state[scope][key]), nil
}

func (r *recorder) Name() string               { return "recorder" }
func (r *recorder) Scope(domain string) string { return domain }
func (r *recorder) Partition(string) string    { return "" }
func (r *recorder) MD5Digits() int             { return 0 }

// printOf is the fingerprint of entries.
func printOf(entries []syncer.Entry) string {
	if len(entries) == 0 {
		return ""
	}
	return fmt.Sprint(entries)
}

func (r *recorder) Holds(scope, key, print string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return printOf(r.state[scope][key]) == print
}

// enter and leave bracket a write, flagging overlaps.
func (r *recorder) enter(scope string) error {
	r.mu.Lock()
	r.inFlight[scope]++
	if r.inFlight[scope] > 1 {
		r.overlap.Store(true)
	}
	r.mu.Unlock()
	time.Sleep(r.delay) // simulated backend latency, to give overlaps a chance
	r.mu.Lock()
	r.inFlight[scope]--
	if r.fail.Load() {
		r.mu.Unlock()
		return errors.New("backend unavailable")
	}
	return nil // r.mu held
}

func (r *recorder) Render(_ context.Context, b snapshot.Batch) (map[string]string, error) {
	if err := r.enter(b.Scope); err != nil {
		return nil, err
	}
	defer r.mu.Unlock()
	if r.state[b.Scope] == nil {
		r.state[b.Scope] = map[string][]syncer.Entry{}
	}
	for _, p := range b.Parts {
		if p.AddOnly && p.Entries == nil && printOf(r.state[b.Scope][p.Key]) != p.Print {
			return nil, fmt.Errorf("%w: part %q", snapshot.ErrInDoubt, p.Key)
		}
	}
	r.batches = append(r.batches, batch{Parts: b.Parts, Events: b.Events})
	prints := map[string]string{}
	for _, p := range b.Parts {
		if p.AddOnly && p.Entries == nil {
			next := append(slices.Clone(r.state[b.Scope][p.Key]), p.Added...)
			slices.SortFunc(next, func(a, b syncer.Entry) int { return strings.Compare(a.Login, b.Login) })
			r.state[b.Scope][p.Key] = next
		} else {
			r.state[b.Scope][p.Key] = slices.Clone(p.Entries)
		}
		prints[p.Key] = printOf(r.state[b.Scope][p.Key])
	}
	return prints, nil
}

func (r *recorder) Stream(_ context.Context, b snapshot.Batch, _ map[string]string, scan func(fn func(syncer.Entry) error) error) (map[string]string, error) {
	var parts []snapshot.Part
	err := scan(func(e syncer.Entry) error {
		k := r.partition(e.Login)
		if len(parts) == 0 || parts[len(parts)-1].Key != k {
			parts = append(parts, snapshot.Part{Key: k})
		}
		parts[len(parts)-1].Entries = append(parts[len(parts)-1].Entries, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := r.enter(b.Scope); err != nil {
		return nil, err
	}
	defer r.mu.Unlock()
	r.batches = append(r.batches, batch{Whole: true, Parts: parts, Events: b.Events})
	r.state[b.Scope] = map[string][]syncer.Entry{}
	prints := map[string]string{}
	for _, p := range parts {
		r.state[b.Scope][p.Key] = p.Entries
		prints[p.Key] = printOf(p.Entries)
	}
	return prints, nil
}

// partition is the part of login, as Partition gives it.
func (r *recorder) partition(login string) string {
	if r.partOf == nil {
		return ""
	}
	return r.partOf(login)
}

func (r *recorder) applies() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.batches)
}

// held returns what the backend holds of scope, sorted by login.
func (r *recorder) held(scope string) []syncer.Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []syncer.Entry
	for _, entries := range r.state[scope] {
		all = append(all, entries...)
	}
	slices.SortFunc(all, func(a, b syncer.Entry) int { return strings.Compare(a.Login, b.Login) })
	return all
}

// fixture is one account with domain example.com.
type fixture struct {
	db       *sqlx.DB
	domainID int64
	account  int64
}

func newFixture(t *testing.T) fixture {
	db := dbtest.New(t)
	f := fixture{db: db}
	if err := db.Get(&f.account, `INSERT INTO accounts (name, token_digest) VALUES ('a', '\x00') RETURNING id`); err != nil {
		t.Fatal(err)
	}
	if err := db.Get(&f.domainID, `INSERT INTO domains (account_id, name, is_verified) VALUES ($1, 'example.com', true) RETURNING id`, f.account); err != nil {
		t.Fatal(err)
	}
	return f
}

// change inserts (or re-hashes) a credential and enqueues its event in one
// transaction, as the credential service does; it returns the job ids.
func (f fixture) change(t *testing.T, s *syncer.Service, user, hash string) syncer.Pending {
	t.Helper()
	p, err := f.tryChange(s, user, hash)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tryChange is change for other goroutines than the test's: it returns
// the error.
func (f fixture) tryChange(s *syncer.Service, user, hash string) (syncer.Pending, error) {
	return f.tryChangeIn(s, f.domainID, "example.com", user, hash)
}

// tryChangeIn is tryChange in another domain of the account.
func (f fixture) tryChangeIn(s *syncer.Service, domainID int64, domain, user, hash string) (syncer.Pending, error) {
	ctx := context.Background()
	tx, err := f.db.BeginTxx(ctx, nil)
	if err != nil {
		return syncer.Pending{}, err
	}
	defer tx.Rollback() //nolint:errcheck
	var id, version int64
	err = tx.QueryRowx(`
		INSERT INTO credentials (guid, account_id, domain_id, username, password_hash)
		VALUES (gen_random_uuid(), $1, $2, $3, $4)
		ON CONFLICT (domain_id, username) DO UPDATE SET password_hash = EXCLUDED.password_hash, version = credentials.version + 1
		RETURNING id, version`, f.account, domainID, user, hash).Scan(&id, &version)
	if err != nil {
		return syncer.Pending{}, err
	}
	ids, err := s.Enqueue(ctx, tx, syncer.Event{Type: syncer.CredentialUpserted, Domain: domain,
		Login: user + "@" + domain, CredentialID: id, Version: version, PasswordHash: hash})
	if err != nil {
		return syncer.Pending{}, err
	}
	return ids, tx.Commit()
}

// wantBackendMatchesDB checks that rec holds exactly the credentials of
// example.com as the database has them.
func (f fixture) wantBackendMatchesDB(t *testing.T, rec *recorder) {
	t.Helper()
	var want []syncer.Entry
	if err := f.db.Select(&want, `SELECT username || '@example.com' AS login, password_hash AS hash FROM credentials ORDER BY 1`); err != nil {
		t.Fatal(err)
	}
	if got := rec.held("example.com"); !slices.Equal(got, want) {
		t.Errorf("backend holds %v, database %v", got, want)
	}
}

func (f fixture) synced(t *testing.T, user string) bool {
	t.Helper()
	var ok bool
	if err := f.db.Get(&ok, `SELECT synced_version >= version FROM credentials WHERE username = $1`, user); err != nil {
		t.Fatal(err)
	}
	return ok
}

// eventually waits for cond, polling, up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func fastConfig() syncer.Config {
	return syncer.Config{ApplyTimeout: time.Second, Lease: 2 * time.Second, PollInterval: 20 * time.Millisecond,
		BaseBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
}

func TestApplyConfirms(t *testing.T) {
	f := newFixture(t)
	rec := newRecorder()
	s := syncer.New(f.db, snapshot.New(rec, nil), fastConfig(), nil)
	ids := f.change(t, s, "alice", "{SSHA512}aaa")
	if !s.Apply(context.Background(), ids) {
		t.Fatal("Apply = false with a healthy backend")
	}
	if !f.synced(t, "alice") {
		t.Error("credential not marked synced")
	}
	held := rec.held("example.com")
	if len(held) != 1 || held[0].Login != "alice@example.com" || held[0].Hash != "{SSHA512}aaa" {
		t.Errorf("backend holds %v", held)
	}
	var pending int
	if err := f.db.Get(&pending, `SELECT count(*) FROM sync_jobs WHERE done_at IS NULL`); err != nil || pending != 0 {
		t.Errorf("pending jobs %d %v", pending, err)
	}
}

func TestDisabledSyncNeverClaims(t *testing.T) {
	var s *syncer.Service
	p, err := s.Enqueue(context.Background(), nil, syncer.Event{Type: syncer.CredentialUpserted})
	if err != nil || s.Apply(context.Background(), p) {
		t.Errorf("a nil outbox must do nothing and never report success: %+v %v", p, err)
	}
}

// A failed apply leaves the change unsynced with an error; the worker
// retries with backoff and converges once the backend is back.
func TestFailureThenRecovery(t *testing.T) {
	f := newFixture(t)
	rec := newRecorder()
	rec.fail.Store(true)
	s := syncer.New(f.db, snapshot.New(rec, nil), fastConfig(), nil)
	ids := f.change(t, s, "bob", "{SSHA512}bbb")
	if s.Apply(context.Background(), ids) {
		t.Fatal("Apply = true while the backend fails")
	}
	var syncErr *string
	if err := f.db.Get(&syncErr, `SELECT sync_error FROM credentials WHERE username = 'bob'`); err != nil || syncErr == nil || *syncErr != "backend unavailable" {
		t.Errorf("sync_error = %v (%v)", syncErr, err)
	}
	var job struct {
		Attempts  int     `db:"attempts"`
		LastError *string `db:"last_error"`
		Leased    bool    `db:"leased"`
	}
	if err := f.db.Get(&job, `SELECT attempts, last_error, locked_until IS NOT NULL AS leased FROM sync_jobs`); err != nil {
		t.Fatal(err)
	}
	if job.Attempts != 1 || job.LastError == nil || job.Leased {
		t.Errorf("job after failure: %+v", job)
	}

	defer runWorker(s)()
	eventually(t, 3*time.Second, "a few failed retries", func() bool {
		var n int
		_ = f.db.Get(&n, `SELECT attempts FROM sync_jobs`)
		return n >= 3
	})
	rec.fail.Store(false)
	eventually(t, 5*time.Second, "convergence after recovery", func() bool { return f.synced(t, "bob") })
	var syncErr2 *string
	if err := f.db.Get(&syncErr2, `SELECT sync_error FROM credentials WHERE username = 'bob'`); err != nil || syncErr2 != nil {
		t.Errorf("sync_error after recovery = %v", syncErr2)
	}
}

// A burst of changes to one scope coalesces into one apply.
func TestBurstCoalesces(t *testing.T) {
	f := newFixture(t)
	rec := newRecorder()
	s := syncer.New(f.db, snapshot.New(rec, nil), fastConfig(), nil)
	for i := range 20 {
		f.change(t, s, fmt.Sprintf("u%02d", i), "{SSHA512}x")
	}
	stop := runWorker(s)
	eventually(t, 5*time.Second, "all synced", func() bool {
		var n int
		_ = f.db.Get(&n, `SELECT count(*) FROM credentials WHERE synced_version < version`)
		return n == 0
	})
	stop()
	if rec.applies() != 1 || len(rec.batches[0].Events) != 20 || len(rec.held("example.com")) != 20 {
		t.Errorf("%d applies (want 1 with 20 events); held %d", rec.applies(), len(rec.held("example.com")))
	}
}

// A worker that claimed jobs and died leaves them to be reclaimed once its
// lease runs out.
func TestCrashedWorkersJobsAreReclaimed(t *testing.T) {
	f := newFixture(t)
	rec := newRecorder()
	cfg := fastConfig()
	s := syncer.New(f.db, snapshot.New(rec, nil), cfg, nil)
	f.change(t, s, "carol", "{SSHA512}ccc")
	// The "crashed" worker: claims with a short lease and never finishes.
	claimed, err := postgres.SyncRepo{}.ClaimDue(context.Background(), f.db, "recorder", 300*time.Millisecond, 0)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	defer runWorker(s)()
	eventually(t, 5*time.Second, "reclaim after the lease", func() bool { return f.synced(t, "carol") })
}

// Workers of several processes share the outbox: every change is applied,
// and one scope is never applied concurrently.
func TestWorkersCooperate(t *testing.T) {
	f := newFixture(t)
	rec := newRecorder()
	rec.delay = 5 * time.Millisecond
	cfg := fastConfig()
	a := syncer.New(f.db, snapshot.New(rec, nil), cfg, nil)
	b := syncer.New(f.db, snapshot.New(rec, nil), cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, s := range []*syncer.Service{a, b, a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); s.Run(ctx) }()
	}
	var applied atomic.Int32
	var writers sync.WaitGroup
	for w := range 4 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := range 10 {
				s := a
				if i%2 == 1 {
					s = b
				}
				ids := f.change(t, s, fmt.Sprintf("w%d-%d", w, i), "{SSHA512}w")
				if s.Apply(context.Background(), ids) {
					applied.Add(1)
				}
			}
		}()
	}
	writers.Wait()
	eventually(t, 10*time.Second, "all 40 synced", func() bool {
		var n int
		_ = f.db.Get(&n, `SELECT count(*) FROM credentials WHERE synced_version < version`)
		return n == 0
	})
	cancel()
	wg.Wait()
	if rec.overlap.Load() {
		t.Error("one scope was applied concurrently")
	}
	if got := len(rec.held("example.com")); got != 40 {
		t.Errorf("backend holds %d entries, want 40", got)
	}
	if applied.Load() < 30 {
		t.Errorf("only %d of 40 requests saw their change confirmed within the deadline", applied.Load())
	}
}

// A process applies only what changed on top of what the backend holds,
// whichever process wrote it: the parts' fingerprints, stored with each
// apply, vouch for them, so that another process's turn reads nothing
// whole, and the backend still ends up with every change.
func TestApplyAfterAnotherProcessTrustsItsParts(t *testing.T) {
	f := newFixture(t)
	rec := newRecorder()
	a := syncer.New(f.db, snapshot.New(rec, nil), fastConfig(), nil)
	b := syncer.New(f.db, snapshot.New(rec, nil), fastConfig(), nil)
	ctx := context.Background()
	for i, s := range []*syncer.Service{a, a, b, a, a} {
		user := fmt.Sprintf("u%d", i)
		if !s.Apply(ctx, f.change(t, s, user, "{SSHA512}"+user)) {
			t.Fatalf("apply of %s not confirmed", user)
		}
		var logins []string
		for _, e := range rec.held("example.com") {
			logins = append(logins, e.Login)
		}
		if len(logins) != i+1 {
			t.Fatalf("after %s the backend holds %v, want u0..u%d", user, logins, i)
		}
		if last := rec.batches[len(rec.batches)-1]; last.Whole != (i == 0) {
			t.Fatalf("apply of %s: whole %v, want a whole write only for the first", user, last.Whole)
		}
	}
	// A reset, by b: the recorder is no PartStore, so the scope is written whole.
	ids := f.change(t, b, "u1", "{SSHA512}new")
	if !b.Apply(ctx, ids) {
		t.Fatal("reset not confirmed")
	}
	got := rec.held("example.com")
	if len(got) != 5 || got[1].Login != "u1@example.com" || got[1].Hash != "{SSHA512}new" {
		t.Errorf("after the reset the backend holds %v", got)
	}
	// A change of the scope's token behind the syncer's back (as a bulk
	// import does) makes the next apply write the scope whole.
	f.db.MustExec(`UPDATE sync_scopes SET token = token + 1`)
	if !a.Apply(ctx, f.change(t, a, "u9", "{SSHA512}u9")) {
		t.Fatal("apply of u9 not confirmed")
	}
	if last := rec.batches[len(rec.batches)-1]; !last.Whole {
		t.Error("after the token changed behind the syncer's back the apply added to parts it cannot trust")
	}
	f.wantBackendMatchesDB(t, rec)
}

// A partitioned target is given only the parts a batch changed, except
// when the scope is written whole (the first apply, a part in doubt, a
// change other than new logins for a target that cannot read parts back),
// when it is given every part. Another process's apply trusts the parts.
func TestBatchesCarryOnlyChangedParts(t *testing.T) {
	t.Run("not read back", func(t *testing.T) {
		rec := newPartitioned()
		testChangedParts(t, rec, rec.recorder, false)
	})
	t.Run("read back from the target", func(t *testing.T) {
		st := &stored{partitioned: newPartitioned()}
		testChangedParts(t, st, st.recorder, true)
		if st.reads.Load() == 0 {
			t.Error("the syncer never read a part back from the PartStore")
		}
	})
}

func testChangedParts(t *testing.T, target snapshot.Renderer, rec *recorder, readBack bool) {
	f := newFixture(t)
	a := syncer.New(f.db, snapshot.New(target, nil), fastConfig(), nil)
	b := syncer.New(f.db, snapshot.New(target, nil), fastConfig(), nil)
	ctx := context.Background()
	steps := []struct {
		s         *syncer.Service
		user      string
		whole     bool
		wantParts string // keys of the batch's parts
	}{
		{a, "alice", true, "a"},
		{a, "bob", false, "b"},
		{a, "anna", false, "a"},
		{a, "alice", !readBack, map[bool]string{true: "a", false: "ab"}[readBack]}, // a reset
		{b, "carol", false, "c"},
		{a, "bert", false, "b"},
		{b, "bob", !readBack, map[bool]string{true: "b", false: "abc"}[readBack]}, // a reset
		{a, "carl", false, "c"},
	}
	for i, st := range steps {
		hash := fmt.Sprintf("{SSHA512}%s-%d", st.user, i)
		if !st.s.Apply(ctx, f.change(t, st.s, st.user, hash)) {
			t.Fatalf("step %d: apply of %s not confirmed", i, st.user)
		}
		last := rec.batches[len(rec.batches)-1]
		keys := ""
		for _, p := range last.Parts {
			keys += p.Key
		}
		if last.Whole != st.whole || keys != st.wantParts {
			t.Fatalf("step %d (%s): batch whole=%v parts %q, want whole=%v parts %q", i, st.user, last.Whole, keys, st.whole, st.wantParts)
		}
	}
	f.wantBackendMatchesDB(t, rec)
}

// A part that cannot be read back makes the apply read the scope whole,
// and the backend still ends up equal to the database.
func TestUnreadablePartReadsWhole(t *testing.T) {
	f := newFixture(t)
	st := &stored{partitioned: newPartitioned()}
	s := syncer.New(f.db, snapshot.New(st, nil), fastConfig(), nil)
	ctx := context.Background()
	for i, user := range []string{"alice", "bob", "anna", "alice"} {
		if i == 3 { // a reset, merged into its part read back
			st.readErr.Store(true)
		}
		if !s.Apply(ctx, f.change(t, s, user, fmt.Sprintf("{SSHA512}%s%d", user, i))) {
			t.Fatalf("apply of %s not confirmed", user)
		}
	}
	last := st.batches[len(st.batches)-1]
	if !last.Whole || len(last.Parts) != 2 {
		t.Fatalf("after a failed ReadPart the batch is whole=%v with %d parts, want a whole read of parts a and b", last.Whole, len(last.Parts))
	}
	f.wantBackendMatchesDB(t, st.recorder)
}

// A credential's deletion applied late, after its login was created again
// for a new credential and that was applied, leaves the new credential in
// the backend: a login is gone only when no active credential holds it.
func TestLateDeleteKeepsTheLoginsNewOwner(t *testing.T) {
	for name, target := range map[string]func() (snapshot.Renderer, *recorder){
		"not read back": func() (snapshot.Renderer, *recorder) { r := newPartitioned(); return r, r.recorder },
		"read back from the target": func() (snapshot.Renderer, *recorder) {
			st := &stored{partitioned: newPartitioned()}
			return st, st.recorder
		},
	} {
		for _, by := range []string{"request", "worker"} {
			t.Run(name+", applied by a "+by, func(t *testing.T) { testLateDelete(t, target, by) })
		}
	}
}

// testLateDelete applies the late deletion by its request's Apply (the
// changes come with the claim), or by a worker (they are read apart).
func testLateDelete(t *testing.T, target func() (snapshot.Renderer, *recorder), by string) {
	f := newFixture(t)
	tgt, rec := target()
	s := syncer.New(f.db, snapshot.New(tgt, nil), fastConfig(), nil)
	ctx := context.Background()
	if !s.Apply(ctx, f.change(t, s, "alice", "{SSHA512}old")) {
		t.Fatal("create not confirmed")
	}
	tx := f.db.MustBegin()
	var id int64
	if err := tx.Get(&id, `DELETE FROM credentials WHERE username = 'alice' RETURNING id`); err != nil {
		t.Fatal(err)
	}
	del, err := s.Enqueue(ctx, tx, syncer.Event{Type: syncer.CredentialDeleted, Domain: "example.com",
		Login: "alice@example.com", CredentialID: id})
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	// The deletion's job is leased by a worker that stalls.
	f.db.MustExec(`UPDATE sync_jobs SET locked_until = now() + interval '1 hour', attempts = attempts + 1 WHERE done_at IS NULL`)
	if !s.Apply(ctx, f.change(t, s, "alice", "{SSHA512}new")) {
		t.Fatal("re-create not confirmed")
	}
	// The backend still had the old alice (its deletion is pending): the
	// re-create is no new login to add beside it.
	if got, want := rec.held("example.com"), []syncer.Entry{{Login: "alice@example.com", Hash: "{SSHA512}new"}}; !slices.Equal(got, want) {
		t.Fatalf("after the re-create the backend holds %v, want %v", got, want)
	}
	f.db.MustExec(`UPDATE sync_jobs SET locked_until = now() - interval '1 second' WHERE done_at IS NULL`)
	if by == "request" {
		if !s.Apply(ctx, del) {
			t.Fatal("late deletion not confirmed")
		}
	} else {
		stop := runWorker(s)
		eventually(t, 5*time.Second, "the worker to apply the late deletion", func() bool {
			var left int
			return f.db.Get(&left, `SELECT count(*) FROM sync_jobs WHERE done_at IS NULL`) == nil && left == 0
		})
		stop()
	}
	want := []syncer.Entry{{Login: "alice@example.com", Hash: "{SSHA512}new"}}
	if got := rec.held("example.com"); !slices.Equal(got, want) {
		t.Errorf("after the late deletion the backend holds %v, want %v", got, want)
	}
}

// runWorker runs s's worker until the returned stop is called.
func runWorker(s *syncer.Service) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

// A worker whose claimed group cannot even take the scope's lock (another
// process holds it past the worker's lease) releases the jobs with the
// error and a backoff, instead of leaving them leased and unexplained.
func TestWorkerReleasesWhenTheScopeLockWaitsTooLong(t *testing.T) {
	f := newFixture(t)
	rec := newRecorder()
	cfg := fastConfig()
	cfg.Lease = 300 * time.Millisecond
	s := syncer.New(f.db, snapshot.New(rec, nil), cfg, nil)
	f.change(t, s, "dave", "{SSHA512}ddd")
	// As after a failed attempt of the request, so that the worker takes it at once.
	if _, err := f.db.Exec(`UPDATE sync_jobs SET attempts = 1`); err != nil {
		t.Fatal(err)
	}
	holder, err := f.db.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback() //nolint:errcheck // released below
	if _, err := holder.Exec(`INSERT INTO sync_scopes (target, scope, token) VALUES ('recorder', 'example.com', 1)`); err != nil {
		t.Fatal(err)
	}
	defer runWorker(s)()
	// Released first, then the credential marked: wait for both.
	eventually(t, 5*time.Second, "the job released and the credential marked with the error", func() bool {
		var released bool
		err := f.db.Get(&released, `SELECT j.last_error IS NOT NULL AND j.locked_until IS NULL AND c.sync_error IS NOT NULL
			FROM sync_jobs j, credentials c WHERE c.username = 'dave'`)
		return err == nil && released
	})
	if err := holder.Rollback(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the retry to apply", func() bool { return f.synced(t, "dave") })
}

// gated holds the first render it is given until released, after saying
// it started: a process whose disk stalls mid-apply.
type gated struct {
	*recorder
	gate             atomic.Bool
	started, release chan struct{}
}

func (g *gated) Render(ctx context.Context, b snapshot.Batch) (map[string]string, error) {
	g.hold()
	return g.recorder.Render(ctx, b)
}

func (g *gated) Stream(ctx context.Context, b snapshot.Batch, known map[string]string, scan func(fn func(syncer.Entry) error) error) (map[string]string, error) {
	g.hold()
	return g.recorder.Stream(ctx, b, known, scan)
}

func (g *gated) hold() {
	if g.gate.CompareAndSwap(true, false) {
		close(g.started)
		<-g.release
	}
}

// A request whose context ends while its target is still applying keeps
// the scope's lock until the target returns: another process's apply
// waits, instead of rendering meanwhile and then being overwritten by the
// older render (which would leave a login missing from the backend while
// the database says it is synced).
func TestApplyHoldsTheScopeLockUntilTheTargetReturns(t *testing.T) {
	f := newFixture(t)
	rec := newRecorder()
	slow := &gated{recorder: rec, started: make(chan struct{}), release: make(chan struct{})}
	slow.gate.Store(true)
	a := syncer.New(f.db, snapshot.New(slow, nil), fastConfig(), nil)
	b := syncer.New(f.db, snapshot.New(rec, nil), fastConfig(), nil)
	ctxA, cancelA := context.WithCancel(context.Background())
	pa := f.change(t, a, "alice", "{SSHA512}a")
	aDone := make(chan struct{})
	go func() { a.Apply(ctxA, pa); close(aDone) }()
	<-slow.started
	cancelA() // the request gave up; its render goes on
	pb := f.change(t, b, "bob", "{SSHA512}b")
	var bDone atomic.Bool
	go func() { b.Apply(context.Background(), pb); bDone.Store(true) }()
	// b either waits for the scope's lock (right) or has applied (wrong).
	eventually(t, 5*time.Second, "b to wait for the scope's lock, or to finish", func() bool {
		var waiting bool
		err := f.db.Get(&waiting, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%sync_scopes%')`)
		return err == nil && waiting || bDone.Load()
	})
	close(slow.release)
	<-aDone
	stop := runWorker(b) // whatever b's request could not apply in time
	eventually(t, 10*time.Second, "every job applied", func() bool {
		var left int
		return f.db.Get(&left, `SELECT count(*) FROM sync_jobs WHERE done_at IS NULL`) == nil && left == 0
	})
	stop()
	f.wantBackendMatchesDB(t, rec)
}

// After an apply whose target succeeded but whose commit failed, the
// backend holds a state the database does not record (its fingerprint is
// not the one stored): the next batch finds the part in doubt and writes
// the scope whole instead of adding to it. The scope's applies after the
// first are grouped (group.go): a grouped apply that fails is applied
// again alone at once, which then finds the part in doubt; when that one
// fails too, the request is not confirmed and the next batch is whole.
func TestFailedCommitMakesTheNextBatchWhole(t *testing.T) {
	for _, c := range []struct {
		name       string
		breaks     int32
		carolWhole bool // else dave's batch is whole
	}{
		{"the group's commit fails, the apply alone writes whole", 1, true},
		{"the group's and the apply alone's commits fail", 2, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			rec := newRecorder()
			breakTx := &txBreaker{recorder: rec, db: f.db}
			s := syncer.New(f.db, snapshot.New(breakTx, nil), fastConfig(), nil)
			ctx := context.Background()
			for _, user := range []string{"alice", "bob"} {
				if !s.Apply(ctx, f.change(t, s, user, "{SSHA512}"+user)) {
					t.Fatalf("apply of %s not confirmed", user)
				}
			}
			if last := rec.batches[len(rec.batches)-1]; last.Whole {
				t.Fatal("the second apply read the scope whole: nothing to test")
			}
			breakTx.breaks.Store(c.breaks)
			if s.Apply(ctx, f.change(t, s, "carol", "{SSHA512}carol")) != c.carolWhole {
				t.Fatalf("apply of carol confirmed: %v, want %v", !c.carolWhole, c.carolWhole)
			}
			if n := breakTx.broken.Load(); n != c.breaks {
				t.Fatalf("%d transactions broken, want %d", n, c.breaks)
			}
			if last := rec.batches[len(rec.batches)-1]; c.carolWhole && !last.Whole {
				t.Error("after a failed commit the apply alone added to a part in doubt")
			}
			if !s.Apply(ctx, f.change(t, s, "dave", "{SSHA512}dave")) {
				t.Fatal("apply of dave not confirmed")
			}
			if last := rec.batches[len(rec.batches)-1]; !c.carolWhole && !last.Whole {
				t.Error("after a failed commit the next batch added to a part in doubt")
			}
			f.wantBackendMatchesDB(t, rec)
		})
	}
}

// txBreaker renders, and then, as many times as told, breaks the apply's
// transaction (it ends the connection that is idle in a transaction while
// the target renders), so that the target succeeds and the commit fails.
type txBreaker struct {
	*recorder
	db             *sqlx.DB
	breaks, broken atomic.Int32
}

func (x *txBreaker) Render(ctx context.Context, b snapshot.Batch) (map[string]string, error) {
	return x.breakAfter(ctx)(x.recorder.Render(ctx, b))
}

func (x *txBreaker) Stream(ctx context.Context, b snapshot.Batch, known map[string]string, scan func(fn func(syncer.Entry) error) error) (map[string]string, error) {
	return x.breakAfter(ctx)(x.recorder.Stream(ctx, b, known, scan))
}

// breakAfter returns what passes on a render's result, having broken the
// apply's transaction if told to.
func (x *txBreaker) breakAfter(ctx context.Context) func(map[string]string, error) (map[string]string, error) {
	return func(prints map[string]string, err error) (map[string]string, error) {
		if err != nil || x.breaks.Add(-1) < 0 {
			return prints, err
		}
		var n int32
		if err := x.db.GetContext(ctx, &n, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle in transaction'`); err == nil {
			x.broken.Add(n)
		}
		return prints, nil
	}
}

// replayer is a target that replays events and reads state only through
// Batch.Changes, without declaring StateReader.
type replayer struct {
	mu   sync.Mutex
	seen [][]syncer.Entry
}

func (*replayer) Name() string               { return "replayer" }
func (*replayer) Scope(domain string) string { return domain }
func (r *replayer) Apply(ctx context.Context, b syncer.Batch) error {
	_, current, _, err := b.Changes(ctx)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, current)
	return nil
}

// Batch.Changes gives the current state also to a target that does not
// declare StateReader (the claim then reads none, and Changes reads it).
func TestChangesWithoutStateReader(t *testing.T) {
	f := newFixture(t)
	r := &replayer{}
	s := syncer.New(f.db, r, fastConfig(), nil)
	if !s.Apply(context.Background(), f.change(t, s, "alice", "{SSHA512}a")) {
		t.Fatal("apply not confirmed")
	}
	want := []syncer.Entry{{Login: "alice@example.com", Hash: "{SSHA512}a"}}
	if len(r.seen) != 1 || !slices.Equal(r.seen[0], want) {
		t.Errorf("Changes gave %v, want %v", r.seen, want)
	}
	if !f.synced(t, "alice") {
		t.Error("the credential read and applied is not marked synced")
	}
}

// failedAttempts is a slog handler that counts the outbox's "sync: apply
// failed" records by who made the attempt: a request or a worker.
type failedAttempts struct{ request, worker atomic.Int64 }

func (h *failedAttempts) Enabled(context.Context, slog.Level) bool { return true }
func (h *failedAttempts) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *failedAttempts) WithGroup(string) slog.Handler            { return h }
func (h *failedAttempts) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "sync: apply failed" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "by" {
			return true
		}
		switch a.Value.String() {
		case "request":
			h.request.Add(1)
		case "worker":
			h.worker.Add(1)
		}
		return false
	})
	return nil
}

// workerRetryBound is the most attempts a worker makes at one scope that
// has been failing for outage, by the schedule of Config: a retry waits at
// least half of max(base, the time failing so far) and of maxBackoff at
// most, so the time failing grows by half at least per retry until the cap
// (two or three retries below base), then a retry per maxBackoff/2 at most;
// plus the attempt in hand, and one for jobs a request held while the
// worker's failure rescheduled the scope.
func workerRetryBound(outage, base, maxBackoff time.Duration) int {
	ramp := min(outage, maxBackoff)
	n := 3 + int(math.Ceil(math.Log(max(float64(ramp)/float64(base), 1))/math.Log(1.5)))
	n += int(math.Ceil(float64(outage-ramp) / float64(maxBackoff/2)))
	return n + 2
}

// Many requests whose applies fail while the backend is down (each a real
// attempt) neither put the worker's next retry off nor multiply the jobs'
// attempts: the delay follows the time the scope has been failing, so once
// the backend is back every change is applied within about that time
// (MaxBackoff is set far above it here, so a schedule that grew with the
// number of failed requests would wait a minute), and meanwhile the worker
// tried the scope a number of times that grows with the log of the outage,
// not with the requests.
func TestManyFailedAppliesDoNotPutRecoveryOff(t *testing.T) {
	f := newFixture(t)
	rec := newRecorder()
	rec.fail.Store(true)
	cfg := fastConfig()
	cfg.MaxBackoff = time.Minute
	// A request whose apply failed waits out its timeout for another apply
	// to take its job: short here, for 200 requests in a few seconds.
	cfg.ApplyTimeout = 100 * time.Millisecond
	count := &failedAttempts{}
	s := syncer.New(f.db, snapshot.New(rec, nil), cfg, slog.New(count))
	defer runWorker(s)()

	const requests, concurrency = 200, 16
	down := time.Now()
	var (
		wg       sync.WaitGroup
		next     atomic.Int64
		synced   atomic.Int64
		firstErr atomic.Value
	)
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < requests; i = next.Add(1) - 1 {
				p, err := f.tryChange(s, fmt.Sprintf("u%03d", i), "{SSHA512}x")
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				if s.Apply(context.Background(), p) {
					synced.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if err := firstErr.Load(); err != nil {
		t.Fatal(err)
	}
	if n := synced.Load(); n > 0 {
		t.Fatalf("%d applies reported success while the backend fails", n)
	}
	// The outage as the schedule sees it is no longer than this.
	outage := time.Since(down)
	rec.fail.Store(false)
	// The next retry is due at most as long after the last failure as the
	// scope had been failing then; the poll and the apply take the second.
	eventually(t, outage+time.Second, "every change applied after recovery", func() bool {
		var n int
		_ = f.db.Get(&n, `SELECT count(*) FROM credentials WHERE synced_version < version`)
		return n == 0
	})
	f.wantBackendMatchesDB(t, rec)

	if n := count.request.Load(); n > requests {
		t.Errorf("%d failed attempts by %d requests: a request tries once", n, requests)
	}
	bound := workerRetryBound(outage, cfg.BaseBackoff, cfg.MaxBackoff)
	worker := int(count.worker.Load())
	if worker > bound {
		t.Errorf("the worker tried the failing scope %d times in %v, the schedule allows %d", worker, outage, bound)
	}
	// A job's attempts: its own request's, the worker's failed ones, and the
	// worker's or a request's that succeeded.
	var most int
	if err := f.db.Get(&most, `SELECT max(attempts) FROM sync_jobs`); err != nil {
		t.Fatal(err)
	}
	if most > 2+worker {
		t.Errorf("a job counts %d attempts; its request and the worker made at most %d", most, 2+worker)
	}
	t.Logf("outage %v: %d failed attempts by requests, %d by the worker (bound %d), max attempts %d",
		outage.Round(time.Millisecond), count.request.Load(), worker, bound, most)
}

// An apply that takes longer than its request waits (a whole write of a
// large scope) runs on to its own deadline and confirms the jobs itself:
// the request answers unconfirmed when its wait ends, and the change is
// synced without a worker's retry and without a recorded failure.
func TestApplyOutlivesTheRequestsWait(t *testing.T) {
	f := newFixture(t)
	rec := newRecorder()
	slow := &gated{recorder: rec, started: make(chan struct{}), release: make(chan struct{})}
	slow.gate.Store(true)
	cfg := fastConfig()
	cfg.Lease = time.Minute // the apply's own deadline
	s := syncer.New(f.db, snapshot.New(slow, nil), cfg, nil)
	p := f.change(t, s, "alice", "{SSHA512}a")
	confirmed := make(chan bool)
	go func() { confirmed <- s.Apply(context.Background(), p) }()
	<-slow.started
	if <-confirmed {
		t.Fatal("the request saw its change confirmed while the target was still writing")
	}
	close(slow.release)
	eventually(t, 10*time.Second, "the apply to confirm alice", func() bool { return f.synced(t, "alice") })
	var failed int
	if err := f.db.Get(&failed, `SELECT count(*) FROM sync_jobs WHERE attempts > 0 OR last_error IS NOT NULL OR first_failed_at IS NOT NULL`); err != nil {
		t.Fatal(err)
	}
	if failed != 0 {
		t.Errorf("%d jobs recorded a failed attempt", failed)
	}
	f.wantBackendMatchesDB(t, rec)
}
