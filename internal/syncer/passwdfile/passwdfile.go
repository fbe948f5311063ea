// Package passwdfile writes Dovecot passwd-files: one file for every domain,
// or one file per domain when the path template contains "%d" (as Dovecot's
// passwd-file args allow, e.g. "/etc/dovecot/users/%d"), and optionally
// split further into shards by login with Dovecot's "%<k>Mu" (k = 1 to 3):
// the first k hex digits of the MD5 of the login. With
// "/etc/dovecot/users/%d/%2Mu" a domain's logins spread over up to 256
// files, so that a change rewrites a file of about 1/256 of the domain, and
// Dovecot re-reads only that file.
//
// A write that only adds logins appends their lines to the file (see
// append.go and File.Append). Every other write replaces the whole file
// atomically: the new content goes to a temporary file in the same
// directory, which is fsynced, given mode 0640
// (and optionally a group, so that Dovecot's auth process can read it), and
// renamed over the target; the directory is then fsynced. A reader therefore
// sees either the old or the new file, never a mix, and a crash leaves one of
// the two. A file of 256 KiB or more is written with O_DIRECT where the file
// system takes it (see direct.go): each write replaces a file written
// moments before, and the page cache would only copy it and write it back.
//
// Dovecot re-reads a passwd-file only when its mtime (in whole seconds) or
// its size changes. Two rewrites of the same length within one second would
// leave Dovecot serving the older one, so an old password would stay valid.
// Write therefore gives a new file the current second as its mtime unless a
// file of the same size already had that second (as far as this Writer
// knows: it remembers the sizes it wrote in its last second, and trusts
// them only while the file on disk is still the one it wrote); then, and
// whenever it does not know, it uses one second past the previous file's
// mtime, even when that puts the mtime in the future. A burst of creates or
// deletes (each changes the size) keeps the mtime at the current time; a
// burst of same-length changes (password resets) moves it ahead by one
// second per write.
//
// A Writer serialises writes to one file within a process. Writers in
// different processes (or several Writers for the same files) are not
// coordinated: the caller must make sure that only one of them writes a
// given file at a time, e.g. with a database advisory lock, or a slower
// writer may replace a newer render with an older one.
package passwdfile

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/syncer"
)

// FileMode is the permission of every file Write creates.
const FileMode fs.FileMode = 0o640

// DirMode is the permission of every directory the Writer creates.
const DirMode fs.FileMode = 0o750

// domainVar is the Dovecot variable of the domain a path template may
// contain.
const domainVar = "%d"

// MaxShardDigits is the largest k of a "%<k>Mu" shard variable: 16^3 files
// per domain at most, so that a whole-state write can visit every name.
const MaxShardDigits = 3

// Errors returned (wrapped) by this package; test with errors.Is.
var (
	// ErrInvalidEntry means an entry cannot be written as a passwd-file line.
	ErrInvalidEntry = errors.New("passwdfile: invalid entry")
	// ErrInvalidDomain means a domain is not a plain lowercase host name.
	ErrInvalidDomain = errors.New("passwdfile: invalid domain")
	// ErrMalformed means Parse met data that Render cannot have produced.
	ErrMalformed = errors.New("passwdfile: malformed file")
	// ErrInvalidShard means a shard name is not one of the template's (see
	// Writer.Shard), or an entry does not belong in the shard written.
	ErrInvalidShard = errors.New("passwdfile: invalid shard")
	// ErrSingleFile means Remove was called on a Writer whose one file holds
	// every login.
	ErrSingleFile = errors.New("passwdfile: not in per-domain or sharded mode")
)

// Writer writes the passwd-file(s) of one path template. It is safe for
// concurrent use; see the package documentation for what it does not
// coordinate.
type Writer struct {
	template    string
	perDomain   bool
	shardDigits int // the largest k of the template's "%<k>Mu"; 0: not sharded
	gid         int // -1: leave the group alone

	mu    sync.Mutex
	files map[string]*fileState

	// beforeRename, if set (by tests), runs just before the temporary file
	// is renamed over the target; an error aborts the write.
	beforeRename func(tmp string) error
	// afterAppend, if set (by tests), runs after an append's write(2),
	// before its mtime is set; an error aborts the append there.
	afterAppend func() error
	// noDirect is set once the file system has refused direct I/O.
	noDirect atomic.Bool
}

