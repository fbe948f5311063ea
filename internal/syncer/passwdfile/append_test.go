package passwdfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/syncer"
)

// entriesN returns n entries with logins u<from>... in order, lines of
// about 100 bytes.
func entriesN(from, n int) []syncer.Entry {
	out := make([]syncer.Entry, 0, n)
	for i := from; i < from+n; i++ {
		out = append(out, syncer.Entry{Login: fmt.Sprintf("u%05d@example.com", i), Hash: "{SSHA512}" + fmt.Sprintf("%076d", i)})
	}
	return out
}

// withAdded returns entries plus added, sorted.
func withAdded(entries, added []syncer.Entry) []syncer.Entry {
	out := append(slices.Clone(entries), added...)
	slices.SortFunc(out, byLogin)
	return out
}

func statIno(t *testing.T, path string) (os.FileInfo, uint64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi, inode(fi)
}

func TestAppendAddsLinesInPlace(t *testing.T) {
	for _, tmpl := range []string{"%d", "%d/%1Mu"} {
		t.Run(layoutName(tmpl), func(t *testing.T) {
			dir := t.TempDir()
			w := newWriter(t, filepath.Join(dir, tmpl), "")
			const domain = "example.com"
			// Every shard's file holds some logins before the appends.
			byShard := map[string][]syncer.Entry{}
			for _, e := range entriesN(0, 200) {
				byShard[w.Shard(e.Login)] = append(byShard[w.Shard(e.Login)], e)
			}
			var files []File
			for sh, es := range byShard {
				files = append(files, File{Shard: sh, Entries: es})
			}
			if err := w.Update(domain, files, false); err != nil {
				t.Fatal(err)
			}
			for round := range 3 {
				added := map[string][]syncer.Entry{}
				// Logins that sort before, among and after the existing ones.
				for _, e := range append(entriesN(10000+round*10, 3), syncer.Entry{Login: fmt.Sprintf("a%d@example.com", round), Hash: "{SSHA512}x"},
					syncer.Entry{Login: fmt.Sprintf("u%05d-x@example.com", 50+round), Hash: "{SSHA512}y"}) {
					added[w.Shard(e.Login)] = append(added[w.Shard(e.Login)], e)
				}
				var files []File
				inos := map[string]uint64{}
				olds := map[string][]byte{}
				for sh, add := range added {
					slices.SortFunc(add, byLogin)
					path := w.Path(domain, sh)
					_, inos[sh] = statIno(t, path)
					olds[sh], _ = os.ReadFile(path)
					next := withAdded(byShard[sh], add)
					files = append(files, File{Shard: sh, Entries: next, Append: true, Added: add})
					byShard[sh] = next
				}
				if err := w.Update(domain, files, false); err != nil {
					t.Fatal(err)
				}
				for sh, add := range added {
					path := w.Path(domain, sh)
					fi, ino := statIno(t, path)
					if ino != inos[sh] {
						t.Fatalf("round %d shard %q: the file was replaced (inode %d -> %d), not appended to", round, sh, inos[sh], ino)
					}
					data, _ := os.ReadFile(path)
					want := append(slices.Clone(olds[sh]), mustRender(t, add)...)
					if !bytes.Equal(data, want) {
						t.Fatalf("round %d shard %q: file\n%s\nwant the old lines, then\n%s", round, sh, data, mustRender(t, add))
					}
					if fi.ModTime().Nanosecond() != 0 || fi.Mode().Perm() != FileMode {
						t.Fatalf("mtime %v (want whole seconds), mode %v", fi.ModTime(), fi.Mode())
					}
					got, err := w.Read(domain, sh)
					if err != nil || !slices.Equal(got, byShard[sh]) {
						t.Fatalf("Read after append = %v, %v; want %v", got, err, byShard[sh])
					}
				}
			}
			// A change that is not only additions replaces the file with the
			// sorted whole.
			for sh, es := range byShard {
				es = es[1:]
				if err := w.Update(domain, []File{{Shard: sh, Entries: es}}, false); err != nil {
					t.Fatal(err)
				}
				if data, _ := os.ReadFile(w.Path(domain, sh)); !bytes.Equal(data, mustRender(t, es)) {
					t.Fatalf("shard %q after a removal:\n%s\nwant\n%s", sh, data, mustRender(t, es))
				}
			}
		})
	}
}

