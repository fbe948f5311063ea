package syncer

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"

	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// Grouped applies. Requests applying different scopes at the same time
// (creates spread over many domains) would each run a transaction of eight
// statements, which costs the server and the database more than the
// creates themselves. A request whose scope this Service applied last (its
// backend then holds what the Service gave it, and the apply is an append
// or a merge of a few parts) hands its turn of the scope to the group
// runner instead: one goroutine that applies every scope handed to it
// meanwhile in one transaction of five statements (postgres.LockScopes,
// ClaimGroup, FinishGroup), the targets writing the scopes side by side.
// While it runs, the next group gathers, so the busier the API, the more
// each transaction carries; a lone request's group is one scope, in fewer
// statements than its own apply.
//
// A group does only what needs no more SQL than its claim read: a scope
// whose apply would (a whole write, a scheduled event, a credential in a
// grace period, a part in doubt) is left out of the group's commit and
// applied alone, by the usual path, as is a scope whose target failed and
// every scope of a group whose transaction failed: the usual path then
// counts and reports the failure, and, not continuing what the group may
// have written, checks the backend against its fingerprints.
//
// One runner per Service: a group takes as long as its slowest scope,
// which is an append or a merge into one shard (anything longer is applied
// alone), and the next group gathers meanwhile.

// turnHolder is a request's apply of one scope, which holds the scope's
// turn until its result is sent.
type turnHolder struct {
	scope string
	own   []int64 // the request's jobs (for the failure's accounting)
	turn  chan struct{}
	done  chan applyResult // buffered
}

// applyResult is the result of one scope's apply: how many jobs it claimed,
// and the error of an apply that did not commit.
type applyResult struct {
	claimed int
	err     error
}

// errAlone is what a grouped apply's reads return for what the group's
// claim did not read: the scope is then applied alone.
var errAlone = errors.New("sync: apply the scope alone")

// MD5Parts is implemented by StateReader targets whose parts are named by
// the first MD5Digits hex digits of the MD5 of a login (Batch.Prints'
// keys; 0: one part per scope, ""): a grouped apply reads the stored
// fingerprints of the parts of the logins it claims along with them.
type MD5Parts interface {
	MD5Digits() int
}

