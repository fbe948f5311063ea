package passwdfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/syncer"
)

func newWriter(t *testing.T, tmpl, group string) *Writer {
	t.Helper()
	w, err := New(tmpl, group)
	if err != nil {
		t.Fatalf("New(%q, %q): %v", tmpl, group, err)
	}
	return w
}

// noTemps fails if dir holds anything but the named files.
func noTemps(t *testing.T, dir string, want ...string) {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, de := range des {
		got = append(got, de.Name())
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("directory %s holds %q, want %q", dir, got, want)
	}
}

func TestWriteContentAndMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "passwd")
	w := newWriter(t, path, "")
	if w.PerDomain() {
		t.Fatal("PerDomain() = true for a single-file template")
	}
	if fi, err := os.Stat(filepath.Join(dir, "sub")); err != nil || fi.Mode().Perm() != DirMode {
		t.Fatalf("New did not create the directory with mode %v: %v, %v", DirMode, fi, err)
	}
	entries := []syncer.Entry{
		{Login: "zed@example.com", Hash: "{SHA512-CRYPT}$6$abc$def"},
		{Login: "alice@example.org", Hash: "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA"},
		{Login: "bob@example.com", Hash: "{SSHA512}AAAA"},
	}
	orig := append([]syncer.Entry(nil), entries...)
	if err := w.Write("ignored-in-single-file-mode", "", entries); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(entries) != fmt.Sprint(orig) {
		t.Fatal("Write reordered the caller's slice")
	}
	if w.Path("", "") != path || w.Path("x.example", "") != path {
		t.Fatalf("Path = %q, want %q", w.Path("", ""), path)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "alice@example.org:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA\n" +
		"bob@example.com:{SSHA512}AAAA\n" +
		"zed@example.com:{SHA512-CRYPT}$6$abc$def\n"
	if string(got) != want {
		t.Fatalf("content:\n%s\nwant:\n%s", got, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != FileMode {
		t.Fatalf("mode %v, want %v", fi.Mode(), FileMode)
	}
	parsed, err := Parse(got)
	if err != nil {
		t.Fatal(err)
	}
	if len(parsed) != 3 || parsed[0] != orig[1] || parsed[1] != orig[2] || parsed[2] != orig[0] {
		t.Fatalf("Parse = %v", parsed)
	}
	noTemps(t, filepath.Join(dir, "sub"), "passwd")

	// An empty list writes an empty file.
	if err := w.Write("", "", nil); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(path); err != nil || len(got) != 0 {
		t.Fatalf("after empty write: %q, %v", got, err)
	}
	if err := w.Remove("", ""); !errors.Is(err, ErrSingleFile) {
		t.Fatalf("Remove in single-file mode: %v, want ErrSingleFile", err)
	}
	noTemps(t, filepath.Join(dir, "sub"), "passwd")
}

func TestMtimeAdvances(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "passwd")
	w := newWriter(t, path, "")
	var prev int64
	var prevSize int64 = -1
	for i := range 3 {
		// Same length every time: only the mtime can tell Dovecot.
		if err := w.Write("", "", []syncer.Entry{{Login: "a@example.com", Hash: fmt.Sprintf("{PLAIN}pw%d", i)}}); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if prevSize >= 0 && fi.Size() != prevSize {
			t.Fatalf("size changed: %d -> %d", prevSize, fi.Size())
		}
		sec := fi.ModTime().Unix()
		if i > 0 && sec <= prev {
			t.Fatalf("rewrite %d: mtime %d s not after previous %d s", i, sec, prev)
		}
		prev, prevSize = sec, fi.Size()
	}

	// A file written by someone else with a future mtime is still passed.
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(path, future, future); err != nil {
		t.Fatal(err)
	}
	if err := w.Write("", "", []syncer.Entry{{Login: "a@example.com", Hash: "{PLAIN}pwX"}}); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.ModTime().Unix() <= future.Unix() {
		t.Fatalf("mtime %v not after the previous file's %v", fi.ModTime(), future)
	}
}

func TestMtimeAdvancesAcrossRemove(t *testing.T) {
	dir := t.TempDir()
	w := newWriter(t, filepath.Join(dir, "%d"), "")
	e := func(h string) []syncer.Entry { return []syncer.Entry{{Login: "a@example.com", Hash: h}} }
	mtime := func() int64 {
		t.Helper()
		fi, err := os.Stat(w.Path("example.com", ""))
		if err != nil {
			t.Fatal(err)
		}
		return fi.ModTime().Unix()
	}
	write := func(w *Writer, h string) {
		t.Helper()
		if err := w.Write("example.com", "", e(h)); err != nil {
			t.Fatal(err)
		}
	}
	// removeThenWrite has w remove the file and write a new one of the same
	// size, whose mtime must be later than the removed file's.
	removeThenWrite := func(w *Writer, h, what string) {
		t.Helper()
		before := mtime()
		if err := w.Remove("example.com", ""); err != nil {
			t.Fatal(err)
		}
		write(w, h)
		if after := mtime(); after <= before {
			t.Fatalf("%s: mtime %d s, not after the removed file's %d s", what, after, before)
		}
	}
	write(w, "{PLAIN}one")
	removeThenWrite(w, "{PLAIN}two", "remove and write")

	// Same-size rewrites put the mtime ahead of the clock; a Writer that
	// did not write the file (after a restart) removes it and writes one
	// of the same size: its mtime must pass the removed file's, or it
	// could repeat the pair Dovecot holds.
	write(w, "{PLAIN}thr")
	write(w, "{PLAIN}fou")
	removeThenWrite(newWriter(t, filepath.Join(dir, "%d"), ""), "{PLAIN}fiv", "after a restart, remove and write")
}

func TestPerDomain(t *testing.T) {
	dir := t.TempDir()
	w := newWriter(t, filepath.Join(dir, "%d", "passwd.%d"), "")
	if !w.PerDomain() {
		t.Fatal("PerDomain() = false")
	}
	want := filepath.Join(dir, "example.com", "passwd.example.com")
	if got := w.Path("example.com", ""); got != want {
		t.Fatalf("Path = %q, want %q", got, want)
	}
	if err := w.Write("example.com", "", []syncer.Entry{{Login: "a@example.com", Hash: "{PLAIN}x"}}); err != nil {
		t.Fatal(err)
	}
	if err := w.Write("xn--bcher-kva.example", "", []syncer.Entry{{Login: "b@xn--bcher-kva.example", Hash: "{PLAIN}y"}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(want); string(got) != "a@example.com:{PLAIN}x\n" {
		t.Fatalf("content %q", got)
	}
	if fi, err := os.Stat(filepath.Join(dir, "example.com")); err != nil || fi.Mode().Perm() != DirMode {
		t.Fatalf("per-domain directory: %v, %v", fi, err)
	}
	noTemps(t, filepath.Join(dir, "example.com"), "passwd.example.com")

	for _, d := range []string{"", "../x", "a/b", "..", ".", "x..y", ".example.com", "example.com.",
		"Example.com", "a b.com", "-a.com", "a-.com", "a%d.com", "a\x00.com", "a\\b.com",
		strings.Repeat("a", 64) + ".com", strings.Repeat("a.", 127) + "aa"} {
		if p := w.Path(d, ""); p != "" {
			t.Errorf("Path(%q) = %q, want rejection", d, p)
		}
		if err := w.Write(d, "", nil); !errors.Is(err, ErrInvalidDomain) {
			t.Errorf("Write(%q): %v, want ErrInvalidDomain", d, err)
		}
		if err := w.Remove(d, ""); !errors.Is(err, ErrInvalidDomain) {
			t.Errorf("Remove(%q): %v, want ErrInvalidDomain", d, err)
		}
	}
	noTemps(t, dir, "example.com", "xn--bcher-kva.example")

	if err := w.Remove("example.com", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(want); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after Remove: %v", err)
	}
	if err := w.Remove("example.com", ""); err != nil {
		t.Fatalf("Remove of an absent file: %v", err)
	}
	if err := w.Remove("never.example", ""); err != nil {
		t.Fatalf("Remove in an absent directory: %v", err)
	}
}

func TestNewRejects(t *testing.T) {
	dir := t.TempDir()
	for _, tmpl := range []string{"", dir + "/", dir + "/%u", dir + "/%%d", dir + "/%", dir + "/..", dir + "/a\x00"} {
		if _, err := New(tmpl, ""); err == nil {
			t.Errorf("New(%q) succeeded", tmpl)
		}
	}
	if _, err := New(filepath.Join(dir, "p"), "no-such-group-smtpcreds-test"); err == nil {
		t.Error("New with an unknown group succeeded")
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(filepath.Join(file, "passwd"), ""); err == nil {
		t.Error("New under a regular file succeeded")
	}
}

func TestRender(t *testing.T) {
	bad := []syncer.Entry{
		{Login: "", Hash: "{PLAIN}x"},
		{Login: "a@b", Hash: ""},
		{Login: "a:b@c", Hash: "{PLAIN}x"},
		{Login: "a@b", Hash: "{PLAIN}x:1000:1000"},
		{Login: "a@b\n", Hash: "{PLAIN}x"},
		{Login: "a@b", Hash: "{PLAIN}x\nroot@b:{PLAIN}y"},
		{Login: "a@b\r", Hash: "{PLAIN}x"},
		{Login: "a@b", Hash: "{PLAIN}\rx"},
		{Login: "a\x00@b", Hash: "{PLAIN}x"},
		{Login: "a@b", Hash: "{PLAIN}x\x00"},
		{Login: "a@b", Hash: "{PLAIN}x\t"},
		{Login: "#a@b", Hash: "{PLAIN}x"},
		{Login: "a@b", Hash: "#{PLAIN}x"},
	}
	for _, e := range bad {
		if b, err := Render([]syncer.Entry{{Login: "ok@b", Hash: "{PLAIN}ok"}, e}); !errors.Is(err, ErrInvalidEntry) {
			t.Errorf("Render(%q) = %q, %v; want ErrInvalidEntry", e, b, err)
		} else if strings.Contains(err.Error(), e.Hash) && e.Hash != "" {
			t.Errorf("error %q reveals the hash", err)
		}
	}
	if _, err := Render([]syncer.Entry{{Login: "a@b", Hash: "{PLAIN}1"}, {Login: "a@b", Hash: "{PLAIN}2"}}); !errors.Is(err, ErrInvalidEntry) {
		t.Errorf("duplicate login: %v", err)
	}
	if b, err := Render(nil); err != nil || len(b) != 0 {
		t.Errorf("Render(nil) = %q, %v", b, err)
	}
	// '#' inside a field is harmless.
	if b, err := Render([]syncer.Entry{{Login: "a#1@b", Hash: "{PLAIN}x#y"}}); err != nil || string(b) != "a#1@b:{PLAIN}x#y\n" {
		t.Errorf("Render with inner '#' = %q, %v", b, err)
	}
}

func TestParse(t *testing.T) {
	in := []syncer.Entry{{Login: "b@x", Hash: "{PLAIN}2"}, {Login: "a@x", Hash: "{PLAIN}1"}, {Login: "c@x", Hash: "{SHA512-CRYPT}$6$s$h"}}
	b, err := Render(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(out) != fmt.Sprint([]syncer.Entry{in[1], in[0], in[2]}) {
		t.Fatalf("round trip: %v", out)
	}
	if again, _ := Render(out); !bytes.Equal(again, b) {
		t.Fatal("Render(Parse(x)) != x")
	}
	// Appended lines come after the sorted ones: Parse returns them sorted.
	if out, err := Parse([]byte("a@x:{PLAIN}1\nc@x:{PLAIN}3\nb@x:{PLAIN}2\n")); err != nil ||
		!slices.Equal(out, []syncer.Entry{{Login: "a@x", Hash: "{PLAIN}1"}, {Login: "b@x", Hash: "{PLAIN}2"}, {Login: "c@x", Hash: "{PLAIN}3"}}) {
		t.Fatalf("Parse(appended lines) = %v, %v", out, err)
	}
	if out, err := Parse(nil); err != nil || len(out) != 0 {
		t.Fatalf("Parse(nil) = %v, %v", out, err)
	}
	for _, s := range []string{
		"a@x:{PLAIN}1",                 // truncated: no final newline
		"a@x:{PLAIN}1\nb@x:{PL",        // truncated mid-line
		"\n",                           // blank line
		"a@x:{PLAIN}1\n\n",             // blank line
		"# comment\n",                  // comment
		"a@x\n",                        // no colon
		"a@x:{PLAIN}1:1000:1000::::\n", // extra fields
		":{PLAIN}1\n",                  // empty login
		"a@x:\n",                       // empty hash
		"a@x:{PLAIN}1\na@x:{PLAIN}2\n", // duplicate
		"a@x:{PLAIN}1\nc@x:{PLAIN}3\nb@x:{PLAIN}2\na@x:{PLAIN}4\n", // duplicate, not in a row
		"a@x:{PLAIN}1\r\n",   // CR
		"a@x:{PLAIN}\x001\n", // NUL
	} {
		if out, err := Parse([]byte(s)); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q) = %v, %v; want ErrMalformed", s, out, err)
		}
	}
}

func TestAtomicRewrites(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "passwd")
	w := newWriter(t, path, "")

	// Two versions of different sizes; a torn or partial file would match
	// neither.
	small := []syncer.Entry{{Login: "only@example.com", Hash: "{PLAIN}small"}}
	var big []syncer.Entry
	for i := range 200 {
		big = append(big, syncer.Entry{Login: fmt.Sprintf("user%03d@example.com", i), Hash: fmt.Sprintf("{SSHA512}%064d", i)})
	}
	smallB, _ := Render(small)
	bigB, _ := Render(big)
	if err := w.Write("", "", small); err != nil {
		t.Fatal(err)
	}

	const rewrites = 200
	done := make(chan struct{})
	var reads, bad int
	var firstBad string
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			b, err := os.ReadFile(path)
			reads++
			if err != nil {
				bad++
				firstBad = err.Error()
				continue
			}
			if _, err := Parse(b); err != nil || !(bytes.Equal(b, smallB) || bytes.Equal(b, bigB)) {
				bad++
				if firstBad == "" {
					firstBad = fmt.Sprintf("%d bytes: %v", len(b), err)
				}
			}
		}
	})
	for i := range rewrites {
		e := small
		if i%2 == 0 {
			e = big
		}
		if err := w.Write("", "", e); err != nil {
			close(done)
			wg.Wait()
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	if bad > 0 {
		t.Fatalf("%d of %d reads saw a bad file, first: %s", bad, reads, firstBad)
	}
	if reads == 0 {
		t.Fatal("reader never ran")
	}
	t.Logf("%d reads during %d rewrites", reads, rewrites)
	noTemps(t, dir, "passwd")
}

func TestConcurrentWritesSamePath(t *testing.T) {
	dir := t.TempDir()
	w := newWriter(t, filepath.Join(dir, "%d.passwd"), "")
	var wg sync.WaitGroup
	valid := map[string]bool{}
	for i := range 8 {
		e := []syncer.Entry{{Login: fmt.Sprintf("u%d@example.com", i), Hash: "{PLAIN}x"}}
		b, _ := Render(e)
		valid[string(b)] = true
		wg.Go(func() {
			for range 10 {
				if err := w.Write("example.com", "", e); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b, err := os.ReadFile(w.Path("example.com", ""))
	if err != nil || !valid[string(b)] {
		t.Fatalf("final content %q, %v", b, err)
	}
	noTemps(t, dir, "example.com.passwd")
}

func TestFailureLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "passwd")
	w := newWriter(t, path, "")
	if err := w.Write("", "", []syncer.Entry{{Login: "a@example.com", Hash: "{PLAIN}old"}}); err != nil {
		t.Fatal(err)
	}

	t.Run("before rename", func(t *testing.T) {
		boom := errors.New("boom")
		var sawTemp string
		w.beforeRename = func(tmp string) error {
			sawTemp = tmp
			if _, err := os.Stat(tmp); err != nil {
				t.Errorf("temp file missing before rename: %v", err)
			}
			return boom
		}
		defer func() { w.beforeRename = nil }()
		if err := w.Write("", "", []syncer.Entry{{Login: "a@example.com", Hash: "{PLAIN}new"}}); !errors.Is(err, boom) {
			t.Fatalf("Write: %v, want boom", err)
		}
		if filepath.Dir(sawTemp) != dir || !strings.HasPrefix(filepath.Base(sawTemp), ".passwd.tmp-") {
			t.Fatalf("temp file %q not a hidden sibling of the target", sawTemp)
		}
		noTemps(t, dir, "passwd")
		if b, _ := os.ReadFile(path); string(b) != "a@example.com:{PLAIN}old\n" {
			t.Fatalf("target changed after a failed write: %q", b)
		}
	})

	t.Run("invalid entry", func(t *testing.T) {
		if err := w.Write("", "", []syncer.Entry{{Login: "a@example.com", Hash: "bad\n"}}); !errors.Is(err, ErrInvalidEntry) {
			t.Fatalf("Write: %v", err)
		}
		noTemps(t, dir, "passwd")
	})

	t.Run("target is a directory", func(t *testing.T) {
		d := t.TempDir()
		w := newWriter(t, filepath.Join(d, "%d"), "")
		if err := os.Mkdir(filepath.Join(d, "example.com"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := w.Write("example.com", "", nil); err == nil {
			t.Fatal("Write over a directory succeeded")
		}
		noTemps(t, d, "example.com")
	})

	t.Run("target is a symlink", func(t *testing.T) {
		d := t.TempDir()
		real := filepath.Join(d, "real")
		if err := os.WriteFile(real, []byte("x@y:{PLAIN}z\n"), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(real, filepath.Join(d, "passwd")); err != nil {
			t.Fatal(err)
		}
		w := newWriter(t, filepath.Join(d, "passwd"), "")
		if err := w.Write("", "", nil); err == nil {
			t.Fatal("Write over a symlink succeeded")
		}
		if b, _ := os.ReadFile(real); string(b) != "x@y:{PLAIN}z\n" {
			t.Fatalf("symlink target changed: %q", b)
		}
		noTemps(t, d, "passwd", "real")
	})

	t.Run("read-only directory", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root ignores directory permissions")
		}
		d := t.TempDir()
		w := newWriter(t, filepath.Join(d, "passwd"), "")
		if err := os.Chmod(d, 0o500); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(d, 0o700)
		if err := w.Write("", "", nil); err == nil {
			t.Fatal("Write into a read-only directory succeeded")
		}
		noTemps(t, d)
	})
}

func TestGroup(t *testing.T) {
	gid := os.Getgid()
	check := func(t *testing.T, group string) {
		dir := t.TempDir()
		w := newWriter(t, filepath.Join(dir, "new", "%d"), group)
		if err := w.Write("example.com", "", []syncer.Entry{{Login: "a@example.com", Hash: "{PLAIN}x"}}); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{w.Path("example.com", ""), filepath.Join(dir, "new")} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			st, ok := fi.Sys().(*syscall.Stat_t)
			if !ok {
				t.Skip("no Stat_t on this platform")
			}
			if int(st.Gid) != gid {
				t.Fatalf("%s has gid %d, want %d", p, st.Gid, gid)
			}
		}
		if fi, _ := os.Stat(w.Path("example.com", "")); fi.Mode() != FileMode {
			t.Fatalf("mode %v after chown", fi.Mode())
		}
	}
	t.Run("numeric", func(t *testing.T) { check(t, strconv.Itoa(gid)) })
	t.Run("name", func(t *testing.T) {
		g, err := user.LookupGroupId(strconv.Itoa(gid))
		if err != nil {
			t.Skipf("no name for gid %d: %v", gid, err)
		}
		check(t, g.Name)
	})
}

// renderAccepts is Render's contract checked the slow way: every field is
// valid and no login repeats.
func renderAccepts(entries []syncer.Entry) bool {
	seen := map[string]bool{}
	for _, e := range entries {
		if checkField(e.Login) != nil || checkField(e.Hash) != nil || seen[e.Login] {
			return false
		}
		seen[e.Login] = true
	}
	return true
}

// Render's fast checks (whole-buffer counts, eight bytes at a time) accept
// exactly what the field-by-field rules accept, and what they accept parses
// back to the same entries.
func FuzzRender(f *testing.F) {
	f.Add("alice@example.com", "{SSHA512}abcdefghijklmnopqrstuvwxyz0123456789", "bob@example.com", "{SSHA512}x")
	f.Add("a@b", "{PLAIN}x\x1fy", "c@d", "{PLAIN}z")
	f.Add("long-login-with-a-tab\t-after-eight@example.com", "{PLAIN}x", "b@c", "{PLAIN}\x7f")
	f.Add("ünïcödé@example.com", "{PLAIN}\u00e9\u00e8", "x@y", "#z")
	f.Fuzz(func(t *testing.T, l1, h1, l2, h2 string) {
		entries := []syncer.Entry{{Login: l1, Hash: h1}, {Login: l2, Hash: h2}}
		b, err := Render(entries)
		if want := renderAccepts(entries); (err == nil) != want {
			t.Fatalf("Render(%q) error %v, the field rules say valid=%v", entries, err, want)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidEntry) {
				t.Fatalf("error %v does not wrap ErrInvalidEntry", err)
			}
			return
		}
		got, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse(Render(%q)): %v", entries, err)
		}
		want := slices.Clone(entries)
		slices.SortFunc(want, func(a, b syncer.Entry) int { return strings.Compare(a.Login, b.Login) })
		if !slices.Equal(got, want) {
			t.Fatalf("round trip: got %q, want %q", got, want)
		}
	})
}

// Writes that change the size keep the mtime at the current second (Dovecot
// sees the size change): a burst of creates does not push it into the
// future. A size seen before in the same second still moves the mtime on.
func TestMtimeStaysCurrentWhileSizesDiffer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	w := newWriter(t, path, "")
	var entries []syncer.Entry
	stat := func() os.FileInfo {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi
	}
	for i := range 50 {
		entries = append(entries, syncer.Entry{Login: fmt.Sprintf("u%03d@example.com", i), Hash: "{PLAIN}pw"})
		if err := w.Write("", "", entries); err != nil {
			t.Fatal(err)
		}
	}
	if got, now := stat().ModTime().Unix(), time.Now().Unix(); got > now {
		t.Fatalf("after 50 growing writes the mtime is %d s, %d s ahead of now", got, got-now)
	}
	// Shrink back to a size already written: if that happened in the same
	// second as the size's first write, the mtime must move past it.
	first := stat()
	if err := w.Write("", "", entries[:49]); err != nil { // a size written before
		t.Fatal(err)
	}
	if err := w.Write("", "", entries[:50]); err != nil { // and again the size of first
		t.Fatal(err)
	}
	if fi := stat(); fi.Size() != first.Size() || fi.ModTime().Unix() == first.ModTime().Unix() {
		t.Fatalf("same size %d as a file of second %d, and the same second %d: Dovecot would not reload",
			fi.Size(), first.ModTime().Unix(), fi.ModTime().Unix())
	}
}

