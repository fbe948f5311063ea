// Streaming a whole domain (or every domain) into its files, from a scan
// of the database in file order, so that a whole write costs memory
// independent of the number of logins.

package passwdfile

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"hash/crc64"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/smtpcreds/smtpcreds/internal/syncer"
)

// streamChunk is how much of a file Stream buffers before writing it: a
// multiple of directAlign, written with O_DIRECT where the file system
// takes it (see direct.go).
const streamChunk = 1 << 20

// Stream replaces every file of domain (every shard; the one file of every
// domain when the template has no "%d") with the entries scan yields, as
// Update with unlessSame would with each file's whole entries, but without
// holding them: scan must call fn with each entry, grouped by shard (as
// Shard names them) and, within a shard, in the order the lines are to be
// written (ScanInOrder's order). Each file is written to a temporary file
// as the entries come, and renamed over the old one once its shard is
// done; a file of a shard with no entries is removed (the one file of a
// template without variables is left empty). A file whose new content is
// the same as the old one's (by known, the fingerprints the caller trusts,
// or else by comparing the two files) is left alone, mtime included.
//
// It returns the fingerprint of every file it left (not those removed),
// by shard. An invalid entry (see Render), an entry of a shard that came
// before, or an error from scan stops it with an error; the files already
// done stay replaced, the others untouched, and retrying is safe.
func (w *Writer) Stream(domain string, known map[string]Print, scan func(fn func(syncer.Entry) error) error) (map[string]Print, error) {
	if _, err := w.path(domain, ""); err != nil && !errors.Is(err, ErrInvalidShard) {
		return nil, err
	}
	prints := map[string]Print{}
	done := map[string]bool{}
	var dirs []string
	var cur *streamFile
	// Files are finished (synced and renamed) by up to updateWorkers
	// goroutines while the scan goes on, so that their fsyncs overlap, as
	// in Update.
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		failed  error
		workers = make(chan struct{}, updateWorkers)
	)
	defer func() {
		wg.Wait()
		if cur != nil {
			cur.discard()
		}
	}()
	finish := func() error {
		f := cur
		cur = nil
		workers <- struct{}{}
		mu.Lock()
		err := failed
		mu.Unlock()
		if err != nil {
			<-workers
			f.discard()
			return err
		}
		wg.Go(func() {
			defer func() { <-workers }()
			p, dir, err := w.finishStream(f, known[f.shard])
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = cmp.Or(failed, err)
				return
			}
			prints[f.shard] = p
			if dir != "" && !slices.Contains(dirs, dir) {
				dirs = append(dirs, dir)
			}
		})
		return nil
	}
	err := scan(func(e syncer.Entry) error {
		if checkField(e.Login) != nil || checkField(e.Hash) != nil {
			return invalid([]syncer.Entry{e})
		}
		shard := w.Shard(e.Login)
		if cur == nil || cur.shard != shard {
			if cur != nil {
				if err := finish(); err != nil {
					return err
				}
			}
			if done[shard] {
				return fmt.Errorf("passwdfile: login %q of shard %q comes after other shards' logins", e.Login, shard)
			}
			done[shard] = true
			f, err := w.startStream(domain, shard)
			if err != nil {
				return err
			}
			cur = f
		}
		return cur.add(w, e)
	})
	if err == nil && cur != nil {
		err = finish()
	}
	wg.Wait()
	err = cmp.Or(err, failed)
	if err != nil {
		return nil, errors.Join(err, w.syncDirs(dirs))
	}
	// The shards that have no entry now.
	var rest []File
	for _, shard := range w.Shards() {
		if !done[shard] {
			rest = append(rest, File{Shard: shard, Remove: w.perDomain || w.shardDigits > 0})
		}
	}
	restPrints, err := w.UpdatePrints(domain, rest, true)
	for i, f := range rest {
		if !f.Remove && err == nil {
			prints[f.Shard] = restPrints[i]
		}
	}
	return prints, errors.Join(err, w.syncDirs(dirs))
}

// streamFile is one file being streamed into its temporary file.
type streamFile struct {
	shard, path, tmp string
	f                *os.File
	buf              []byte // aligned for O_DIRECT
	line             []byte
	size, lines      int64
	sum              uint64
}

func (w *Writer) startStream(domain, shard string) (*streamFile, error) {
	path, err := w.path(domain, shard)
	if err != nil {
		return nil, err
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if err := w.ensureDir(dir); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("passwdfile: %w", err)
	}
	return &streamFile{shard: shard, path: path, tmp: f.Name(), f: f, buf: make([]byte, 0, 16<<10)}, nil
}

