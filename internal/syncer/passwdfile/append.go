package passwdfile

import (
	"cmp"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/syncer"
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
//     it reads it, and reads it again when either changes. From the
//     write(2) on, the file shows the kernel's mtime for the write (d) with
//     any size between the old one and the new one, and, once the Writer
//     has set the mtime, that mtime with any of those sizes too (stat reads
//     the size before the mtime). The Writer appends only when d's second
//     cannot be earlier than the file's mtime, nor equal to it with one of
//     those sizes already shown in it (appendSafe): so every pair the
//     append shows is new, and the mtime never goes back, even if the
//     process dies before it sets the mtime. Otherwise it replaces the
//     file, as for any other change.
//   - If the append fails half way, the Writer forgets the file (lastIno
//     0), and the next write replaces it whole, with a new mtime.
//
// All this rests on the local kernel stamping the file's times (see
// stampsLocally): on a network file system the Writer always replaces.

// appendLines appends the lines of added to the file at path when the file
// is still the one st last recorded and entries is its entries plus added
// (see File.Append; entries nil: the caller vouches for it with a Known
// print, which st has adopted). It reports false, having written nothing,
// when it cannot tell, and the caller then replaces the file; true with an
// error when the append failed, leaving the file in doubt.
func (w *Writer) appendLines(path string, st *fileState, entries, added []syncer.Entry) (bool, error) {
	if st.lastIno == 0 || entries != nil && len(entries) != st.lines+len(added) || !w.addedIn(entries, added) {
		return false, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false, nil // the replacement reports what is wrong
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != FileMode || inode(fi) != st.lastIno ||
		fi.Size() != st.size || !fi.ModTime().Equal(st.lastMtime) || !w.groupIs(fi) || !stampsLocally(f) {
		return false, nil
	}
	if len(added) == 0 {
		return true, nil
	}
	data, err := appendRender(nil, added)
	if err != nil {
		return false, nil // the replacement reports the invalid entry
	}
	from, lines := st.size, st.lines
	if !st.appendSafe(fileClock(), from, from+int64(len(data))) {
		return false, nil
	}
	st.lastIno = 0 // in doubt until the append is done
	fail := func(err error) (bool, error) {
		return true, fmt.Errorf("passwdfile: appending to %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if w.afterAppend != nil {
		if err := w.afterAppend(); err != nil {
			return fail(err)
		}
	}
	during, err := f.Stat() // the mtime the kernel gave the file for the write
	if err != nil {
		return fail(err)
	}
	size := from + int64(len(data))
	mtime := st.appendMtime(during.ModTime(), time.Now())
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	st.wrote(mtime, inode(fi), from, size, lines+len(added))
	st.sum += lineSum(added)
	return true, nil
}

// adopt makes st describe the file that known describes, as a Known print
// vouches for it, unless st already does (it wrote that file). The sizes
// such a file showed within its mtime's second are not known here (another
// Writer wrote it): an append may only start once the clock has left that
// second (see appendSafe), so adopt waits for it when the clock is in it,
// at most a second, which only a file written moments ago by another
// process costs.
func (st *fileState) adopt(known Print) {
	if st.lastIno == known.Ino && st.size == known.Size && st.lastMtime.Equal(known.Mtime) {
		st.lines, st.sum = int(known.Lines), known.Sum
		return
	}
	st.lastIno, st.size, st.lastMtime, st.lines, st.sum = known.Ino, known.Size, known.Mtime, int(known.Lines), known.Sum
	st.seen = st.seen[:0]
	for fileClock().Unix() == known.Mtime.Unix() { // (an mtime ahead of the clock: no append, see appendSafe)
		time.Sleep(max(time.Until(known.Mtime.Add(time.Second)), time.Millisecond))
	}
}

// addedIn reports whether added is strictly sorted and every entry of it
// in entries (sorted) with the same hash; entries nil: only the order is
// checked. (appendRender checks the fields.)
func (w *Writer) addedIn(entries, added []syncer.Entry) bool {
	for i, a := range added {
		if i > 0 && added[i-1].Login >= a.Login {
			return false
		}
		if entries == nil {
			continue
		}
		j, found := slices.BinarySearchFunc(entries, a.Login, func(e syncer.Entry, l string) int { return cmp.Compare(e.Login, l) })
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

// clockSlack is how far the kernel's clock for file times may lag the
// process's where fileClock cannot read it: a tick at HZ=100, doubled.
const clockSlack = 20 * time.Millisecond

// appendSafe reports whether an append from size from to size to may start
// now, given fileClock's time (clock): the second of the kernel's mtime for
// the write is then at least the file's mtime's, and if it may be that same
// second, none of the sizes above from up to to has been shown in it. (The
// file shows from in that second already, and no other version will: seen
// holds it.)
func (st *fileState) appendSafe(clock time.Time, from, to int64) bool {
	last := st.lastMtime.Unix()
	switch sec := clock.Unix(); {
	case sec < last: // the file's mtime is ahead (a same-size rewrite's)
		return false
	case sec == last:
		for _, r := range st.seen {
			if r.lo <= to && r.hi > from {
				return false
			}
		}
	}
	return true
}

// appendMtime returns the mtime to give the file after an append that
// appendSafe allowed, given the mtime the kernel gave it for the write
// (during) and the time now: the latest of the three, in whole seconds.
// The pairs the append showed in that second are new (see appendSafe);
// the caller records its sizes as seen in it.
func (st *fileState) appendMtime(during, now time.Time) time.Time {
	return time.Unix(max(now.Unix(), during.Unix(), st.lastMtime.Unix()), 0)
}
