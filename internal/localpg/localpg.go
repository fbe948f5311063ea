// Package localpg starts and stops a local PostgreSQL cluster from the
// installed server binaries, so `make run` and the tests need no database set up.
//
// It runs initdb and pg_ctl (see BinDir).
//
// It serves two users: smtpcreds itself, which keeps a persistent cluster
// under ./.data/pg for `make run` when DATABASE_URL is unset, and the test
// harness (internal/dbtest), which starts a throwaway cluster in a temporary
// directory.
//
// A cluster is created with trust authentication, UTF8 encoding and the C
// locale, superuser "postgres". It listens on 127.0.0.1 only, over TCP only
// (no Unix socket), so nothing outside the machine can reach it. The
// settings localpg needs live in smtpcreds.conf inside the data directory,
// included from postgresql.conf and rewritten on every start; the chosen
// port is also remembered in smtpcreds.port so that a persistent cluster
// keeps its port across restarts. The server log is appended to
// smtpcreds-server.log in the data directory.
//
// PostgreSQL refuses to run as root. When the calling process is root the
// tools are run as the "postgres" user (dropping privileges for the child
// processes only) and the data directory is chowned to that user; every
// ancestor of the data directory must then be searchable by it.
package localpg

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "github.com/lib/pq" // "postgres" driver, used to wait for readiness
)

// Files localpg keeps in the data directory.
const (
	portFile   = "smtpcreds.port"
	confFile   = "smtpcreds.conf"
	logFile    = "smtpcreds-server.log"
	includeCmd = "include_if_exists = '" + confFile + "'"
)

// Defaults used when the context has no deadline.
const (
	defaultStartTimeout = 60 * time.Second
	stopTimeout         = 60 * time.Second
)

// Options configures Start.
type Options struct {
	// Dir is the data directory. It is created and initialised with initdb
	// when it holds no cluster yet. Required.
	Dir string
	// Port is the TCP port on 127.0.0.1. 0 picks one: the port remembered
	// in Dir from an earlier start if it is still free, else a free one,
	// which is then remembered for later starts.
	Port int
	// Fast selects settings for throwaway test clusters: fsync,
	// synchronous_commit and full_page_writes off (data does not survive an
	// OS crash), max_connections 200, and initdb without syncing.
	Fast bool
	// Logf, when non-nil, receives progress messages.
	Logf func(format string, args ...any)
}

// Cluster is a PostgreSQL cluster in a data directory. Its methods are safe
// for concurrent use.
type Cluster struct {
	dir   string
	bin   string
	fast  bool
	logf  func(format string, args ...any)
	owner *owner

	// port and reused are set by the package-level Start before the
	// Cluster is returned and never change afterwards.
	port   int
	reused bool

	mu sync.Mutex // serialises Start and Stop
}

