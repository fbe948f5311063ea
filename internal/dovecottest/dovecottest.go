// Package dovecottest runs a real, auth-only Dovecot for tests, so that they
// prove that what smtpcreds writes is accepted by the program that reads it.
//
// Dovecot runs as a throwaway process on 127.0.0.1, and credentials are
// checked through Dovecot itself, over the auth-client protocol that Postfix
// speaks with smtpd_sasl_type = dovecot.
//
// Start writes a dovecot.conf into a fresh temporary directory (see Config
// for its exact contents), checks it with doveconf, runs "dovecot -F" in its
// own process group and waits until the auth inet_listener answers the
// handshake. The passdb is passwd-file with the given path (which may
// contain %d for one file per domain) and default scheme, or the SQL driver
// on PostgreSQL with a given connect string and password query; the auth
// cache is off, so every Auth sees the file (or database) as Dovecot reads
// it at that moment. No
// userdb is configured: Dovecot 2.3 answers AUTH requests without one.
// Options.Config runs a given dovecot.conf instead (the files operators
// copy from deploy/dovecot), made a private instance by a few appended
// settings.
//
// # Who reads the passwd file
//
// When the test runs as root, Dovecot's auth process runs as the "dovecot"
// user, so the passwd file must be readable by it: for a file with mode
// 0640, its group must be Server.Group() ("dovecot"), and every directory
// above it must be searchable by that user. Directories made by t.TempDir
// are not (their parent is 0700); use TempDir instead. When the test is not
// root, every Dovecot process runs as the current user and Group returns "".
//
// # How Dovecot notices changes to the passwd file (2.3.19)
//
// The passwd-file driver keeps the parsed file in memory and re-reads it
// when a stat(2) shows that its mtime (in whole seconds) or its size has
// changed. That stat is done at most once per wall-clock second per file:
// a lookup in the same second as the previous one uses the copy in memory
// without looking at the file at all. Hence:
//
//   - after changing the file, a test must let the wall clock move into a
//     later second than its last Auth before expecting the change to be
//     seen (WaitNextSecond does exactly that);
//   - a rewrite that keeps the size and lands in the same second as the
//     mtime Dovecot last read is never noticed (until the next change):
//     writers must make sure that either the size or the whole-second
//     mtime changes, e.g. by setting the mtime to max(now, previous+1s);
//   - the whole file is parsed when re-read, so a writer must replace it
//     atomically (write a temporary file, then rename it), or Dovecot may
//     parse a half-written file and keep it. Lines appended in place are
//     the exception: the lines before them are whole at any time, a
//     partial last line is read as a login (with a wrong password), and
//     Dovecot records the size it found on opening the file, so the
//     append's final size makes it read the file again (passwdfile's
//     append keeps the mtime from repeating a size it may have recorded).
//
// A missing file makes its users unknown (FAIL, not a temporary failure),
// also when it is the single file and Dovecot starts without it. With a %d
// path, a domain whose file does not exist is looked for again on every
// request, so a new domain file is seen at once; a removed one is noticed
// from the next second on. A file that exists but cannot be read is a
// temporary failure (Auth returns an error) and an error in the log.
//
// # Failures are slow, penalties are off
//
// Dovecot answers FAIL about half a second after the request even with
// auth_failure_delay = 0, because it flushes failures on a 500 ms timer.
// Auth sends the no-penalty flag: without it Dovecot's anvil-based penalty
// (keyed by the client's rip=, and requests without one all share a key)
// delays every later request, correct passwords included, by 2, 4, 8...
// up to 15 seconds.
//
// Dovecot lower-cases the login before looking it up (its default
// auth_username_format is %Lu), so passwd-file lines must hold lower-case
// logins.
package dovecottest

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/proctest"
)

// Timeouts.
const (
	readyTimeout = 15 * time.Second // Start: until the auth listener answers
	authTimeout  = 5 * time.Second  // Auth: one whole exchange
	stopTimeout  = 10 * time.Second // cleanup: until every process is gone
	pollInterval = 25 * time.Millisecond
)

