// Package dbtest gives each test a fresh PostgreSQL database with the schema
// migrated, so tests hit a real database at the cost of one template clone.
//
// A test package opts in from its TestMain:
//
//	func TestMain(m *testing.M) { dbtest.Main(m) }
//
// Main prepares a server and a template database once per test binary; New
// and NewURL then clone the template (CREATE DATABASE ... TEMPLATE), which is
// much faster than migrating every database.
//
// The server is the one TEST_DATABASE_URL (else DATABASE_URL) points at, if
// set; the URL must name a database the user may connect to and must allow
// CREATE DATABASE and DROP DATABASE. Otherwise Main starts a throwaway local
// cluster (see package localpg) in a temporary directory and removes it at
// the end. Every database name carries the process id and a random part, so
// several test binaries (go test ./... runs packages in parallel) can share
// one server.
//
// Throwaway clusters of test binaries that died without cleaning up (for
// instance killed by go test -timeout) are stopped and removed by the next
// Main. Databases left on an external server by such binaries are not.
package dbtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/smtpcreds/smtpcreds/internal/localpg"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/sqlmigrations"
)

// Environment variables naming an external server, in order of preference.
const (
	envTestURL = "TEST_DATABASE_URL"
	envURL     = "DATABASE_URL"
)

const (
	tempPrefix   = "smtpcreds-dbtest-" // temporary directories of throwaway clusters
	ownerPIDFile = "owner.pid"         // in such a directory: pid of the test binary
	setupTimeout = 3 * time.Minute
	opTimeout    = 2 * time.Minute // per CREATE/DROP DATABASE, including retries
)

// env is the state Main sets up for New and NewURL.
type env struct {
	adminURL string  // connection string of the admin database
	admin    *sql.DB // pool on adminURL; keeps no idle connections
	cluster  *localpg.Cluster
	tmpRoot  string // temporary directory of the throwaway cluster
	runID    string // "<pid>_<random>", unique per test binary
	template string // name of the migrated template database
	seq      atomic.Int64
	createMu sync.Mutex // serialises CREATE DATABASE ... TEMPLATE
}

var current atomic.Pointer[env]

// Main sets up the database server and the migrated template database, runs
// the tests with m.Run, cleans up (drops the template, stops and removes a
// throwaway cluster) and exits the process with the tests' exit code. Call it
// from TestMain; it does not return.
//
// If setup fails, Main prints the reason to stderr and exits with status 1
// without running any test. An interrupt (SIGINT/SIGTERM) during the run
// also triggers the cleanup before exiting.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main without the exit: it returns the exit code (1 when setup
// failed), so that TestMain can check what the tests left behind once
// every test, parallel ones included, has finished:
//
//	func TestMain(m *testing.M) {
//		code := dbtest.Run(m)
//		... // after all tests; the databases are gone
//		os.Exit(code)
//	}
func Run(m *testing.M) int {
	if !flag.Parsed() {
		flag.Parse()
	}
	logf := func(string, ...any) {}
	if testing.Verbose() {
		logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	}

	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	e, err := setup(ctx, logf)
	cancel()
	var once sync.Once
	cleanup := func() {
		once.Do(func() {
			current.Store(nil)
			if e != nil {
				e.teardown(logf)
			}
		})
	}
	if err != nil {
		cleanup()
		fmt.Fprintf(os.Stderr, "dbtest: setup failed: %v\n", err)
		return 1
	}
	current.Store(e)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "dbtest: %v: cleaning up\n", sig)
		cleanup()
		os.Exit(1)
	}()

	code := m.Run()
	signal.Stop(sigs)
	cleanup()
	return code
}