// Start makes sure a PostgreSQL server for opt.Dir is running and accepting
// connections on 127.0.0.1, and returns a handle to it.
//
// If opt.Dir holds no cluster yet (no PG_VERSION file) it is created,
// together with missing parent directories, and initialised with initdb. If
// a server for opt.Dir is already running (for instance one left behind by a
// previous `make run`), Start does not start another one: it waits until that
// server accepts connections and returns a Cluster for it, with the port
// read from its postmaster.pid and Reused reporting true; opt.Port and
// opt.Fast are then not applied until the server is restarted.
//
// The port is opt.Port if non-zero; otherwise the port remembered in the
// data directory, if any and still free; otherwise a free port picked on
// 127.0.0.1 (if another process grabs an automatically chosen port before the
// server binds it, Start retries with a new one).
//
// Start honours ctx for the initdb and pg_ctl invocations and for the wait;
// without a deadline it waits at most a minute for the server. Errors carry
// the output of the failing tool and, when the server did not come up, the
// tail of the server log.
func Start(ctx context.Context, opt Options) (*Cluster, error) {
	if opt.Dir == "" {
		return nil, errors.New("localpg: Options.Dir is empty")
	}
	if opt.Port < 0 || opt.Port > 65535 {
		return nil, fmt.Errorf("localpg: invalid port %d", opt.Port)
	}
	dir, err := filepath.Abs(opt.Dir)
	if err != nil {
		return nil, fmt.Errorf("localpg: %w", err)
	}
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	own, err := lookupOwner()
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, bin: bin, fast: opt.Fast, logf: opt.Logf, owner: own}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	if err := c.prepareDir(); err != nil {
		return nil, err
	}

	if ok, err := c.reuse(ctx); err != nil {
		return nil, err
	} else if ok {
		return c, nil
	}
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := c.initdb(ctx); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("localpg: %w", err)
	}
	if err := c.ensureInclude(); err != nil {
		return nil, err
	}

	auto := opt.Port == 0
	c.port = opt.Port
	if auto {
		if c.port, err = c.pickPort(); err != nil {
			return nil, err
		}
	}
	for attempt := 1; ; attempt++ {
		err = c.start(ctx)
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		// A concurrent Start on the same directory may have won the race.
		if ok, rerr := c.reuse(ctx); rerr != nil {
			return nil, fmt.Errorf("%w\n(then adopting a concurrently started server failed: %v)", err, rerr)
		} else if ok {
			return c, nil
		}
		var be *bindError
		if !auto || attempt >= 3 || !errors.As(err, &be) {
			return nil, err
		}
		old := c.port
		if c.port, err = freePort(); err != nil {
			return nil, err
		}
		c.logf("localpg: port %d was taken before the server could bind it; retrying on %d", old, c.port)
	}
}

// Dir returns the absolute data directory of the cluster.
func (c *Cluster) Dir() string { return c.dir }

// Port returns the TCP port the server listens on at 127.0.0.1. It does not
// change across Stop and Start.
func (c *Cluster) Port() int { return c.port }

// Reused reports whether Start found the server already running and adopted
// it rather than starting it.
func (c *Cluster) Reused() bool { return c.reused }

// URL returns the connection URL for database dbname as the superuser
// "postgres": postgres://postgres@127.0.0.1:PORT/DBNAME?sslmode=disable.
func (c *Cluster) URL(dbname string) string {
	return urlFor(c.Port(), dbname)
}

func urlFor(port int, dbname string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Stop shuts the server down with `pg_ctl stop -m fast` (open sessions are
// terminated, then a clean shutdown) and waits for it to exit. It stops the
// server also when Start adopted an already running one. Stopping a cluster
// that is not running is not an error. The error carries pg_ctl's output.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout+10*time.Second)
	defer cancel()
	return stopDir(ctx, c.bin, c.owner, c.dir, "fast", c.logf)
}

// Start starts the server again after Stop, on the same port, and waits
// until it accepts connections. It is a no-op when the server is running.
// Errors are as for the package-level Start.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, _, err := c.status(ctx)
	if err != nil {
		return err
	}
	if st == statusRunning {
		return c.waitReady(ctx)
	}
	return c.start(ctx)
}

// StopDir stops, with `pg_ctl stop -m immediate`, a server running for data
// directory dir, and returns nil when none is running. It is meant for
// cleaning up clusters orphaned by a crashed process; the next start of such
// a cluster performs crash recovery.
func StopDir(ctx context.Context, dir string) error {
	bin, err := BinDir()
	if err != nil {
		return err
	}
	own, err := lookupOwner()
	if err != nil {
		return err
	}
	return stopDir(ctx, bin, own, dir, "immediate", func(string, ...any) {})
}

func stopDir(ctx context.Context, bin string, own *owner, dir, mode string, logf func(string, ...any)) error {
	c := &Cluster{dir: dir, bin: bin, owner: own}
	st, _, err := c.status(ctx)
	if err != nil {
		return err
	}
	if st != statusRunning {
		return nil
	}
	logf("localpg: stopping PostgreSQL in %s", dir)
	out, err := c.run(ctx, "pg_ctl", "stop", "-D", dir, "-m", mode, "-w",
		"-t", strconv.Itoa(int(stopTimeout/time.Second)))
	if err == nil {
		return nil
	}
	// It may have stopped on its own meanwhile.
	if st, _, serr := c.status(ctx); serr == nil && st != statusRunning {
		return nil
	}
	return fmt.Errorf("localpg: pg_ctl stop %s: %w\n%s", dir, err, out)
}