// startAttempts bounds how often Start retries with another port when the
// one it picked was taken before Dovecot could bind it.
const startAttempts = 4

// DefaultScheme is the passdb's default password scheme when
// Options.Scheme is empty.
const DefaultScheme = "SSHA512"

// internalUser is the unprivileged user Dovecot's Debian package creates,
// used for the auth process when the test runs as root.
const internalUser = "dovecot"

// Places searched for the Dovecot binaries after PATH (which often lacks
// /usr/sbin for non-root users).
var binDirs = []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"}

// Options configures Start.
type Options struct {
	// PasswdFile is the passwd-file the passdb reads: an absolute path (a
	// relative one is made absolute), which may contain %d (or %{domain})
	// for one file per domain, e.g. ".../passwd.d/%d". The file need not
	// exist when Start is called. Required. It must consist of letters,
	// digits and "/._-+@%=,{}"; see the package documentation for the
	// permissions it needs.
	PasswdFile string
	// SQL, when set, makes the passdb Dovecot's SQL driver (PostgreSQL)
	// instead: PasswdFile is then not used.
	SQL *SQLPassdb
	// Scheme is the default password scheme of the passdb (scheme=...),
	// used for passwords without a {SCHEME} prefix. Empty means
	// DefaultScheme.
	Scheme string
	// Config, when set, is a complete dovecot.conf to run instead of the
	// one Start writes (PasswdFile, SQL and Scheme must then be empty), such
	// as the deploy/dovecot files operators copy, with their paths replaced
	// by the test's. Start appends what makes it a private instance (the
	// base_dir, state_dir, logs, users and an auth inet_listener), which overrides the same settings in it; everything
	// else, the passdb included, is run as given. The files it names must be
	// readable by Dovecot's user (see the package documentation).
	Config string
	// Previous adds a second passdb to the chain, for the previous password
	// of a login in a grace period (see syncer.PreviousSuffix): with
	// PasswdFile, the same file(s) looked up under "<login>/previous"; with
	// SQL, SQL.PreviousQuery.
	Previous bool
}

// SQLPassdb is a passdb { driver = sql } reading PostgreSQL (Debian's
// dovecot-pgsql package must be installed).
type SQLPassdb struct {
	// Connect is the driver's connect string, e.g. "host=127.0.0.1
	// port=5432 dbname=mail user=dovecot".
	Connect string
	// PasswordQuery is the password_query, with Dovecot's variables (%n,
	// %d, %u; %L lower-cases).
	PasswordQuery string
	// PreviousQuery is the second passdb's password_query, with
	// Options.Previous.
	PreviousQuery string
}

// Server is a running Dovecot started by Start. Its methods are safe for
// concurrent use.
type Server struct {
	dir     string // temporary directory holding everything below
	conf    string // dovecot.conf path
	confTxt string // its contents
	logPath string
	errPath string // dovecot's own stdout/stderr
	addr    string
	group   string

	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait has returned

	cpid atomic.Uint32 // CPID of the next Auth connection
	reqs atomic.Uint32 // id of the next AUTH request

	mu       sync.Mutex
	lastAuth time.Time // when the last Auth exchange ended
}

// identity is who the Dovecot services run as.
type identity struct {
	root      bool
	user      string // default_internal_user / default_login_user
	group     string // default_internal_group
	uid, gid  int
	groupIDs  []int // all groups of user, for the permission checks
	fileGroup string
}