// fileState serialises the writes of one path and remembers the last mtime
// given to it, so that a file that is removed and written again within a
// second still gets a new mtime.
type fileState struct {
	mu        sync.Mutex
	lastMtime time.Time   // the mtime this Writer last gave the file (whole seconds)
	lastIno   uint64      // and the file's inode then (0: unknown)
	seen      []sizeRange // the sizes the file may have shown with lastMtime's second
	size      int64       // the file's size then
	lines     int         // and its number of lines

	// For a file that is not a shard and not larger than spliceMax: the
	// last content rendered and the entries it was rendered from, so that
	// the next render copies the unchanged runs and checks only the lines
	// that changed (spliceRender), into spare, the buffer before last.
	buf   []byte
	prev  []syncer.Entry
	spare []byte
}

// spliceMax bounds the files rendered by splicing: above it (about 200,000
// logins) the two buffers and the copy of the entries would cost more
// memory than the render saves time, and such domains belong in shards.
const spliceMax = 32 << 20

// New returns a Writer for pathTemplate, which names one file, or contains
// "%d" (possibly more than once, also in directory names) to keep one file
// per domain, and/or "%1Mu", "%2Mu" or "%3Mu" to shard by login (see the
// package documentation). No other '%' may appear in it, since Dovecot would
// expand it differently. The directory of a template without variables is
// created (mode 0750, with group) if missing; directories that depend on a
// variable are created by Write when needed.
//
// group "" leaves the files' group alone (the process's default); otherwise
// it is a group name or a numeric gid, and every file (and directory) the
// Writer creates is chowned to it, which the process must be allowed to do
// (be root or a member of the group), or Write fails.
//
// New returns an error if the template is empty or malformed, if the group
// does not exist, or if the directory cannot be created.
func New(pathTemplate, group string) (*Writer, error) {
	digits, err := checkTemplate(pathTemplate)
	if err != nil {
		return nil, err
	}
	gid := -1
	if group != "" {
		var err error
		if gid, err = lookupGroup(group); err != nil {
			return nil, err
		}
	}
	w := &Writer{
		template:    pathTemplate,
		perDomain:   strings.Contains(pathTemplate, domainVar),
		shardDigits: digits,
		gid:         gid,
		files:       make(map[string]*fileState),
	}
	if dir := filepath.Dir(pathTemplate); !strings.Contains(dir, "%") {
		if err := w.ensureDir(dir); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// checkTemplate checks t and returns the largest k of its "%<k>Mu", or 0.
func checkTemplate(t string) (digits int, err error) {
	if t == "" {
		return 0, errors.New("passwdfile: empty path template")
	}
	if strings.ContainsRune(t, 0) {
		return 0, errors.New("passwdfile: path template contains NUL")
	}
	for rest := t; ; {
		i := strings.IndexByte(rest, '%')
		if i < 0 {
			break
		}
		rest = rest[i:]
		switch {
		case strings.HasPrefix(rest, domainVar):
			rest = rest[len(domainVar):]
		case len(rest) >= 4 && rest[1] >= '1' && rest[1] <= '0'+MaxShardDigits && rest[2:4] == "Mu":
			digits = max(digits, int(rest[1]-'0'))
			rest = rest[4:]
		default:
			return 0, fmt.Errorf("passwdfile: path template %q: only the variables %%d and %%1Mu to %%%dMu are supported", t, MaxShardDigits)
		}
	}
	if strings.HasSuffix(t, "/") {
		return 0, fmt.Errorf("passwdfile: path template %q names a directory", t)
	}
	if b := filepath.Base(t); b == "." || b == ".." {
		return 0, fmt.Errorf("passwdfile: path template %q does not name a file", t)
	}
	return digits, nil
}

func lookupGroup(group string) (int, error) {
	if n, err := strconv.Atoi(group); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("passwdfile: invalid gid %d", n)
		}
		return n, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("passwdfile: group %q: %w", group, err)
	}
	n, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("passwdfile: group %q has non-numeric gid %q", group, g.Gid)
	}
	return n, nil
}

// PerDomain reports whether the Writer keeps one file per domain (the
// template contains "%d").
func (w *Writer) PerDomain() bool { return w.perDomain }

// Template returns the path template the Writer was made with.
func (w *Writer) Template() string { return w.template }

