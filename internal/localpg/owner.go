package localpg

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// serverUser is the account the server runs as when this process is root:
// PostgreSQL refuses to run with root privileges.
const serverUser = "postgres"

// owner describes the unprivileged account used to run the PostgreSQL tools
// when the current process is root. A nil *owner means "run as ourselves".
type owner struct {
	name     string
	uid, gid int
	home     string
}

// lookupOwner returns nil when not running as root, else the postgres account.
func lookupOwner() (*owner, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(serverUser)
	if err != nil {
		return nil, fmt.Errorf("localpg: running as root, and PostgreSQL refuses to run as root, "+
			"but the %q user to run it as was not found: %w", serverUser, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("localpg: user %s: bad uid %q", serverUser, u.Uid)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("localpg: user %s: bad gid %q", serverUser, u.Gid)
	}
	return &owner{name: u.Username, uid: uid, gid: gid, home: u.HomeDir}, nil
}

// sysProcAttr makes a child process run as the owner, with no supplementary
// groups.
func (o *owner) sysProcAttr() *syscall.SysProcAttr {
	if o == nil {
		return nil
	}
	return &syscall.SysProcAttr{Credential: &syscall.Credential{
		Uid:    uint32(o.uid),
		Gid:    uint32(o.gid),
		Groups: []uint32{},
	}}
}

// env returns the environment for the PostgreSQL tools: ours without PG*
// variables (which could redirect the tools elsewhere) and, when switching
// user, with HOME/USER/LOGNAME of that user.
func (o *owner) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") {
			continue
		}
		if o != nil && (strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "USER=") || strings.HasPrefix(kv, "LOGNAME=")) {
			continue
		}
		env = append(env, kv)
	}
	if o != nil {
		env = append(env, "HOME="+o.home, "USER="+o.name, "LOGNAME="+o.name)
	}
	return env
}

// chownTree gives everything under dir that is not already the owner's to
// the owner. No-op when o is nil.
func (o *owner) chownTree(dir string) error {
	if o == nil {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == o.uid && int(st.Gid) == o.gid {
			return nil
		}
		return os.Lchown(p, o.uid, o.gid)
	})
}

// chown gives one file to the owner. No-op when o is nil.
func (o *owner) chown(p string) error {
	if o == nil {
		return nil
	}
	return os.Chown(p, o.uid, o.gid)
}

// checkTraversable verifies the owner can reach dir, i.e. has search
// permission on every ancestor; ancestors that do not exist yet are skipped.
// Without this check initdb fails with a less helpful "permission denied".
// No-op when o is nil.
func (o *owner) checkTraversable(dir string) error {
	if o == nil {
		return nil
	}
	var ancestors []string
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		ancestors = append(ancestors, p)
		if p == filepath.Dir(p) {
			break
		}
	}
	for _, p := range ancestors {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("localpg: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		perm := fi.Mode().Perm()
		okay := perm&0o001 != 0 ||
			(ok && int(st.Uid) == o.uid && perm&0o100 != 0) ||
			(ok && int(st.Gid) == o.gid && perm&0o010 != 0)
		if !okay {
			return fmt.Errorf("localpg: running as root, so PostgreSQL runs as user %q, which cannot "+
				"traverse %s (mode %v) to reach data directory %s; use a directory below a "+
				"world-traversable path or run chmod o+x on it", o.name, p, perm, dir)
		}
	}
	return nil
}
