package localpg

import (
	"context"
	"database/sql"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// dataDir returns a data directory path in a fresh temporary directory that
// the postgres user can traverse (t.TempDir's parents are mode 0700). The
// cleanup stops any server left running there and removes everything.
func dataDir(t *testing.T) string {
	t.Helper()
	root, err := os.MkdirTemp("", "localpg-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "pg")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := StopDir(ctx, dir); err != nil {
			t.Errorf("StopDir: %v", err)
		}
		if err := os.RemoveAll(root); err != nil {
			t.Errorf("removing %s: %v", root, err)
		}
	})
	return dir
}

func start(t *testing.T, opt Options) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opt.Logf = t.Logf
	c, err := Start(ctx, opt)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return c
}

func open(t *testing.T, url string) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func queryString(t *testing.T, db *sql.DB, q string) string {
	t.Helper()
	var s string
	if err := db.QueryRow(q).Scan(&s); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return s
}

func TestStartStopRestart(t *testing.T) {
	dir := dataDir(t)
	c := start(t, Options{Dir: dir, Fast: true})
	if c.Reused() {
		t.Error("Reused() = true for a fresh cluster")
	}
	port := c.Port()
	want := "postgres://postgres@127.0.0.1:" + strconv.Itoa(port) + "/postgres?sslmode=disable"
	if got := c.URL("postgres"); got != want {
		t.Errorf("URL = %q, want %q", got, want)
	}

	db := open(t, c.URL("postgres"))
	for q, want := range map[string]string{
		"SHOW listen_addresses":        "127.0.0.1",
		"SHOW unix_socket_directories": "",
		"SHOW fsync":                   "off",
		"SHOW synchronous_commit":      "off",
		"SHOW full_page_writes":        "off",
		"SHOW max_connections":         "200",
		"SHOW server_encoding":         "UTF8",
		"SHOW lc_collate":              "C",
		"SELECT current_user":          "postgres",
	} {
		if got := queryString(t, db, q); got != want {
			t.Errorf("%s = %q, want %q", q, got, want)
		}
	}
	if _, err := db.Exec("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('hello')"); err != nil {
		t.Fatal(err)
	}

	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := db.Ping(); err == nil {
		t.Fatal("Ping succeeded after Stop")
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatalf("Cluster.Start: %v", err)
	}
	if c.Port() != port {
		t.Errorf("port changed across restart: %d -> %d", port, c.Port())
	}
	// Old pooled connections are dead; a fresh pool sees the data.
	db2 := open(t, c.URL("postgres"))
	if got := queryString(t, db2, "SELECT v FROM kept"); got != "hello" {
		t.Errorf("after restart got %q, want hello", got)
	}
	if err := c.Start(ctx); err != nil {
		t.Errorf("Start on a running cluster: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}

	// A new Start on the stopped persistent directory reuses the cluster
	// and its remembered port.
	c2 := start(t, Options{Dir: dir, Fast: true})
	if c2.Reused() {
		t.Error("Reused() = true after a stop")
	}
	if c2.Port() != port {
		t.Errorf("remembered port not reused: %d, want %d", c2.Port(), port)
	}
	if got := queryString(t, open(t, c2.URL("postgres")), "SELECT v FROM kept"); got != "hello" {
		t.Errorf("after second Start got %q, want hello", got)
	}
	if err := c2.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

func TestReuseRunning(t *testing.T) {
	dir := dataDir(t)
	c1 := start(t, Options{Dir: dir, Fast: true})
	db := open(t, c1.URL("postgres"))
	started1 := queryString(t, db, "SELECT pg_postmaster_start_time()::text")

	c2 := start(t, Options{Dir: dir, Fast: true})
	if !c2.Reused() {
		t.Error("Reused() = false for a running cluster")
	}
	if c2.Port() != c1.Port() {
		t.Errorf("reused cluster port %d, want %d", c2.Port(), c1.Port())
	}
	db2 := open(t, c2.URL("postgres"))
	if started2 := queryString(t, db2, "SELECT pg_postmaster_start_time()::text"); started2 != started1 {
		t.Errorf("server was restarted: start time %s, then %s", started1, started2)
	}
	if err := c2.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := db.Ping(); err == nil {
		t.Error("Ping via first handle succeeded after Stop via the reusing handle")
	}
}

func TestRememberedPortTaken(t *testing.T) {
	dir := dataDir(t)
	c := start(t, Options{Dir: dir, Fast: true})
	port := c.Port()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Skipf("cannot occupy port %d: %v", port, err)
	}
	defer l.Close()
	c2 := start(t, Options{Dir: dir, Fast: true})
	defer c2.Stop()
	if c2.Port() == port {
		t.Fatalf("started on occupied port %d", port)
	}
	b, err := os.ReadFile(filepath.Join(dir, portFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != strconv.Itoa(c2.Port()) {
		t.Errorf("port file holds %s, want %d", got, c2.Port())
	}
	if err := open(t, c2.URL("postgres")).Ping(); err != nil {
		t.Error(err)
	}
}

func TestExplicitPort(t *testing.T) {
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	c := start(t, Options{Dir: dataDir(t), Port: port, Fast: true})
	defer c.Stop()
	if c.Port() != port {
		t.Fatalf("Port() = %d, want %d", c.Port(), port)
	}
	if got := queryString(t, open(t, c.URL("postgres")), "SHOW port"); got != strconv.Itoa(port) {
		t.Errorf("SHOW port = %s, want %d", got, port)
	}
}

func TestStartErrorIncludesLog(t *testing.T) {
	dir := dataDir(t)
	c := start(t, Options{Dir: dir, Fast: true})
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	// Break the configuration: the server must refuse to start and the
	// error must say why.
	f, err := os.OpenFile(filepath.Join(dir, "postgresql.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("\nshared_buffers = 'bogus'\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = c.Start(ctx)
	if err == nil {
		t.Fatal("Start succeeded with a broken configuration")
	}
	t.Logf("error: %v", err)
	if !strings.Contains(err.Error(), "shared_buffers") {
		t.Errorf("error does not include the server log's reason:\n%v", err)
	}
}

func TestBinDirOverride(t *testing.T) {
	t.Setenv(BinDirEnv, t.TempDir())
	if _, err := BinDir(); err == nil || !strings.Contains(err.Error(), BinDirEnv) {
		t.Errorf("BinDir with empty %s: err = %v", BinDirEnv, err)
	}
	t.Setenv(BinDirEnv, "")
	d, err := BinDir()
	if err != nil {
		t.Fatalf("BinDir: %v", err)
	}
	if err := hasTools(d); err != nil {
		t.Error(err)
	}
}

func TestVersionOrder(t *testing.T) {
	dirs := []string{"/usr/lib/postgresql/9.6/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/10/bin"}
	best := dirs[0]
	for _, d := range dirs[1:] {
		if versionLess(versionOf(best), versionOf(d)) {
			best = d
		}
	}
	if best != "/usr/lib/postgresql/15/bin" {
		t.Errorf("highest version = %s", best)
	}
}
