// Package passwdfile is the sync target that keeps Dovecot passwd-files equal
// to the database, so that Dovecot authenticates every login smtpcreds holds.
//
// NewTarget is the target (target.go); the Writer writes the files: one file
// for every domain, or one file per domain when the path template contains
// "%d" (as Dovecot's passwd-file args allow, e.g. "/etc/dovecot/users/%d"),
// and optionally split further into shards by login with Dovecot's "%<k>Mu"
// (k = 1 to 3): the first k hex digits of the MD5 of the login. With
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
	sum       uint64      // and the sum of its lines' checksums (see Print)

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
// With a group, every directory that exists above the files must be
// searchable by it (Dovecot's auth process reads them as a member), or New
// fails naming the directory: a directory made before, e.g. root:root 0750,
// would hide every file from Dovecot however the files' group is set.
//
// New returns an error if the template is empty or malformed, if the group
// does not exist, if the directory cannot be created, or if a directory is
// not searchable by the group.
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
	if gid >= 0 {
		static, _, _ := strings.Cut(pathTemplate, "%")
		if err := checkSearchable(filepath.Dir(static+"x"), group, gid); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// checkSearchable returns an error naming the first directory, from dir up
// to the root, that exists and that members of group gid cannot search by
// its permission bits: neither others' x, nor the group's x with that
// group, nor the owner's x with an owner whose primary group it is (the
// reader may be that user). ACLs are not looked at. Directories that do not
// exist yet are skipped: the Writer creates them with the group.
func checkSearchable(dir, group string, gid int) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("passwdfile: %w", err)
	}
	for ; ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && !searchable(fi.Mode().Perm(), st, gid) {
				return fmt.Errorf("passwdfile: directory %s (mode %04o, uid %d, gid %d) is not searchable by group %s, "+
					"so Dovecot cannot reach the passwd-files: chgrp %s %s && chmod g+x %s (or chmod o+x %s)",
					dir, fi.Mode().Perm(), st.Uid, st.Gid, group, group, dir, dir, dir)
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("passwdfile: %w", err)
		}
		if dir == filepath.Dir(dir) {
			return nil
		}
	}
}

func searchable(perm fs.FileMode, st *syscall.Stat_t, gid int) bool {
	if perm&0o001 != 0 || (int(st.Gid) == gid && perm&0o010 != 0) {
		return true
	}
	if perm&0o100 == 0 {
		return false
	}
	u, err := user.LookupId(strconv.FormatUint(uint64(st.Uid), 10))
	return err == nil && u.Gid == strconv.Itoa(gid)
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
//
// With Known, the caller states that the file is the one that Print
// describes (the fingerprint recorded when it was written, maybe by
// another Writer or process): an Append then needs no Entries (nil), and
// is made when the file still matches Known, which the Writer checks by
// its inode, size, mtime, mode and group; if it does not, the file is
// replaced from Entries, or, without Entries, Update fails with an error
// for which InDoubt is true, having left that file alone.
type File struct {
	Shard   string
	Entries []syncer.Entry
	Remove  bool
	Append  bool
	Added   []syncer.Entry
	Known   *Print
}

// InDoubt reports whether err is (or wraps) an Update's refusal to append
// to a file that is not as its Known print says.
func InDoubt(err error) bool { return errors.Is(err, errInDoubt) }

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
	_, err := w.UpdatePrints(domain, files, unlessSame)
	return err
}

// UpdatePrints is Update, returning the fingerprint of each file as it
// left it (the zero Print for a file removed, or not written because of an
// error).
func (w *Writer) UpdatePrints(domain string, files []File, unlessSame bool) ([]Print, error) {
	for _, f := range files {
		path, err := w.path(domain, f.Shard)
		if err != nil {
			return nil, err
		}
		if err := w.checkShard(path, f.Shard, f.Entries); err != nil {
			return nil, err
		}
		if err := w.checkShard(path, f.Shard, f.Added); err != nil {
			return nil, err
		}
	}
	dirs := make([]string, len(files)) // the directory each file changed in
	errs := make([]error, len(files))
	prints := make([]Print, len(files))
	one := func(i int) {
		if f := files[i]; f.Remove {
			dirs[i], errs[i] = w.remove(domain, f.Shard)
		} else {
			dirs[i], prints[i], errs[i] = w.write(domain, f, unlessSame)
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
			return prints, errors.Join(err, w.syncDirs(changed))
		}
	}
	return prints, w.syncDirs(changed)
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
// its directory if it changed there (which the caller syncs), and its
// fingerprint.
func (w *Writer) write(domain string, f File, unlessSame bool) (changedDir string, p Print, err error) {
	path, err := w.path(domain, f.Shard) // checked by Update, with the shard
	if err != nil {
		return "", Print{}, err
	}
	st := w.lock(path)
	defer st.mu.Unlock()
	switch {
	case f.Known != nil:
		fi, err := os.Lstat(path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", Print{}, fmt.Errorf("passwdfile: %w", err)
		}
		if err != nil {
			fi = nil
		}
		switch matches := w.matches(fi, *f.Known); {
		case matches && f.Append && fi != nil:
			st.adopt(*f.Known)
			if done, err := w.appendLines(path, st, nil, f.Added); done || err != nil {
				return "", st.print(), err // an append leaves the directory as it was
			}
		case matches && f.Append && f.Entries == nil: // no file: the added are all its entries
			f.Entries = f.Added
		}
		if f.Entries == nil {
			return "", Print{}, fmt.Errorf("%w: %s", errInDoubt, path)
		}
	case f.Append:
		if done, err := w.appendLines(path, st, f.Entries, f.Added); done || err != nil {
			return "", st.print(), err
		}
	}
	entries := f.Entries
	data, err := st.render(entries, w.shardDigits == 0)
	if err != nil {
		return "", Print{}, err
	}

	dir := filepath.Dir(path)
	if err := w.ensureDir(dir); err != nil {
		return "", Print{}, err
	}
	fi, err := os.Lstat(path)
	exists := err == nil
	switch {
	case exists && !fi.Mode().IsRegular():
		return "", Print{}, fmt.Errorf("passwdfile: %s exists and is not a regular file (%v)", path, fi.Mode().Type())
	case !exists && !errors.Is(err, fs.ErrNotExist):
		return "", Print{}, fmt.Errorf("passwdfile: %w", err)
	}
	if unlessSame && exists && fi.Size() == int64(len(data)) && w.holds(path, fi, data) {
		// Left alone, but its directory is synced all the same: the
		// file may be the rename of a process that crashed before it
		// synced the directory.
		return dir, Print{Ino: inode(fi), Size: fi.Size(), Mtime: fi.ModTime(), Lines: int64(len(entries)), Sum: lineSum(entries)}, nil
	}
	mtime := st.nextMtime(fi, exists, int64(len(data)), time.Now())
	if err := w.replace(path, data, mtime); err != nil {
		st.lastIno = 0 // the file is in doubt
		return "", Print{}, err
	}
	var ino uint64 // 0, unknown, when the Lstat fails: no append then, but the mtime is kept
	if fi, err := os.Lstat(path); err == nil {
		ino = inode(fi)
	}
	st.wrote(mtime, ino, int64(len(data)), int64(len(data)), len(entries))
	st.sum = lineSum(entries)
	return dir, st.print(), nil
}

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
