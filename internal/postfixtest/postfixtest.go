// Package postfixtest runs a real Postfix as a private, throwaway instance
// on 127.0.0.1, so that tests can send through the Postfix configuration
// operators copy (deploy/postfix) and see what Postfix accepts. It is the
// Postfix counterpart of internal/dovecottest.
//
// New prepares an instance without starting it: a fresh temporary
// directory holding its config_directory, queue_directory and
// data_directory, three free ports of 127.0.0.1, a self-signed certificate
// for 127.0.0.1 and "localhost", and an SMTP sink to which Postfix relays
// every message it accepts. The queue directory is known at that point, so
// that a Dovecot can be started with its auth socket inside it (at
// SASLSocket, which "smtpd_sasl_path = private/auth" names). Start then
// writes main.cf and master.cf, checks them with postconf, lets
// "postfix check" create the queue's subdirectories, runs Postfix's master
// daemon in its own process group and waits until every listener answers.
// The instance is stopped, and its directory removed, by tb.Cleanup. Never a
// system service, never a port other than its own, never a message to the
// network: nothing is delivered anywhere but to the sink.
//
// # Running the operators' files
//
// Options.MainCF and Options.MasterCF are appended to the instance's own
// main.cf and master.cf, so that deploy/postfix/main.cf and master.cf run
// as written. Their paths must first become the instance's: Replace does
// that substitution and fails the test when a string to replace is not in
// the file, so that a file that changed under the test is noticed instead
// of run with an operator's path. Their ports are substituted by Start: a
// master.cf service named "submission" or "submissions" (port 587 or 465)
// listens on Addr(Submission) or Addr(Submissions) instead. The
// instance's own settings (see instanceMain) may not be set by them: Start
// fails if they are, since they are what keeps the instance private.
//
// Ports are picked when Start runs, and picked again (up to four times)
// when one was taken before Postfix could bind it: a test runs many client
// connections, whose ephemeral ports come from the same range.
//
// # Who runs it
//
// Postfix's master must run as root and its services as the "postfix"
// user, which Debian's postfix package creates. Tests that use this package
// therefore run as root (CI does); as any other user Start fails. Like
// dovecottest, it fails (it does not skip) when Postfix is not installed:
// a test that needs Postfix decides itself whether to run (testing.Short).
package postfixtest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
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
	"syscall"
	"testing"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/proctest"
)

// Timeouts.
const (
	readyTimeout = 20 * time.Second // Start: until every listener answers
	stopTimeout  = 10 * time.Second // cleanup: until every process is gone
	pollInterval = 25 * time.Millisecond
)

// Hostname is the instance's myhostname, in its banner and Received lines.
const Hostname = "mail.postfixtest.invalid"

// mailOwner is the user Postfix's services run as (Debian's package makes it).
const mailOwner = "postfix"

// Places searched for the Postfix binaries after PATH.
var binDirs = []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"}

// Service names of Addr.
const (
	SMTP        = "smtp"        // port 25's role: the instance's own smtpd, with main.cf's settings
	Submission  = "submission"  // port 587's role, defined by Options.MasterCF
	Submissions = "submissions" // port 465's role, defined by Options.MasterCF
)

// Options configures Start.
type Options struct {
	// MainCF is appended to the instance's main.cf: settings in Postfix's
	// main.cf syntax, e.g. deploy/postfix/main.cf after Replace.
	MainCF string
	// MasterCF is appended to the instance's master.cf, which defines the
	// internal services and the SMTP listener: services in master.cf
	// syntax, e.g. deploy/postfix/master.cf. Services named "submission"
	// and "submissions" are renamed Addr(Submission) and
	// Addr(Submissions), so that they listen there.
	MasterCF string
}

// Server is a Postfix instance made by New and run by Start. Its methods
// are safe for concurrent use.
type Server struct {
	dir      string // temporary directory holding everything below
	confDir  string
	queueDir string
	dataDir  string
	logPath  string
	errPath  string // the master's own stdout/stderr
	certFile string
	keyFile  string
	ports    map[string]int
	certPool *x509.CertPool
	sink     *sink

	mu      sync.Mutex
	main    string // main.cf as written
	master  string // master.cf as written
	cmd     *exec.Cmd
	exited  chan struct{} // closed once cmd.Wait has returned
	started bool
}

