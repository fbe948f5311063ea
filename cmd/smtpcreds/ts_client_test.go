package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// minNodeMajor is the oldest Node.js the TypeScript client is tested with.
const minNodeMajor = 20

// TestTypeScriptClient runs the TypeScript client's test
// (clients/typescript/test/api.test.ts) against the real binary: it compiles
// the client and the test with tsc, which type-checks them against the
// generated src/schema.d.ts, then runs them with `node --test`. Node.js and
// npm must be installed: without them the test fails, it does not skip.
func TestTypeScriptClient(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the real binary and Node.js")
	}
	node, npm := lookNode(t)
	pkg, err := filepath.Abs(filepath.Join("..", "..", "clients", "typescript"))
	if err != nil {
		t.Fatal(err)
	}
	ensureNodeModules(t, npm, pkg)
	// Compile before anything else, so that a type error against the
	// generated schema fails fast, as such; tsc writes to
	// clients/typescript/build (ignored by git).
	tsc := filepath.Join(pkg, "node_modules", "typescript", "bin", "tsc")
	runNode(t, pkg, nil, 2*time.Minute, node, tsc, "-p", "tsconfig.json")

	bin := buildBinary(t)
	env := serverEnv(t, nil)
	mustRun(t, bin, env, "migrate")
	token := createToken(t, bin, env, "accounts", "create", "tsclient")
	mustRun(t, bin, env, "domains", "add", "--verified", "tsclient", "example.com")
	srv := startServer(t, bin, env)

	out := runNode(t, pkg, map[string]string{
		"SMTPCREDS_URL":     "http://" + srv.addr,
		"SMTPCREDS_ACCOUNT": "tsclient",
		"SMTPCREDS_TOKEN":   token,
		"SMTPCREDS_DOMAIN":  "example.com",
	}, 2*time.Minute, node, "--test", "--test-reporter=spec", filepath.Join("build", "test", "api.test.js"))
	if testing.Verbose() {
		t.Logf("node --test:\n%s", out)
	}
	srv.stop(t)
}

// lookNode returns the paths of node and npm, failing the test when either
// is missing or node is older than minNodeMajor.
func lookNode(t *testing.T) (node, npm string) {
	t.Helper()
	const hint = "the TypeScript client test needs Node.js >= 20 and npm on PATH " +
		"(CI installs them; on Debian: apt-get install nodejs npm, or NodeSource's nodejs)"
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found: %v; %s", err, hint)
	}
	npm, err = exec.LookPath("npm")
	if err != nil {
		t.Fatalf("npm not found: %v; %s", err, hint)
	}
	v, err := exec.Command(node, "--version").Output()
	if err != nil {
		t.Fatalf("node --version: %v; %s", err, hint)
	}
	ver := strings.TrimSpace(string(v))
	major, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(ver, "v"), ".", 2)[0])
	if err != nil || major < minNodeMajor {
		t.Fatalf("node --version = %q; %s", ver, hint)
	}
	return node, npm
}

// ensureNodeModules runs `npm ci` in pkg when its node_modules is missing or
// older than package-lock.json (npm ci writes node_modules/.package-lock.json).
func ensureNodeModules(t *testing.T, npm, pkg string) {
	t.Helper()
	lock, err := os.Stat(filepath.Join(pkg, "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	installed, err := os.Stat(filepath.Join(pkg, "node_modules", ".package-lock.json"))
	switch {
	case err == nil && !installed.ModTime().Before(lock.ModTime()):
		return
	case err != nil && !errors.Is(err, os.ErrNotExist):
		t.Fatal(err)
	}
	runNode(t, pkg, nil, 5*time.Minute, npm, "ci", "--no-audit", "--no-fund")
}

// runNode runs a Node.js tool in dir with the test's environment (less any
// smtpcreds setting) plus extra, and fails the test with its output unless
// it exits 0. It returns the combined output.
func runNode(t *testing.T, dir string, extra map[string]string, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(childEnv(extra), "NO_COLOR=1", "FORCE_COLOR=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s (in %s): %v\n%s", filepath.Base(name), strings.Join(args, " "), dir, err, out.String())
	}
	return out.String()
}