// Start starts Dovecot as described in the package documentation and
// registers its shutdown with tb.Cleanup. It fails the test (it does not skip
// it) when Dovecot is not installed, the configuration is rejected, or the
// auth listener does not answer within 15 seconds; the message then includes
// Dovecot's log.
func Start(tb testing.TB, opt Options) *Server {
	tb.Helper()

	dovecot, err := findBinary("dovecot")
	if err != nil {
		tb.Fatalf("dovecottest: %v", err)
	}
	doveconf, err := findBinary("doveconf")
	if err != nil {
		tb.Fatalf("dovecottest: %v", err)
	}

	if opt.Config != "" && (opt.PasswdFile != "" || opt.SQL != nil || opt.Scheme != "") {
		tb.Fatalf("dovecottest: Options.Config holds the passdb: PasswdFile, SQL and Scheme must be empty")
	}
	if opt.PasswdFile == "" && opt.SQL == nil && opt.Config == "" {
		tb.Fatalf("dovecottest: Options.PasswdFile, Options.SQL or Options.Config is required")
	}
	if opt.SQL != nil && (opt.SQL.Connect == "" || opt.SQL.PasswordQuery == "" ||
		strings.ContainsAny(opt.SQL.Connect+opt.SQL.PasswordQuery+opt.SQL.PreviousQuery, "\n\r")) {
		tb.Fatalf("dovecottest: Options.SQL needs a one-line Connect and PasswordQuery")
	}
	if opt.Previous && (opt.Config != "" || opt.SQL != nil && opt.SQL.PreviousQuery == "") {
		tb.Fatalf("dovecottest: Options.Previous needs PasswdFile, or SQL with a PreviousQuery")
	}
	passwd := ""
	if opt.SQL == nil && opt.Config == "" {
		passwd, err = filepath.Abs(opt.PasswdFile)
		if err != nil {
			tb.Fatalf("dovecottest: PasswdFile %q: %v", opt.PasswdFile, err)
		}
	}
	if passwd != "" && !safePath.MatchString(passwd) {
		tb.Fatalf("dovecottest: PasswdFile %q: only letters, digits and \"/._-+@%%=,{}\" are allowed "+
			"(the path goes unquoted into the passdb args)", passwd)
	}
	scheme := opt.Scheme
	if scheme == "" {
		scheme = DefaultScheme
	}
	if !safeScheme.MatchString(scheme) {
		tb.Fatalf("dovecottest: Scheme %q is not a password scheme name", scheme)
	}

	id, err := currentIdentity()
	if err != nil {
		tb.Fatalf("dovecottest: %v", err)
	}

	dir := proctest.TempDir(tb, "smtpcreds-dovecottest-")

	if id.root {
		// The auth process (user dovecot) connects to sockets in base_dir
		// and opens the passwd file: both must be reachable.
		if err := checkSearchable(dir, id); err != nil {
			tb.Fatalf("dovecottest: temporary directory: %v (set TMPDIR to a directory every user can search)", err)
		}
		if passwd != "" {
			if err := checkSearchable(staticPrefixDir(passwd), id); err != nil {
				tb.Fatalf("dovecottest: PasswdFile %s: %v; Dovecot's auth process runs as %q and could not "+
					"read it (create the directory with dovecottest.TempDir, not t.TempDir)", passwd, err, id.user)
			}
		}
	}

	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		s, retry, err := start(tb, dovecot, doveconf, dir, passwd, opt.SQL, opt.Previous, opt.Config, scheme, id, attempt)
		if err == nil {
			return s
		}
		lastErr = err
		if !retry {
			break
		}
		first, _, _ := strings.Cut(err.Error(), "\n")
		tb.Logf("dovecottest: attempt %d: %s: port already in use; retrying with another port", attempt, first)
	}
	tb.Fatalf("dovecottest: %v", lastErr)
	return nil
}