// New prepares an instance as described in the package documentation and
// registers the removal of its directory and sink with tb.Cleanup. It fails
// the test when Postfix is not installed or the test is not root.
func New(tb testing.TB) *Server {
	tb.Helper()
	for _, b := range []string{"postfix", "postconf"} {
		if _, err := findBinary(b); err != nil {
			tb.Fatalf("postfixtest: %v", err)
		}
	}
	if os.Geteuid() != 0 {
		tb.Fatalf("postfixtest: Postfix's master must run as root (the tests that start Postfix run as root, as CI does)")
	}
	owner, err := user.Lookup(mailOwner)
	if err != nil {
		tb.Fatalf("postfixtest: user %q does not exist (the postfix package creates it): %v", mailOwner, err)
	}
	uid, _ := strconv.Atoi(owner.Uid)

	// Postfix's services (user postfix) and Dovecot's (which puts its auth
	// socket in the queue) must reach the directories below.
	dir := proctest.TempDir(tb, "smtpcreds-postfixtest-")
	s := &Server{
		dir:      dir,
		confDir:  filepath.Join(dir, "conf"),
		queueDir: filepath.Join(dir, "queue"),
		dataDir:  filepath.Join(dir, "data"),
		logPath:  filepath.Join(dir, "maillog-0"),
		errPath:  filepath.Join(dir, "master-0.stderr"),
		certFile: filepath.Join(dir, "conf", "cert.pem"),
		keyFile:  filepath.Join(dir, "conf", "key.pem"),
	}
	for _, d := range []string{s.confDir, s.queueDir, s.dataDir, filepath.Join(s.queueDir, "private")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			tb.Fatalf("postfixtest: %v", err)
		}
	}
	// The data directory and private/ (where Dovecot's socket goes before
	// "postfix check" would create it) are Postfix's.
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{s.dataDir, 0o700}, {filepath.Join(s.queueDir, "private"), 0o700}} {
		if err := os.Chown(d.path, uid, -1); err != nil {
			tb.Fatalf("postfixtest: %v", err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			tb.Fatalf("postfixtest: %v", err)
		}
	}
	if s.certPool, err = writeCert(s.certFile, s.keyFile); err != nil {
		tb.Fatalf("postfixtest: certificate: %v", err)
	}
	if err := s.pickPorts(); err != nil {
		tb.Fatalf("postfixtest: %v", err)
	}
	if s.sink, err = startSink(); err != nil {
		tb.Fatalf("postfixtest: sink: %v", err)
	}
	tb.Cleanup(s.sink.close)
	return s
}

// QueueDir returns the instance's queue_directory (Postfix's
// /var/spool/postfix).
func (s *Server) QueueDir() string { return s.queueDir }

// SASLSocket returns where "smtpd_sasl_path = private/auth" points: the
// path for Dovecot's auth unix_listener.
func (s *Server) SASLSocket() string { return filepath.Join(s.queueDir, "private", "auth") }

// CertFile and KeyFile return the PEM files of the instance's self-signed
// certificate (for 127.0.0.1 and localhost), for smtpd_tls_cert_file and
// smtpd_tls_key_file.
func (s *Server) CertFile() string { return s.certFile }

// KeyFile: see CertFile.
func (s *Server) KeyFile() string { return s.keyFile }

// TLSConfig returns a client configuration that trusts the instance's
// certificate (and only it).
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: s.certPool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// pickPorts chooses the ports of Addr.
func (s *Server) pickPorts() error {
	ports := map[string]int{}
	for _, name := range []string{SMTP, Submission, Submissions} {
		p, err := freePort()
		if err != nil {
			return err
		}
		ports[name] = p
	}
	s.mu.Lock()
	s.ports = ports
	s.mu.Unlock()
	return nil
}