// Sharded reports whether the template splits logins over shards ("%<k>Mu").
func (w *Writer) Sharded() bool { return w.shardDigits > 0 }

// Shard returns the shard that holds login: the first k hex digits of the
// MD5 of login, as Dovecot expands "%<k>Mu" (k the largest in the
// template), or "" when the template has no shard variable.
func (w *Writer) Shard(login string) string {
	if w.shardDigits == 0 {
		return ""
	}
	sum := md5.Sum([]byte(login))
	return hex.EncodeToString(sum[:2])[:w.shardDigits]
}

// Shards returns every shard name of the template in order ("" alone when
// it has no shard variable).
func (w *Writer) Shards() []string {
	if w.shardDigits == 0 {
		return []string{""}
	}
	n := 1 << (4 * w.shardDigits)
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("%0*x", w.shardDigits, i)
	}
	return names
}

// Path returns the file that holds the logins of domain in shard: the
// template with every "%d" replaced by domain and every "%<k>Mu" by the
// first k characters of shard. Without "%d", domain is ignored (and may be
// empty); without a shard variable, shard must be "". A domain that is not
// a plain lowercase host name (letters a-z, digits, '-', labels of 1-63
// characters separated by single dots, at most 253 characters; so no '/',
// "..", or empty name), or a shard that is not one of Shards, yields "",
// which no file has; Write and Remove report ErrInvalidDomain or
// ErrInvalidShard for it.
func (w *Writer) Path(domain, shard string) string {
	p, err := w.path(domain, shard)
	if err != nil {
		return ""
	}
	return p
}

func (w *Writer) path(domain, shard string) (string, error) {
	if w.perDomain && !validDomain(domain) {
		return "", fmt.Errorf("%w: %q", ErrInvalidDomain, domain)
	}
	if !w.validShard(shard) {
		return "", fmt.Errorf("%w: %q", ErrInvalidShard, shard)
	}
	if !w.perDomain && w.shardDigits == 0 {
		return w.template, nil
	}
	var b strings.Builder
	for rest := w.template; ; {
		i := strings.IndexByte(rest, '%')
		if i < 0 {
			b.WriteString(rest)
			break
		}
		b.WriteString(rest[:i])
		if rest = rest[i:]; strings.HasPrefix(rest, domainVar) {
			b.WriteString(domain)
			rest = rest[len(domainVar):]
		} else { // "%<k>Mu", as checkTemplate made sure
			b.WriteString(shard[:rest[1]-'0'])
			rest = rest[4:]
		}
	}
	return b.String(), nil
}