// start makes one attempt at starting Dovecot in dir with a fresh port. On
// failure it has already stopped whatever it started; retry reports that the
// port was taken and another one may work.
func start(tb testing.TB, dovecot, doveconf, dir, passwd string, sql *SQLPassdb, previous bool, given, scheme string, id identity, attempt int) (s *Server, retry bool, err error) {
	tb.Helper()

	port, err := pickPort()
	if err != nil {
		return nil, false, err
	}
	s = &Server{
		dir:     dir,
		conf:    filepath.Join(dir, "dovecot.conf"),
		logPath: filepath.Join(dir, fmt.Sprintf("dovecot-%d.log", attempt)),
		errPath: filepath.Join(dir, fmt.Sprintf("dovecot-%d.stderr", attempt)),
		addr:    net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		group:   id.fileGroup,
		exited:  make(chan struct{}),
	}
	s.cpid.Store(1)
	s.reqs.Store(1)

	baseDir := filepath.Join(dir, fmt.Sprintf("run-%d", attempt))
	stateDir := filepath.Join(dir, "state")
	for _, d := range []string{baseDir, stateDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, false, err
		}
	}
	p := configParams{
		BaseDir:  baseDir,
		StateDir: stateDir,
		LogPath:  s.logPath,
		Passwd:   passwd,
		Scheme:   scheme,
		Port:     port,
		ID:       id,
		Previous: previous,
	}
	if sql != nil {
		p.SQLConf = filepath.Join(dir, "dovecot-sql.conf.ext")
		conf := fmt.Sprintf("driver = pgsql\nconnect = %s\ndefault_pass_scheme = %s\npassword_query = %s\n",
			sql.Connect, scheme, sql.PasswordQuery)
		if err := os.WriteFile(p.SQLConf, []byte(conf), 0o644); err != nil {
			return nil, false, err
		}
		if previous {
			p.PreviousSQLConf = filepath.Join(dir, "dovecot-sql-previous.conf.ext")
			conf := fmt.Sprintf("driver = pgsql\nconnect = %s\ndefault_pass_scheme = %s\npassword_query = %s\n",
				sql.Connect, scheme, sql.PreviousQuery)
			if err := os.WriteFile(p.PreviousSQLConf, []byte(conf), 0o644); err != nil {
				return nil, false, err
			}
		}
	}
	if given != "" {
		s.confTxt = strings.TrimRight(given, "\n") + "\n\n" + instanceConfig(p)
	} else {
		s.confTxt = config(p)
	}
	if err := os.WriteFile(s.conf, []byte(s.confTxt), 0o644); err != nil {
		return nil, false, err
	}

	// doveconf reports configuration errors with file and line, which the
	// master would only write to its log.
	out, err := exec.Command(doveconf, "-c", s.conf, "-n").CombinedOutput()
	if err != nil {
		return nil, false, fmt.Errorf("doveconf -c %s -n: %v\n%s\nconfiguration:\n%s", s.conf, err, out, s.confTxt)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "Warning:") {
			tb.Logf("dovecottest: doveconf: %s", line)
		}
	}

	// An unknown default scheme is only reported in the log, at the first
	// lookup of a password without a {SCHEME} prefix, which then just fails.
	if given == "" {
		if err := checkScheme(s.conf, scheme); err != nil {
			return nil, false, err
		}
	}

	errFile, err := os.Create(s.errPath)
	if err != nil {
		return nil, false, err
	}
	defer errFile.Close()
	s.cmd = exec.Command(dovecot, "-F", "-c", s.conf)
	s.cmd.Dir = dir
	s.cmd.Stdout = errFile
	s.cmd.Stderr = errFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{
		// Dovecot's services inherit the master's process group, so the
		// whole tree can be found and killed at cleanup.
		Setpgid: true,
		// If the test binary dies without cleaning up, the master is
		// told to shut down (and takes its services with it).
		Pdeathsig: syscall.SIGTERM,
	}
	// Pdeathsig fires when the OS thread that started the child exits,
	// not the process, so the child is started from a goroutine that
	// keeps its thread until the master has exited.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with us
		if err := s.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	if err := <-started; err != nil {
		return nil, false, fmt.Errorf("start %s: %v", dovecot, err)
	}

	if err := s.waitReady(); err != nil {
		stopErr := s.stop()
		log := s.Log()
		msg := fmt.Sprintf("dovecot did not become ready on %s: %v", s.addr, err)
		if stopErr != nil {
			msg += fmt.Sprintf(" (and stopping it: %v)", stopErr)
		}
		return nil, strings.Contains(log, "Address already in use"),
			fmt.Errorf("%s\n--- dovecot log ---\n%s\n--- configuration ---\n%s", msg, log, s.confTxt)
	}
	tb.Cleanup(func() {
		if err := s.stop(); err != nil {
			tb.Errorf("dovecottest: stop: %v\n--- dovecot log ---\n%s", err, s.Log())
		}
	})
	return s, false, nil
}

