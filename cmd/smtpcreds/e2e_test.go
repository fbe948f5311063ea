package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/smtpcreds/smtpcreds/gen"
	"github.com/smtpcreds/smtpcreds/internal/apitoken"
	"github.com/smtpcreds/smtpcreds/internal/basicauth"
	"github.com/smtpcreds/smtpcreds/internal/dbtest"
)

var (
	tokenRE    = regexp.MustCompile(`^smtpk_[0-9A-Za-z]{30}$`)
	passwordRE = regexp.MustCompile(`^[0-9A-Za-z]{32}$`)
)

// e2eRateLimit is the per-account limit the server under test runs with; the
// X-RateLimit-Limit header must carry it.
const e2eRateLimit = 500

func TestMain(m *testing.M) {
	code := dbtest.Run(m)
	if binary.dir != "" {
		os.RemoveAll(binary.dir)
	}
	os.Exit(code)
}

// binary is this package compiled once per test binary, for every test
// that runs it.
var binary struct {
	sync.Mutex
	dir, path string
	err       error
}

// buildBinary returns the path of this package's binary, compiling it on
// first use. When the test binary itself runs under the race detector, so
// does the server: a data race then makes it exit 66 instead of 0.
func buildBinary(t *testing.T) string {
	t.Helper()
	binary.Lock()
	defer binary.Unlock()
	if binary.path == "" && binary.err == nil {
		binary.path, binary.err = compile()
	}
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

func compile() (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go tool is needed to build the binary: %v", err)
	}
	if binary.dir, err = os.MkdirTemp("", "smtpcreds-e2e-"); err != nil {
		return "", err
	}
	bin := filepath.Join(binary.dir, "smtpcreds")
	args := []string{"build", "-o", bin}
	if raceEnabled() {
		args = append(args, "-race")
	}
	args = append(args, ".")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin, nil
}

func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// childEnv is the environment of the test process without any smtpcreds
// setting (so that nothing from the developer's shell leaks in), plus extra.
func childEnv(extra map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "DATABASE_URL" || k == "TEST_DATABASE_URL" || strings.HasPrefix(k, "SMTPCREDS_") {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return env
}

// runBinary runs the binary to completion and returns its output and exit code.
func runBinary(t *testing.T, bin string, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv(env)
	var outBuf, errBuf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outBuf, &errBuf
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
	default:
		t.Fatalf("running smtpcreds %s: %v", strings.Join(args, " "), err)
	}
	return outBuf.String(), errBuf.String(), cmd.ProcessState.ExitCode()
}

// mustRun runs the binary and fails the test unless it exits 0.
func mustRun(t *testing.T, bin string, env map[string]string, args ...string) string {
	t.Helper()
	out, errOut, code := runBinary(t, bin, env, args...)
	if code != 0 {
		t.Fatalf("smtpcreds %s: exit %d, want 0\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// createToken runs `accounts create name` and returns the token it printed.
func createToken(t *testing.T, bin string, env map[string]string, args ...string) string {
	t.Helper()
	out := mustRun(t, bin, env, args...)
	if !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
		t.Fatalf("smtpcreds %s: stdout %q, want the token alone on one line", strings.Join(args, " "), out)
	}
	tok := strings.TrimSuffix(out, "\n")
	if !tokenRE.MatchString(tok) {
		t.Fatalf("smtpcreds %s: token %q does not match %s", strings.Join(args, " "), tok, tokenRE)
	}
	return tok
}

// emptyDatabase creates a database without any table on the server dbtest
// uses and returns its URL. It is dropped when the test ends.
func emptyDatabase(t *testing.T) string {
	t.Helper()
	adminURL := dbtest.NewURL(t)
	admin, err := sql.Open("postgres", adminURL)
	if err != nil {
		t.Fatalf("open admin connection: %v", err)
	}
	t.Cleanup(func() { admin.Close() })
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	name := "smtpcreds_e2e_" + hex.EncodeToString(rnd[:])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name)); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	// Registered after NewURL's cleanup, so this runs first, while the
	// admin database still exists.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+pq.QuoteIdentifier(name)+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return replaceDBName(t, adminURL, name)
}