func (w *Writer) validShard(s string) bool {
	if len(s) != w.shardDigits {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func validDomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// lock returns the locked state of path; the caller unlocks st.mu.
func (w *Writer) lock(path string) *fileState {
	w.mu.Lock()
	st := w.files[path]
	if st == nil {
		st = &fileState{}
		w.files[path] = st
	}
	w.mu.Unlock()
	st.mu.Lock()
	return st
}

// Write replaces the file Path(domain, shard) with exactly entries, sorted
// by login, one "login:hash\n" line each; no entries make an empty file.
// Without "%d" in the template domain is ignored and the file holds every
// domain's entries (of the shard).
//
// The replacement is atomic (see the package documentation); the new file
// has mode 0640, the configured group, and an mtime of at least the current
// time and at least one second past the previous file's (as seen on disk or
// last written by this Writer). Writes to one path are serialised within the
// Writer; the caller serialises writers across processes.
//
// Write returns an error wrapping ErrInvalidDomain, ErrInvalidShard (also
// for an entry whose login is not in shard) or ErrInvalidEntry for bad
// input (nothing is written), an error if the target exists but is not a
// regular file (a symlink or directory is never replaced), or the underlying
// file system error. On any error the temporary file is removed and the
// target is either untouched or, if only the final directory fsync failed,
// already replaced; retrying is safe.
func (w *Writer) Write(domain, shard string, entries []syncer.Entry) error {
	return w.Update(domain, []File{{Shard: shard, Entries: entries}}, false)
}

// File is the new state of one of a domain's files, for Update: the file
// of Shard holds exactly Entries or, with Remove, is removed.
//
// With Append, the caller states that Entries is the file's previous
// entries (as this Writer last wrote them, or as Read returned them since)
// plus exactly Added, which are new logins, sorted: nothing else changed.
// The Writer then appends Added's lines to the file instead of replacing
// it, when it can tell that the file is still the one it last wrote (the
// same inode, size, mtime, mode and group, and as many lines as Entries
// less Added); otherwise it replaces the file as without Append. An append
// costs O(len(Added)), where a replacement costs O(len(Entries)).
type File struct {
	Shard   string
	Entries []syncer.Entry
	Remove  bool
	Append  bool
	Added   []syncer.Entry
}

// Update brings files of domain to their new states, as Write and Remove
// would one by one, except that the files are written concurrently (their
// fsyncs overlap) and each directory is fsynced once, after the last rename
// or removal in it, instead of after each: a batch of changes to several
// shards costs about one file's wait. Bad input (a domain or shard that is
// not valid, an entry not in its file's shard) is found before anything is
// written, and changes nothing. Each file is replaced atomically or, with
// Append, appended to (see File); on another error any of the files may
// already be changed (their directory maybe not yet synced; an append maybe
// partly written, which the next write replaces), the others untouched, and
// retrying is safe. With unlessSame, a file that already holds exactly the content
// Write would write is left alone (neither rewritten nor given a new
// mtime): for writing a whole state of which most files are likely
// current, e.g. after a restart. A shard given twice is written in order.
func (w *Writer) Update(domain string, files []File, unlessSame bool) error {
	for _, f := range files {
		path, err := w.path(domain, f.Shard)
		if err != nil {
			return err
		}
		if err := w.checkShard(path, f.Shard, f.Entries); err != nil {
			return err
		}
	}
	dirs := make([]string, len(files)) // the directory each file changed in
	errs := make([]error, len(files))
	one := func(i int) {
		if f := files[i]; f.Remove {
			dirs[i], errs[i] = w.remove(domain, f.Shard)
		} else {
			dirs[i], errs[i] = w.write(domain, f, unlessSame)
		}
	}
	if len(files) < 2 || repeatsShard(files) {
		for i := range files {
			if one(i); errs[i] != nil {
				break
			}
		}
	} else {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range min(len(files), updateWorkers) {
			wg.Go(func() {
				for i := int(next.Add(1)) - 1; i < len(files); i = int(next.Add(1)) - 1 {
					one(i)
				}
			})
		}
		wg.Wait()
	}
	var changed []string // to sync, in order of first change
	for _, dir := range dirs {
		if dir != "" && !slices.Contains(changed, dir) {
			changed = append(changed, dir)
		}
	}
	for _, err := range errs {
		if err != nil {
			return errors.Join(err, w.syncDirs(changed))
		}
	}
	return w.syncDirs(changed)
}

// updateWorkers bounds the files Update writes at once.
const updateWorkers = 8

// repeatsShard reports whether a shard appears more than once in files.
func repeatsShard(files []File) bool {
	seen := make(map[string]bool, len(files))
	for _, f := range files {
		if seen[f.Shard] {
			return true
		}
		seen[f.Shard] = true
	}
	return false
}

func (w *Writer) syncDirs(dirs []string) error {
	for _, dir := range dirs {
		if err := syncDir(dir); err != nil {
			return fmt.Errorf("passwdfile: files in %s replaced but the directory not synced: %w", dir, err)
		}
	}
	return nil
}

// write appends to one file (see File.Append) or replaces it, and returns
// its directory if it changed there (which the caller syncs).
func (w *Writer) write(domain string, f File, unlessSame bool) (changedDir string, err error) {
	path, err := w.path(domain, f.Shard) // checked by Update, with the shard
	if err != nil {
		return "", err
	}
	st := w.lock(path)
	defer st.mu.Unlock()
	if f.Append {
		if done, err := w.appendLines(path, st, f.Entries, f.Added); done || err != nil {
			return "", err // an append leaves the directory as it was
		}
	}
	entries := f.Entries
	data, err := st.render(entries, w.shardDigits == 0)
	if err != nil {
		return "", err
	}

	dir := filepath.Dir(path)
	if err := w.ensureDir(dir); err != nil {
		return "", err
	}
	fi, err := os.Lstat(path)
	exists := err == nil
	switch {
	case exists && !fi.Mode().IsRegular():
		return "", fmt.Errorf("passwdfile: %s exists and is not a regular file (%v)", path, fi.Mode().Type())
	case !exists && !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("passwdfile: %w", err)
	}
	if unlessSame && exists && fi.Size() == int64(len(data)) && w.holds(path, fi, data) {
		// Left alone, but its directory is synced all the same: the
		// file may be the rename of a process that crashed before it
		// synced the directory.
		return dir, nil
	}
	mtime := st.nextMtime(fi, exists, int64(len(data)), time.Now())
	if err := w.replace(path, data, mtime); err != nil {
		st.lastIno = 0 // the file is in doubt
		return "", err
	}
	var ino uint64 // 0, unknown, when the Lstat fails: no append then, but the mtime is kept
	if fi, err := os.Lstat(path); err == nil {
		ino = inode(fi)
	}
	st.wrote(mtime, ino, int64(len(data)), int64(len(data)), len(entries))
	return dir, nil
}

// render returns the content of entries, by splicing the previous render
// when keep and there is one; with keep it remembers the render for the
// next one (or, for a file too large to splice, keeps only its buffer, for
// the next whole render to reuse).
func (st *fileState) render(entries []syncer.Entry, keep bool) ([]byte, error) {
	if !keep {
		return appendRender(nil, entries)
	}
	data, ok := spliceRender(st.spare[:0], st.buf, st.prev, entries)
	if !ok {
		dst := st.buf[:0] // no splice source to keep: render over the last render
		if st.prev != nil {
			dst = st.spare[:0]
		}
		var err error
		if data, err = appendRender(dst, entries); err != nil {
			return nil, err
		}
	}
	switch {
	case len(data) > spliceMax || !ok && !slices.IsSortedFunc(entries, byLogin):
		// Too large to keep twice, or rendered from a sorted copy (prev
		// must be in file order): one buffer, and no splice next time.
		st.buf, st.prev, st.spare = data, nil, nil
		return data, nil
	case st.prev != nil: // data is in spare's array
		st.buf, st.spare = data, st.buf
	default: // data is in buf's array
		st.buf = data
	}
	st.prev = append(st.prev[:0], entries...)
	return data, nil
}

// spliceRender appends to dst what Render returns for next, given that old
// is Render's content for prev: runs of entries next shares with prev are
// copied from old, and only the other lines are rendered and checked. It
// reports false, having checked nothing in full, when it cannot tell (no
// prev, or next is not strictly sorted, or an entry of next that prev does
// not have is invalid): the caller then renders next whole, which reports
// the error.
func spliceRender(dst, old []byte, prev, next []syncer.Entry) ([]byte, bool) {
	if prev == nil {
		return nil, false
	}
	n := 0 // the content's size, so that dst grows once
	for _, e := range next {
		n += len(e.Login) + len(e.Hash) + 2
	}
	dst = alignedGrow(dst, n)
	off, run := 0, 0 // old's offset of prev[i], and of the run not yet copied
	i := 0
	fromPrev := false // next[j-1] is an entry of prev (one before prev[i])
	for j, e := range next {
		for i < len(prev) && prev[i].Login < e.Login { // gone
			dst = append(dst, old[run:off]...)
			off += len(prev[i].Login) + len(prev[i].Hash) + 2
			run = off
			i++
		}
		same := i < len(prev) && prev[i] == e
		// Two entries of prev in a row are in order already (prev is
		// strictly sorted); any other pair is compared.
		if !(same && fromPrev) && j > 0 && next[j-1].Login >= e.Login {
			return nil, false
		}
		fromPrev = same
		if same { // unchanged: part of the run
			off += len(e.Login) + len(e.Hash) + 2
			i++
			continue
		}
		if i < len(prev) && prev[i].Login == e.Login { // new hash: the old line goes
			dst = append(dst, old[run:off]...)
			off += len(prev[i].Login) + len(prev[i].Hash) + 2
			run = off
			i++
		}
		if checkField(e.Login) != nil || checkField(e.Hash) != nil {
			return nil, false
		}
		dst = append(dst, old[run:off]...)
		run = off
		dst = append(dst, e.Login...)
		dst = append(dst, ':')
		dst = append(dst, e.Hash...)
		dst = append(dst, '\n')
	}
	return append(dst, old[run:off]...), true
}

func byLogin(a, b syncer.Entry) int { return strings.Compare(a.Login, b.Login) }

// checkShard makes sure that every entry of the file at path belongs in
// its shard.
func (w *Writer) checkShard(path, shard string, entries []syncer.Entry) error {
	if w.shardDigits == 0 {
		return nil
	}
	for _, e := range entries {
		if got := w.Shard(e.Login); got != shard {
			return fmt.Errorf("%w: %s: login %q is in shard %q", ErrInvalidShard, path, e.Login, got)
		}
	}
	return nil
}

// holds reports whether the file at path, described by fi, has content
// data and the mode and group Write would give it.
func (w *Writer) holds(path string, fi fs.FileInfo, data []byte) bool {
	if fi.Mode().Perm() != FileMode {
		return false
	}
	if !w.groupIs(fi) {
		return false
	}
	old, err := os.ReadFile(path)
	return err == nil && bytes.Equal(old, data)
}

// nextMtime is the mtime of a new file of size bytes replacing the file
// described by fi (when exists): see the package documentation.
func (st *fileState) nextMtime(fi fs.FileInfo, exists bool, size int64, now time.Time) time.Time {
	sec := now.Unix()
	known := false // the file on disk is the one this Writer wrote last
	if exists {
		known = st.lastIno != 0 && inode(fi) == st.lastIno && fi.ModTime().Equal(st.lastMtime)
		if !known {
			sec = max(sec, fi.ModTime().Unix()+1)
		}
	}
	if !st.lastMtime.IsZero() {
		if last := st.lastMtime.Unix(); sec <= last {
			sec = last
			if !known || st.seenSize(size) {
				sec = last + 1
			}
		}
	}
	return time.Unix(sec, 0)
}

// sizeRange is the sizes from lo to hi.
type sizeRange struct{ lo, hi int64 }

// seenSize reports whether the file may have shown size with lastMtime's
// second.
func (st *fileState) seenSize(size int64) bool {
	for _, r := range st.seen {
		if r.lo <= size && size <= r.hi {
			return true
		}
	}
	return false
}

// wrote records that this Writer left the file at path with mtime, inode
// ino, size and lines lines, and that with mtime's second it may have shown
// any size from seenFrom to size (less than size while an append was under
// way).
func (st *fileState) wrote(mtime time.Time, ino uint64, seenFrom, size int64, lines int) {
	if !mtime.Equal(st.lastMtime) {
		st.seen = st.seen[:0]
	}
	st.seen = append(st.seen, sizeRange{seenFrom, size})
	st.lastMtime, st.lastIno, st.size, st.lines = mtime, ino, size, lines
}

// inode is fi's inode number, or 0 when the platform does not say.
func inode(fi fs.FileInfo) uint64 {
	if s, ok := fi.Sys().(*syscall.Stat_t); ok {
		return s.Ino
	}
	return 0
}

// replace writes data to a temporary file next to path and renames it over
// path; the temporary file never survives an error.
func (w *Writer) replace(path string, data []byte, mtime time.Time) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("passwdfile: %w", err)
	}
	tmp := f.Name()
	closed := false
	defer func() {
		if err != nil {
			if !closed {
				_ = f.Close()
			}
			_ = os.Remove(tmp)
			err = fmt.Errorf("passwdfile: writing %s: %w", path, err)
		}
	}()

	if err = w.writeNew(f, data); err != nil {
		return err
	}
	if w.gid >= 0 {
		if err = f.Chown(-1, w.gid); err != nil {
			return err
		}
	}
	// After the chown, which may clear mode bits; Chmod ignores the umask.
	if err = f.Chmod(FileMode); err != nil {
		return err
	}
	// Last change to the inode before the sync, so that it is durable too.
	if err = os.Chtimes(tmp, mtime, mtime); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	closed = true
	if err = f.Close(); err != nil {
		return err
	}
	if w.beforeRename != nil {
		if err = w.beforeRename(tmp); err != nil {
			return err
		}
	}
	return os.Rename(tmp, path)
}