var (
	safePath   = regexp.MustCompile(`^/[A-Za-z0-9/._+@%=,{}-]*$`)
	safeScheme = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
)

// configParams fills the dovecot.conf template.
type configParams struct {
	BaseDir, StateDir, LogPath string
	Passwd, Scheme             string
	SQLConf                    string // the SQL driver's file, instead of Passwd
	Previous                   bool   // a second passdb for previous passwords
	PreviousSQLConf            string // its SQL driver's file
	Port                       int
	ID                         identity
}

// instanceConfig is what Start appends to an Options.Config: where this
// instance keeps its sockets, state and log, who its services run as, and
// the auth inet_listener that Start waits for and Auth uses. Later settings
// win in Dovecot, and service sections of the same name merge.
func instanceConfig(p configParams) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# Appended by smtpcreds internal/dovecottest: a private instance for tests.")
	w("base_dir = %s", p.BaseDir)
	w("state_dir = %s", p.StateDir)
	w("log_path = %s", p.LogPath)
	w("info_log_path = %s", p.LogPath)
	w("auth_verbose = yes")
	w("default_internal_user = %s", p.ID.user)
	w("default_internal_group = %s", p.ID.group)
	w("default_login_user = %s", p.ID.user)
	w("service auth {")
	w("  inet_listener auth-inet {")
	w("    address = 127.0.0.1")
	w("    port = %d", p.Port)
	w("  }")
	w("}")
	w("service anvil {")
	w("  # chroot needs root; the default is base_dir/empty.")
	w("  chroot =")
	w("}")
	return b.String()
}

// config renders dovecot.conf: the auth-only settings and the passdb, then
// the instance's own (instanceConfig), as Start appends them to a given
// Options.Config.
func config(p configParams) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# Written by smtpcreds internal/dovecottest: auth-only Dovecot for tests.")
	w("protocols =")
	w("listen = 127.0.0.1")
	w("auth_failure_delay = 0")
	w("auth_mechanisms = plain login")
	w("disable_plaintext_auth = no")
	w("ssl = no")
	w("auth_cache_size = 0")
	// passdb is one passdb block: SQL with sqlConf, else the passwd-file
	// looked up by username (a username_format).
	passdb := func(sqlConf, username string) {
		w("passdb {")
		if sqlConf != "" {
			w("  driver = sql")
			w("  args = %s", sqlConf)
		} else {
			w("  driver = passwd-file")
			w("  args = scheme=%s username_format=%s %s", p.Scheme, username, p.Passwd)
		}
		w("}")
	}
	passdb(p.SQLConf, "%u")
	if p.Previous {
		// Tried when the first one refuses the password (a mismatch or an
		// unknown user continue down the chain).
		passdb(p.PreviousSQLConf, "%u/previous")
	}
	return b.String() + instanceConfig(p)
}

// currentIdentity returns who Dovecot's services should run as: the dovecot
// user when root, else the current user.
func currentIdentity() (identity, error) {
	if os.Geteuid() == 0 {
		u, err := user.Lookup(internalUser)
		if err != nil {
			return identity{}, fmt.Errorf("running as root, but user %q does not exist (it comes with the dovecot-core package): %v",
				internalUser, err)
		}
		return identityOf(u, true)
	}
	u, err := user.Current()
	if err != nil {
		return identity{}, fmt.Errorf("current user: %v", err)
	}
	return identityOf(u, false)
}

