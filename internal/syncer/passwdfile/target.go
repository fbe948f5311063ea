package passwdfile

import (
	"context"
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
// the database, holding none of their content in memory (see package
// snapshot). A change that only adds new logins is appended to their files
// (see File.Append), when each file is still the one its fingerprint,
// stored with the apply that wrote it, describes: a crash may then leave a
// partial last line, of a login not yet reported synced, and a file that
// no longer matches its fingerprint, which the retry writes whole. With
// shards, another change rewrites the changed shards, read back
// (snapshot.PartStore); without, and whenever a file is in doubt, the
// scope's files are streamed whole from the database (Writer.Stream). Each
// rewrite is atomic: a crash leaves the old or the new file. log gets the
// warnings of files in doubt.
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

// ReadPart implements snapshot.PartStore: the shard's file, checked
// against its fingerprint.
func (r shardRenderer) ReadPart(scope, key, print string) ([]syncer.Entry, error) {
	p, err := ParsePrint(print)
	if err != nil {
		return nil, err
	}
	entries, err := r.w.Read(scope, key)
	if err != nil {
		return nil, r.hidePaths(err)
	}
	if int64(len(entries)) != p.Lines || lineSum(entries) != p.Sum {
		return nil, fmt.Errorf("%w: shard %q of %q holds %d lines, not those of its fingerprint", snapshot.ErrInDoubt, key, scope, len(entries))
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

// Partition implements snapshot.Renderer: a login's part is its shard
// ("", one file per scope, when the path has no shard variable).
func (r *renderer) Partition(login string) string { return r.w.Shard(login) }

// MD5Digits implements snapshot.Renderer.
func (r *renderer) MD5Digits() int { return r.w.shardDigits }

// Holds implements snapshot.Renderer.
func (r *renderer) Holds(scope, key, print string) bool {
	p, err := ParsePrint(print)
	return err == nil && r.w.Holds(scope, key, p)
}

// Render implements snapshot.Renderer: it rewrites the file of each part
// given, or appends the added logins to it (see File.Append); a file whose
// path has a variable and that has no login left is removed.
func (r *renderer) Render(_ context.Context, b snapshot.Batch) (map[string]string, error) {
	removable := r.w.PerDomain() || r.w.Sharded() // else the one file stays, maybe empty
	files := make([]File, 0, len(b.Parts))
	for _, part := range b.Parts {
		f := File{Shard: part.Key, Entries: part.Entries, Remove: len(part.Entries) == 0 && !part.AddOnly && removable}
		if part.AddOnly {
			known, err := ParsePrint(part.Print)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", snapshot.ErrInDoubt, err)
			}
			f.Append, f.Added, f.Known = true, part.Added, &known
		}
		files = append(files, f)
	}
	prints, err := r.w.UpdatePrints(b.Scope, files, false)
	if err != nil {
		if InDoubt(err) {
			return nil, fmt.Errorf("%w: %v", snapshot.ErrInDoubt, r.hidePaths(err))
		}
		return nil, r.hidePaths(err)
	}
	out := make(map[string]string, len(files))
	for i, f := range files {
		out[f.Shard] = prints[i].String()
	}
	return out, nil
}

// Stream implements snapshot.Renderer (see Writer.Stream).
func (r *renderer) Stream(_ context.Context, b snapshot.Batch, known map[string]string, scan func(fn func(syncer.Entry) error) error) (map[string]string, error) {
	kp := make(map[string]Print, len(known))
	for k, s := range known {
		if p, err := ParsePrint(s); err == nil {
			kp[k] = p
		}
	}
	prints, err := r.w.Stream(b.Scope, kp, scan)
	if err != nil {
		return nil, r.hidePaths(err)
	}
	out := make(map[string]string, len(prints))
	for k, p := range prints {
		out[k] = p.String()
	}
	return out, nil
}

// hidePaths returns err with the files' directory (up to the first
// variable) replaced in its text: users see sync errors, and the server's
// paths are not theirs to know. What err wraps is still wrapped (errors.Is:
// a scan that stopped, a context that ended).
func (r *renderer) hidePaths(err error) error {
	if r.dirRe == nil {
		return err
	}
	return hidden{msg: r.dirRe.ReplaceAllString(err.Error(), "<passwd-file dir>$1"), err: err}
}

// hidden is an error with another text.
type hidden struct {
	msg string
	err error
}

func (h hidden) Error() string { return h.msg }
func (h hidden) Unwrap() error { return h.err }
