package passwdfile

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/smtpcreds/smtpcreds/internal/syncer"
	"golang.org/x/sys/unix"
)

// cachedPages counts the pages of path's first n bytes that are in the
// page cache, without reading them.
func cachedPages(t *testing.T, path string, n int) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, n, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m) //nolint:errcheck // test cleanup
	vec := make([]byte, (n+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(n), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	cached := 0
	for _, v := range vec {
		cached += int(v & 1)
	}
	return cached
}

// A large file's blocks are written with O_DIRECT: none of them is left in
// the page cache (a small file's are), and the content is the render.
func TestLargeFileSkipsThePageCache(t *testing.T) {
	dir := t.TempDir()
	w := newWriter(t, filepath.Join(dir, "%d"), "")
	large := entriesN(0, directMin/90+100)
	for _, step := range []struct {
		entries []syncer.Entry
		direct  bool
	}{{entriesN(0, 100), false}, {large, true}, {large[:len(large)-7], true}} {
		if err := w.Write("example.com", "", step.entries); err != nil {
			t.Fatal(err)
		}
		if w.noDirect.Load() {
			t.Skip("this file system takes no direct I/O")
		}
		path := filepath.Join(dir, "example.com")
		want := mustRender(t, step.entries)
		blocks := len(want) &^ (directAlign - 1)
		if cached := cachedPages(t, path, blocks); step.direct && cached != 0 || !step.direct && cached == 0 {
			t.Errorf("%d logins (%d bytes): %d of the first %d bytes' pages in the page cache; direct I/O expected: %v",
				len(step.entries), len(want), cached, blocks, step.direct)
		}
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%d logins: content differs from the render (%v)", len(step.entries), err)
		}
	}
}

// On a file system that refuses direct I/O (after writing part of the
// blocks), the file is written whole through the page cache, and direct
// I/O is not tried again.
func TestNoDirectIOFallsBack(t *testing.T) {
	tries := 0
	orig := directWrite
	directWrite = func(f *os.File, b []byte) error {
		tries++
		if _, err := f.Write(bytes.Repeat([]byte{'#'}, len(b)/2)); err != nil {
			return err
		}
		return fmt.Errorf("%w: simulated", errNoDirect)
	}
	defer func() { directWrite = orig }()
	dir := t.TempDir()
	w := newWriter(t, filepath.Join(dir, "%d"), "")
	large := entriesN(0, directMin/90+100)
	for _, entries := range [][]syncer.Entry{large, large[1:]} {
		if err := w.Write("example.com", "", entries); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dir, "example.com"))
		if err != nil || !bytes.Equal(got, mustRender(t, entries)) {
			t.Fatalf("content differs from the render after the fallback (%v)", err)
		}
	}
	if tries != 1 || !w.noDirect.Load() {
		t.Errorf("direct I/O tried %d times, noDirect %v; want once, then off", tries, w.noDirect.Load())
	}
}

func TestAlignedGrow(t *testing.T) {
	buf := append(alignedGrow(nil, 10), "0123456789"...)
	for _, n := range []int{0, 5, 1 << 20} {
		grown := alignedGrow(buf, n)
		if string(grown) != "0123456789" || cap(grown)-len(grown) < n {
			t.Fatalf("alignedGrow(%d): %q, room %d", n, grown, cap(grown)-len(grown))
		}
		if n > cap(buf)-len(buf) && uintptr(unsafe.Pointer(unsafe.SliceData(grown)))%directAlign != 0 {
			t.Errorf("alignedGrow(%d) allocated an array off a %d-byte boundary", n, directAlign)
		}
	}
}
