package passwdfile

import (
	"errors"
	"io"
	"os"
	"slices"
	"unsafe"
)

// A large file is written with O_DIRECT: its blocks go from the render
// buffer to the disk without a copy into the page cache. Each apply
// replaces a domain's whole file, and the file it replaces was written
// moments before: through the page cache, every apply copied the file's
// size into memory, dirtied it, had the fsync write it back and freed the
// replaced file's pages, which made the time of a write into a large file
// vary with the kernel's writeback. Dovecot reads a changed file once,
// from the disk now rather than from memory.
const (
	// directAlign is the alignment O_DIRECT asks of the buffer's address,
	// the file offset and the length: 4096 covers 512-byte and 4K disks.
	directAlign = 4096
	// directMin is the smallest file written with O_DIRECT (about 2,000
	// logins): below it the page cache costs little.
	directMin = 256 << 10
)

// errNoDirect is wrapped by directWrite's error when the file system does
// not take direct I/O (then every write goes through the page cache).
var errNoDirect = errors.New("passwdfile: no direct I/O on this file system")

// alignedGrow returns buf with room for n more bytes, like slices.Grow. An
// array of directMin or more that it allocates starts on a directAlign
// boundary, so that a render into it can be written with O_DIRECT, and
// has an eighth more room, so that a file that grows a little does not
// need a new one at every write.
func alignedGrow(buf []byte, n int) []byte {
	if n <= cap(buf)-len(buf) {
		return buf
	}
	size := len(buf) + n
	if size < directMin {
		return slices.Grow(buf, n)
	}
	size += size / 8
	a := make([]byte, size+directAlign)
	off := int(-uintptr(unsafe.Pointer(unsafe.SliceData(a))) & (directAlign - 1))
	a = a[off : off+len(buf) : off+size]
	copy(a, buf)
	return a
}

// writeNew writes data to f, a new empty file: the whole blocks of a large
// render with O_DIRECT, the rest through the page cache.
func (w *Writer) writeNew(f *os.File, data []byte) error {
	n := len(data) &^ (directAlign - 1)
	if n < directMin || w.noDirect.Load() || uintptr(unsafe.Pointer(unsafe.SliceData(data)))&(directAlign-1) != 0 {
		_, err := f.Write(data)
		return err
	}
	if err := directWrite(f, data[:n]); err != nil {
		if !errors.Is(err, errNoDirect) {
			return err
		}
		w.noDirect.Store(true)
		// Start over through the page cache (part may have been written).
		if err := f.Truncate(0); err != nil {
			return err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		_, err := f.Write(data)
		return err
	}
	_, err := f.Write(data[n:])
	return err
}