// prepareDir creates the data directory (and parents) if needed and, when
// running as root, hands it to the postgres user.
func (c *Cluster) prepareDir() error {
	if err := c.owner.checkTraversable(c.dir); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(c.dir), 0o755); err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	if err := os.Mkdir(c.dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("localpg: %w", err)
	}
	if err := c.owner.checkTraversable(c.dir); err != nil {
		return err
	}
	if err := c.owner.chownTree(c.dir); err != nil {
		return fmt.Errorf("localpg: giving %s to user %s: %w", c.dir, c.owner.name, err)
	}
	return nil
}

// reuse adopts a server already running for c.dir. It reports false when
// none is running.
func (c *Cluster) reuse(ctx context.Context) (bool, error) {
	st, _, err := c.status(ctx)
	if err != nil || st != statusRunning {
		return false, err
	}
	port, err := c.pidFilePort()
	if err != nil {
		return true, err
	}
	c.port = port
	c.reused = true
	c.logf("localpg: reusing PostgreSQL already running in %s on port %d", c.dir, port)
	return true, c.waitReady(ctx)
}

// pidFilePort reads the port from postmaster.pid (its fourth line).
func (c *Cluster) pidFilePort() (int, error) {
	p := filepath.Join(c.dir, "postmaster.pid")
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, fmt.Errorf("localpg: reading port of running server: %w", err)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) >= 4 {
		if port, err := strconv.Atoi(strings.TrimSpace(lines[3])); err == nil && port > 0 {
			return port, nil
		}
	}
	return 0, fmt.Errorf("localpg: no port in %s:\n%s", p, b)
}