// setup returns a partially filled env together with an error so that the
// caller can tear down whatever was already started.
func setup(ctx context.Context, logf func(string, ...any)) (*env, error) {
	rnd := make([]byte, 4)
	if _, err := rand.Read(rnd); err != nil {
		return nil, err
	}
	e := &env{runID: strconv.Itoa(os.Getpid()) + "_" + hex.EncodeToString(rnd)}

	e.adminURL = os.Getenv(envTestURL)
	if e.adminURL == "" {
		e.adminURL = os.Getenv(envURL)
	}
	if e.adminURL != "" {
		logf("dbtest: using the PostgreSQL server of $%s/$%s", envTestURL, envURL)
	} else {
		sweepOrphans(ctx, logf)
		root, err := os.MkdirTemp("", tempPrefix)
		if err != nil {
			return nil, err
		}
		e.tmpRoot = root
		// The cluster runs as user postgres when we are root; it must be
		// able to traverse the temporary root.
		if err := os.Chmod(root, 0o755); err != nil {
			return e, err
		}
		if err := os.WriteFile(filepath.Join(root, ownerPIDFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return e, err
		}
		c, err := localpg.Start(ctx, localpg.Options{Dir: filepath.Join(root, "pg"), Fast: true, Logf: logf})
		if err != nil {
			return e, err
		}
		e.cluster = c
		e.adminURL = c.URL("postgres")
	}

	admin, err := sql.Open("postgres", e.adminURL)
	if err != nil {
		return e, fmt.Errorf("admin connection: %w", err)
	}
	// No idle connections: each admin statement uses a fresh session, so a
	// server restart by a test does not leave dead connections behind.
	admin.SetMaxIdleConns(0)
	e.admin = admin
	if err := admin.PingContext(ctx); err != nil {
		return e, fmt.Errorf("connecting to admin database %s: %w", redact(e.adminURL), err)
	}

	name := "smtpcreds_tmpl_" + e.runID
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name)); err != nil {
		return e, fmt.Errorf("creating template database %s: %w", name, err)
	}
	e.template = name
	tmplURL, err := withDBName(e.adminURL, name)
	if err != nil {
		return e, err
	}
	tdb, err := sql.Open("postgres", tmplURL)
	if err != nil {
		return e, err
	}
	err = sqlmigrations.Up(ctx, tdb)
	// Close the pool so the template has no sessions left: CREATE DATABASE
	// ... TEMPLATE refuses to copy a database others are connected to.
	if cerr := tdb.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return e, fmt.Errorf("migrating template database %s: %w", name, err)
	}
	logf("dbtest: template database %s migrated", name)
	return e, nil
}

// teardown drops the template and stops and removes a throwaway cluster.
// Problems are reported on stderr; they do not change the exit code.
func (e *env) teardown(logf func(string, ...any)) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if e.admin != nil {
		// Not worth the time when the whole cluster is about to go.
		if e.template != "" && e.cluster == nil {
			if err := e.drop(ctx, e.template); err != nil {
				fmt.Fprintf(os.Stderr, "dbtest: dropping template database: %v\n", err)
			}
		}
		e.admin.Close()
	}
	if e.cluster != nil {
		if err := e.cluster.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "dbtest: stopping PostgreSQL: %v\n", err)
		}
	}
	if e.tmpRoot != "" {
		if err := os.RemoveAll(e.tmpRoot); err != nil {
			fmt.Fprintf(os.Stderr, "dbtest: removing %s: %v\n", e.tmpRoot, err)
		} else {
			logf("dbtest: removed %s", e.tmpRoot)
		}
	}
}

// Cluster returns the throwaway cluster Main started, so that tests can stop
// and restart PostgreSQL, or nil when an external server is used (tests that
// need to control the server should then skip). It also returns nil when
// Main is not running.
func Cluster() *localpg.Cluster {
	if e := current.Load(); e != nil {
		return e.cluster
	}
	return nil
}

// NewURL creates a fresh database, a copy of the migrated template, and
// returns its connection URL (for tests that start the real binary). The
// database is dropped WITH (FORCE) when tb and its subtests complete, which
// also terminates sessions still connected to it. It calls tb.Fatalf when
// Main is not running or the database cannot be created.
func NewURL(tb testing.TB) string {
	tb.Helper()
	e := current.Load()
	if e == nil {
		tb.Fatalf("dbtest: not set up; the package needs func TestMain(m *testing.M) { dbtest.Main(m) }")
	}
	name := fmt.Sprintf("smtpcreds_test_%s_%d", e.runID, e.seq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := e.create(ctx, name); err != nil {
		tb.Fatalf("dbtest: creating database %s from template %s: %v", name, e.template, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if err := e.drop(ctx, name); err != nil {
			tb.Errorf("dbtest: dropping database %s: %v", name, err)
		}
	})
	u, err := withDBName(e.adminURL, name)
	if err != nil {
		tb.Fatalf("dbtest: %v", err)
	}
	return u
}

// New creates a fresh migrated database like NewURL and returns an open
// connection pool on it (driver "postgres", lib/pq). The pool is closed and
// the database dropped when tb and its subtests complete. It calls
// tb.Fatalf when the database cannot be created or reached.
func New(tb testing.TB) *sqlx.DB {
	tb.Helper()
	u := NewURL(tb)
	// The connection mode the server uses (see postgres.Open).
	db, err := sqlx.Open("postgres", postgres.WithSetting(u, "binary_parameters", "yes"))
	if err != nil {
		tb.Fatalf("dbtest: opening %s: %v", redact(u), err)
	}
	// Registered after NewURL's cleanup, so it runs before the drop.
	tb.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		tb.Fatalf("dbtest: connecting to %s: %v", redact(u), err)
	}
	return db
}

