package syncer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/syncer/passwdfile"
	"github.com/smtpcreds/smtpcreds/internal/syncer/webhook"
)

// PasswdFile keeps Dovecot passwd-file(s) equal to the database: each apply
// rewrites the files (shards) its changes touch, each rendered whole from
// the state, so retries are idempotent and a crash leaves either the old or
// the new file. A change that only adds logins to a file this process
// wrote is appended to it instead (see passwdfile.File.Append): a crash
// may then leave a partial last line, of a login not yet reported synced,
// which the retry's whole write replaces.
type PasswdFile struct {
	w *passwdfile.Writer
	// dirRe matches the directory of the files up to the first variable,
	// which error messages do not show (nil for "." or "/").
	dirRe *regexp.Regexp
}

// NewPasswdFile returns the target writing w's file(s). With shards the
// target is also a PartStore: the syncer reads a changed shard's file
// instead of holding every login of the domain in memory.
func NewPasswdFile(w *passwdfile.Writer) Target {
	static, _, _ := strings.Cut(w.Template(), "%")
	p := &PasswdFile{w: w}
	if dir := filepath.Dir(static + "x"); dir != "." && dir != "/" {
		// The directory as a whole path component, not inside a name.
		p.dirRe = regexp.MustCompile(regexp.QuoteMeta(dir) + `(/|[^A-Za-z0-9._+@-]|$)`)
	}
	if w.Sharded() {
		return shardFiles{p}
	}
	return p
}

// shardFiles is the passwd-file target with shards, whose files are small
// enough to read back at each change.
type shardFiles struct{ *PasswdFile }

// ReadPart implements PartStore.
func (p shardFiles) ReadPart(scope, key string) ([]Entry, error) {
	entries, err := p.w.Read(scope, key)
	if err != nil {
		return nil, p.hidePaths(err)
	}
	return entries, nil
}

// Name implements Target.
func (*PasswdFile) Name() string { return "passwd-file" }

// Scope implements Target: one scope holds every domain, or one scope per
// domain when each has its own file(s).
func (p *PasswdFile) Scope(domain string) string {
	if p.w.PerDomain() {
		return domain
	}
	return ""
}

// NeedsSnapshot implements Target.
func (*PasswdFile) NeedsSnapshot() bool { return true }

// Partition implements Partitioner: a login's part is its shard ("", one
// file per scope, when the path has no shard variable).
func (p *PasswdFile) Partition(login string) string { return p.w.Shard(login) }

// Apply implements Target: it rewrites the file of each part given; a file
// whose path has a variable and that has no login left is removed. A whole
// state also visits the parts not given, and rewrites only the files whose
// content differs.
func (p *PasswdFile) Apply(_ context.Context, b Batch) error {
	if err := p.apply(b); err != nil {
		return p.hidePaths(err)
	}
	return nil
}

// hidePaths returns err with the files' directory (up to the first
// variable) replaced: users see sync errors, and the server's paths are not
// theirs to know.
func (p *PasswdFile) hidePaths(err error) error {
	if p.dirRe == nil {
		return err
	}
	return errors.New(p.dirRe.ReplaceAllString(err.Error(), "<passwd-file dir>$1"))
}

func (p *PasswdFile) apply(b Batch) error {
	removable := p.w.PerDomain() || p.w.Sharded() // else the one file stays, maybe empty
	file := func(shard string, entries []Entry) passwdfile.File {
		return passwdfile.File{Shard: shard, Entries: entries, Remove: len(entries) == 0 && removable}
	}
	if !b.Whole {
		files := make([]passwdfile.File, 0, len(b.Parts))
		for _, part := range b.Parts {
			f := file(part.Key, part.Entries)
			// New logins only: appended to the file when it is the one the
			// Writer last wrote.
			f.Append, f.Added = part.AddOnly, part.Added
			files = append(files, f)
		}
		return p.w.Update(b.Scope, files, false)
	}
	given := make(map[string][]Entry, len(b.Parts))
	for _, part := range b.Parts {
		given[part.Key] = part.Entries
	}
	shards := p.w.Shards()
	files := make([]passwdfile.File, 0, len(shards))
	for _, shard := range shards {
		files = append(files, file(shard, given[shard]))
		delete(given, shard)
	}
	for k := range given {
		return fmt.Errorf("sync: part %q is not a shard of the passwd-file template", k)
	}
	return p.w.Update(b.Scope, files, true)
}