// Read returns the entries of the file Path(domain, shard) as Parse reads
// them (sorted by login), or none if the file does not exist. It returns an
// error wrapping ErrMalformed for content Write cannot have written, and
// ErrInvalidShard for a line whose login belongs in another shard.
func (w *Writer) Read(domain, shard string) ([]syncer.Entry, error) {
	path, err := w.path(domain, shard)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("passwdfile: %w", err)
	}
	entries, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := w.checkShard(path, shard, entries); err != nil {
		return nil, err
	}
	return entries, nil
}

// Remove deletes the file Path(domain, shard) (for a domain or shard with
// no logins left) and fsyncs its directory. It returns nil if the file does
// not exist, an error wrapping ErrInvalidDomain or ErrInvalidShard for a
// bad name, ErrSingleFile when the template has no variable (the one file
// holds every login; write it with fewer entries instead), or the file
// system error.
func (w *Writer) Remove(domain, shard string) error {
	return w.Update(domain, []File{{Shard: shard, Remove: true}}, false)
}

// remove removes one file and returns its directory if it was there.
func (w *Writer) remove(domain, shard string) (changedDir string, err error) {
	if !w.perDomain && w.shardDigits == 0 {
		return "", ErrSingleFile
	}
	path, err := w.path(domain, shard)
	if err != nil {
		return "", err
	}
	w.mu.Lock()
	known := w.files[path] != nil
	w.mu.Unlock()
	if !known { // no state to keep for a file that is not there
		if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
			return "", nil
		}
	}
	st := w.lock(path)
	defer st.mu.Unlock()
	st.buf, st.prev, st.spare = nil, nil, nil
	st.lastIno = 0 // nothing to append to; the mtime is kept for the next file
	if fi, err := os.Lstat(path); err == nil && fi.ModTime().After(st.lastMtime) {
		// A file this Writer did not write last (the process may have
		// restarted since), whose mtime may be ahead of the clock: Dovecot
		// may still hold it, so the next file gets a later second (see
		// nextMtime), and the mtime does not go back.
		st.lastMtime = fi.ModTime()
	}
	if err := os.Remove(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil
		}
		return "", fmt.Errorf("passwdfile: %w", err)
	}
	return filepath.Dir(path), nil
}

