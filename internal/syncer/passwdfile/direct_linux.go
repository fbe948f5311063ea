package passwdfile

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// directWrite writes b, whole blocks from an aligned array, at f's offset
// with O_DIRECT set for this write only. (A variable: tests stand in a file
// system that refuses direct I/O.)
var directWrite = func(f *os.File, b []byte) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	setDirect := func(on bool) error {
		var err error
		if cerr := rc.Control(func(fd uintptr) {
			var fl int
			if fl, err = unix.FcntlInt(fd, unix.F_GETFL, 0); err != nil {
				return
			}
			if on {
				fl |= unix.O_DIRECT
			} else {
				fl &^= unix.O_DIRECT
			}
			_, err = unix.FcntlInt(fd, unix.F_SETFL, fl)
		}); cerr != nil {
			return cerr
		}
		return err
	}
	if err := setDirect(true); err != nil {
		return fmt.Errorf("%w: %w", errNoDirect, err)
	}
	_, werr := f.Write(b)
	if err := setDirect(false); err != nil {
		return err // the rest cannot be written unaligned
	}
	if errors.Is(werr, unix.EINVAL) { // e.g. a block size over directAlign
		return fmt.Errorf("%w: %w", errNoDirect, werr)
	}
	return werr
}