// groupable reports whether a request's apply of scope may join a group:
// the target reads state (the group's claim reads it for the target), does
// not read the database itself, and this Service committed the scope's
// last apply.
func (s *Service) groupable(scope string) bool {
	if !s.readsState {
		return false
	}
	if _, live := s.target.(Live); live {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.last[scope]
	return ok
}

// join hands h to the group runner, starting it if none runs.
func (s *Service) join(h *turnHolder) {
	s.gmu.Lock()
	s.queue = append(s.queue, h)
	start := !s.grouping
	s.grouping = true
	s.gmu.Unlock()
	if start {
		s.bg.Add(1)
		go s.runGroups()
	}
}

// runGroups applies the queued scopes, a group at a time, until none is
// queued.
func (s *Service) runGroups() {
	defer s.bg.Done()
	for {
		s.gmu.Lock()
		q := s.queue
		s.queue = nil
		if len(q) == 0 {
			s.grouping = false
			s.gmu.Unlock()
			return
		}
		s.gmu.Unlock()
		s.runGroup(q)
	}
}

// runGroup applies one group and answers its holders; those it could not
// apply are applied alone.
func (s *Service) runGroup(q []*turnHolder) {
	work, prog, stop := s.leased(context.Background(), nil)
	results, err := s.applyGrouped(work, prog, q)
	if err != nil {
		err = cause(work, err)
		level := slog.LevelWarn
		if errors.Is(err, errHalted) {
			level = slog.LevelInfo
		}
		s.log.Log(work, level, "sync: grouped apply failed, applying its scopes alone", "target", s.target.Name(), "scopes", len(q), "error", err.Error())
	}
	stop()
	for _, h := range q {
		r, ok := results[h.scope]
		if !ok {
			s.bg.Add(1)
			go s.applyAlone(context.Background(), h)
			continue
		}
		<-h.turn
		h.done <- r
	}
}

// applyAlone applies h's scope in a transaction of its own (see Apply),
// and hands back the turn.
func (s *Service) applyAlone(ctx context.Context, h *turnHolder) {
	defer s.bg.Done()
	work, prog, stop := s.leased(context.WithoutCancel(ctx), nil)
	defer stop()
	n, err := s.applyOrRelease(work, prog, h.scope, nil, h.own)
	<-h.turn
	h.done <- applyResult{n, err}
}

// grouped is one scope of a group.
type grouped struct {
	scope string
	jobs  []postgres.SyncJobRow
	b     Batch
	err   error
}

// applyGrouped applies the scopes of q in one transaction and returns the
// result of each scope it applied or found nothing to apply in; the others
// are to be applied alone. Its error is that of a transaction that failed
// (every scope is then applied alone).
func (s *Service) applyGrouped(ctx context.Context, prog *progress, q []*turnHolder) (map[string]applyResult, error) {
	scopes := make([]string, 0, len(q))
	for _, h := range q {
		scopes = append(scopes, h.scope)
	}
	slices.Sort(scopes)
	scopes = slices.Compact(scopes)
	// The scopes' last tokens are taken out until the group commits (as
	// continues does); those of the scopes the group leaves untouched are
	// put back.
	last := s.takeLast(scopes)
	results := map[string]applyResult{}
	touched := map[string]bool{} // whose target ran (its backend may have changed, committed or not)
	defer func() { s.putBack(last, touched) }()

	tx, err := postgres.Begin(context.WithoutCancel(ctx), s.db)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	locks, err := s.repo.LockScopes(ctx, tx, s.target.Name(), scopes)
	if err != nil {
		return nil, err
	}
	var in []string
	trusted := map[string]bool{}
	for _, l := range locks {
		if tok, ok := last[l.Scope]; ok && tok == l.Token { // else another process applied it since
			in = append(in, l.Scope)
			trusted[l.Scope] = l.PartsTrusted
		}
	}
	if len(in) == 0 {
		return results, nil
	}
	digits := 0
	if p, ok := s.target.(MD5Parts); ok {
		digits = p.MD5Digits()
	}
	claim, err := s.repo.ClaimGroup(ctx, tx, s.target.Name(), in, eventKeys, digits)
	if err != nil {
		return nil, err
	}
	if len(claim.Jobs) == postgres.ClaimMax { // a backlog: each scope alone, in batches
		return results, nil
	}
	gs := s.groupScopes(claim, trusted, prog)
	for _, scope := range in {
		if gs[scope] == nil { // nothing to apply (another turn applied it)
			results[scope] = applyResult{}
		}
	}
	s.applyTargets(ctx, gs, touched)

	f := postgres.GroupFinish{}
	var done []*grouped
	for _, g := range gs {
		if g.err == nil && g.b.reads.printsWhole {
			// A whole write that did not stream the scope (ScanInOrder,
			// which a group cannot): the parts it did not name would keep
			// fingerprints FinishGroup does not remove.
			g.err = errAlone
		}
		if g.err == nil {
			done = append(done, g)
		}
	}
	if len(done) == 0 {
		return results, nil
	}
	slices.SortFunc(done, func(a, b *grouped) int { return strings.Compare(a.scope, b.scope) })
	token := rand.Int64N(1<<62) + 1 // the transaction's: each scope's row has its own
	for _, g := range done {
		r := g.b.reads
		f.Scopes, f.Tokens, f.Keep = append(f.Scopes, g.scope), append(f.Tokens, token), append(f.Keep, r.keep)
		for k, p := range r.prints {
			f.PartScopes, f.Parts, f.Prints = append(f.PartScopes, g.scope), append(f.Parts, k), append(f.Prints, p)
		}
		ids, versions := g.b.confirmed()
		f.IDs, f.Versions = append(f.IDs, ids...), append(f.Versions, versions...)
		f.Jobs = append(f.Jobs, g.b.JobIDs...)
	}
	if err := s.repo.FinishGroup(ctx, tx, s.target.Name(), f); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	for _, g := range done {
		s.committed(g.scope, token)
		s.applied(g.b.JobIDs)
		results[g.scope] = applyResult{claimed: len(g.jobs)}
	}
	return results, nil
}

// groupScopes makes the batch of each scope that claim has jobs for,
// its reads answered by the claim: a scope with a scheduled event (which
// needs reading again) is left out, to be applied alone.
func (s *Service) groupScopes(claim postgres.GroupClaim, trusted map[string]bool, prog *progress) map[string]*grouped {
	gs := map[string]*grouped{}
	read := map[string]*groupReads{}
	for _, j := range claim.Jobs {
		g, r := gs[j.Scope], read[j.Scope]
		if g == nil {
			g, r = &grouped{scope: j.Scope}, &groupReads{parts: map[string]bool{}, prints: claim.Prints[j.Scope]}
			gs[j.Scope], read[j.Scope] = g, r
		}
		g.jobs = append(g.jobs, j.SyncJobRow)
		r.pending = r.pending || j.Pending
		r.parts[j.Part] = true
	}
	changed := map[string][]postgres.SnapshotRow{}
	for _, r := range claim.Changed {
		_, domain, _ := strings.Cut(r.Login, "@")
		scope := s.target.Scope(domain)
		changed[scope] = append(changed[scope], r)
	}
	for scope, g := range gs {
		rows := changed[scope]
		g.b = Batch{Scope: scope, Continues: true,
			reads: &reads{repo: s.repo, target: s.target.Name(), partsTrusted: trusted[scope], progress: prog,
				changes: func(context.Context, []int64, []string) ([]postgres.SnapshotRow, error) { return rows, nil },
				grouped: read[scope]}}
		events, err := decodeJobs(g.jobs)
		if err != nil {
			g.err = err
			continue
		}
		g.b.JobIDs = jobIDs(g.jobs)
		for _, e := range events {
			if e.Reason == ReasonExpired || e.Reason == ReasonGraceEnded {
				g.err = errAlone // dueScheduled reads whether they still apply
			}
		}
		g.b.Events = events
		g.b.reads.expect(events)
	}
	return gs
}

// applyTargets has the target apply each scope's batch, side by side, and
// marks the scopes it ran in touched. It returns when every Apply has: a
// group takes as long as its slowest scope (an append, or a merge into a
// shard; anything longer is applied alone).
func (s *Service) applyTargets(ctx context.Context, gs map[string]*grouped, touched map[string]bool) {
	var wg sync.WaitGroup
	for _, g := range gs {
		if g.err != nil {
			continue
		}
		touched[g.scope] = true
		wg.Go(func() { g.err = s.target.Apply(ctx, g.b) })
	}
	wg.Wait()
}

// takeLast takes the entries of scopes out of last (see continues) and
// returns them.
func (s *Service) takeLast(scopes []string) map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int64, len(scopes))
	for _, scope := range scopes {
		if tok, ok := s.last[scope]; ok {
			out[scope] = tok
			delete(s.last, scope)
		}
	}
	return out
}

// putBack puts back the entries of last but those of the scopes whose
// target ran (committed: committed recorded their new token; or not, even
// one that stopped at errAlone: their backend may have changed), which the
// group neither stamped nor wrote.
func (s *Service) putBack(last map[string]int64, touched map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for scope, tok := range last {
		if !touched[scope] {
			if s.last == nil {
				s.last = map[string]int64{}
			}
			s.last[scope] = tok
		}
	}
}
