package passwdfile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/smtpcreds/smtpcreds/internal/syncer"
	"github.com/smtpcreds/smtpcreds/internal/syncer/snapshot"
)

// TargetName is the passwd-file target's name in the outbox.
const TargetName = "passwd-file"

// NewTarget returns the sync target keeping w's passwd-file(s) equal to
// the database: each apply rewrites the files (shards) its changes touch,
// each rendered whole from the state, so retries are idempotent and a crash
// leaves either the old or the new file. A change that only adds logins to
// a file this process wrote is appended to it instead (see File.Append): a
// crash may then leave a partial last line, of a login not yet reported
// synced, which the retry's whole write replaces. With shards, a changed
// shard's file is read back instead of the domain's state being held in
// memory (snapshot.PartStore). log gets the warnings of files that could
// not be read back.
func NewTarget(w *Writer, log *slog.Logger) *snapshot.Target {
	r := newRenderer(w)
	if w.Sharded() {
		return snapshot.New(shardRenderer{r}, log)
	}
	return snapshot.New(r, log)
}

func newRenderer(w *Writer) *renderer {
	static, _, _ := strings.Cut(w.Template(), "%")
	r := &renderer{w: w}
	if dir := filepath.Dir(static + "x"); dir != "." && dir != "/" {
		// The directory as a whole path component, not inside a name.
		r.dirRe = regexp.MustCompile(regexp.QuoteMeta(dir) + `(/|[^A-Za-z0-9._+@-]|$)`)
	}
	return r
}

// renderer is the snapshot.Renderer of a Writer.
type renderer struct {
	w *Writer
	// dirRe matches the directory of the files up to the first variable,
	// which error messages do not show (nil for "." or "/").
	dirRe *regexp.Regexp
}

// shardRenderer is the renderer of a Writer with shards, whose files are
// small enough to read back at each change.
type shardRenderer struct{ *renderer }

// ReadPart implements snapshot.PartStore.
func (r shardRenderer) ReadPart(scope, key string) ([]syncer.Entry, error) {
	entries, err := r.w.Read(scope, key)
	if err != nil {
		return nil, r.hidePaths(err)
	}
	return entries, nil
}

// Name implements snapshot.Renderer.
func (*renderer) Name() string { return TargetName }

// Scope implements snapshot.Renderer: one scope holds every domain, or one
// scope per domain when each has its own file(s).
func (r *renderer) Scope(domain string) string {
	if r.w.PerDomain() {
		return domain
	}
	return ""
}

// Partition implements snapshot.Partitioner: a login's part is its shard
// ("", one file per scope, when the path has no shard variable).
func (r *renderer) Partition(login string) string { return r.w.Shard(login) }

// Render implements snapshot.Renderer: it rewrites the file of each part
// given; a file whose path has a variable and that has no login left is
// removed. A whole state also visits the parts not given, and rewrites only
// the files whose content differs.
func (r *renderer) Render(_ context.Context, b snapshot.Batch) error {
	if err := r.render(b); err != nil {
		return r.hidePaths(err)
	}
	return nil
}

// hidePaths returns err with the files' directory (up to the first
// variable) replaced: users see sync errors, and the server's paths are not
// theirs to know.
func (r *renderer) hidePaths(err error) error {
	if r.dirRe == nil {
		return err
	}
	return errors.New(r.dirRe.ReplaceAllString(err.Error(), "<passwd-file dir>$1"))
}

func (r *renderer) render(b snapshot.Batch) error {
	removable := r.w.PerDomain() || r.w.Sharded() // else the one file stays, maybe empty
	file := func(shard string, entries []syncer.Entry) File {
		return File{Shard: shard, Entries: entries, Remove: len(entries) == 0 && removable}
	}
	if !b.Whole {
		files := make([]File, 0, len(b.Parts))
		for _, part := range b.Parts {
			f := file(part.Key, part.Entries)
			// New logins only: appended to the file when it is the one the
			// Writer last wrote.
			f.Append, f.Added = part.AddOnly, part.Added
			files = append(files, f)
		}
		return r.w.Update(b.Scope, files, false)
	}
	given := make(map[string][]syncer.Entry, len(b.Parts))
	for _, part := range b.Parts {
		given[part.Key] = part.Entries
	}
	shards := r.w.Shards()
	files := make([]File, 0, len(shards))
	for _, shard := range shards {
		files = append(files, file(shard, given[shard]))
		delete(given, shard)
	}
	for k := range given {
		return fmt.Errorf("sync: part %q is not a shard of the passwd-file template", k)
	}
	return r.w.Update(b.Scope, files, true)
}