// Addr returns "127.0.0.1:PORT" of the service name (SMTP, Submission or
// Submissions); the latter two listen only if Options.MasterCF defines
// them. The ports are final once Start has returned.
func (s *Server) Addr(name string) string {
	s.mu.Lock()
	p, ok := s.ports[name]
	s.mu.Unlock()
	if !ok {
		panic("postfixtest: no service " + strconv.Quote(name))
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
}

// Config returns main.cf and master.cf as Start wrote them.
func (s *Server) Config() (mainCF, masterCF string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.main, s.master
}

// Replace returns text with each old string of pairs (old1, new1, old2,
// new2, ...) replaced by its new one, everywhere. It fails the test if an
// old string does not occur in text: the substitution is the only thing a
// test changes in the files operators copy, so a file that no longer
// holds the path or name it replaces must be looked at, not run as is.
func Replace(tb testing.TB, text string, pairs ...string) string {
	tb.Helper()
	if len(pairs)%2 != 0 {
		tb.Fatalf("postfixtest: Replace needs pairs of old and new strings")
	}
	for i := 0; i < len(pairs); i += 2 {
		if pairs[i] == "" || !strings.Contains(text, pairs[i]) {
			tb.Fatalf("postfixtest: Replace: %q does not occur in the text:\n%s", pairs[i], text)
		}
	}
	var oldnew []string
	oldnew = append(oldnew, pairs...)
	return strings.NewReplacer(oldnew...).Replace(text)
}

// Start writes the configuration, runs Postfix and waits until the SMTP
// listener and every listener of Options.MasterCF on Addr(Submission) or
// Addr(Submissions) answer; submissions is probed with TLS (wrapper mode),
// the others by their banner. It registers the shutdown with tb.Cleanup and
// fails the test when postconf warns about the configuration (an unknown
// parameter is a typo), "postfix check" fails, or Postfix does not become
// ready within 20 seconds; the message includes Postfix's log.
func (s *Server) Start(tb testing.TB, opt Options) {
	tb.Helper()
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		tb.Fatalf("postfixtest: Start called twice")
	}
	s.started = true
	s.mu.Unlock()

	postfix, _ := findBinary("postfix")
	postconf, _ := findBinary("postconf")
	meta, err := exec.Command(postconf, "-d", "-h", "meta_directory", "daemon_directory").Output()
	if err != nil {
		tb.Fatalf("postfixtest: postconf -d: %v", err)
	}
	dirs := strings.Fields(string(meta))
	if len(dirs) != 2 {
		tb.Fatalf("postfixtest: postconf -d meta_directory daemon_directory: %q", meta)
	}
	metaDir, daemonDir := dirs[0], dirs[1]

	if set := ownedSettings(opt.MainCF); len(set) > 0 {
		tb.Fatalf("postfixtest: Options.MainCF sets %s, which the instance owns (they keep it private)", strings.Join(set, ", "))
	}
	tb.Cleanup(func() {
		if err := s.stop(); err != nil {
			tb.Errorf("postfixtest: stop: %v\n--- postfix log ---\n%s", err, s.Log())
		}
	})
	for attempt := 1; ; attempt++ {
		err := s.start(postfix, postconf, metaDir, daemonDir, opt, attempt)
		if err == nil {
			return
		}
		if attempt < startAttempts && strings.Contains(s.Log(), "Address already in use") {
			tb.Logf("postfixtest: attempt %d: a port was taken; retrying with others", attempt)
			if err := s.stop(); err != nil {
				tb.Fatalf("postfixtest: stop: %v\n%s", err, s.describe())
			}
			if err := s.pickPorts(); err != nil {
				tb.Fatalf("postfixtest: %v", err)
			}
			continue
		}
		tb.Fatalf("postfixtest: %v\n%s", err, s.describe())
	}
}

// startAttempts bounds how often Start picks new ports.
const startAttempts = 4