func identityOf(u *user.User, root bool) (identity, error) {
	id := identity{root: root, user: u.Username}
	var err error
	if id.uid, err = strconv.Atoi(u.Uid); err != nil {
		return identity{}, fmt.Errorf("user %s: uid %q: %v", u.Username, u.Uid, err)
	}
	if id.gid, err = strconv.Atoi(u.Gid); err != nil {
		return identity{}, fmt.Errorf("user %s: gid %q: %v", u.Username, u.Gid, err)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		return identity{}, fmt.Errorf("group %s of user %s: %v", u.Gid, u.Username, err)
	}
	id.group = g.Name
	id.groupIDs = []int{id.gid}
	if gids, err := u.GroupIds(); err == nil {
		for _, s := range gids {
			if n, err := strconv.Atoi(s); err == nil && !slices.Contains(id.groupIDs, n) {
				id.groupIDs = append(id.groupIDs, n)
			}
		}
	}
	if root {
		id.fileGroup = g.Name
	}
	return id, nil
}

// checkSearchable reports whether id may search dir and every directory
// above it, judging by the permission bits (ACLs are not looked at).
func checkSearchable(dir string, id identity) error {
	dir = filepath.Clean(dir)
	for {
		fi, err := os.Stat(dir)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && dir != "/" {
				// Not created yet: its parent decides.
				dir = filepath.Dir(dir)
				continue
			}
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		perm := fi.Mode().Perm()
		var bit os.FileMode
		switch {
		case int(st.Uid) == id.uid:
			bit = 0o100
		case slices.Contains(id.groupIDs, int(st.Gid)):
			bit = 0o010
		default:
			bit = 0o001
		}
		if perm&bit == 0 {
			return fmt.Errorf("directory %s (mode %04o, uid %d, gid %d) is not searchable by user %s",
				dir, perm, st.Uid, st.Gid, id.user)
		}
		if dir == "/" {
			return nil
		}
		dir = filepath.Dir(dir)
	}
}

// staticPrefixDir returns the deepest directory of path that holds no %
// variable.
func staticPrefixDir(path string) string {
	if i := strings.IndexByte(path, '%'); i >= 0 {
		path = path[:i]
		if !strings.HasSuffix(path, "/") {
			return filepath.Dir(path)
		}
		return filepath.Clean(path)
	}
	return filepath.Dir(path)
}

// Hash is Dovecot's own hash of password in scheme ("doveadm pw"), with
// its {SCHEME} prefix: what an operator's existing passwd-file holds.
func Hash(tb testing.TB, scheme, password string) string {
	tb.Helper()
	doveadm, err := findBinary("doveadm")
	if err != nil {
		tb.Fatalf("dovecottest: %v", err)
	}
	out, err := exec.Command(doveadm, "pw", "-s", scheme, "-p", password).Output()
	if err != nil {
		tb.Fatalf("dovecottest: doveadm pw -s %s: %v", scheme, err)
	}
	return strings.TrimSpace(string(out))
}

// checkScheme asks "doveadm pw -l" whether Dovecot knows scheme. It does
// not fail when doveadm itself cannot be run.
func checkScheme(conf, scheme string) error {
	doveadm, err := findBinary("doveadm")
	if err != nil {
		return nil
	}
	out, err := exec.Command(doveadm, "-c", conf, "pw", "-l").Output()
	if err != nil {
		return nil
	}
	known := strings.Fields(string(out))
	for _, k := range known {
		if strings.EqualFold(k, scheme) {
			return nil
		}
	}
	return fmt.Errorf("password scheme %q is not one this Dovecot knows (doveadm pw -l: %s)",
		scheme, strings.Join(known, " "))
}

// findBinary looks for name in PATH, then in the usual system directories.
func findBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range binDirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or %s: Dovecot is not installed "+
		"(on Debian/Ubuntu: apt-get install dovecot-core)", name, strings.Join(binDirs, ", "))
}