// TestAppendReplacesWhenInDoubt: a file the Writer cannot vouch for, or a
// caller's Added that does not add up, is replaced whole, never appended to.
// (That nothing but Added changed is the caller's word: the Writer checks
// what it can without reading every entry.)
func TestAppendReplacesWhenInDoubt(t *testing.T) {
	base := entriesN(0, 20)
	add := entriesN(100, 2)
	next := withAdded(base, add)
	for _, tc := range []struct {
		name    string
		before  func(t *testing.T, w *Writer, path string)
		entries []syncer.Entry
		added   []syncer.Entry
	}{
		{"file replaced behind the Writer", func(t *testing.T, _ *Writer, path string) {
			other := newWriter(t, path, "")
			if err := other.Write("", "", base); err != nil {
				t.Fatal(err)
			}
		}, next, add},
		{"file touched", func(t *testing.T, _ *Writer, path string) {
			future := time.Now().Add(time.Hour)
			if err := os.Chtimes(path, future, future); err != nil {
				t.Fatal(err)
			}
		}, next, add},
		{"file mode changed", func(t *testing.T, _ *Writer, path string) {
			if err := os.Chmod(path, 0o600); err != nil {
				t.Fatal(err)
			}
		}, next, add},
		{"file removed", func(t *testing.T, _ *Writer, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}, next, add},
		{"an entry dropped for each added", nil, withAdded(base[2:], add), add},
		{"added not in entries", nil, withAdded(base, entriesN(200, 2)), add},
		{"added unsorted", nil, next, []syncer.Entry{add[1], add[0]}},
		{"added invalid", nil, withAdded(base, []syncer.Entry{{Login: "bad:login@example.com", Hash: "{PLAIN}x"}, add[1]}),
			[]syncer.Entry{{Login: "bad:login@example.com", Hash: "{PLAIN}x"}, add[1]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "passwd")
			w := newWriter(t, path, "")
			if err := w.Write("", "", base); err != nil {
				t.Fatal(err)
			}
			if tc.before != nil {
				tc.before(t, w, path)
			}
			var ino uint64
			if _, err := os.Stat(path); err == nil {
				_, ino = statIno(t, path)
			}
			err := w.Update("", []File{{Entries: tc.entries, Append: true, Added: tc.added}}, false)
			want, rerr := Render(tc.entries)
			if rerr != nil { // invalid: the replacement reports it, nothing written
				if err == nil {
					t.Fatal("Update with an invalid entry succeeded")
				}
				if data, _ := os.ReadFile(path); !bytes.Equal(data, mustRender(t, base)) {
					t.Fatalf("the file changed:\n%s", data)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(path)
			if !bytes.Equal(data, want) {
				t.Fatalf("file\n%s\nwant it replaced, sorted:\n%s", data, want)
			}
			if _, now := statIno(t, path); now == ino {
				t.Fatal("the file kept its inode: appended to, not replaced")
			}
		})
	}
}

// TestAppendSafe: an append shows the sizes above the file's up to the new
// one, with the kernel's mtime for the write (no earlier than fileClock's
// time before it) and then with the mtime the
// Writer sets. It may start only when none of those pairs can be one the
// file has shown before, so that even an append cut short before its mtime
// is set leaves a pair Dovecot cannot have recorded for other content, and
// the mtime never goes back.
func TestAppendSafe(t *testing.T) {
	sec := func(s int64) time.Time { return time.Unix(s, 0) }
	const s0 = 1_000_000
	mid := sec(s0).Add(500 * time.Millisecond)
	st := &fileState{}
	st.wrote(sec(s0), 1, 130, 130, 2) // a version of 130 bytes, then
	st.wrote(sec(s0), 1, 100, 100, 1) // one of 100 (a deletion) in the same second
	for _, tc := range []struct {
		now      time.Time
		from, to int64
		want     bool
	}{
		{mid, 100, 120, true},                                      // 101-120 never shown in s0
		{mid, 100, 130, false},                                     // 130 was, with other content
		{mid, 100, 150, false},                                     // passing through 130
		{sec(s0 + 1), 100, 150, true},                              // a later second: all new
		{sec(s0 - 1).Add(900 * time.Millisecond), 100, 120, false}, // the file's mtime is ahead of the clock
	} {
		if got := st.appendSafe(tc.now, tc.from, tc.to); got != tc.want {
			t.Errorf("appendSafe(%v, %d, %d) = %v, want %v", tc.now.Sub(sec(s0)), tc.from, tc.to, got, tc.want)
		}
	}
	// The mtime after an append is the latest second of the three.
	if got := st.appendMtime(sec(s0+1).Add(time.Millisecond), mid); got.Unix() != s0+1 {
		t.Errorf("appendMtime after the kernel's clock moved on = %d, want %d", got.Unix(), s0+1)
	}
	if got := st.appendMtime(mid, mid); got.Unix() != s0 {
		t.Errorf("appendMtime within the second = %d, want %d", got.Unix(), s0)
	}
	// Recorded, the append's sizes count as seen in its second.
	st.wrote(sec(s0), 1, 100, 120, 2)
	if !st.seenSize(110) || st.appendSafe(mid, 105, 125) {
		t.Error("the sizes an append showed do not count as seen in its second")
	}
}

// fileClock is never ahead of the mtime the kernel gives an append (to the
// nanosecond where the file system keeps them), as appendSafe assumes.
func TestFileClockBoundsAppendMtimes(t *testing.T) {
	f, err := os.OpenFile(filepath.Join(t.TempDir(), "f"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !stampsLocally(f) {
		t.Skip("the test directory is not on a file system the Writer appends on")
	}
	for range 200 {
		before := fileClock()
		if _, err := f.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		fi, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		m := fi.ModTime()
		if m.Before(before) && (m.Nanosecond() != 0 || m.Unix() < before.Unix()) {
			t.Fatalf("an append's mtime %v is before fileClock's %v", m, before)
		}
	}
}

// An append cut short after its write(2), before the Writer sets the mtime,
// must not leave the file on a (second, size) pair it showed before with
// other content, nor with an mtime earlier than the file's: the Writer
// replaces the file instead of appending when it could.
func TestAppendCutShortLeavesANewPair(t *testing.T) {
	type pair struct{ sec, size int64 }
	stat := func(t *testing.T, path string) pair {
		fi, _ := statIno(t, path)
		return pair{fi.ModTime().Unix(), fi.Size()}
	}
	cut := errors.New("cut short")
	base := entriesN(0, 3)
	add := []syncer.Entry{{Login: "zz@example.com", Hash: "{SSHA512}zz"}}
	// The version before the last is exactly as long as the last plus add.
	earlier := append(slices.Clone(base[:2]), syncer.Entry{Login: base[2].Login, Hash: base[2].Hash + strings.Repeat("x", len(mustRender(t, add)))})
	t.Run("the size was shown in the second", func(t *testing.T) {
		for attempt := 0; ; attempt++ {
			path := filepath.Join(t.TempDir(), "passwd")
			w := newWriter(t, path, "")
			if err := w.Write("", "", earlier); err != nil {
				t.Fatal(err)
			}
			shown := stat(t, path)
			if err := w.Write("", "", base); err != nil {
				t.Fatal(err)
			}
			if stat(t, path).sec != shown.sec { // the clock moved on between the writes: again
				if attempt < 5 {
					continue
				}
				t.Fatal("could not write two versions within one second")
			}
			w.afterAppend = func() error { return cut }
			sameSecond := fileClock().Unix() == shown.sec
			err := w.Update("", []File{{Entries: withAdded(base, add), Append: true, Added: add}}, false)
			if sameSecond && err != nil {
				t.Fatalf("the append was tried (Update: %v); it should have been refused for a replacement", err)
			}
			got := stat(t, path)
			if got == shown {
				t.Fatalf("the file is back on %+v, which its earlier version showed (Update: %v)", got, err)
			}
			if got.sec < shown.sec {
				t.Fatalf("the file's mtime went back: %+v after %+v", got, shown)
			}
			return
		}
	})
	t.Run("the mtime is ahead of the clock", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "passwd")
		w := newWriter(t, path, "")
		// Two versions of one size: the second gets the next second.
		for _, h := range []string{"{SSHA512}aa", "{SSHA512}bb"} {
			if err := w.Write("", "", []syncer.Entry{{Login: "a@example.com", Hash: h}}); err != nil {
				t.Fatal(err)
			}
		}
		ahead := stat(t, path)
		if ahead.sec <= time.Now().Unix() {
			t.Skip("the clock caught up with the file's mtime before the append")
		}
		w.afterAppend = func() error { return cut }
		next := []syncer.Entry{{Login: "a@example.com", Hash: "{SSHA512}bb"}, {Login: "b@example.com", Hash: "{SSHA512}cc"}}
		behind := fileClock().Unix() < ahead.sec
		err := w.Update("", []File{{Entries: next, Append: true, Added: next[1:]}}, false)
		if behind && err != nil {
			t.Fatalf("the append was tried (Update: %v); it should have been refused for a replacement", err)
		}
		if got := stat(t, path); got.sec < ahead.sec {
			t.Fatalf("the file's mtime went back from %d to %d (Update: %v)", ahead.sec, got.sec, err)
		}
	})
}

// layoutName names a subtest after a path template without its '%': the
// test's temporary directory is named after the subtest, and a '%' in it
// would be expanded with the template, writing outside the directory.
func layoutName(tmpl string) string {
	return strings.ReplaceAll(tmpl, "%", "")
}