func (c *Cluster) initdb(ctx context.Context) error {
	c.logf("localpg: initialising PostgreSQL cluster in %s", c.dir)
	args := []string{"-D", c.dir, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C"}
	if c.fast {
		args = append(args, "--no-sync")
	}
	if out, err := c.run(ctx, "initdb", args...); err != nil {
		return fmt.Errorf("localpg: initdb %s: %w\n%s", c.dir, err, out)
	}
	return nil
}

// ensureInclude makes postgresql.conf include smtpcreds.conf.
func (c *Cluster) ensureInclude() error {
	p := filepath.Join(c.dir, "postgresql.conf")
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == includeCmd {
			return nil
		}
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	_, err = fmt.Fprintf(f, "\n# Settings managed by smtpcreds (internal/localpg).\n%s\n", includeCmd)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	return nil
}

// pickPort returns the remembered port if there is one and it is free,
// else a fresh free port.
func (c *Cluster) pickPort() (int, error) {
	b, err := os.ReadFile(filepath.Join(c.dir, portFile))
	if err == nil {
		if port, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && port > 0 && port <= 65535 {
			if portFree(port) {
				return port, nil
			}
			c.logf("localpg: remembered port %d is in use; picking another", port)
		}
	}
	return freePort()
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("localpg: picking a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// writeFile writes a file in the data directory, owned by the server user.
func (c *Cluster) writeFile(name, content string) error {
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	if err := c.owner.chown(p); err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	return nil
}

// writeConfig writes smtpcreds.conf and smtpcreds.port for c.port.
func (c *Cluster) writeConfig() error {
	var b strings.Builder
	b.WriteString("# Managed by smtpcreds (internal/localpg); rewritten on every start.\n")
	b.WriteString("listen_addresses = '127.0.0.1'\n")
	fmt.Fprintf(&b, "port = %d\n", c.port)
	b.WriteString("unix_socket_directories = ''\n")
	if c.fast {
		b.WriteString("fsync = off\n")
		b.WriteString("synchronous_commit = off\n")
		b.WriteString("full_page_writes = off\n")
		b.WriteString("max_connections = 200\n")
	}
	if err := c.writeFile(confFile, b.String()); err != nil {
		return err
	}
	return c.writeFile(portFile, strconv.Itoa(c.port)+"\n")
}

// bindError marks a start failure caused by the port being taken.
type bindError struct{ err error }

func (e *bindError) Error() string { return e.err.Error() }
func (e *bindError) Unwrap() error { return e.err }

// start writes the configuration, runs pg_ctl start and waits until the
// server accepts connections. The caller holds c.mu or has not yet shared c.
func (c *Cluster) start(ctx context.Context) error {
	if err := c.writeConfig(); err != nil {
		return err
	}
	logPath := filepath.Join(c.dir, logFile)
	var logOffset int64
	if fi, err := os.Stat(logPath); err == nil {
		logOffset = fi.Size()
	}
	timeout := defaultStartTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	secs := max(int(timeout/time.Second), 1)
	c.logf("localpg: starting PostgreSQL in %s on 127.0.0.1:%d", c.dir, c.port)
	out, err := c.run(ctx, "pg_ctl", "start", "-D", c.dir, "-l", logPath, "-w", "-t", strconv.Itoa(secs))
	if err == nil {
		err = c.waitReady(ctx)
		if err == nil {
			return nil
		}
	} else {
		err = fmt.Errorf("localpg: pg_ctl start %s: %w\n%s", c.dir, err, out)
	}
	if ctx.Err() != nil {
		// pg_ctl was killed or gave up waiting; don't leave a half-started
		// server behind.
		sctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		_ = stopDir(sctx, c.bin, c.owner, c.dir, "immediate", c.logf)
		cancel()
	}
	tail := logTail(logPath, logOffset)
	err = fmt.Errorf("%w\n--- server log (%s) ---\n%s", err, logPath, tail)
	if strings.Contains(tail, "Address already in use") {
		err = &bindError{err}
	}
	return err
}

// waitReady polls until the server accepts an SQL connection.
func (c *Cluster) waitReady(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultStartTimeout)
		defer cancel()
	}
	db, err := sql.Open("postgres", urlFor(c.port, "postgres")+"&connect_timeout=5")
	if err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	defer db.Close()
	db.SetMaxIdleConns(0)
	for {
		err = db.PingContext(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("localpg: PostgreSQL in %s not accepting connections on 127.0.0.1:%d: %w (last error: %v)",
				c.dir, c.port, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

type serverStatus int

const (
	statusStopped serverStatus = iota
	statusRunning
)

// status runs pg_ctl status: exit 0 = running, 3 = not running, 4 = no
// (accessible) data directory, which counts as not running.
func (c *Cluster) status(ctx context.Context) (serverStatus, string, error) {
	out, err := c.run(ctx, "pg_ctl", "status", "-D", c.dir)
	if err == nil {
		return statusRunning, out, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && (ee.ExitCode() == 3 || ee.ExitCode() == 4) {
		return statusStopped, out, nil
	}
	return statusStopped, out, fmt.Errorf("localpg: pg_ctl status %s: %w\n%s", c.dir, err, out)
}

// run runs a PostgreSQL tool from c.bin, as the postgres user when we are
// root, and returns its combined output.
func (c *Cluster) run(ctx context.Context, tool string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, tool), args...)
	cmd.Dir = "/" // our working directory may not be accessible to postgres
	cmd.Env = c.owner.env()
	cmd.SysProcAttr = c.owner.sysProcAttr()
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	// pg_ctl start leaves the server running with its output redirected to
	// the log file; don't wait for inherited descriptors beyond this.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return strings.TrimSpace(buf.String()), err
}

// logTail returns the last lines of the server log written after offset
// (or of the whole file if it shrank).
func logTail(path string, offset int64) string {
	const maxBytes = 8 << 10
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read server log: %v)", err)
	}
	if offset > 0 && offset <= int64(len(b)) {
		b = b[offset:]
	}
	if len(b) > maxBytes {
		b = b[len(b)-maxBytes:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "(empty)"
	}
	return s
}