// Webhook posts each batch of events, HMAC-signed, to a sync agent on
// another host, which applies them to its own backend. Events carry versions
// so that the agent can drop stale ones.
type Webhook struct {
	s *webhook.Sender
}

// NewWebhook returns the target posting through s.
func NewWebhook(s *webhook.Sender) *Webhook { return &Webhook{s: s} }

// Name implements Target.
func (*Webhook) Name() string { return "webhook" }

// Scope implements Target: events of one domain are delivered in order.
func (*Webhook) Scope(domain string) string { return domain }

// NeedsSnapshot implements Target.
func (*Webhook) NeedsSnapshot() bool { return false }

// Apply implements Target: one POST of {"delivery_id", "events"}; a 2xx
// confirms every event in it.
func (h *Webhook) Apply(ctx context.Context, b Batch) error {
	// The same jobs always make the same delivery id (ids are sorted):
	// receivers can use it to ignore a redelivery.
	delivery := fmt.Sprintf("jobs-%d-%d-%d", b.JobIDs[0], b.JobIDs[len(b.JobIDs)-1], len(b.JobIDs))
	body, err := json.Marshal(struct {
		DeliveryID string  `json:"delivery_id"`
		Events     []Event `json:"events"`
	}{delivery, b.Events})
	if err != nil {
		return err
	}
	return h.s.Send(ctx, delivery, body)
}

// DovecotSQL is the target of a Dovecot whose passdb reads smtpcreds' own
// database with the SQL driver, through the dovecot_passdb view: a change is
// in the view once its transaction commits, so there is nothing to write,
// no file to replace and no copy to drift. An apply checks, in the apply's
// transaction, that Dovecot's role may read the view and runs Dovecot's
// lookup through it for (some of) the batch's logins: it fails, and the
// jobs wait, reported as not synced, while the view is gone or broken or
// the role has lost its grant. What the lookup returns is not compared with
// the events, since a later change may already be in the view.
type DovecotSQL struct {
	role string
	repo postgres.PassdbRepo
}

// NewDovecotSQL returns the Dovecot SQL passdb target; role is the database
// role Dovecot connects as.
func NewDovecotSQL(role string) *DovecotSQL { return &DovecotSQL{role: role} }

// Name implements Target.
func (*DovecotSQL) Name() string { return "dovecot-sql" }

// Scope implements Target: one scope per domain, so that a domain's
// applies do not wait for another's.
func (*DovecotSQL) Scope(domain string) string { return domain }

// NeedsSnapshot implements Target: the view is the state.
func (*DovecotSQL) NeedsSnapshot() bool { return false }

// maxProbe bounds the logins an apply looks up: the lookup is a probe, and
// a deleted domain's event names all of its logins.
const maxProbe = 16

// Apply implements Target.
func (t *DovecotSQL) Apply(ctx context.Context, b Batch) error {
	var logins []string
	for _, e := range b.Events {
		if e.Login != "" {
			logins = append(logins, e.Login)
		}
		logins = append(logins, e.Logins[:min(len(e.Logins), maxProbe)]...)
	}
	return t.check(ctx, b.Tx, logins[:min(len(logins), maxProbe)])
}

// Check implements Live.
func (t *DovecotSQL) Check(ctx context.Context, q sqlx.QueryerContext) error {
	return t.check(ctx, q, nil)
}

func (t *DovecotSQL) check(ctx context.Context, q sqlx.QueryerContext, logins []string) error {
	readable, err := t.repo.CheckPassdb(ctx, q, t.role, logins)
	if err != nil {
		return viewError{err, "the dovecot_passdb view did not answer Dovecot's lookup"}
	}
	if !readable {
		return viewError{fmt.Errorf("role %q may not read the dovecot_passdb view (or does not exist)", t.role),
			"Dovecot's database role may not read the dovecot_passdb view"}
	}
	return nil
}

// viewError is a failed check of the view: the log gets the cause, API
// users a fixed sentence, without the database's error or the role's name.
type viewError struct {
	err    error
	public string
}

func (e viewError) Error() string  { return "dovecot-sql: " + e.err.Error() }
func (e viewError) Unwrap() error  { return e.err }
func (e viewError) Public() string { return e.public }
