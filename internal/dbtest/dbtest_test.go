package dbtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
)

func TestMain(m *testing.M) { Main(m) }

var migratedTables = []string{"accounts", "domains", "credentials", "rate_counters"}

func currentDB(t *testing.T, db *sqlx.DB) string {
	t.Helper()
	var name string
	if err := db.Get(&name, "SELECT current_database()"); err != nil {
		t.Fatal(err)
	}
	return name
}

func checkTables(t *testing.T, db *sqlx.DB) {
	t.Helper()
	for _, table := range migratedTables {
		var ok bool
		if err := db.Get(&ok, "SELECT to_regclass($1) IS NOT NULL", "public."+table); err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Errorf("database %s: table %s missing", currentDB(t, db), table)
		}
	}
}

// dbExists asks the admin connection whether a database exists.
func dbExists(t *testing.T, name string) bool {
	t.Helper()
	var n int
	if err := current.Load().admin.QueryRow("SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func TestNewIndependent(t *testing.T) {
	db1, db2 := New(t), New(t)
	name1, name2 := currentDB(t, db1), currentDB(t, db2)
	if name1 == name2 {
		t.Fatalf("both databases are %s", name1)
	}
	checkTables(t, db1)
	checkTables(t, db2)

	if _, err := db1.Exec("INSERT INTO accounts (name, token_digest) VALUES ('acme', '\\x00')"); err != nil {
		t.Fatal(err)
	}
	for db, want := range map[*sqlx.DB]int{db1: 1, db2: 0} {
		var n int
		if err := db.Get(&n, "SELECT count(*) FROM accounts"); err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Errorf("%s: %d accounts, want %d", currentDB(t, db), n, want)
		}
	}
	// Same name in the other database: no conflict, they are independent.
	if _, err := db2.Exec("INSERT INTO accounts (name, token_digest) VALUES ('acme', '\\x00')"); err != nil {
		t.Fatal(err)
	}
	// The template itself was not touched.
	if !strings.HasPrefix(name1, "smtpcreds_test_") {
		t.Errorf("unexpected database name %q", name1)
	}
}

func TestDroppedAfterCleanup(t *testing.T) {
	var name string
	t.Run("use", func(t *testing.T) {
		db := New(t)
		name = currentDB(t, db)
		if !dbExists(t, name) {
			t.Fatalf("%s not in pg_database", name)
		}
	})
	if name == "" {
		t.FailNow()
	}
	if dbExists(t, name) {
		t.Errorf("database %s still exists after cleanup", name)
	}
}

func TestNewURL(t *testing.T) {
	var name string
	t.Run("use", func(t *testing.T) {
		u := NewURL(t)
		// A connection left open, as a still-running server binary would:
		// the drop must not be blocked by it.
		db, err := sqlx.Open("postgres", u)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		name = currentDB(t, db)
		checkTables(t, db)
		conn, err := db.Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		_ = conn // deliberately not closed before the cleanup
	})
	if name == "" {
		t.FailNow()
	}
	if dbExists(t, name) {
		t.Errorf("database %s still exists after cleanup", name)
	}
}

func TestParallel(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	for i := range 12 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			db := New(t)
			checkTables(t, db)
			name := currentDB(t, db)
			mu.Lock()
			defer mu.Unlock()
			if seen[name] {
				t.Errorf("database %s handed out twice", name)
			}
			seen[name] = true
		})
	}
}

func TestTemplateHasNoSessions(t *testing.T) {
	e := current.Load()
	var n int
	if err := e.admin.QueryRow("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", e.template).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d sessions on template %s", n, e.template)
	}
	if !strings.Contains(e.template, fmt.Sprint(os.Getpid())) {
		t.Errorf("template name %s does not carry the pid", e.template)
	}
}

func TestClusterRestart(t *testing.T) {
	c := Cluster()
	if c == nil {
		t.Skip("external database server; cannot restart it")
	}
	db := New(t)
	if _, err := db.Exec("INSERT INTO accounts (name, token_digest) VALUES ('kept', '\\x00')"); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	// The pool's old connection is dead; database/sql retries on a new one
	// at most once per bad connection, so allow a few attempts.
	var err error
	for range 3 {
		if err = db.Get(&n, "SELECT count(*) FROM accounts"); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%d accounts after restart, want 1", n)
	}
	// New databases still work after the restart (the admin pool recovers).
	checkTables(t, New(t))
}

func TestWithDBName(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:p@h:5432/admin?sslmode=disable": "postgres://u:p@h:5432/x?sslmode=disable",
		"postgresql://h/":                     "postgresql://h/x",
		"host=h dbname=admin sslmode=disable": "host=h dbname=x sslmode=disable",
		"host=h dbname='a b' user=u":          "host=h dbname=x user=u",
		"host=h user=u":                       "host=h user=u dbname=x",
	} {
		got, err := withDBName(in, "x")
		if err != nil || got != want {
			t.Errorf("withDBName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
