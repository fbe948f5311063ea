//go:build !linux

package passwdfile

import "os"

// directWrite: O_DIRECT is Linux's.
var directWrite = func(*os.File, []byte) error { return errNoDirect }
