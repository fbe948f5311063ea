package passwdfile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/smtpcreds/smtpcreds/internal/syncer"
)

// scanOf is a scan yielding entries grouped by shard, sorted within one,
// as ScanInOrder gives them.
func scanOf(w *Writer, entries []syncer.Entry) func(fn func(syncer.Entry) error) error {
	sorted := slices.Clone(entries)
	slices.SortFunc(sorted, func(a, b syncer.Entry) int {
		if c := byLogin(syncer.Entry{Login: w.Shard(a.Login)}, syncer.Entry{Login: w.Shard(b.Login)}); c != 0 {
			return c
		}
		return byLogin(a, b)
	})
	return func(fn func(syncer.Entry) error) error {
		for _, e := range sorted {
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	}
}

// Stream writes each shard's file as Update would from the whole entries
// (a large one in chunks, through O_DIRECT where the file system takes
// it), removes the files of shards left empty, leaves alone the files
// whose content is already right (known by a fingerprint or by comparing),
// and returns fingerprints that Holds and an append accept.
func TestStreamWritesAsUpdateWould(t *testing.T) {
	for _, tmpl := range []string{"%d", "%d/%1Mu"} {
		t.Run(layoutName(tmpl), func(t *testing.T) {
			dir := t.TempDir()
			w := newWriter(t, filepath.Join(dir, tmpl), "")
			const domain = "example.com"
			all := entriesN(0, 30000) // about 3 MB: chunks of 1 MiB
			byShard := map[string][]syncer.Entry{}
			for _, e := range all {
				byShard[w.Shard(e.Login)] = append(byShard[w.Shard(e.Login)], e)
			}
			// A stale file for a shard that will have no logins, when sharded.
			if w.Sharded() {
				for _, sh := range w.Shards() {
					if byShard[sh] == nil {
						t.Fatalf("shard %s empty: pick other logins", sh)
					}
				}
			}
			prints, err := w.Stream(domain, nil, scanOf(w, all))
			if err != nil {
				t.Fatal(err)
			}
			if len(prints) != len(byShard) {
				t.Fatalf("%d prints for %d shards", len(prints), len(byShard))
			}
			stats := map[string]os.FileInfo{}
			for sh, es := range byShard {
				path := w.Path(domain, sh)
				data, err := os.ReadFile(path)
				if err != nil || !bytes.Equal(data, mustRender(t, es)) {
					t.Fatalf("shard %q: %v; content differs from Render's", sh, err)
				}
				if !w.Holds(domain, sh, prints[sh]) || prints[sh].Lines != int64(len(es)) || prints[sh].Sum != lineSum(es) {
					t.Fatalf("shard %q: fingerprint %+v does not describe the file", sh, prints[sh])
				}
				stats[sh], _ = os.Stat(path)
			}
			noTempsUnder(t, dir)

			// The same content again, with and without fingerprints: left alone.
			for _, known := range []map[string]Print{prints, nil} {
				again, err := w.Stream(domain, known, scanOf(w, all))
				if err != nil {
					t.Fatal(err)
				}
				for sh := range byShard {
					fi, _ := os.Stat(w.Path(domain, sh))
					if inode(fi) != inode(stats[sh]) || !fi.ModTime().Equal(stats[sh].ModTime()) {
						t.Fatalf("shard %q rewritten though its content was the same (known %v)", sh, known != nil)
					}
					if again[sh] != prints[sh] {
						t.Fatalf("shard %q: fingerprint %+v, want %+v", sh, again[sh], prints[sh])
					}
				}
			}

			// An append vouched for by the fingerprint, from a Writer that did
			// not write the file (another process, or after a restart).
			other := newWriter(t, filepath.Join(dir, tmpl), "")
			add := syncer.Entry{Login: "zz-new@example.com", Hash: "{PLAIN}new"}
			sh := w.Shard(add.Login)
			known := prints[sh]
			got, err := other.UpdatePrints(domain, []File{{Shard: sh, Append: true, Added: []syncer.Entry{add}, Known: &known}}, false)
			if err != nil {
				t.Fatal(err)
			}
			if fi, _ := os.Stat(w.Path(domain, sh)); inode(fi) != known.Ino {
				t.Fatal("the file was replaced, not appended to")
			}
			byShard[sh] = append(byShard[sh], add)
			if got[0].Lines != known.Lines+1 || got[0].Sum != lineSum(byShard[sh]) || !w.Holds(domain, sh, got[0]) {
				t.Fatalf("fingerprint after the append %+v does not describe the file", got[0])
			}
			// The old fingerprint no longer holds: an append by it is refused.
			add2 := syncer.Entry{Hash: "{PLAIN}x"}
			for i := 0; add2.Login == "" || w.Shard(add2.Login) != sh; i++ {
				add2.Login = "zz-" + strconv.Itoa(i) + "@example.com"
			}
			_, err = other.UpdatePrints(domain, []File{{Shard: sh, Append: true, Added: []syncer.Entry{add2}, Known: &known}}, false)
			if !InDoubt(err) {
				t.Fatalf("append with a stale fingerprint: %v, want an error in doubt", err)
			}

			// Fewer logins: the emptied shards' files go.
			few := []syncer.Entry{all[0]}
			prints, err = w.Stream(domain, nil, scanOf(w, few))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range w.Shards() {
				_, err := os.Stat(w.Path(domain, s))
				if want := s == w.Shard(all[0].Login); (err == nil) != want {
					t.Fatalf("shard %q: exists %v, want %v", s, err == nil, want)
				}
			}
			if len(prints) != 1 {
				t.Fatalf("%d prints, want 1", len(prints))
			}

			// An invalid entry stops the stream, and leaves no temporary file.
			bad := append(slices.Clone(few), syncer.Entry{Login: "bad:x@example.com", Hash: "{PLAIN}x"})
			if _, err := w.Stream(domain, nil, scanOf(w, bad)); !errors.Is(err, ErrInvalidEntry) {
				t.Fatalf("Stream with an invalid entry: %v", err)
			}
			noTempsUnder(t, dir)
		})
	}
}

// noTempsUnder fails if a temporary file is left under dir.
func noTempsUnder(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Ext(path) != "" && bytes.Contains([]byte(filepath.Base(path)), []byte(".tmp-")) {
			t.Errorf("temporary file left: %s", path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
