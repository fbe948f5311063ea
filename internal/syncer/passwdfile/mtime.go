// The mtime bookkeeping that makes Dovecot notice every write (see the
// package documentation).

package passwdfile

import (
	"bytes"
	"io/fs"
	"os"
	"syscall"
	"time"
)

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