// ensureDir creates dir and any missing parents with DirMode and the
// Writer's group; existing directories are left as they are.
func (w *Writer) ensureDir(dir string) error {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("passwdfile: %s is not a directory", dir)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("passwdfile: %w", err)
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := w.ensureDir(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, DirMode); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return w.ensureDir(dir) // created concurrently; check it is a directory
		}
		return fmt.Errorf("passwdfile: %w", err)
	}
	if w.gid >= 0 {
		if err := os.Chown(dir, -1, w.gid); err != nil {
			return fmt.Errorf("passwdfile: %w", err)
		}
	}
	if err := os.Chmod(dir, DirMode); err != nil { // undo the umask
		return fmt.Errorf("passwdfile: %w", err)
	}
	return syncDir(filepath.Dir(dir))
}

// syncDir fsyncs a directory, making renames and removals in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Render returns the passwd-file content of entries: sorted by login, one
// "login:hash\n" line each; no entries render as empty content. entries is
// not modified.
//
// It returns an error wrapping ErrInvalidEntry (naming the login, never the
// hash) if a login or hash is empty, starts with '#', or contains ':' or an
// ASCII control character (among them '\n', '\r' and NUL), or if two entries
// have the same login, so that every line reads back as exactly the entry it
// was made from.
func Render(entries []syncer.Entry) ([]byte, error) { return appendRender(nil, entries) }

