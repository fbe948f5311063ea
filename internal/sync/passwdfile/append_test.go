package passwdfile

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// entriesN returns n entries with logins u<from>... in order.
func entriesN(from, n int) []Entry {
	var out []Entry
	for i := from; i < from+n; i++ {
		out = append(out, Entry{fmt.Sprintf("u%05d@example.com", i), fmt.Sprintf("{SSHA512}hash%05d", i)})
	}
	return out
}

// withAdded returns entries plus added, sorted.
func withAdded(entries, added []Entry) []Entry {
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
		t.Run(tmpl, func(t *testing.T) {
			dir := t.TempDir()
			w := newWriter(t, filepath.Join(dir, tmpl), "")
			const domain = "example.com"
			// Every shard's file holds some logins before the appends.
			byShard := map[string][]Entry{}
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
				added := map[string][]Entry{}
				// Logins that sort before, among and after the existing ones.
				for _, e := range append(entriesN(10000+round*10, 3), Entry{fmt.Sprintf("a%d@example.com", round), "{SSHA512}x"}) {
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
		entries []Entry
		added   []Entry
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
		{"added unsorted", nil, next, []Entry{add[1], add[0]}},
		{"added invalid", nil, withAdded(base, []Entry{{"bad:login@example.com", "{PLAIN}x"}, add[1]}),
			[]Entry{{"bad:login@example.com", "{PLAIN}x"}, add[1]}},
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

// TestAppendMtimeNeverRepeatsASeenPair: during an append the file shows the
// sizes between the old and the new one, with the second of the write; a
// later version of the file within that second must not show one of them,
// or Dovecot, having read a partial append, would never read it again.
func TestAppendMtimeNeverRepeatsASeenPair(t *testing.T) {
	sec := func(s int64) time.Time { return time.Unix(s, 0) }
	st := &fileState{}
	const s0 = 1_000_000
	st.wrote(sec(s0), 1, 100, 100, 1)

	// An append from 100 to 150 within s0 keeps s0 and counts 100-150 seen.
	m, from := st.appendMtime(sec(s0).Add(300*time.Millisecond), sec(s0).Add(400*time.Millisecond), 100, 150)
	if !m.Equal(sec(s0)) || from != 100 {
		t.Fatalf("append within the second: mtime %v, seen from %d; want %v, 100", m, from, sec(s0))
	}
	st.wrote(m, 1, from, 150, 2)
	for _, size := range []int64{100, 120, 150} {
		fi := fakeInfo{size: 150, mtime: sec(s0), ino: 1}
		if got := st.nextMtime(fi, true, size, sec(s0).Add(500*time.Millisecond)); got.Unix() != s0+1 {
			t.Fatalf("rewrite to %d bytes within the append's second: mtime %d, want %d", size, got.Unix(), s0+1)
		}
	}
	if got := st.nextMtime(fakeInfo{size: 150, mtime: sec(s0), ino: 1}, true, 99, sec(s0).Add(500*time.Millisecond)); got.Unix() != s0 {
		t.Fatalf("rewrite to a size never shown: mtime %d, want %d (the current second)", got.Unix(), s0)
	}

	// An append whose final size the second has shown moves on a second.
	st2 := &fileState{}
	st2.wrote(sec(s0), 1, 100, 200, 1) // e.g. an earlier version of 200 bytes
	st2.wrote(sec(s0), 2, 150, 150, 1)
	if m, from := st2.appendMtime(sec(s0), sec(s0), 150, 200); m.Unix() != s0+1 || from != 200 {
		t.Fatalf("append to a size seen in the second: mtime %d, seen from %d; want %d, 200", m.Unix(), from, s0+1)
	}
	// A write in a later second than the file's mtime starts afresh.
	if m, from := st2.appendMtime(sec(s0+5), sec(s0+5), 150, 200); m.Unix() != s0+5 || from != 150 {
		t.Fatalf("append in a later second: mtime %d, seen from %d; want %d, 150", m.Unix(), from, s0+5)
	}
	// The mtime never goes back, even when the previous one is ahead of the clock.
	if m, _ := st2.appendMtime(sec(s0-3), sec(s0-3), 150, 250); m.Unix() != s0 {
		t.Fatalf("append behind the previous mtime: %d, want %d", m.Unix(), s0)
	}
}

type fakeInfo struct {
	os.FileInfo
	size  int64
	mtime time.Time
	ino   uint64
}

func (f fakeInfo) Size() int64        { return f.size }
func (f fakeInfo) ModTime() time.Time { return f.mtime }
func (f fakeInfo) Sys() any           { return &syscall.Stat_t{Ino: f.ino} }
