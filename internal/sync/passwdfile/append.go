package passwdfile

import (
	"cmp"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"
)

// A change that only adds logins (a new credential, the common change) is
// appended to the file in place, since Dovecot does not mind the order of
// the lines: it costs the lines written, not the file's size. The file
// stays the one Dovecot has open, so three things are kept true.
//
//   - Lines already in the file are never touched, so a reader sees every
//     confirmed line whole at any time. The last line may be partial while
//     the append is under way (Dovecot reads a partial last line as a
//     login); it is a line of this change, which nobody has been told is
//     synced yet.
//   - Dovecot records the mtime (whole seconds) and size of the file when
//     it reads it, and reads it again when either changes. During the
//     append the file may show any size between the old and the new one,
//     with the kernel's mtime of the write: the Writer then sets the mtime
//     itself (see appendMtime) and counts all those sizes as seen in that
//     second, so that no later version of the file shows a pair Dovecot may
//     have recorded for other content.
//   - If the append fails half way, the Writer forgets the file (lastIno
//     0), and the next write replaces it whole, with a new mtime.

// appendLines appends the lines of added to the file at path when the file
// is still the one st last recorded and entries is its entries plus added
// (see File.Append). It reports false, having written nothing, when it
// cannot tell, and the caller then replaces the file; true with an error
// when the append failed, leaving the file in doubt.
func (w *Writer) appendLines(path string, st *fileState, entries, added []Entry) (bool, error) {
	if st.lastIno == 0 || len(entries) != st.lines+len(added) || !w.addedIn(entries, added) {
		return false, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return false, nil // the replacement reports what is wrong
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != FileMode || inode(fi) != st.lastIno ||
		fi.Size() != st.size || !fi.ModTime().Equal(st.lastMtime) || !w.groupIs(fi) {
		return false, nil
	}
	if len(added) == 0 {
		return true, nil
	}
	n := 0
	for _, e := range added {
		n += len(e.Login) + len(e.Hash) + 2
	}
	data := make([]byte, 0, n)
	for _, e := range added {
		data = append(data, e.Login...)
		data = append(data, ':')
		data = append(data, e.Hash...)
		data = append(data, '\n')
	}
	from, lines := st.size, st.lines
	st.lastIno = 0 // in doubt until the append is done
	fail := func(err error) (bool, error) {
		return true, fmt.Errorf("passwdfile: appending to %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	during, err := f.Stat() // the mtime the kernel gave the file for the write
	if err != nil {
		return fail(err)
	}
	size := from + int64(len(data))
	mtime, seenFrom := st.appendMtime(during.ModTime(), time.Now(), from, size)
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	st.wrote(mtime, inode(fi), seenFrom, size, lines+len(added))
	return true, nil
}

// addedIn reports whether added is strictly sorted, every entry valid and
// in entries (sorted) with the same hash.
func (w *Writer) addedIn(entries, added []Entry) bool {
	for i, a := range added {
		if i > 0 && added[i-1].Login >= a.Login || checkField(a.Login) != nil || checkField(a.Hash) != nil {
			return false
		}
		j, found := slices.BinarySearchFunc(entries, a.Login, func(e Entry, l string) int { return cmp.Compare(e.Login, l) })
		if !found || entries[j].Hash != a.Hash {
			return false
		}
	}
	return true
}

// groupIs reports whether fi has the Writer's group, if it sets one.
func (w *Writer) groupIs(fi os.FileInfo) bool {
	if w.gid < 0 {
		return true
	}
	s, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(s.Gid) == w.gid
}

// appendMtime returns the mtime to give the file after an append from size
// from to size to, given the mtime the kernel gave it for the write
// (during) and the time now, and the smallest size it may have shown with
// that mtime's second. The mtime is the latest of now, during and the
// previous mtime, in whole seconds, and one second more when the previous
// mtime's second has already shown size to. The sizes from from to to
// were on show with the kernel's mtime and, for a reader that caught the
// mtime before the size, with the previous one: they count as seen when
// either is the second returned.
func (st *fileState) appendMtime(during, now time.Time, from, to int64) (time.Time, int64) {
	last := st.lastMtime.Unix()
	sec := max(now.Unix(), during.Unix(), last)
	if sec == last && st.seenSize(to) {
		sec++
	}
	seenFrom := to
	if sec == during.Unix() || sec == last {
		seenFrom = from
	}
	return time.Unix(sec, 0), seenFrom
}
