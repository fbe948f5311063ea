package passwdfile

import (
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
