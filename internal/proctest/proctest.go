// Package proctest holds what the daemon fixtures of tests (a private
// Dovecot, a private Postfix) share, so that no daemon outlives its test.
//
// A daemon's master leads its own process group; StopGroup asks it to end,
// then kills whatever of the group is left, and reports a group that would
// not die. TempDir is a directory the daemons' own users can reach.
package proctest

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const pollInterval = 25 * time.Millisecond

// StopGroup sends SIGTERM to cmd's process, the leader of its process
// group, and waits until the process has been reaped (exited is closed
// then) and no live process of the group is left. After half of timeout
// it kills the whole group; after timeout it gives up with an error naming
// what, and which processes, are still running.
func StopGroup(cmd *exec.Cmd, exited <-chan struct{}, timeout time.Duration, what string) error {
	if cmd == nil || cmd.Process == nil {
		return nil
	}
	pgid := cmd.Process.Pid
	deadline := time.Now().Add(timeout)
	gone := func() bool {
		select {
		case <-exited:
		default:
			return false
		}
		return len(GroupMembers(pgid)) == 0
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	graceful := time.Now().Add(timeout / 2)
	for time.Now().Before(graceful) && !gone() {
		time.Sleep(pollInterval)
	}
	if !gone() {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		for time.Now().Before(deadline) && !gone() {
			time.Sleep(pollInterval)
		}
	}
	if !gone() {
		return fmt.Errorf("%s processes of group %d still running after %v: %v", what, pgid, timeout, GroupMembers(pgid))
	}
	return nil
}

// GroupMembers returns the pids of the processes of group pgid that are
// not zombies. Orphaned zombies are left out: they are dead, and whether
// they are reaped soon depends on the machine's init, not on the test.
func GroupMembers(pgid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		// No /proc: fall back to asking the kernel about the group.
		if syscall.Kill(-pgid, 0) == nil {
			return []int{-pgid}
		}
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and ')'.
		i := strings.LastIndexByte(string(data), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(data[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TempDir returns a new directory below os.TempDir (mode 0755, so that a
// daemon's unprivileged users can search it, unlike t.TempDir's parent),
// removed when the test ends.
func TempDir(tb testing.TB, prefix string) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		tb.Fatalf("proctest: %v", err)
	}
	tb.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			tb.Errorf("proctest: remove %s: %v", dir, err)
		}
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatalf("proctest: %v", err)
	}
	return dir
}
