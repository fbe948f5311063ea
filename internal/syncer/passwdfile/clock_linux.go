package passwdfile

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// fileClock returns a time no later than any mtime the kernel gives a file
// for a write that starts after the call: Linux stamps file times from its
// coarse real-time clock (updated once per tick), or from a finer one
// that is never behind it.
func fileClock() time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME_COARSE, &ts); err != nil {
		return time.Now().Add(-clockSlack)
	}
	return time.Unix(ts.Unix())
}

// stampsLocally reports whether f is on a file system whose file times this
// kernel stamps from its own clock, as fileClock assumes: a local one. On a
// network or FUSE file system another clock may stamp them, and the Writer
// replaces files instead of appending.
func stampsLocally(f *os.File) bool {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &fs); err != nil {
		return false
	}
	switch uint32(fs.Type) {
	case unix.EXT4_SUPER_MAGIC, unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC, unix.TMPFS_MAGIC,
		unix.F2FS_SUPER_MAGIC, unix.OVERLAYFS_SUPER_MAGIC:
		return true
	}
	return false
}