// appendRender is Render appending to buf.
func appendRender(buf []byte, entries []syncer.Entry) ([]byte, error) {
	sorted := entries
	if !slices.IsSortedFunc(entries, byLogin) {
		sorted = slices.Clone(entries)
		slices.SortFunc(sorted, byLogin)
	}
	n := 0
	for i, e := range sorted {
		if e.Login == "" || e.Hash == "" || e.Login[0] == '#' || e.Hash[0] == '#' ||
			i > 0 && sorted[i-1].Login == e.Login {
			return nil, invalid(sorted)
		}
		n += len(e.Login) + len(e.Hash) + 2
	}
	buf = alignedGrow(buf, n)
	start := len(buf)
	for _, e := range sorted {
		buf = append(buf, e.Login...)
		buf = append(buf, ':')
		buf = append(buf, e.Hash...)
		buf = append(buf, '\n')
	}
	// Each line got exactly one ':' and one '\n': if the whole content has
	// no more of them and no other control character, no field has any.
	out := buf[start:]
	if bytes.Count(out, []byte{':'}) != len(sorted) || bytes.IndexByte(out, 0x7f) >= 0 || !onlyNewlines(out, len(sorted)) {
		return nil, invalid(sorted)
	}
	return buf, nil
}

// invalid names the first invalid entry of sorted (checked one by one,
// only once the fast checks of Render failed).
func invalid(sorted []syncer.Entry) error {
	for i, e := range sorted {
		if err := checkField(e.Login); err != nil {
			return fmt.Errorf("%w: login %q: %v", ErrInvalidEntry, e.Login, err)
		}
		if err := checkField(e.Hash); err != nil {
			return fmt.Errorf("%w: hash of login %q: %v", ErrInvalidEntry, e.Login, err)
		}
		if i > 0 && sorted[i-1].Login == e.Login {
			return fmt.Errorf("%w: login %q appears more than once", ErrInvalidEntry, e.Login)
		}
	}
	return fmt.Errorf("%w", ErrInvalidEntry) // not reached: Render's checks mirror these
}