// start makes one attempt at configuring and starting Postfix with the
// current ports.
func (s *Server) start(postfix, postconf, metaDir, daemonDir string, opt Options, attempt int) error {
	s.mu.Lock()
	s.logPath = filepath.Join(s.dir, fmt.Sprintf("maillog-%d", attempt))
	s.errPath = filepath.Join(s.dir, fmt.Sprintf("master-%d.stderr", attempt))
	s.mu.Unlock()
	masterCF := serviceName.ReplaceAllStringFunc(opt.MasterCF, func(m string) string {
		name, rest, _ := strings.Cut(m, " ")
		return s.Addr(name) + " " + rest
	})
	mainText := instanceMain(s, metaDir) + "\n# Options.MainCF:\n" + opt.MainCF
	masterText := instanceMaster(s) + "\n# Options.MasterCF, services renamed to their addresses:\n" + masterCF
	s.mu.Lock()
	s.main, s.master = mainText, masterText
	s.mu.Unlock()
	for name, text := range map[string]string{"main.cf": mainText, "master.cf": masterText} {
		if err := os.WriteFile(filepath.Join(s.confDir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}

	// postconf reports unknown parameters (typos) and bad master.cf lines
	// on stderr; Postfix itself would only log them.
	for _, args := range [][]string{{"-n"}, {"-M"}, {"-P"}} {
		cmd := exec.Command(postconf, append([]string{"-c", s.confDir}, args...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || strings.Contains(stderr.String(), "warning:") {
			return fmt.Errorf("postconf -c %s %s: %v\n%s", s.confDir, args[0], err, dedupe(stderr.String()))
		}
	}
	// "postfix check" creates the queue's subdirectories with their owners
	// and checks the rest; it logs to maillog_file.
	if out, err := exec.Command(postfix, "-c", s.confDir, "check").CombinedOutput(); err != nil {
		return fmt.Errorf("postfix -c %s check: %v\n%s", s.confDir, err, out)
	}
	if err := s.run(filepath.Join(daemonDir, "master")); err != nil {
		return err
	}
	if err := s.waitReady(masterCF); err != nil {
		return fmt.Errorf("postfix did not become ready: %v", err)
	}
	return nil
}

// serviceName matches the services of Options.MasterCF that Start renames.
var serviceName = regexp.MustCompile(`(?m)^submissions? `)

// instanceSettings are the main.cf settings Start writes, which
// Options.MainCF may not set.
var instanceSettings = []string{
	"queue_directory", "data_directory", "meta_directory", "maillog_file", "maillog_file_prefixes",
	"myhostname", "inet_interfaces", "inet_protocols", "mydestination", "mynetworks",
	"relayhost", "default_transport", "relay_transport", "local_transport", "transport_maps",
	"alias_maps", "alias_database", "compatibility_level",
}

// instanceMain renders the instance's main.cf: its own directories and log,
// loopback only, nothing delivered locally, everything relayed to the sink.
func instanceMain(s *Server, metaDir string) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# Written by smtpcreds internal/postfixtest: a private Postfix for tests.")
	w("compatibility_level = 3.6")
	w("queue_directory = %s", s.queueDir)
	w("data_directory = %s", s.dataDir)
	w("meta_directory = %s", metaDir)
	s.mu.Lock()
	w("maillog_file = %s", s.logPath)
	s.mu.Unlock()
	w("maillog_file_prefixes = %s", s.dir)
	w("myhostname = %s", Hostname)
	w("inet_interfaces = 127.0.0.1")
	w("inet_protocols = ipv4")
	w("# Nothing is local, and no client is trusted by address: all clients are")
	w("# 127.0.0.1 here, and permit_mynetworks would let them relay.")
	w("mydestination =")
	w("mynetworks = 192.0.2.1/32")
	w("local_transport = error:5.1.1 no local delivery in postfixtest")
	w("alias_maps =")
	w("alias_database =")
	w("# Every accepted message goes to the test's sink, never to the network.")
	w("relayhost = [127.0.0.1]:%d", s.sink.port)
	w("default_transport = smtp")
	w("relay_transport = smtp")
	w("transport_maps =")
	w("smtp_tls_security_level = none")
	w("biff = no")
	return b.String()
}

// instanceMaster renders the instance's master.cf: the internal services
// Postfix needs, none chrooted (the queue holds nothing a chroot needs), and
// the SMTP listener.
func instanceMaster(s *Server) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# Written by smtpcreds internal/postfixtest: a private Postfix for tests.")
	w("%s inet n - n - - smtpd", s.Addr(SMTP))
	for _, l := range []string{
		"pickup    unix  n - n 60    1 pickup",
		"cleanup   unix  n - n -     0 cleanup",
		"qmgr      unix  n - n 300   1 qmgr",
		"tlsmgr    unix  - - n 1000? 1 tlsmgr",
		"rewrite   unix  - - n -     - trivial-rewrite",
		"bounce    unix  - - n -     0 bounce",
		"defer     unix  - - n -     0 bounce",
		"trace     unix  - - n -     0 bounce",
		"verify    unix  - - n -     1 verify",
		"flush     unix  n - n 1000? 0 flush",
		"proxymap  unix  - - n -     - proxymap",
		"smtp      unix  - - n -     - smtp",
		"relay     unix  - - n -     - smtp",
		"showq     unix  n - n -     - showq",
		"error     unix  - - n -     - error",
		"retry     unix  - - n -     - error",
		"discard   unix  - - n -     - discard",
		"anvil     unix  - - n -     1 anvil",
		"scache    unix  - - n -     1 scache",
		"postlog   unix-dgram n - n - 1 postlogd",
	} {
		w("%s", l)
	}
	return b.String()
}

// ownedSettings returns the instance's settings that text sets.
func ownedSettings(text string) []string {
	var set []string
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		name, _, ok := strings.Cut(line, "=")
		if name = strings.TrimSpace(name); ok && slices.Contains(instanceSettings, name) {
			set = append(set, name)
		}
	}
	return set
}

// run starts the master daemon. It makes its own session and process group
// (setsid), so it is not put in one here.
func (s *Server) run(master string) error {
	s.mu.Lock()
	errPath := s.errPath
	s.mu.Unlock()
	errFile, err := os.Create(errPath)
	if err != nil {
		return err
	}
	defer errFile.Close()
	exited := make(chan struct{})
	s.exited = exited
	s.cmd = exec.Command(master, "-c", s.confDir, "-d")
	s.cmd.Dir = s.dir
	s.cmd.Stdout = errFile
	s.cmd.Stderr = errFile
	// If the test binary dies without cleaning up, the master is told to
	// stop (and takes its services with it).
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	// Pdeathsig fires when the OS thread that started the child exits, so
	// the child is started from a goroutine that keeps its thread until the
	// master has exited (as in dovecottest).
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with us
		if err := s.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = s.cmd.Wait()
		close(exited)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start %s: %v", master, err)
	}
	return nil
}