func TestSharded(t *testing.T) {
	dir := t.TempDir()
	w := newWriter(t, filepath.Join(dir, "%d", "%2Mu"), "")
	if !w.PerDomain() || !w.Sharded() {
		t.Fatalf("PerDomain() = %v, Sharded() = %v", w.PerDomain(), w.Sharded())
	}
	// Dovecot's %2Mu: the first two hex digits of the MD5 (md5sum's output).
	for login, want := range map[string]string{"a@example.com": "b4", "bob@example.org": "10"} {
		if got := w.Shard(login); got != want {
			t.Errorf("Shard(%q) = %q, want %q", login, got, want)
		}
	}
	if names := w.Shards(); len(names) != 256 || names[0] != "00" || names[10] != "0a" || names[255] != "ff" {
		t.Fatalf("Shards() = %d names %q...", len(names), names[:3])
	}
	if got, want := w.Path("example.com", "b4"), filepath.Join(dir, "example.com", "b4"); got != want {
		t.Fatalf("Path = %q, want %q", got, want)
	}
	for _, s := range []string{"", "b", "b4f", "B4", "g0", "/."} {
		if p := w.Path("example.com", s); p != "" {
			t.Errorf("Path(shard %q) = %q, want rejection", s, p)
		}
		if err := w.Write("example.com", s, nil); !errors.Is(err, ErrInvalidShard) {
			t.Errorf("Write(shard %q): %v, want ErrInvalidShard", s, err)
		}
	}
	if err := w.Write("example.com", "10", []syncer.Entry{{Login: "a@example.com", Hash: "{PLAIN}x"}}); !errors.Is(err, ErrInvalidShard) {
		t.Errorf("Write of a login into another shard: %v, want ErrInvalidShard", err)
	}
	if err := w.Write("example.com", "b4", []syncer.Entry{{Login: "a@example.com", Hash: "{PLAIN}x"}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(w.Path("example.com", "b4")); string(got) != "a@example.com:{PLAIN}x\n" {
		t.Fatalf("content %q", got)
	}
	if err := w.Remove("example.com", "b4"); err != nil {
		t.Fatal(err)
	}
	noTemps(t, filepath.Join(dir, "example.com"))

	// Shards without domains, and a shorter prefix in the directory.
	w = newWriter(t, filepath.Join(dir, "all", "%1Mu", "%3Mu"), "")
	if w.PerDomain() || w.Shard("a@example.com") != "b41" || len(w.Shards()) != 4096 {
		t.Fatalf("PerDomain() = %v, Shard = %q, %d shards", w.PerDomain(), w.Shard("a@example.com"), len(w.Shards()))
	}
	if got, want := w.Path("ignored", "b41"), filepath.Join(dir, "all", "b", "b41"); got != want {
		t.Fatalf("Path = %q, want %q", got, want)
	}
	for _, tmpl := range []string{"%0Mu", "%4Mu", "%2Mn", "%2M", "%Mu", "%2Lu"} {
		if _, err := New(filepath.Join(dir, tmpl), ""); err == nil {
			t.Errorf("New(%q) succeeded", tmpl)
		}
	}
}

// Update unlessSame leaves a file that already holds the content alone, and
// rewrites one whose content or mode differs.
func TestUpdateUnlessSame(t *testing.T) {
	dir := t.TempDir()
	w := newWriter(t, filepath.Join(dir, "passwd"), "")
	entries := []syncer.Entry{{Login: "a@example.com", Hash: "{PLAIN}x"}}
	ensure := func(entries []syncer.Entry) error { return w.Update("", []File{{Entries: entries}}, true) }
	if err := ensure(entries); err != nil {
		t.Fatal(err)
	}
	path := w.Path("", "")
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := ensure(entries); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(path); inode(after) != inode(before) || !after.ModTime().Equal(before.ModTime()) {
		t.Fatal("Update unlessSame rewrote a file that held the same content")
	}
	if err := ensure([]syncer.Entry{{Login: "a@example.com", Hash: "{PLAIN}y"}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "a@example.com:{PLAIN}y\n" {
		t.Fatalf("Update unlessSame with a different hash left %q", got)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ensure([]syncer.Entry{{Login: "a@example.com", Hash: "{PLAIN}y"}}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != FileMode {
		t.Fatalf("Update unlessSame left mode %v", fi.Mode().Perm())
	}
}

// Update changes several files in order, removing and writing, and stops at
// the first bad one: files before it are replaced, files after it untouched.
func TestUpdate(t *testing.T) {
	dir := t.TempDir()
	w := newWriter(t, filepath.Join(dir, "%d", "%1Mu"), "")
	a, b := syncer.Entry{Login: "a@example.com", Hash: "{PLAIN}a"}, syncer.Entry{Login: "bob@example.org", Hash: "{PLAIN}b"} // shards "b" and "1"
	if err := w.Update("example.com", []File{{Shard: "b", Entries: []syncer.Entry{a}}, {Shard: "1", Entries: []syncer.Entry{b}}}, false); err != nil {
		t.Fatal(err)
	}
	noTemps(t, filepath.Join(dir, "example.com"), "1", "b")
	err := w.Update("example.com", []File{
		{Shard: "b", Remove: true},
		{Shard: "2", Entries: []syncer.Entry{a}}, // not a's shard
		{Shard: "1", Remove: true},
	}, false)
	if !errors.Is(err, ErrInvalidShard) {
		t.Fatalf("Update with a misplaced entry: %v, want ErrInvalidShard", err)
	}
	// Bad input is found before anything is written: nothing changed.
	noTemps(t, filepath.Join(dir, "example.com"), "1", "b")
	if got, _ := os.ReadFile(w.Path("example.com", "1")); string(got) != "bob@example.org:{PLAIN}b\n" {
		t.Fatalf("a file of the failed update changed: %q", got)
	}
	if got, _ := os.ReadFile(w.Path("example.com", "b")); string(got) != "a@example.com:{PLAIN}a\n" {
		t.Fatalf("a file of the failed update changed: %q", got)
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	w := newWriter(t, filepath.Join(dir, "%d", "%1Mu"), "")
	if got, err := w.Read("example.com", "b"); err != nil || got != nil {
		t.Fatalf("Read of a missing file: %v, %v", got, err)
	}
	a := syncer.Entry{Login: "a@example.com", Hash: "{PLAIN}a"} // shard "b"
	if err := w.Write("example.com", "b", []syncer.Entry{a}); err != nil {
		t.Fatal(err)
	}
	if got, err := w.Read("example.com", "b"); err != nil || !slices.Equal(got, []syncer.Entry{a}) {
		t.Fatalf("Read = %v, %v", got, err)
	}
	path := w.Path("example.com", "1")
	if err := os.WriteFile(path, []byte("a@example.com:{PLAIN}a\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Read("example.com", "1"); !errors.Is(err, ErrInvalidShard) {
		t.Errorf("Read of a login in the wrong shard: %v, want ErrInvalidShard", err)
	}
	if err := os.WriteFile(path, []byte("no colon\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Read("example.com", "1"); !errors.Is(err, ErrMalformed) {
		t.Errorf("Read of a malformed file: %v, want ErrMalformed", err)
	}
}

// A file's render splices the previous one (copying the unchanged runs and
// checking only the changed lines): after any sequence of changes, valid
// or not, sorted or not, it must give exactly what Render gives, or the
// same error.
func TestSpliceRenderIsRender(t *testing.T) {
	var st fileState
	check := func(step string, next []syncer.Entry) {
		t.Helper()
		want, wantErr := Render(next)
		got, err := st.render(next, true)
		if (err != nil) != (wantErr != nil) || !bytes.Equal(got, want) {
			t.Fatalf("%s: render of %d entries = %q, %v; Render gives %q, %v", step, len(next), got, err, want, wantErr)
		}
		if st.prev != nil && !bytes.Equal(st.buf, mustRender(t, st.prev)) {
			t.Fatalf("%s: the kept render is not the render of the kept entries", step)
		}
	}
	e := func(login, hash string) syncer.Entry { return syncer.Entry{Login: login, Hash: hash} }
	// Cases a splice could get wrong: a kept entry before an inserted one
	// that sorts lower, duplicates, invalid lines, everything gone.
	check("first", []syncer.Entry{e("a@x", "h1"), e("c@x", "h3")})
	check("kept then lower", []syncer.Entry{e("c@x", "h3"), e("b@x", "h2")})
	check("start over", []syncer.Entry{e("a@x", "h1"), e("c@x", "h3")})
	check("duplicate of a kept one", []syncer.Entry{e("a@x", "h1"), e("c@x", "h3"), e("c@x", "h4")})
	check("invalid new", []syncer.Entry{e("a@x", "h1"), e("b@x", "h:2"), e("c@x", "h3")})
	check("new hash", []syncer.Entry{e("a@x", "h1"), e("c@x", "h9")})
	check("all gone", nil)
	check("back", []syncer.Entry{e("b@x", "h2")})

	rng := rand.New(rand.NewPCG(1, 2))
	var cur []syncer.Entry
	for step := range 3000 {
		next := slices.Clone(cur)
		for range rng.IntN(4) + 1 {
			switch op := rng.IntN(10); {
			case op < 4 || len(next) == 0: // a new login
				next = append(next, e(fmt.Sprintf("u%d@x", rng.IntN(500)), fmt.Sprintf("{X}%d", rng.IntN(1e6))))
			case op < 6: // one goes
				k := rng.IntN(len(next))
				next = slices.Delete(next, k, k+1)
			case op < 8: // a new hash
				next[rng.IntN(len(next))].Hash = fmt.Sprintf("{X}%d", rng.IntN(1e6))
			case op < 9: // the same entry, in new strings
				k := rng.IntN(len(next))
				next[k] = e(strings.Clone(next[k].Login), strings.Clone(next[k].Hash))
			default: // an invalid one
				next = append(next, e(fmt.Sprintf("bad%d@x", rng.IntN(9)), "h\nx"))
			}
		}
		if rng.IntN(20) > 0 { // mostly sorted, as the syncer gives them
			slices.SortStableFunc(next, byLogin)
		}
		check(fmt.Sprintf("step %d", step), next)
		if _, err := Render(next); err == nil {
			cur = slices.Clone(next)
			slices.SortFunc(cur, byLogin)
		}
	}
}

func mustRender(t *testing.T, entries []syncer.Entry) []byte {
	t.Helper()
	b, err := Render(entries)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A file of 20,000 logins with 8 of them new, as under a burst of creates:
// rendered whole, or spliced from the previous render.
func BenchmarkRenderFile(b *testing.B) {
	base := make([]syncer.Entry, 0, 20008)
	for i := range 20000 {
		base = append(base, syncer.Entry{Login: fmt.Sprintf("user%07d@bench.example", i*3), Hash: "{SSHA512}" + strings.Repeat("x", 108)})
	}
	next := slices.Clone(base)
	for i := range 8 {
		next = append(next, syncer.Entry{Login: fmt.Sprintf("user%07d@bench.example", i*7001*3+1), Hash: "{SSHA512}" + strings.Repeat("y", 108)})
	}
	slices.SortFunc(next, byLogin)
	b.Run("whole", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			var err error
			if buf, err = appendRender(buf[:0], next); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("spliced", func(b *testing.B) {
		old, err := Render(base)
		if err != nil {
			b.Fatal(err)
		}
		var buf []byte
		for b.Loop() {
			var ok bool
			if buf, ok = spliceRender(buf[:0], old, base, next); !ok {
				b.Fatal("not spliced")
			}
		}
	})
}

// A file too large to splice keeps one buffer, which the next render
// reuses: a render of a large file costs no new allocation of its size.
func TestLargeFileRendersReuseOneBuffer(t *testing.T) {
	var st fileState
	long := "{X}" + strings.Repeat("h", 32<<10)
	var entries []syncer.Entry
	for i := range spliceMax/len(long) + 2 {
		entries = append(entries, syncer.Entry{Login: fmt.Sprintf("u%05d@x", i), Hash: long})
	}
	first, err := st.render(entries, true)
	if err != nil || len(first) <= spliceMax {
		t.Fatalf("render: %d bytes, %v; want more than %d", len(first), err, spliceMax)
	}
	if st.prev != nil || st.spare != nil {
		t.Fatal("a file over spliceMax keeps the entries or a second buffer")
	}
	second, err := st.render(entries[1:], true)
	if err != nil || !bytes.Equal(second, mustRender(t, entries[1:])) {
		t.Fatalf("second render wrong: %v", err)
	}
	if &second[0] != &first[0] {
		t.Fatal("the second render of a large file did not reuse the first's buffer")
	}
}

// With a group, New refuses a directory above the files that the group
// cannot search (as `smtpcreds dev` made .data/dovecot: owner's group,
// 0750), naming it and the fix, and accepts it once others may search it.
// Directories it creates itself get the group (TestGroup).
func TestNewRefusesDirectoryTheGroupCannotSearch(t *testing.T) {
	base, err := os.MkdirTemp("", "passwdfile-search-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	locked := filepath.Join(base, "locked")
	if err := os.Mkdir(locked, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(locked, 0o750); err != nil { // umask
		t.Fatal(err)
	}
	// A gid that is neither the directory's nor its owner's primary group.
	const other = "4242"
	for _, tmpl := range []string{filepath.Join(locked, "passwd"), filepath.Join(locked, "%d", "%2Mu")} {
		_, err = New(tmpl, other)
		if err == nil {
			t.Fatalf("New(%q, %s) accepted a directory group %s cannot search", tmpl, other, other)
		}
		if msg := err.Error(); !strings.Contains(msg, locked+" (mode 0750") || !strings.Contains(msg, "chmod o+x "+locked) ||
			strings.Contains(msg, "\n") {
			t.Errorf("error %q: want one line naming %s and the fix", msg, locked)
		}
	}
	if _, err := New(filepath.Join(locked, "passwd"), ""); err != nil {
		t.Errorf("without a group the directory is not checked: %v", err)
	}
	if err := os.Chmod(locked, 0o751); err != nil {
		t.Fatal(err)
	}
	if _, err := New(filepath.Join(locked, "passwd"), other); err != nil {
		t.Errorf("New after chmod o+x: %v", err)
	}
	if os.Geteuid() == 0 {
		// The group's own x bit is enough.
		if err := os.Chmod(locked, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(locked, -1, 4242); err != nil {
			t.Fatal(err)
		}
		if _, err := New(filepath.Join(locked, "passwd"), other); err != nil {
			t.Errorf("New after chgrp: %v", err)
		}
	}
}
