package syncer_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/syncer"
	"github.com/smtpcreds/smtpcreds/internal/syncer/snapshot"
)

// groupGate is a recorder whose render of one scope, once armed, waits until
// released (so that requests of other scopes gather behind it for the
// next group), and whose renders of another scope fail while failing is
// set.
type groupGate struct {
	*recorder
	hold    string
	armed   chan struct{} // closed: the next render of hold waits
	entered chan struct{} // closed when it waits
	release chan struct{}
	once    sync.Once

	mu      sync.Mutex
	failing string
}

func newGroupGate(hold string) *groupGate {
	return &groupGate{recorder: newRecorder(), hold: hold, armed: make(chan struct{}), entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *groupGate) gate(scope string) error {
	if scope == g.hold {
		select {
		case <-g.armed:
			g.once.Do(func() {
				close(g.entered)
				<-g.release
			})
		default:
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if scope == g.failing {
		return errors.New("backend unavailable")
	}
	return nil
}

func (g *groupGate) setFailing(scope string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.failing = scope
}

func (g *groupGate) Render(ctx context.Context, b snapshot.Batch) (map[string]string, error) {
	if err := g.gate(b.Scope); err != nil {
		return nil, err
	}
	return g.recorder.Render(ctx, b)
}

func (g *groupGate) Stream(ctx context.Context, b snapshot.Batch, known map[string]string, scan func(fn func(syncer.Entry) error) error) (map[string]string, error) {
	if err := g.gate(b.Scope); err != nil {
		return nil, err
	}
	return g.recorder.Stream(ctx, b, known, scan)
}

// groupFixture is a fixture with n more domains, g0.example ... .
type groupFixture struct {
	fixture
	domains []string
	ids     map[string]int64
}

func newGroupFixture(t *testing.T, n int) groupFixture {
	f := groupFixture{fixture: newFixture(t), ids: map[string]int64{}}
	for i := range n {
		d := fmt.Sprintf("g%d.example", i)
		var id int64
		if err := f.db.Get(&id, `INSERT INTO domains (account_id, name, is_verified) VALUES ($1, $2, true) RETURNING id`, f.account, d); err != nil {
			t.Fatal(err)
		}
		f.domains, f.ids[d] = append(f.domains, d), id
	}
	return f
}

func (f groupFixture) change(t *testing.T, s *syncer.Service, domain, user string) syncer.Pending {
	t.Helper()
	p, err := f.tryChangeIn(s, f.ids[domain], domain, user, "{SSHA512}"+user+"-"+fmt.Sprint(time.Now().UnixNano()))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tokens returns each scope's token.
func (f groupFixture) tokens(t *testing.T) map[string]int64 {
	t.Helper()
	rows := []struct {
		Scope string `db:"scope"`
		Token int64  `db:"token"`
	}{}
	if err := f.db.Select(&rows, `SELECT scope, token FROM sync_scopes`); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, r := range rows {
		out[r.Scope] = r.Token
	}
	return out
}

// wantHeld checks that rec holds exactly each domain's credentials.
func (f groupFixture) wantHeld(t *testing.T, rec *recorder) {
	t.Helper()
	for _, d := range f.domains {
		var want []syncer.Entry
		if err := f.db.Select(&want, `SELECT c.username || '@' || d.name AS login, c.password_hash AS hash
			FROM credentials c JOIN domains d ON d.id = c.domain_id WHERE d.name = $1 ORDER BY 1`, d); err != nil {
			t.Fatal(err)
		}
		if got := rec.held(d); !slices.Equal(got, want) {
			t.Errorf("%s: backend holds %v, database %v", d, got, want)
		}
	}
}

// warmGroup returns a fixture of n domains, a gate holding g0.example, and
// a Service that has applied each domain once (alone: the first apply of a
// scope), so that their next applies are grouped.
func warmGroup(t *testing.T, n int) (groupFixture, *groupGate, *syncer.Service) {
	t.Helper()
	f := newGroupFixture(t, n)
	g := newGroupGate("g0.example")
	s := syncer.New(f.db, snapshot.New(g, nil), fastConfig(), nil)
	for _, d := range f.domains {
		if !s.Apply(context.Background(), f.change(t, s, d, "first")) {
			t.Fatalf("first apply of %s not confirmed", d)
		}
	}
	return f, g, s
}

// holdGroup applies a change of hold, whose render waits, and returns
// once it waits, with what its Apply returns.
func holdGroup(t *testing.T, f groupFixture, s *syncer.Service, g *groupGate) <-chan bool {
	t.Helper()
	close(g.armed)
	p := f.change(t, s, g.hold, "blocker")
	res := make(chan bool, 1)
	go func() { res <- s.Apply(context.Background(), p) }()
	select {
	case <-g.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the held render never started")
	}
	return res
}

// Requests of different scopes that come while a group runs are applied
// together in the next group, one transaction (their scopes carry its
// token), except a scope whose apply needs more than the group read (a
// change of an existing login, which this backend can only take in a
// whole write): it is applied alone, and confirmed all the same.
func TestRequestsOfManyScopesApplyInOneGroup(t *testing.T) {
	t.Parallel()
	f, g, s := warmGroup(t, 6)
	ctx := context.Background()
	held := holdGroup(t, f, s, g)
	grouped := []string{"g1.example", "g2.example", "g3.example", "g4.example"}
	results := make(chan error, len(grouped)+1)
	apply := func(d, user string) {
		p := f.change(t, s, d, user)
		go func() {
			if !s.Apply(ctx, p) {
				results <- fmt.Errorf("apply of %s in %s not confirmed", user, d)
				return
			}
			results <- nil
		}()
	}
	for _, d := range grouped {
		apply(d, "new")
	}
	apply("g5.example", "first") // a new password for an existing login
	eventually(t, 5*time.Second, "the five requests to wait for the next group", func() bool { return s.Queued() == 5 })
	close(g.release)
	if !<-held {
		t.Fatal("the held apply was not confirmed")
	}
	for range len(grouped) + 1 {
		if err := <-results; err != nil {
			t.Error(err)
		}
	}
	tok := f.tokens(t)
	for _, d := range grouped[1:] {
		if tok[d] != tok[grouped[0]] {
			t.Errorf("%s was applied in another transaction than %s (tokens %d, %d)", d, grouped[0], tok[d], tok[grouped[0]])
		}
	}
	if tok["g5.example"] == tok[grouped[0]] || tok["g0.example"] == tok[grouped[0]] {
		t.Errorf("g0 or g5 share the group's token: %v", tok)
	}
	g.mu.Lock()
	whole := false
	for _, b := range g.batches {
		whole = whole || b.Whole && len(b.Events) == 1 && b.Events[0].Domain == "g5.example" && b.Events[0].Version == 2
	}
	g.mu.Unlock()
	if !whole {
		t.Error("the change in g5 was not written whole")
	}
	f.wantHeld(t, g.recorder)
	var pending int
	if err := f.db.Get(&pending, `SELECT count(*) FROM sync_jobs WHERE done_at IS NULL`); err != nil || pending != 0 {
		t.Errorf("%d jobs pending (%v)", pending, err)
	}
}

// A scope whose target fails in a group does not hold the others back:
// they commit; its request answers false, its credential carries the
// error, and the worker applies it once the backend is back.
func TestAScopeThatFailsInAGroupLeavesTheOthersApplied(t *testing.T) {
	t.Parallel()
	f, g, s := warmGroup(t, 4)
	ctx := context.Background()
	held := holdGroup(t, f, s, g)
	g.setFailing("g2.example")
	results := map[string]chan bool{}
	for _, d := range f.domains[1:] {
		p := f.change(t, s, d, "new")
		res := make(chan bool, 1)
		results[d] = res
		go func() { res <- s.Apply(ctx, p) }()
	}
	eventually(t, 5*time.Second, "the three requests to wait for the next group", func() bool { return s.Queued() == 3 })
	close(g.release)
	if !<-held {
		t.Fatal("the held apply was not confirmed")
	}
	for _, d := range f.domains[1:] {
		if got, want := <-results[d], d != "g2.example"; got != want {
			t.Errorf("apply in %s confirmed: %v, want %v", d, got, want)
		}
	}
	if tok := f.tokens(t); tok["g1.example"] != tok["g3.example"] {
		t.Errorf("g1 and g3 were not applied in one group: %v", tok)
	}
	var syncErr *string
	if err := f.db.Get(&syncErr, `SELECT c.sync_error FROM credentials c JOIN domains d ON d.id = c.domain_id
		WHERE d.name = 'g2.example' AND c.username = 'new'`); err != nil || syncErr == nil {
		t.Errorf("the failed credential carries no sync error: %v %v", syncErr, err)
	}
	g.setFailing("")
	stop := runWorker(s)
	defer stop()
	eventually(t, 10*time.Second, "the worker to apply g2's change", func() bool {
		var left int
		return f.db.Get(&left, `SELECT count(*) FROM sync_jobs WHERE done_at IS NULL`) == nil && left == 0
	})
	f.wantHeld(t, g.recorder)
}

// A scope whose lock another transaction holds (another process applying
// it) is left out of the group, not waited for: the group's other scopes
// are confirmed meanwhile, and the scope is applied alone once free.
func TestAScopeLockedElsewhereDoesNotHoldUpTheGroup(t *testing.T) {
	t.Parallel()
	f, g, s := warmGroup(t, 3)
	ctx := context.Background()
	other, err := f.db.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback() //nolint:errcheck
	if _, err := other.Exec(`SELECT 1 FROM sync_scopes WHERE scope = 'g1.example' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	held := holdGroup(t, f, s, g)
	results := map[string]chan bool{}
	for _, d := range []string{"g1.example", "g2.example"} {
		p := f.change(t, s, d, "new")
		res := make(chan bool, 1)
		results[d] = res
		go func() { res <- s.Apply(ctx, p) }()
	}
	eventually(t, 5*time.Second, "the two requests to wait for the next group", func() bool { return s.Queued() == 2 })
	close(g.release)
	if !<-held {
		t.Fatal("the held apply was not confirmed")
	}
	if !<-results["g2.example"] {
		t.Fatal("the group's apply of g2 waited for g1's lock")
	}
	if <-results["g1.example"] {
		t.Fatal("g1 was applied while another transaction held its lock")
	}
	if err := other.Rollback(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "g1's apply alone to finish once its lock is free", func() bool {
		var left int
		return f.db.Get(&left, `SELECT count(*) FROM sync_jobs WHERE done_at IS NULL`) == nil && left == 0
	})
	f.wantHeld(t, g.recorder)
}