func replaceDBName(t *testing.T, dsn, name string) string {
	t.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatalf("parse database URL: %v", err)
		}
		u.Path, u.RawPath = "/"+name, ""
		return u.String()
	}
	// key=value connection string: lib/pq lets a later key win.
	return dsn + " dbname=" + name
}

// randomHexKey is a fresh 32-byte key, hex-encoded, as the key settings take.
func randomHexKey(t *testing.T) string {
	t.Helper()
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(key[:])
}

// serverEnv is the environment of a binary under test: an empty database,
// fresh keys, a kernel-picked port, plus extra settings.
func serverEnv(t *testing.T, extra map[string]string) map[string]string {
	t.Helper()
	env := map[string]string{
		"DATABASE_URL":               emptyDatabase(t),
		"SMTPCREDS_TOKEN_KEY":        randomHexKey(t),
		"SMTPCREDS_DKIM_KEY":         randomHexKey(t),
		"SMTPCREDS_ADDR":             "127.0.0.1:0",
		"SMTPCREDS_SHUTDOWN_TIMEOUT": "5s",
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// server is a running `smtpcreds serve`.
type server struct {
	cmd    *exec.Cmd
	addr   string
	mu     sync.Mutex
	log    bytes.Buffer // everything written to stderr
	bad    []string     // stderr lines that are not JSON objects
	done   chan struct{}
	waited bool
}

func (s *server) logText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// startServer starts `smtpcreds serve` and waits for its "listening" line.
func startServer(t *testing.T, bin string, env map[string]string) *server {
	t.Helper()
	return startCommand(t, bin, env, "serve", "listening")
}

// startMilter starts `smtpcreds milter` and waits for its "milter
// listening" line; addr is its TCP address.
func startMilter(t *testing.T, bin string, env map[string]string) *server {
	t.Helper()
	return startCommand(t, bin, env, "milter", "milter listening")
}

// startCommand starts `smtpcreds <command>` and waits for the log line
// listening, whose addr it keeps.
func startCommand(t *testing.T, bin string, env map[string]string, command, listening string) *server {
	t.Helper()
	cmd := exec.Command(bin, command)
	cmd.Env = childEnv(env)
	cmd.Stdout = io.Discard
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start serve: %v", err)
	}
	s := &server{cmd: cmd, done: make(chan struct{})}
	t.Cleanup(func() {
		if !s.waited {
			_ = cmd.Process.Kill()
			<-s.done
			_ = cmd.Wait()
			t.Logf("server log:\n%s", s.logText())
		}
	})
	addrc := make(chan string, 1)
	go func() {
		defer close(s.done)
		r := bufio.NewReader(pipe)
		for {
			line, err := r.ReadString('\n')
			if line != "" {
				var rec struct {
					Msg  string `json:"msg"`
					Addr string `json:"addr"`
				}
				jerr := json.Unmarshal([]byte(line), &rec)
				s.mu.Lock()
				s.log.WriteString(line)
				if jerr != nil {
					s.bad = append(s.bad, line)
				}
				s.mu.Unlock()
				if jerr == nil && rec.Msg == listening {
					select {
					case addrc <- rec.Addr:
					default:
					}
				}
			}
			if err != nil {
				return
			}
		}
	}()
	select {
	case s.addr = <-addrc:
	case <-s.done:
		_ = cmd.Wait()
		s.waited = true
		t.Fatalf("%s exited before listening (%v); log:\n%s", command, cmd.ProcessState, s.logText())
	case <-time.After(time.Minute):
		t.Fatalf("%s did not log %q within a minute; log:\n%s", command, listening, s.logText())
	}
	if !strings.HasPrefix(s.addr, "127.0.0.1:") || strings.HasSuffix(s.addr, ":0") {
		t.Fatalf("listening addr = %q, want 127.0.0.1 with the port the kernel picked", s.addr)
	}
	return s
}

// stop sends SIGTERM and requires a clean exit (code 0) within 15 seconds.
func (s *server) stop(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	waitc := make(chan error, 1)
	go func() {
		<-s.done // all of stderr read before Wait closes the pipe
		waitc <- s.cmd.Wait()
	}()
	select {
	case err := <-waitc:
		s.waited = true
		if err != nil {
			t.Fatalf("serve after SIGTERM: %v, want exit status 0; log:\n%s", err, s.logText())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("serve still running 15s after SIGTERM; log:\n%s", s.logText())
	}
}

// newClient returns a generated API client authenticating as user:token.
func newClient(t *testing.T, addr, user, token string) *gen.ClientWithResponses {
	t.Helper()
	auth := basicauth.Format(user, token)
	c, err := gen.NewClientWithResponses("http://"+addr, gen.WithRequestEditorFn(func(_ context.Context, req *http.Request) error {
		req.Header.Set("Authorization", auth)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// response is what every generated *Response has.
type response interface {
	StatusCode() int
	GetBody() []byte
}

func wantStatus(t *testing.T, what string, r response, err error, want int) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if r.StatusCode() != want {
		t.Fatalf("%s: status %d, want %d; body %s", what, r.StatusCode(), want, r.GetBody())
	}
}

// wantRateLimitHeaders checks the headers every authenticated response carries.
func wantRateLimitHeaders(t *testing.T, what string, h http.Header) {
	t.Helper()
	if got := h.Get("X-RateLimit-Limit"); got != strconv.Itoa(e2eRateLimit) {
		t.Errorf("%s: X-RateLimit-Limit = %q, want %d", what, got, e2eRateLimit)
	}
	rem, err := strconv.Atoi(h.Get("X-RateLimit-Remaining"))
	if err != nil || rem < 0 || rem >= e2eRateLimit {
		t.Errorf("%s: X-RateLimit-Remaining = %q, want an integer in [0, %d)", what, h.Get("X-RateLimit-Remaining"), e2eRateLimit)
	}
}

// wantCredential checks the fields of a credential object.
func wantCredential(t *testing.T, what string, c gen.Credential, username, domain string, reset bool) {
	t.Helper()
	now := time.Now().Unix()
	switch {
	case c.Id <= 0:
		t.Errorf("%s: id = %d, want > 0", what, c.Id)
	case c.UserSmtpGuid == uuid.Nil:
		t.Errorf("%s: user_smtp_guid is the nil UUID", what)
	case c.Username != username:
		t.Errorf("%s: username = %q, want %q", what, c.Username, username)
	case c.Login != username+"@"+domain:
		t.Errorf("%s: login = %q, want %q", what, c.Login, username+"@"+domain)
	case c.CreatedAt < now-600 || c.CreatedAt > now+600:
		t.Errorf("%s: created_at = %d, want Unix seconds near %d", what, c.CreatedAt, now)
	case c.ModifiedAt < c.CreatedAt:
		t.Errorf("%s: modified_at %d before created_at %d", what, c.ModifiedAt, c.CreatedAt)
	case !c.Status || c.IsDeleted || c.DeletedAt != nil:
		t.Errorf("%s: status=%v is_deleted=%v deleted_at=%v, want an active credential", what, c.Status, c.IsDeleted, c.DeletedAt)
	case c.RemoteSynced || c.IsVerified:
		t.Errorf("%s: remote_synced=%v is_verified=%v, want false (no SMTP backend)", what, c.RemoteSynced, c.IsVerified)
	case !reset && c.LastPasswordChanged != nil:
		t.Errorf("%s: last_password_changed = %d, want null before any reset", what, *c.LastPasswordChanged)
	case reset && (c.LastPasswordChanged == nil || *c.LastPasswordChanged < c.CreatedAt):
		t.Errorf("%s: last_password_changed = %v, want the reset time", what, c.LastPasswordChanged)
	}
}

func wantStrength(t *testing.T, what string, s gen.StrengthInfo) {
	t.Helper()
	if s.Length != 32 || s.AlphabetSize != 62 || s.Alphabet != "base62" ||
		math.Abs(s.EntropyBits-32*math.Log2(62)) > 0.5 || s.Strength == "" {
		t.Errorf("%s: strength_info = %+v, want 32 base62 characters (~190.5 bits)", what, s)
	}
}

// wantNoPasswordField fails if a JSON body has a key holding a password.
func wantNoPasswordField(t *testing.T, what string, body []byte, passwords ...string) {
	t.Helper()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("%s: body is not JSON: %v", what, err)
	}
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if k == "password" || k == "new_password" || strings.Contains(k, "hash") {
					t.Errorf("%s: body has key %q: %s", what, k, body)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(v)
	for _, p := range passwords {
		if bytes.Contains(body, []byte(p)) {
			t.Errorf("%s: body contains a password: %s", what, body)
		}
	}
}

func TestEndToEnd(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	bin := buildBinary(t)

	// The process wiring of main: exit codes and one-line errors.
	if out, errOut, code := runBinary(t, bin, nil); code != 2 || out != "" ||
		!strings.HasPrefix(errOut, "smtpcreds: ") || strings.Count(errOut, "\n") != 1 || !strings.HasSuffix(errOut, "\n") {
		t.Errorf("smtpcreds (no command): exit %d, stdout %q, stderr %q; want 2 and one line on stderr", code, out, errOut)
	}
	if out, errOut, code := runBinary(t, bin, nil, "version"); code != 0 || !strings.HasPrefix(out, "smtpcreds ") || errOut != "" {
		t.Errorf("smtpcreds version: exit %d, stdout %q, stderr %q; want 0 and the version", code, out, errOut)
	}

	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		t.Fatal(err)
	}
	keyHex := hex.EncodeToString(key[:])
	if _, err := rand.Read(key[:]); err != nil {
		t.Fatal(err)
	}
	dkimKeyHex := hex.EncodeToString(key[:])
	dbURL := emptyDatabase(t)
	env := map[string]string{
		"DATABASE_URL":               dbURL,
		"SMTPCREDS_TOKEN_KEY":        keyHex,
		"SMTPCREDS_DKIM_KEY":         dkimKeyHex,
		"SMTPCREDS_ADDR":             "127.0.0.1:0",
		"SMTPCREDS_RATE_LIMIT":       strconv.Itoa(e2eRateLimit),
		"SMTPCREDS_LOG_LEVEL":        "debug", // whatever is logged at all must be safe
		"SMTPCREDS_SHUTDOWN_TIMEOUT": "5s",
	}

	// serve refuses a database that is not migrated.
	if _, errOut, code := runBinary(t, bin, env, "serve"); code != 1 || !strings.Contains(errOut, "migrate") {
		t.Errorf("serve on an empty database: exit %d, stderr %q; want 1 asking for 'smtpcreds migrate'", code, errOut)
	}
	mustRun(t, bin, env, "migrate")
	mustRun(t, bin, env, "migrate") // idempotent

	acmeToken := createToken(t, bin, env, "accounts", "create", "acme")
	if out := mustRun(t, bin, env, "domains", "add", "acme", "example.com", "--verified"); out != "example.com\n" {
		t.Errorf("domains add acme example.com --verified: stdout %q", out)
	}
	mustRun(t, bin, env, "domains", "add", "acme", "unverified.example")
	otherToken := createToken(t, bin, env, "accounts", "create", "other")
	mustRun(t, bin, env, "domains", "add", "--verified", "other", "other.example")

	srv := startServer(t, bin, env)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	acme := newClient(t, srv.addr, "acme", acmeToken)
	other := newClient(t, srv.addr, "other", otherToken)

	var (
		passwords   []string // every password the server handed out
		secretAuths = []string{basicauth.Format("acme", acmeToken), basicauth.Format("other", otherToken)}
		secrets     = []string{acmeToken, otherToken, keyHex, dkimKeyHex}
	)

	// Create.
	create := func(c *gen.ClientWithResponses, domain, username string) *gen.CreateCredentialResponse {
		t.Helper()
		r, err := c.CreateCredentialWithResponse(ctx, domain, nil, gen.CredentialInput{Username: &username})
		if err != nil {
			t.Fatalf("create %s@%s: %v", username, domain, err)
		}
		return r
	}
	cr := create(acme, "example.com", "hello")
	wantStatus(t, "create", cr, nil, http.StatusCreated)
	wantRateLimitHeaders(t, "create", cr.HTTPResponse.Header)
	if got := cr.HTTPResponse.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("create: Cache-Control = %q, want no-store", got)
	}
	if cr.JSON201 == nil {
		t.Fatalf("create: no JSON body: %s", cr.Body)
	}
	created := cr.JSON201.Data
	passwords = append(passwords, created.Password)
	if !cr.JSON201.Success || cr.JSON201.Message != "Credential created successfully." {
		t.Errorf("create: success=%v message=%q", cr.JSON201.Success, cr.JSON201.Message)
	}
	if !passwordRE.MatchString(created.Password) {
		t.Errorf("create: password %q, want 32 base62 characters", created.Password)
	}
	if created.RemoteSynced {
		t.Errorf("create: remote_synced = true, want false")
	}
	wantStrength(t, "create", created.StrengthInfo)
	wantCredential(t, "create", created.Credential, "hello", "example.com", false)
	guid := created.Credential.UserSmtpGuid

	// Two more, to page through. The second is sent in upper case and
	// stored lower case.
	for _, u := range []string{"second", "THIRD"} {
		r := create(acme, "example.com", u)
		wantStatus(t, "create "+u, r, nil, http.StatusCreated)
		passwords = append(passwords, r.JSON201.Data.Password)
		wantCredential(t, "create "+u, r.JSON201.Data.Credential, strings.ToLower(u), "example.com", false)
	}

	// List: defaults, then a second page of two.
	lr, err := acme.ListCredentialsWithResponse(ctx, "example.com", nil)
	wantStatus(t, "list", lr, err, http.StatusOK)
	wantRateLimitHeaders(t, "list", lr.HTTPResponse.Header)
	wantNoPasswordField(t, "list", lr.Body, passwords...)
	if lr.JSON200 == nil {
		t.Fatalf("list: no JSON body: %s", lr.Body)
	}
	var raw struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(lr.Body, &raw); err != nil || !bytes.HasPrefix(bytes.TrimSpace(raw.Data), []byte("[")) {
		t.Errorf("list: data is not a flat array: %s", lr.Body)
	}
	lp := lr.JSON200
	if p := lp.Pagination; !lp.Success || lp.Domain != "example.com" || len(lp.Data) != 3 ||
		p.Total != 3 || p.Page != 1 || p.Limit != 15 || p.Offset != 0 || p.LastPage != 1 {
		t.Errorf("list: got %s, want 3 credentials on page 1 of 1, limit 15", lr.Body)
	} else {
		for i, want := range []string{"hello", "second", "third"} {
			if lp.Data[i].Username != want {
				t.Errorf("list: data[%d].username = %q, want %q (oldest first)", i, lp.Data[i].Username, want)
			}
		}
		wantCredential(t, "list", lp.Data[0], "hello", "example.com", false)
		if lp.Data[0].UserSmtpGuid != guid {
			t.Errorf("list: data[0].user_smtp_guid = %s, want %s", lp.Data[0].UserSmtpGuid, guid)
		}
	}
	page, limit := 2, 2
	lr, err = acme.ListCredentialsWithResponse(ctx, "example.com", &gen.ListCredentialsParams{Page: &page, Limit: &limit})
	wantStatus(t, "list page 2", lr, err, http.StatusOK)
	if p := lr.JSON200.Pagination; len(lr.JSON200.Data) != 1 || lr.JSON200.Data[0].Username != "third" ||
		p.Total != 3 || p.Page != 2 || p.Limit != 2 || p.Offset != 2 || p.LastPage != 2 {
		t.Errorf("list page=2 limit=2: got %s, want [third], total 3, offset 2, last_page 2", lr.Body)
	}

	// Get: the credential, no password anywhere.
	gr, err := acme.GetCredentialWithResponse(ctx, "example.com", guid)
	wantStatus(t, "get", gr, err, http.StatusOK)
	wantRateLimitHeaders(t, "get", gr.HTTPResponse.Header)
	wantNoPasswordField(t, "get", gr.Body, passwords...)
	if !gr.JSON200.Success {
		t.Errorf("get: success = false")
	}
	wantCredential(t, "get", gr.JSON200.Data, "hello", "example.com", false)
	if gr.JSON200.Data.UserSmtpGuid != guid || gr.JSON200.Data.Id != created.Credential.Id {
		t.Errorf("get: got credential %s, want %s", gr.Body, guid)
	}
	// The domain in the path is case-insensitive.
	gr, err = acme.GetCredentialWithResponse(ctx, "EXAMPLE.com", guid)
	wantStatus(t, "get with upper-case domain", gr, err, http.StatusOK)

	// Reset the password.
	rr, err := acme.ResetCredentialPasswordWithResponse(ctx, "example.com", guid, nil, gen.ResetCredentialPasswordJSONRequestBody{})
	wantStatus(t, "reset-password", rr, err, http.StatusOK)
	wantRateLimitHeaders(t, "reset-password", rr.HTTPResponse.Header)
	if got := rr.HTTPResponse.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("reset-password: Cache-Control = %q, want no-store", got)
	}
	reset := rr.JSON200.Data
	passwords = append(passwords, reset.NewPassword)
	if !rr.JSON200.Success || rr.JSON200.Message != "Password reset successfully." {
		t.Errorf("reset-password: success=%v message=%q", rr.JSON200.Success, rr.JSON200.Message)
	}
	if !passwordRE.MatchString(reset.NewPassword) || reset.NewPassword == created.Password {
		t.Errorf("reset-password: new_password %q, want 32 base62 characters unlike the old %q", reset.NewPassword, created.Password)
	}
	if reset.RemoteSynced {
		t.Errorf("reset-password: remote_synced = true, want false")
	}
	wantStrength(t, "reset-password", reset.StrengthInfo)
	wantCredential(t, "reset-password", reset.Credential, "hello", "example.com", true)
	if reset.Credential.UserSmtpGuid != guid {
		t.Errorf("reset-password: credential %s, want %s", reset.Credential.UserSmtpGuid, guid)
	}
	gr, err = acme.GetCredentialWithResponse(ctx, "example.com", guid)
	wantStatus(t, "get after reset", gr, err, http.StatusOK)
	wantNoPasswordField(t, "get after reset", gr.Body, passwords...)
	wantCredential(t, "get after reset", gr.JSON200.Data, "hello", "example.com", true)

	// Delete, then it is gone.
	dr, err := acme.DeleteCredentialWithResponse(ctx, "example.com", guid)
	wantStatus(t, "delete", dr, err, http.StatusOK)
	wantRateLimitHeaders(t, "delete", dr.HTTPResponse.Header)
	if !dr.JSON200.Success || dr.JSON200.Message != "Credential deleted successfully." {
		t.Errorf("delete: body %s", dr.Body)
	}
	if dr.JSON200.Data.RemoteSynced {
		t.Errorf("delete: remote_synced = true, want false")
	}
	gr, err = acme.GetCredentialWithResponse(ctx, "example.com", guid)
	wantStatus(t, "get after delete", gr, err, http.StatusNotFound)
	wantRateLimitHeaders(t, "get after delete", gr.HTTPResponse.Header)
	if gr.JSON404 == nil || gr.JSON404.Success || gr.JSON404.Message != "Credential not found" {
		t.Errorf("get after delete: body %s, want Credential not found", gr.Body)
	}
	dr, err = acme.DeleteCredentialWithResponse(ctx, "example.com", guid)
	wantStatus(t, "delete again", dr, err, http.StatusNotFound)
	rr, err = acme.ResetCredentialPasswordWithResponse(ctx, "example.com", guid, nil, gen.ResetCredentialPasswordJSONRequestBody{})
	wantStatus(t, "reset-password after delete", rr, err, http.StatusNotFound)
	lr, err = acme.ListCredentialsWithResponse(ctx, "example.com", nil)
	wantStatus(t, "list after delete", lr, err, http.StatusOK)
	if lr.JSON200.Pagination.Total != 2 || len(lr.JSON200.Data) != 2 {
		t.Errorf("list after delete: %s, want the 2 others", lr.Body)
	}
	// The username is free again.
	cr = create(acme, "example.com", "hello")
	wantStatus(t, "re-create deleted username", cr, nil, http.StatusCreated)
	passwords = append(passwords, cr.JSON201.Data.Password)

	// Validation: unverified domain, duplicate username (case-insensitive).
	cr = create(acme, "unverified.example", "someone")
	wantStatus(t, "create on unverified domain", cr, nil, http.StatusUnprocessableEntity)
	wantRateLimitHeaders(t, "create on unverified domain", cr.HTTPResponse.Header)
	if cr.JSON422 == nil || cr.JSON422.Success || cr.JSON422.Message != "Validation failed." || len(cr.JSON422.Errors["domain"]) == 0 {
		t.Errorf("create on unverified domain: body %s, want errors.domain", cr.Body)
	}
	for _, u := range []string{"second", "Second"} {
		cr = create(acme, "example.com", u)
		wantStatus(t, "duplicate username "+u, cr, nil, http.StatusUnprocessableEntity)
		if cr.JSON422 == nil || cr.JSON422.Message != "Validation failed." || len(cr.JSON422.Errors["username"]) == 0 {
			t.Errorf("duplicate username %s: body %s, want errors.username", u, cr.Body)
		}
	}

	// Wrong credentials: 401 with a challenge, and no rate-limit state.
	wrongToken, err := apitoken.New() // well formed, so it is looked up
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, user, token string }{
		{"wrong token", "acme", wrongToken},
		{"another account's token", "acme", otherToken},
		{"malformed token", "acme", "not-a-token"},
		{"unknown account", "nobody", acmeToken},
	} {
		secrets = append(secrets, tc.token)
		secretAuths = append(secretAuths, basicauth.Format(tc.user, tc.token))
		bad := newClient(t, srv.addr, tc.user, tc.token)
		r, err := bad.ListCredentialsWithResponse(ctx, "example.com", nil)
		wantStatus(t, tc.name, r, err, http.StatusUnauthorized)
		if got := r.HTTPResponse.Header.Get("WWW-Authenticate"); got != `Basic realm="smtpcreds"` {
			t.Errorf("%s: WWW-Authenticate = %q", tc.name, got)
		}
		if r.JSON401 == nil || r.JSON401.Success || r.JSON401.Message != "Unauthorized" ||
			r.JSON401.Error == nil || *r.JSON401.Error != "Unauthorized" {
			t.Errorf("%s: body %s", tc.name, r.Body)
		}
		if r.HTTPResponse.Header.Get("X-RateLimit-Limit") != "" {
			t.Errorf("%s: X-RateLimit-Limit on an unauthenticated response", tc.name)
		}
	}

	// Another account's domain and credentials look like missing ones.
	or := create(other, "other.example", "theirs")
	wantStatus(t, "other: create", or, nil, http.StatusCreated)
	passwords = append(passwords, or.JSON201.Data.Password)
	theirs := or.JSON201.Data.Credential.UserSmtpGuid
	cr = create(acme, "other.example", "intruder")
	wantStatus(t, "create on another account's domain", cr, nil, http.StatusNotFound)
	wantRateLimitHeaders(t, "create on another account's domain", cr.HTTPResponse.Header)
	if cr.JSON404 == nil || cr.JSON404.Success || cr.JSON404.Message != "Domain not found" {
		t.Errorf("create on another account's domain: body %s, want Domain not found", cr.Body)
	}
	lr, err = acme.ListCredentialsWithResponse(ctx, "other.example", nil)
	wantStatus(t, "list another account's domain", lr, err, http.StatusNotFound)
	if lr.JSON404 == nil || lr.JSON404.Message != "Domain not found" {
		t.Errorf("list another account's domain: body %s, want Domain not found", lr.Body)
	}
	lr, err = acme.ListCredentialsWithResponse(ctx, "missing.example", nil)
	wantStatus(t, "list a domain nobody has", lr, err, http.StatusNotFound)
	gr, err = acme.GetCredentialWithResponse(ctx, "other.example", theirs)
	wantStatus(t, "get another account's credential", gr, err, http.StatusNotFound)
	gr, err = acme.GetCredentialWithResponse(ctx, "example.com", theirs)
	wantStatus(t, "get another account's credential via own domain", gr, err, http.StatusNotFound)
	if gr.JSON404 == nil || gr.JSON404.Message != "Credential not found" {
		t.Errorf("get another account's credential via own domain: body %s, want Credential not found", gr.Body)
	}
	rr, err = acme.ResetCredentialPasswordWithResponse(ctx, "other.example", theirs, nil, gen.ResetCredentialPasswordJSONRequestBody{})
	wantStatus(t, "reset another account's credential", rr, err, http.StatusNotFound)
	dr, err = acme.DeleteCredentialWithResponse(ctx, "other.example", theirs)
	wantStatus(t, "delete another account's credential", dr, err, http.StatusNotFound)
	gr, err = other.GetCredentialWithResponse(ctx, "other.example", theirs)
	wantStatus(t, "other: get own credential after the attempts", gr, err, http.StatusOK)

	// Rotating a token takes effect at once on the running server.
	newOther := createToken(t, bin, env, "accounts", "rotate-token", "other")
	secrets = append(secrets, newOther)
	secretAuths = append(secretAuths, basicauth.Format("other", newOther))
	if newOther == otherToken {
		t.Errorf("rotate-token printed the old token")
	}
	lr, err = other.ListCredentialsWithResponse(ctx, "other.example", nil)
	wantStatus(t, "old token after rotate-token", lr, err, http.StatusUnauthorized)
	lr, err = newClient(t, srv.addr, "other", newOther).ListCredentialsWithResponse(ctx, "other.example", nil)
	wantStatus(t, "new token after rotate-token", lr, err, http.StatusOK)

	srv.stop(t)

	// The log: JSON lines, the lifecycle, and no secret at all.
	log := srv.logText()
	srv.mu.Lock()
	if len(srv.bad) > 0 {
		t.Errorf("stderr lines that are not JSON: %q", srv.bad)
	}
	srv.mu.Unlock()
	for _, msg := range []string{`"msg":"listening"`, `"msg":"request"`, `"msg":"shutting down"`, `"msg":"stopped"`} {
		if !strings.Contains(log, msg) {
			t.Errorf("server log lacks %s", msg)
		}
	}
	for what, list := range map[string][]string{"password": passwords, "token or key": secrets} {
		for _, s := range list {
			if strings.Contains(log, s) {
				t.Errorf("server log contains a %s (%q)", what, s)
			}
		}
	}
	for _, a := range secretAuths {
		b64 := strings.TrimPrefix(a, "Basic ")
		if strings.Contains(log, b64) {
			t.Errorf("server log contains an Authorization header value (%q)", a)
		}
	}
	if t.Failed() {
		t.Logf("server log:\n%s", log)
	}
}
