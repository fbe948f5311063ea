package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smtpcreds/smtpcreds/internal/dovecottest"
)

// The real binary imports a passwd-file of doveadm's hashes, refuses its
// bad lines by number, syncs the rest to a real Dovecot, which accepts the
// original passwords; a second run skips everything; CSV on stdin.
func TestCredentialsImportE2E(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the real binary and Dovecot")
	}
	bin := buildBinary(t)
	dir := dovecottest.TempDir(t)
	passwd := filepath.Join(dir, "auth", "%d")
	dc := dovecottest.Start(t, dovecottest.Options{PasswdFile: passwd, Scheme: "SSHA512"})
	env := serverEnv(t, map[string]string{
		"SMTPCREDS_PASSWD_FILE":       passwd,
		"SMTPCREDS_PASSWD_FILE_GROUP": dc.Group(),
	})
	mustRun(t, bin, env, "migrate")
	createToken(t, bin, env, "accounts", "create", "acme")
	createToken(t, bin, env, "accounts", "create", "other")
	mustRun(t, bin, env, "domains", "add", "acme", "example.com", "--verified")
	mustRun(t, bin, env, "domains", "add", "acme", "unverified.test")
	mustRun(t, bin, env, "domains", "add", "other", "other.test", "--verified")

	pws := map[string]string{}
	var lines []string
	for i, scheme := range []string{"SSHA512", "SHA512-CRYPT", "BLF-CRYPT", "ARGON2ID"} {
		login, pw := fmt.Sprintf("%s@example.com", strings.ToLower(strings.ReplaceAll(scheme, "-", ""))), fmt.Sprintf("old password %d", i)
		pws[login] = pw
		lines = append(lines, login+":"+dovecottest.Hash(t, scheme, pw)+"::::::")
	}
	file := strings.Join(append([]string{"# the old server's users"}, append(lines,
		"plain@example.com:{PLAIN}old-plaintext",                          // 6
		"md5@example.com:{MD5-CRYPT}$1$abc$def",                           // 7
		"them@other.test:"+dovecottest.Hash(t, "SHA512-CRYPT", "x"),       // 8
		"later@unverified.test:"+dovecottest.Hash(t, "SHA512-CRYPT", "x"), // 9
		"garbage", // 10
		strings.Split(lines[0], ":")[0]+":"+dovecottest.Hash(t, "SSHA512", "y"), // 11: duplicate of 2
	)...), "\n") + "\n"
	path := filepath.Join(t.TempDir(), "users.passwd")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}

	out, errOut, code := runBinary(t, bin, env, "credentials", "import", "--account", "acme", path)
	if code != 1 {
		t.Fatalf("exit %d, want 1 (lines refused)\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	for _, want := range []string{"format:            passwd\n", "read:              10\n", "created:           4\n",
		"skipped existing:  0\n", "refused:           6\n", "sync:              applied"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	for _, want := range []string{
		path + ":6: plain@example.com: {PLAIN} keeps the password in clear",
		path + ":7: md5@example.com: unsupported scheme {MD5-CRYPT}",
		path + ":8: foreign domain: other.test is not a domain of this account",
		path + ":9: domain unverified.test is not verified",
		path + ":10: malformed",
		path + ":11: duplicate: line 2 has the same login",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut+out, "old-plaintext") {
		t.Error("the output quotes a plaintext password")
	}
	dc.WaitNextSecond()
	for login, pw := range pws {
		if ok, err := dc.Auth(login, pw); err != nil || !ok {
			t.Errorf("Dovecot refuses %s with its old password (%v)\n%s", login, err, dc.Log())
		}
	}
	for _, login := range []string{"plain@example.com", "them@other.test", "later@unverified.test"} {
		if ok, _ := dc.Auth(login, "x"); ok {
			t.Errorf("Dovecot accepts refused login %s", login)
		}
	}
	list := mustRun(t, bin, env, "credentials", "list", "acme", "example.com")
	if n := strings.Count(list, "@example.com"); n != 4 {
		t.Errorf("credentials list shows %d logins, want 4:\n%s", n, list)
	}

	// Again: everything there is skipped.
	out, _, code = runBinary(t, bin, env, "credentials", "import", "--account", "acme", path)
	if code != 1 || !strings.Contains(out, "created:           0\n") || !strings.Contains(out, "skipped existing:  4\n") {
		t.Errorf("second run: exit %d\n%s", code, out)
	}

	// CSV on standard input, all good: exit 0.
	csv := "login,hash\nnew@example.com,\"" + dovecottest.Hash(t, "ARGON2ID", "new pw") + "\"\n"
	cmd := exec.Command(bin, "credentials", "import", "--account", "acme", "-")
	cmd.Env = childEnv(env)
	cmd.Stdin = strings.NewReader(csv)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Run(); err != nil || !strings.Contains(so.String(), "format:            csv\n") || !strings.Contains(so.String(), "created:           1\n") {
		t.Fatalf("CSV on stdin: %v\nstdout: %s\nstderr: %s", err, so.String(), se.String())
	}
	dc.WaitNextSecond()
	if ok, err := dc.Auth("new@example.com", "new pw"); err != nil || !ok {
		t.Errorf("Dovecot refuses the CSV's login (%v)", err)
	}

	// Usage errors: exit 2.
	for _, args := range [][]string{
		{"credentials", "import", path},
		{"credentials", "import", "--account", "nobody", path},
		{"credentials", "import", "--account", "acme", filepath.Join(dir, "missing")},
		{"credentials", "import", "--account", "acme", "--format", "xml", path},
	} {
		if _, errOut, code := runBinary(t, bin, env, args...); code != 2 {
			t.Errorf("smtpcreds %s: exit %d, want 2\n%s", strings.Join(args, " "), code, errOut)
		}
	}
}