// onlyNewlines reports whether the control characters (< 0x20) of b are
// exactly lines newlines. Eight bytes at a time: a word without a byte
// below 0x20 is skipped whole.
func onlyNewlines(b []byte, lines int) bool {
	const highs, spaces = 0x8080808080808080, 0x2020202020202020
	newlines := 0
	i := 0
	for ; i+8 <= len(b); i += 8 {
		v := binary.LittleEndian.Uint64(b[i:])
		if (v-spaces)&^v&highs == 0 { // no byte below 0x20 (bytes >= 0x80 never flag)
			continue
		}
		for _, c := range b[i : i+8] {
			if c < 0x20 {
				if c != '\n' {
					return false
				}
				newlines++
			}
		}
	}
	for _, c := range b[i:] {
		if c < 0x20 {
			if c != '\n' {
				return false
			}
			newlines++
		}
	}
	return newlines == lines
}

func checkField(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if s[0] == '#' {
		return errors.New("starts with '#'")
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ':':
			return errors.New("contains ':'")
		case c < 0x20 || c == 0x7f:
			return fmt.Errorf("contains control character %q", c)
		}
	}
	return nil
}

// Parse is the inverse of Render, also for a file that a Writer appended
// lines to: it returns the entries of data sorted by login. It is strict,
// for consistency checks: it returns an error wrapping ErrMalformed if data
// is not exactly what Render produces for some entries, but for the order
// of the lines (a missing final newline, which a truncated file would show,
// a line without exactly one ':', a blank or comment line, an invalid
// field, a login that appears twice). Empty data yields no entries.
func Parse(data []byte) ([]syncer.Entry, error) {
	if len(data) == 0 {
		return nil, nil
	}
	if data[len(data)-1] != '\n' {
		return nil, fmt.Errorf("%w: no newline at the end", ErrMalformed)
	}
	var entries []syncer.Entry
	lineNo := 0
	sorted := true
	for line := range bytes.SplitSeq(data[:len(data)-1], []byte{'\n'}) {
		lineNo++
		login, hash, ok := strings.Cut(string(line), ":")
		if !ok {
			return nil, fmt.Errorf("%w: line %d has no ':'", ErrMalformed, lineNo)
		}
		if err := checkField(login); err != nil {
			return nil, fmt.Errorf("%w: line %d: login %v", ErrMalformed, lineNo, err)
		}
		if err := checkField(hash); err != nil {
			return nil, fmt.Errorf("%w: line %d: hash %v", ErrMalformed, lineNo, err)
		}
		if n := len(entries); n > 0 && entries[n-1].Login >= login {
			if entries[n-1].Login == login {
				return nil, fmt.Errorf("%w: line %d: login %q repeated", ErrMalformed, lineNo, login)
			}
			sorted = false
		}
		entries = append(entries, syncer.Entry{Login: login, Hash: hash})
	}
	if !sorted {
		slices.SortFunc(entries, byLogin)
		for i := 1; i < len(entries); i++ {
			if entries[i-1].Login == entries[i].Login {
				return nil, fmt.Errorf("%w: login %q appears more than once", ErrMalformed, entries[i].Login)
			}
		}
	}
	return entries, nil
}
