package localpg

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// BinDirEnv names the environment variable that overrides where the
// PostgreSQL server binaries are looked up.
const BinDirEnv = "SMTPCREDS_PG_BIN"

// debianBinGlob is where Debian/Ubuntu packages install the server binaries,
// one directory per major version.
const debianBinGlob = "/usr/lib/postgresql/*/bin"

// BinDir returns the directory holding the PostgreSQL server tools initdb
// and pg_ctl. It looks, in order, at:
//
//  1. $SMTPCREDS_PG_BIN, which must then hold both tools (it is an error if
//     it does not; no fallback is tried);
//  2. the directory of initdb (or pg_ctl) found via PATH, provided the other
//     tool lives in the same directory; symlinks are resolved first so that
//     e.g. /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb yields
//     the real installation directory;
//  3. the highest-versioned /usr/lib/postgresql/<version>/bin.
//
// It returns an error naming the places searched when none qualifies.
func BinDir() (string, error) {
	if d := os.Getenv(BinDirEnv); d != "" {
		if err := hasTools(d); err != nil {
			return "", fmt.Errorf("localpg: %s=%s: %w", BinDirEnv, d, err)
		}
		return d, nil
	}
	for _, tool := range []string{"initdb", "pg_ctl"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			continue
		}
		cands := []string{}
		if real, err := filepath.EvalSymlinks(p); err == nil {
			cands = append(cands, filepath.Dir(real))
		}
		cands = append(cands, filepath.Dir(p))
		for _, d := range cands {
			if hasTools(d) == nil {
				return d, nil
			}
		}
	}
	dirs, _ := filepath.Glob(debianBinGlob)
	sort.Slice(dirs, func(i, j int) bool {
		// Highest version first.
		return versionLess(versionOf(dirs[j]), versionOf(dirs[i]))
	})
	for _, d := range dirs {
		if hasTools(d) == nil {
			return d, nil
		}
	}
	return "", errors.New("localpg: PostgreSQL server binaries (initdb, pg_ctl) not found; " +
		"install PostgreSQL, put its bin directory in PATH, or set " + BinDirEnv +
		" (searched $" + BinDirEnv + ", PATH and " + debianBinGlob + ")")
}

// hasTools reports whether dir holds executable initdb and pg_ctl files.
func hasTools(dir string) error {
	for _, tool := range []string{"initdb", "pg_ctl"} {
		fi, err := os.Stat(filepath.Join(dir, tool))
		if err != nil {
			return fmt.Errorf("no %s in %s: %w", tool, dir, err)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("%s in %s is not an executable file", tool, dir)
		}
	}
	return nil
}

// versionOf extracts the numeric components of the version directory in
// /usr/lib/postgresql/<version>/bin ("9.6" -> [9 6]); non-numeric parts
// count as 0.
func versionOf(binDir string) []int {
	name := filepath.Base(filepath.Dir(binDir))
	var v []int
	for _, part := range strings.Split(name, ".") {
		n, _ := strconv.Atoi(part)
		v = append(v, n)
	}
	return v
}

func versionLess(a, b []int) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return len(a) < len(b)
}