// serviceLine matches a master.cf service listening on host:port.
var serviceLine = regexp.MustCompile(`(?m)^(127\.0\.0\.1:\d+)\s+inet\s`)

// waitReady polls each listener until it greets, Postfix exits, it logs a
// fatal error, or readyTimeout passes.
func (s *Server) waitReady(masterCF string) error {
	probes := map[string]bool{s.Addr(SMTP): false} // addr -> implicit TLS
	for _, m := range serviceLine.FindAllStringSubmatch(masterCF, -1) {
		probes[m[1]] = m[1] == s.Addr(Submissions)
	}
	deadline := time.Now().Add(readyTimeout)
	for addr, implicitTLS := range probes {
		var lastErr error
		for {
			select {
			case <-s.exited:
				return fmt.Errorf("master exited: %v", s.cmd.ProcessState)
			default:
			}
			if !time.Now().Before(deadline) {
				return fmt.Errorf("timed out after %v waiting for %s: %v", readyTimeout, addr, lastErr)
			}
			if lastErr = probe(addr, implicitTLS, s.TLSConfig()); lastErr == nil {
				break
			}
			if strings.Contains(s.Log(), "fatal:") {
				return fmt.Errorf("postfix logged a fatal error (last attempt on %s: %v)", addr, lastErr)
			}
			select {
			case <-s.exited:
			case <-time.After(pollInterval):
			}
		}
	}
	return nil
}

// probe reads the 220 greeting of an SMTP listener (after a TLS handshake
// with implicit TLS), then says QUIT.
func probe(addr string, implicitTLS bool, cfg *tls.Config) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return err
	}
	if implicitTLS {
		tc := tls.Client(conn, cfg)
		if err := tc.Handshake(); err != nil {
			return err
		}
		conn = tc
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "220 ") {
		return fmt.Errorf("greeting %q", strings.TrimSpace(line))
	}
	_, _ = conn.Write([]byte("QUIT\r\n"))
	return nil
}

// stop shuts Postfix down and waits until no process of its group is left.
// The master stops its services on SIGTERM.
func (s *Server) stop() error {
	return proctest.StopGroup(s.cmd, s.exited, stopTimeout, "postfix")
}

// Log returns Postfix's log (maillog_file), followed by anything the master
// wrote to its own stderr.
func (s *Server) Log() string {
	s.mu.Lock()
	logPath, errPath := s.logPath, s.errPath
	s.mu.Unlock()
	log, err := os.ReadFile(logPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		log = append(log, fmt.Sprintf("(reading %s: %v)\n", logPath, err)...)
	}
	if stderr, err := os.ReadFile(errPath); err == nil && len(stderr) > 0 {
		log = append(log, "--- master stderr ---\n"...)
		log = append(log, stderr...)
	}
	return string(log)
}

// describe is the log and the configuration, for failure messages.
func (s *Server) describe() string {
	mainCF, masterCF := s.Config()
	return "--- postfix log ---\n" + s.Log() + "--- main.cf ---\n" + mainCF + "--- master.cf ---\n" + masterCF
}

// dedupe drops repeated lines (postconf repeats its warnings).
func dedupe(text string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// writeCert writes a fresh self-signed ECDSA certificate for 127.0.0.1 and
// localhost, and its key, and returns a pool trusting it.
func writeCert(certFile, keyFile string) (*x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: Hostname},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost", Hostname},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool, nil
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
	return "", fmt.Errorf("%s not found in PATH or %s: Postfix is not installed "+
		"(on Debian/Ubuntu: echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections; "+
		"apt-get install postfix; then stop the service it may start)", name, strings.Join(binDirs, ", "))
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