// pickPort chooses the port of the auth listener; tests replace it.
var pickPort = freePort

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitReady polls the auth listener until it completes the server side of
// the handshake, Dovecot exits, or readyTimeout passes.
func (s *Server) waitReady() error {
	deadline := time.Now().Add(readyTimeout)
	var lastErr error
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("dovecot exited: %v", s.cmd.ProcessState)
		default:
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("timed out after %v: %v", readyTimeout, lastErr)
		}
		lastErr = s.probe(min(time.Second, time.Until(deadline)))
		if lastErr == nil {
			return nil
		}
		// A service that cannot start is restarted by the master after
		// a pause; no point waiting for the deadline.
		if log := s.Log(); strings.Contains(log, "Fatal:") {
			return fmt.Errorf("dovecot logged a fatal error (last attempt: %v)", lastErr)
		}
		select {
		case <-s.exited:
		case <-time.After(pollInterval):
		}
	}
}

// probe connects and reads the server's handshake, without authenticating
// (so that the passwd file is not looked at).
func (s *Server) probe(timeout time.Duration) error {
	conn, err := net.DialTimeout("tcp", s.addr, timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	_, err = readHandshake(bufio.NewReader(conn))
	return err
}

// stop shuts Dovecot down and waits until no process of its group is left.
func (s *Server) stop() error {
	return proctest.StopGroup(s.cmd, s.exited, stopTimeout, "dovecot")
}

// Addr returns the address of the auth inet_listener, "127.0.0.1:PORT".
func (s *Server) Addr() string { return s.addr }

// Group returns the group the passwd file must belong to when its mode is
// 0640 (or 0440): "dovecot" when the test runs as root. It returns "" when
// the test is not root: Dovecot then runs as the current user, who can read
// its own files whatever their group.
func (s *Server) Group() string { return s.group }

// Config returns the dovecot.conf Start wrote.
func (s *Server) Config() string { return s.confTxt }

// Log returns Dovecot's log file. Anything the master wrote to its own
// stderr (fatal errors before logging was set up) follows it.
func (s *Server) Log() string {
	log, err := os.ReadFile(s.logPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		log = append(log, fmt.Sprintf("(reading %s: %v)\n", s.logPath, err)...)
	}
	if stderr, err := os.ReadFile(s.errPath); err == nil && len(stderr) > 0 {
		log = append(log, "--- dovecot stderr ---\n"...)
		log = append(log, stderr...)
	}
	return string(log)
}

// WaitNextSecond blocks until the wall clock has moved into a later second
// than the end of the last Auth. Dovecot stats the passwd file at most once
// per second (see the package documentation), so a test that changed the
// file calls it before an Auth that must see the change.
func (s *Server) WaitNextSecond() {
	s.mu.Lock()
	last := s.lastAuth
	s.mu.Unlock()
	if last.IsZero() {
		return
	}
	// Dovecot and we read the same clock; the margin covers rounding.
	next := last.Truncate(time.Second).Add(time.Second + 20*time.Millisecond)
	if d := time.Until(next); d > 0 {
		time.Sleep(d)
	}
}

// Auth asks Dovecot whether pass is the password of user, over a fresh
// connection to the auth listener, with the PLAIN mechanism, service=smtp
// and the secured flag, as Postfix does inside TLS, plus the no-penalty flag (so that failures
// do not slow down later calls). It returns true for OK and false for FAIL,
// which Dovecot sends about half a second after the request even with
// auth_failure_delay = 0 (it flushes failures on a 500 ms timer).
// Everything else is an error: an unexpected reply, a connection problem, a
// 5-second timeout, and also a FAIL with code=temp_fail, which is Dovecot saying
// that it could not check the password (for instance because it cannot read
// the passwd file; see Log).
func (s *Server) Auth(user, pass string) (bool, error) {
	if strings.ContainsRune(user, 0) || strings.ContainsRune(pass, 0) {
		return false, errors.New("dovecottest: user and password must not contain NUL")
	}
	defer func() {
		s.mu.Lock()
		s.lastAuth = time.Now()
		s.mu.Unlock()
	}()

	conn, err := net.DialTimeout("tcp", s.addr, authTimeout)
	if err != nil {
		return false, fmt.Errorf("dovecottest: auth %s: %w", user, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(authTimeout)); err != nil {
		return false, err
	}
	r := bufio.NewReader(conn)

	mechs, err := readHandshake(r)
	if err != nil {
		return false, fmt.Errorf("dovecottest: auth %s: %w", user, err)
	}
	if !slices.Contains(mechs, "PLAIN") {
		return false, fmt.Errorf("dovecottest: auth %s: server does not offer PLAIN (offers %v)", user, mechs)
	}

	// Dovecot refuses a second connection with the CPID of one still
	// open, so concurrent calls use distinct CPIDs.
	cpid := s.cpid.Add(1) - 1
	id := s.reqs.Add(1) - 1
	resp := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	// no-penalty: Dovecot otherwise delays every request from an address
	// (requests without rip= all count as one) by 2, 4, 8... up to 15
	// seconds after failures, correct passwords included.
	// secured: as Postfix says inside TLS, so that a configuration with
	// disable_plaintext_auth = yes (deploy/dovecot) accepts PLAIN.
	req := fmt.Sprintf("VERSION\t1\t2\nCPID\t%d\nAUTH\t%d\tPLAIN\tservice=smtp\tsecured\tno-penalty\tresp=%s\n", cpid, id, resp)
	if _, err := conn.Write([]byte(req)); err != nil {
		return false, fmt.Errorf("dovecottest: auth %s: send: %w", user, err)
	}

	line, err := readLine(r)
	if err != nil {
		return false, fmt.Errorf("dovecottest: auth %s: reading reply: %w", user, err)
	}
	f := strings.Split(line, "\t")
	if len(f) < 2 || f[1] != strconv.FormatUint(uint64(id), 10) {
		return false, fmt.Errorf("dovecottest: auth %s: unexpected reply %q", user, line)
	}
	switch f[0] {
	case "OK":
		return true, nil
	case "FAIL":
		// Dovecot 2.3 says code=temp_fail; older versions said temp.
		if slices.Contains(f[2:], "code=temp_fail") || slices.Contains(f[2:], "temp") {
			return false, fmt.Errorf("dovecottest: auth %s: temporary failure %q (Dovecot could not check the password; see its log)", user, line)
		}
		return false, nil
	default:
		return false, fmt.Errorf("dovecottest: auth %s: unexpected reply %q", user, line)
	}
}

// readHandshake reads the server's handshake up to DONE and returns the
// mechanisms offered.
func readHandshake(r *bufio.Reader) ([]string, error) {
	var mechs []string
	sawVersion := false
	for {
		line, err := readLine(r)
		if err != nil {
			return nil, fmt.Errorf("handshake: %w", err)
		}
		f := strings.Split(line, "\t")
		switch f[0] {
		case "VERSION":
			if len(f) < 3 || f[1] != "1" {
				return nil, fmt.Errorf("handshake: unsupported protocol %q", line)
			}
			sawVersion = true
		case "MECH":
			if len(f) >= 2 {
				mechs = append(mechs, f[1])
			}
		case "SPID", "CUID", "COOKIE":
		case "DONE":
			if !sawVersion {
				return nil, errors.New("handshake: DONE before VERSION")
			}
			return mechs, nil
		default:
			// Unknown lines are allowed by the protocol; ignore them.
		}
	}
}

// readLine reads one line without its "\n".
func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return "", fmt.Errorf("timeout: %w", err)
		}
		if line != "" {
			return "", fmt.Errorf("partial line %q: %w", line, err)
		}
		return "", err
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// TempDir returns a new temporary directory that Dovecot's auth process can
// search, for passwd files: unlike t.TempDir, whose parent is private to the
// test's user, it is made with os.MkdirTemp and mode 0755. It is removed by
// tb.Cleanup. It fails the test if a directory above it is not searchable
// by Dovecot's user (set TMPDIR then).
func TempDir(tb testing.TB) string {
	tb.Helper()
	dir := proctest.TempDir(tb, "smtpcreds-dovecottest-files-")
	if id, err := currentIdentity(); err == nil && id.root {
		if err := checkSearchable(dir, id); err != nil {
			tb.Fatalf("dovecottest: %v (set TMPDIR to a directory every user can search)", err)
		}
	}
	return dir
}
