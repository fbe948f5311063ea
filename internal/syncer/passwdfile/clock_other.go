//go:build !linux

package passwdfile

import (
	"os"
	"time"
)

// fileClock returns a time no later than any mtime the kernel gives a file
// for a write that starts after the call: the process's clock, less a
// margin for a kernel that stamps file times from a clock updated once per
// tick.
func fileClock() time.Time { return time.Now().Add(-clockSlack) }

// stampsLocally: where fileClock's bound is a margin, not the kernel's
// clock, the Writer does not append (it replaces files).
func stampsLocally(*os.File) bool { return false }