// create copies the template into a new database. CREATE DATABASE calls are
// serialised within the process, and retried while the template is still
// busy (e.g. a migration session that has not quite exited) or the server
// is briefly unavailable (a test restarting it).
func (e *env) create(ctx context.Context, name string) error {
	e.createMu.Lock()
	defer e.createMu.Unlock()
	q := "CREATE DATABASE " + pq.QuoteIdentifier(name) + " TEMPLATE " + pq.QuoteIdentifier(e.template)
	return retry(ctx, func() error {
		_, err := e.admin.ExecContext(ctx, q)
		return err
	})
}

// drop drops a database, terminating sessions still connected to it.
func (e *env) drop(ctx context.Context, name string) error {
	q := "DROP DATABASE IF EXISTS " + pq.QuoteIdentifier(name) + " WITH (FORCE)"
	return retry(ctx, func() error {
		_, err := e.admin.ExecContext(ctx, q)
		return err
	})
}

// retry calls f until it succeeds, fails with a non-transient error, or a
// transient one persists for 30 s or until ctx is done.
func retry(ctx context.Context, f func() error) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := f()
		if err == nil || !transient(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// transient reports errors worth retrying: the template database being in
// use, and the server restarting or not (yet) reachable.
func transient(err error) bool {
	var pe *pq.Error
	if errors.As(err, &pe) {
		switch pe.SQLState() {
		case "55006", // object_in_use: "source database ... is being accessed by other users"
			"57P01", // admin_shutdown
			"57P02", // crash_shutdown
			"57P03": // cannot_connect_now: starting up / shutting down
			return true
		}
		return false
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, driver.ErrBadConn) {
		return true
	}
	return strings.Contains(err.Error(), "connection refused")
}

// withDBName returns the connection string dsn with its database replaced
// by name. It accepts postgres:// URLs and key=value connection strings.
func withDBName(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("parsing database URL: %w", err)
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}
	re := regexp.MustCompile(`(^|\s)dbname\s*=\s*('(\\.|[^'])*'|\S*)`)
	if re.MatchString(dsn) {
		return re.ReplaceAllString(dsn, "${1}dbname="+name), nil
	}
	return strings.TrimSpace(dsn + " dbname=" + name), nil
}

// redact hides a password in a postgres:// URL for messages.
func redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		return u.Redacted()
	}
	if strings.Contains(dsn, "password") {
		return "(connection string)"
	}
	return dsn
}

// sweepOrphans stops and removes throwaway clusters whose test binary is
// gone (it died before its cleanup ran). Directories whose owner is alive,
// or unknown, are left alone.
func sweepOrphans(ctx context.Context, logf func(string, ...any)) {
	roots, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, root := range roots {
		b, err := os.ReadFile(filepath.Join(root, ownerPIDFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		logf("dbtest: removing orphaned cluster %s (test process %d is gone)", root, pid)
		if err := localpg.StopDir(ctx, filepath.Join(root, "pg")); err != nil {
			fmt.Fprintf(os.Stderr, "dbtest: stopping orphaned cluster: %v\n", err)
			continue
		}
		os.RemoveAll(root)
	}
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// ViewReader creates a login role that may read view (a table or view of
// the database at dbURL) and nothing else, as an auth server's role would,
// and drops it when the test ends (roles outlive databases). It returns
// the role's name and password. The test is skipped when the server does
// not let the test's user create roles (an external test server is only
// promised CREATE DATABASE).
func ViewReader(tb testing.TB, dbURL, view string) (role, password string) {
	tb.Helper()
	db, err := sql.Open("postgres", dbURL)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	role = "reader_" + strings.ToLower(rand.Text()[:10])
	password = rand.Text()
	if _, err := db.Exec(`CREATE ROLE ` + role + ` LOGIN PASSWORD ` + pq.QuoteLiteral(password)); err != nil {
		var pqErr *pq.Error
		if errors.As(err, &pqErr) && pqErr.Code == "42501" {
			tb.Skipf("the test database server does not let this user create a role: %v", err)
		}
		tb.Fatal(err)
	}
	// Registered after db's Close, so it runs before it, and after whatever
	// the test registers later (the server using the role): the grant
	// goes first (DROP OWNED), then the role.
	tb.Cleanup(func() {
		if _, err := db.Exec(`DROP OWNED BY ` + role); err != nil {
			tb.Errorf("drop what role %s owns: %v", role, err)
		}
		if _, err := db.Exec(`DROP ROLE ` + role); err != nil {
			tb.Errorf("drop role %s: %v", role, err)
		}
	})
	if _, err := db.Exec(`GRANT SELECT ON ` + pq.QuoteIdentifier(view) + ` TO ` + role); err != nil {
		tb.Fatal(err)
	}
	return role, password
}