// add appends e's line, writing a chunk when the buffer holds one.
func (s *streamFile) add(w *Writer, e syncer.Entry) error {
	s.line = append(append(append(append(s.line[:0], e.Login...), ':'), e.Hash...), '\n')
	s.sum += crc64.Checksum(s.line, crcTable)
	s.lines++
	s.size += int64(len(s.line))
	if len(s.buf)+len(s.line) > cap(s.buf) && cap(s.buf) < streamChunk {
		// A file that outgrows the small first buffer (most shards do
		// not) gets a chunk's, aligned for O_DIRECT.
		s.buf = append(alignedGrow(nil, streamChunk+64<<10), s.buf...)
	}
	s.buf = append(s.buf, s.line...)
	if len(s.buf) < streamChunk {
		return nil
	}
	if err := w.writeChunk(s.f, s.buf[:streamChunk]); err != nil {
		return fmt.Errorf("passwdfile: writing %s: %w", s.path, err)
	}
	s.buf = s.buf[:copy(s.buf, s.buf[streamChunk:])]
	return nil
}

// writeChunk writes a whole chunk (a multiple of directAlign, at an
// aligned offset) with O_DIRECT when it can.
func (w *Writer) writeChunk(f *os.File, b []byte) error {
	if w.noDirect.Load() || uintptr(unsafe.Pointer(unsafe.SliceData(b)))&(directAlign-1) != 0 {
		_, err := f.Write(b)
		return err
	}
	err := directWrite(f, b)
	if errors.Is(err, errNoDirect) {
		w.noDirect.Store(true)
		// Nothing of b was written (the flag could not be set, or the
		// write was refused whole): write it through the page cache.
		if _, serr := f.Seek(0, io.SeekEnd); serr != nil {
			return serr
		}
		_, err = f.Write(b)
	}
	return err
}

func (s *streamFile) discard() {
	_ = s.f.Close()
	_ = os.Remove(s.tmp)
}

// finishStream writes the rest of s and puts it in place of its file,
// unless the file already holds the same: by known, when the file still
// matches it, or else by comparing them. It returns the file's fingerprint
// and its directory when that is to be synced.
func (w *Writer) finishStream(s *streamFile, known Print) (p Print, dir string, err error) {
	defer func() {
		if err != nil {
			s.discard()
			err = fmt.Errorf("passwdfile: writing %s: %w", s.path, err)
		}
	}()
	if _, err := s.f.Write(s.buf); err != nil {
		return Print{}, "", err
	}
	s.buf = nil
	st := w.lock(s.path)
	defer st.mu.Unlock()
	dir = filepath.Dir(s.path)
	fi, err := os.Lstat(s.path)
	exists := err == nil
	switch {
	case exists && !fi.Mode().IsRegular():
		return Print{}, "", fmt.Errorf("%s exists and is not a regular file (%v)", s.path, fi.Mode().Type())
	case !exists && !errors.Is(err, fs.ErrNotExist):
		return Print{}, "", err
	}
	p = Print{Size: s.size, Lines: s.lines, Sum: s.sum}
	if exists && fi.Size() == s.size && fi.Mode().Perm() == FileMode && w.groupIs(fi) &&
		(w.matches(fi, known) && known.sameContent(p) || !w.matches(fi, known) && sameBytes(s.path, s.tmp)) {
		// Left alone; its directory is synced all the same (it may be the
		// rename of a process that crashed before syncing it).
		s.discard()
		p.Ino, p.Mtime = inode(fi), fi.ModTime()
		return p, dir, nil
	}
	mtime := st.nextMtime(fi, exists, s.size, time.Now())
	if w.gid >= 0 {
		if err := s.f.Chown(-1, w.gid); err != nil {
			return Print{}, "", err
		}
	}
	if err := s.f.Chmod(FileMode); err != nil {
		return Print{}, "", err
	}
	if err := os.Chtimes(s.tmp, mtime, mtime); err != nil {
		return Print{}, "", err
	}
	if err := s.f.Sync(); err != nil {
		return Print{}, "", err
	}
	if err := s.f.Close(); err != nil {
		return Print{}, "", err
	}
	if w.beforeRename != nil {
		if err := w.beforeRename(s.tmp); err != nil {
			return Print{}, "", err
		}
	}
	if err := os.Rename(s.tmp, s.path); err != nil {
		st.lastIno = 0
		return Print{}, "", err
	}
	var ino uint64
	if fi, err := os.Lstat(s.path); err == nil {
		ino = inode(fi)
	}
	st.wrote(mtime, ino, s.size, s.size, int(s.lines))
	st.sum = s.sum
	st.buf, st.prev, st.spare = nil, nil, nil // the last render is not the file's now
	return st.print(), dir, nil
}

// sameBytes reports whether the files a and b have the same content.
func sameBytes(a, b string) bool {
	fa, err := os.Open(a)
	if err != nil {
		return false
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false
	}
	defer fb.Close()
	ra, rb := bufio.NewReaderSize(fa, 64<<10), bufio.NewReaderSize(fb, 64<<10)
	pa, pb := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, ea := io.ReadFull(ra, pa)
		nb, eb := io.ReadFull(rb, pb)
		if na != nb || !bytes.Equal(pa[:na], pb[:nb]) {
			return false
		}
		if ea != nil || eb != nil {
			return (ea == io.EOF || ea == io.ErrUnexpectedEOF) && (eb == io.EOF || eb == io.ErrUnexpectedEOF)
		}
	}
}
