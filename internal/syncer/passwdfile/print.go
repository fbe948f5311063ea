// Fingerprints: what a file the Writer wrote holds, recorded with the
// sync apply that wrote it, so that a process that did not write it (or
// this one after a restart) can trust it without reading it.

package passwdfile

import (
	"errors"
	"fmt"
	"hash/crc64"
	"io/fs"
	"os"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/syncer"
)

// Print is a file's fingerprint: its identity on disk (inode, size and
// mtime, which any write changes: the Writer gives every version a new
// (mtime, size) pair, see the package documentation) and what it holds
// (its number of lines, and the sum of the CRC-64 of each line, which does
// not depend on the lines' order, so that appending lines adds theirs).
// The zero Print is no file.
type Print struct {
	Ino   uint64
	Size  int64
	Mtime time.Time // whole seconds
	Lines int64
	Sum   uint64
}

// String encodes p for storage ("" for no file); ParsePrint decodes it.
func (p Print) String() string {
	if p == (Print{}) {
		return ""
	}
	return fmt.Sprintf("v1 %d %d %d %d %x", p.Ino, p.Size, p.Mtime.Unix(), p.Lines, p.Sum)
}

// ParsePrint decodes what Print.String returned.
func ParsePrint(s string) (Print, error) {
	if s == "" {
		return Print{}, nil
	}
	var p Print
	var mtime int64
	if _, err := fmt.Sscanf(s, "v1 %d %d %d %d %x", &p.Ino, &p.Size, &mtime, &p.Lines, &p.Sum); err != nil {
		return Print{}, fmt.Errorf("passwdfile: fingerprint %q: %w", s, err)
	}
	p.Mtime = time.Unix(mtime, 0)
	return p, nil
}

// sameContent reports whether p and q describe the same lines (in any
// order).
func (p Print) sameContent(q Print) bool {
	return p.Size == q.Size && p.Lines == q.Lines && p.Sum == q.Sum
}

var crcTable = crc64.MakeTable(crc64.ECMA)

// lineSum is the sum of the CRC-64 of each "login:hash\n" line of entries.
func lineSum(entries []syncer.Entry) uint64 {
	var sum uint64
	var buf []byte
	for _, e := range entries {
		buf = append(append(append(append(buf[:0], e.Login...), ':'), e.Hash...), '\n')
		sum += crc64.Checksum(buf, crcTable)
	}
	return sum
}

// errInDoubt means a file is not as its fingerprint says: it was changed
// behind the Writer's back, or by a write whose apply did not commit.
var errInDoubt = errors.New("passwdfile: file not as its fingerprint says")

// matches reports whether fi, the file at a path (or no file, when fi is
// nil), is the one p describes, with the mode and group the Writer gives.
func (w *Writer) matches(fi fs.FileInfo, p Print) bool {
	if fi == nil || p == (Print{}) {
		return fi == nil && p == (Print{})
	}
	return fi.Mode().IsRegular() && fi.Mode().Perm() == FileMode && w.groupIs(fi) && p.Ino != 0 &&
		inode(fi) == p.Ino && fi.Size() == p.Size && fi.ModTime().Equal(p.Mtime)
}

// Holds reports whether the file Path(domain, shard) is still the one p
// describes (for the zero Print: that there is no file), by its inode,
// size, mtime, mode and group, without reading it.
func (w *Writer) Holds(domain, shard string, p Print) bool {
	path, err := w.path(domain, shard)
	if err != nil {
		return false
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return errors.Is(err, fs.ErrNotExist) && p == (Print{})
	}
	return w.matches(fi, p)
}

// print is what st records of the file it last wrote.
func (st *fileState) print() Print {
	if st.lastIno == 0 {
		return Print{Mtime: st.lastMtime, Size: st.size, Lines: int64(st.lines), Sum: st.sum} // never matches a file
	}
	return Print{Ino: st.lastIno, Size: st.size, Mtime: st.lastMtime, Lines: int64(st.lines), Sum: st.sum}
}
