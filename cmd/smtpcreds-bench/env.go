package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"

	"github.com/smtpcreds/smtpcreds/internal/localpg"
)

// env is the system under test: a durable local PostgreSQL, the server
// binary and one running `smtpcreds serve`.
type env struct {
	tmp      string
	bin      string
	cluster  *localpg.Cluster
	dbURL    string
	db       *sqlx.DB // superuser pool on the server's database
	tokenKey string
	dkimKey  string

	account string
	token   string
	domain  string
	baseURL string
	opAddr  string
	passwd  string
	layout  string        // passwd-file template below tmp/passwd
	target  string        // the server's sync target: targetFile, targetSQL or targetWebhook
	hook    *hookReceiver // the webhook target's receiver
	// capSetting is the server's credential cap per domain: "" for
	// benchCap, capDefault for none set (the server's default), or a
	// number ("0": no cap).
	capSetting string
	// spread > 0: creates go round-robin into the domains sp1.example ...
	// sp<spread>.example instead of domain.
	spread int
	// passwdGroup is the group of the passwd-file(s) ("": the server's
	// default), Dovecot's when the bench runs one.
	passwdGroup string

	srv    *exec.Cmd
	srvLog *os.File
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// setupEnvBin builds the server (or takes the binary bin, e.g. one built
// from an earlier commit, to measure it the same way; "": built from this
// tree), starts PostgreSQL with pg_stat_statements loaded, migrates and
// creates the bench account and domain.
func setupEnvBin(ctx context.Context, layout, bin string, logf func(string, ...any)) (*env, error) {
	tmp, err := os.MkdirTemp("", "smtpcreds-bench-")
	if err != nil {
		return nil, err
	}
	// The cluster runs as "postgres" when we are root: it must traverse tmp.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	e := &env{tmp: tmp, tokenKey: randHex(32), dkimKey: randHex(32), account: "bench", domain: "bench.example", layout: layout, target: targetFile}
	e.bin = filepath.Join(tmp, "smtpcreds")
	if bin != "" {
		if e.bin, err = filepath.Abs(bin); err != nil {
			return e, err
		}
	} else {
		logf("building the server binary")
		build := exec.CommandContext(ctx, "go", "build", "-o", e.bin, "./cmd/smtpcreds")
		if out, err := build.CombinedOutput(); err != nil {
			return e, fmt.Errorf("go build: %w\n%s", err, out)
		}
	}
	logf("starting a durable PostgreSQL (Fast=false) in %s", tmp)
	e.cluster, err = localpg.Start(ctx, localpg.Options{Dir: filepath.Join(tmp, "pg")})
	if err != nil {
		return e, err
	}
	admin, err := sqlx.Open("postgres", e.cluster.URL("postgres"))
	if err != nil {
		return e, err
	}
	_, err = admin.ExecContext(ctx, `ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'`)
	if err == nil {
		_, err = admin.ExecContext(ctx, `CREATE DATABASE smtpcreds`)
	}
	admin.Close()
	if err != nil {
		return e, fmt.Errorf("prepare cluster: %w", err)
	}
	if err := e.cluster.Stop(); err != nil {
		return e, err
	}
	if err := e.cluster.Start(ctx); err != nil {
		return e, err
	}
	e.dbURL = e.cluster.URL("smtpcreds")
	if e.db, err = sqlx.Open("postgres", e.dbURL); err != nil {
		return e, err
	}
	if _, err := e.db.ExecContext(ctx, `CREATE EXTENSION pg_stat_statements`); err != nil {
		return e, fmt.Errorf("create extension pg_stat_statements: %w", err)
	}
	if _, err := e.cli(ctx, "migrate"); err != nil {
		return e, err
	}
	out, err := e.cli(ctx, "accounts", "create", e.account)
	if err != nil {
		return e, err
	}
	e.token = strings.TrimSpace(out)
	if _, err := e.cli(ctx, "domains", "add", e.account, e.domain, "--verified"); err != nil {
		return e, err
	}
	if _, err := e.cli(ctx, "domains", "add", e.account, readsDomain, "--verified"); err != nil {
		return e, err
	}
	return e, nil
}

func (e *env) environ() []string {
	return append(os.Environ(),
		"DATABASE_URL="+e.dbURL,
		"SMTPCREDS_TOKEN_KEY="+e.tokenKey,
		"SMTPCREDS_DKIM_KEY="+e.dkimKey,
	)
}

// cli runs one `smtpcreds` command and returns its stdout.
func (e *env) cli(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, e.bin, args...)
	cmd.Env = e.environ()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("smtpcreds %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// benchCap is the server's credential cap per domain: high enough for the
// million credentials of the read runs, so that creates run the capped
// path, the default configuration's, and never meet it.
const benchCap = 10_000_000

// capDefault is capSetting for the server's default cap (the bench sets
// none); defaultCap is that default (the default of --max-credentials-per-domain
// in cmd/smtpcreds/config.go, which `serve --help` does not print), for
// pgbench to run the same. Were the server's lower, the spread runs' creates
// would be refused and count as errors.
const (
	capDefault = "default"
	defaultCap = 1000
)

// capValue is the cap the server runs with.
func (e *env) capValue() int {
	switch e.capSetting {
	case "":
		return benchCap
	case capDefault:
		return defaultCap
	}
	n, _ := strconv.Atoi(e.capSetting)
	return n
}

// spreadDomain is the name of the i-th (from 1) spread domain.
func spreadDomain(i int) string { return "sp" + strconv.Itoa(i) + ".example" }

// createURL is where the n-th create of a run goes: the bench domain, or
// round-robin over the spread domains.
func (e *env) createURL(n int64) string {
	d := e.domain
	if e.spread > 0 {
		d = spreadDomain(int(n%int64(e.spread)) + 1)
	}
	return e.baseURL + "/api/domains/" + d + "/credentials"
}

// startServer runs `smtpcreds serve` with a rate limit it never reaches, a
// cap (benchCap, which it never reaches, unless capSetting says otherwise),
// a passwd-file sync target and an operator listener with pprof.
func (e *env) startServer(ctx context.Context) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	if e.opAddr, err = freeAddr(); err != nil {
		return err
	}
	e.baseURL = "http://" + addr
	e.passwd = filepath.Join(e.tmp, "passwd", e.layout)
	if err := os.MkdirAll(filepath.Join(e.tmp, "passwd"), 0o755); err != nil {
		return err
	}
	if e.srvLog, err = os.OpenFile(filepath.Join(e.tmp, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
		return err
	}
	if err := e.prepareTarget(ctx); err != nil {
		return err
	}
	e.srv = exec.Command(e.bin, "serve")
	e.srv.Env = append(append(e.environ(), e.syncEnv()...),
		"SMTPCREDS_ADDR="+addr,
		"SMTPCREDS_RATE_LIMIT=100000000", // on, and never reached
		"SMTPCREDS_OPERATOR_ADDR="+e.opAddr,
		"SMTPCREDS_PPROF=true",
	)
	switch e.capSetting {
	case "":
		e.srv.Env = append(e.srv.Env, "SMTPCREDS_MAX_CREDENTIALS_PER_DOMAIN="+strconv.Itoa(benchCap))
	case capDefault: // the server's own default
	default:
		e.srv.Env = append(e.srv.Env, "SMTPCREDS_MAX_CREDENTIALS_PER_DOMAIN="+e.capSetting)
	}
	e.srv.Stdout, e.srv.Stderr = e.srvLog, e.srvLog
	if err := e.srv.Start(); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(e.baseURL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("server did not become healthy; see %s", e.srvLog.Name())
}

// stopServer stops the server (gracefully, for up to 20 s).
func (e *env) stopServer() {
	if e.srv != nil && e.srv.Process != nil {
		_ = e.srv.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = e.srv.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = e.srv.Process.Kill()
		}
	}
	e.srv = nil
	if e.srvLog != nil {
		e.srvLog.Close()
		e.srvLog = nil
	}
}

func (e *env) close(keep bool) {
	e.stopServer()
	if e.hook != nil {
		e.hook.close()
	}
	if e.db != nil {
		e.db.Close()
	}
	if e.cluster != nil {
		_ = e.cluster.Stop()
	}
	if !keep && e.tmp != "" {
		os.RemoveAll(e.tmp)
	}
}

// procCPU returns utime+stime of pid in seconds.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	// Fields after the command name, which is in parentheses.
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+2:])
	// f[0] is field 3 (state); utime is field 14, stime 15.
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clockTicks(), nil
}

func clockTicks() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
			return v
		}
	}
	return 100
}

// procHWM returns VmHWM of pid in MB.
func procHWM(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmHWM")
}

// cpuProfile writes the server's CPU profile over most of a run of length d
// (the server's operator listener serves pprof in the bench).
func (e *env) cpuProfile(ctx context.Context, path string, d time.Duration) error {
	secs := max(1, int((d-time.Second)/time.Second))
	req, err := http.NewRequestWithContext(ctx, "GET",
		"http://"+e.opAddr+"/debug/pprof/profile?seconds="+strconv.Itoa(secs), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof: status %d", resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// withEnv runs fn on a fresh env (setupEnvBin: a database of its own, the
// server binary of -server-bin or built from this tree, no server
// running yet) with the passwd-file layout, and closes the env after it
// (its directory kept with -keep).
func withEnv(ctx context.Context, o options, layout string, fn func(*env) error) error {
	e, err := setupEnvBin(ctx, layout, o.serverBin, logf)
	defer func() {
		if e != nil {
			e.close(o.keep)
			if o.keep {
				logf("kept %s", e.tmp)
			}
		}
	}()
	if err != nil {
		return err
	}
	return fn(e)
}
