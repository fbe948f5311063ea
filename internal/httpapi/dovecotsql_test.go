package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/app"
	"github.com/smtpcreds/smtpcreds/internal/dbtest"
	"github.com/smtpcreds/smtpcreds/internal/dovecottest"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// dovecotPasswordQuery is the password_query the README gives for the
// dovecot-sql target.
const dovecotPasswordQuery = `SELECT password FROM dovecot_passdb WHERE username = '%Ln' AND domain = '%Ld'`

// dovecotPreviousQuery is the README's password_query of the second passdb,
// for the previous password of a login in a grace period.
const dovecotPreviousQuery = `SELECT previous_password AS password FROM dovecot_passdb ` +
	`WHERE username = '%Ln' AND domain = '%Ld' AND previous_password IS NOT NULL`

// sqlWorld is a world synced to the dovecot-sql target, with a real Dovecot
// whose passdb reads the dovecot_passdb view as a role that may read
// nothing else.
type sqlWorld struct {
	world
	dovecot  *dovecottest.Server
	role     *sqlx.DB // the database as Dovecot's role sees it
	roleName string
}

func newSQLWorld(t *testing.T) sqlWorld {
	t.Helper()
	dsn := dbtest.NewURL(t)
	db, err := sqlx.Open("postgres", postgres.WithSetting(dsn, "binary_parameters", "yes"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	role, pw := dbtest.ViewReader(t, dsn, "dovecot_passdb")
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("Dovecot's connect string is made from the test database's postgres:// URL; it is not one (%v)", err)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "5432"
	}
	dbname := strings.TrimPrefix(u.Path, "/")
	dc := dovecottest.Start(t, dovecottest.Options{
		SQL: &dovecottest.SQLPassdb{
			Connect:       fmt.Sprintf("host=%s port=%s dbname=%s user=%s password=%s", host, port, dbname, role, pw),
			PasswordQuery: dovecotPasswordQuery,
			PreviousQuery: dovecotPreviousQuery,
		},
		Scheme:   "SSHA512",
		Previous: true,
	})
	ru := *u
	ru.User = url.UserPassword(role, pw)
	rdb, err := sqlx.Open("postgres", ru.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })

	e := newEnvOn(t, dsn, opts{sync: fastSync(app.SyncConfig{Target: "dovecot-sql", DovecotRole: role})})
	w := world{env: e, alice: e.MustCreateAccount("alice"), bob: e.MustCreateAccount("bob")}
	e.MustAddDomain(w.alice, "example.com", true)
	e.MustAddDomain(w.bob, "bob.test", true)
	return sqlWorld{world: w, dovecot: dc, role: rdb, roleName: role}
}

// auth asks Dovecot (no wait for a new second: the SQL driver reads the
// database at every request).
func (s sqlWorld) auth(login, pw string) bool {
	s.t.Helper()
	ok, err := s.dovecot.Auth(login, pw)
	if err != nil {
		s.t.Fatalf("dovecot auth %s: %v\ndovecot log:\n%s", login, err, s.dovecot.Log())
	}
	return ok
}

func TestDovecotSQLCreateResetDelete(t *testing.T) {
	t.Parallel()
	s := newSQLWorld(t)
	d := s.MustCreateCredential("mailer")
	pw := d["password"].(string)
	if d["remote_synced"] != true {
		t.Fatalf("remote_synced should be true with the view in place: %v", d)
	}
	if !s.auth("mailer@example.com", pw) {
		t.Fatalf("Dovecot refuses the password the API returned\n%s", s.dovecot.Log())
	}
	if !s.auth("Mailer@Example.COM", pw) {
		t.Error("Dovecot refuses the login in other letter case")
	}
	if s.auth("mailer@example.com", wrongPassword(pw)) {
		t.Error("Dovecot accepts a wrong password")
	}
	if s.auth("mailer@bob.test", pw) || s.auth("nobody@example.com", pw) {
		t.Error("Dovecot accepts a login that does not exist")
	}
	guid := str(d, "credential", "user_smtp_guid")
	g := s.do(req{method: "GET", path: credsPath + "/" + guid, auth: s.alice.auth})
	if dig(g.body, "data", "remote_synced") != true || dig(g.body, "data", "last_synced_at") == nil {
		t.Errorf("GET sync state: %s", g.raw)
	}

	// Two resets at once: only the newest password works, at once (no
	// file to re-read).
	pws := s.resetTwice(guid, "mailer@example.com", pw, s.auth, s.dovecot)

	other := s.MustCreateCredential("other")
	wantStatus(t, s.do(req{method: "DELETE", path: credsPath + "/" + guid, auth: s.alice.auth}), http.StatusOK)
	if s.auth("mailer@example.com", pws[1]) {
		t.Error("a deleted credential still authenticates")
	}
	if !s.auth("other@example.com", other["password"].(string)) {
		t.Error("deleting one credential broke another")
	}
	wantStatus(t, s.do(req{method: "DELETE", path: "/api/domains/example.com", auth: s.alice.auth}), http.StatusOK)
	if s.auth("other@example.com", other["password"].(string)) {
		t.Error("a credential still authenticates after its domain was deleted")
	}
}

// Dovecot's role reads the view and nothing else: no table, and of the
// credentials only logins and hashes.
func TestDovecotSQLRoleSeesOnlyTheView(t *testing.T) {
	t.Parallel()
	s := newSQLWorld(t)
	d := s.MustCreateCredential("seen")
	var n int
	if err := s.role.Get(&n, `SELECT count(*) FROM dovecot_passdb WHERE login = 'seen@example.com'`); err != nil || n != 1 {
		t.Fatalf("the role reads the view: %d rows, %v", n, err)
	}
	for _, q := range []string{`SELECT count(*) FROM credentials`, `SELECT count(*) FROM domains`,
		`SELECT count(*) FROM accounts`, `SELECT count(*) FROM sync_jobs`} {
		if err := s.role.Get(&n, q); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("%s as Dovecot's role: %v, want permission denied", q, err)
		}
	}
	var pwd string
	if err := s.role.Get(&pwd, `SELECT password FROM dovecot_passdb WHERE login = 'seen@example.com'`); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pwd, "{SSHA512}") || strings.Contains(pwd, d["password"].(string)) {
		t.Errorf("the view's password is not the scheme-tagged hash: %q", pwd)
	}
}

// While Dovecot cannot read the view (it is gone, or Dovecot's role lost
// its grant), a create still succeeds with remote_synced false and a sync
// error that names no table or role; once it can again the worker confirms
// the job and the credential authenticates.
func TestDovecotSQLOutageThenBack(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, msg string
		break_    func(s sqlWorld) string
		mend      func(s sqlWorld) string
	}{
		{"view gone", "the dovecot_passdb view did not answer Dovecot's lookup",
			func(sqlWorld) string { return `ALTER VIEW dovecot_passdb RENAME TO dovecot_passdb_away` },
			func(sqlWorld) string { return `ALTER VIEW dovecot_passdb_away RENAME TO dovecot_passdb` }},
		{"grant lost", "Dovecot's database role may not read the dovecot_passdb view",
			func(s sqlWorld) string { return `REVOKE SELECT ON dovecot_passdb FROM ` + s.roleName },
			func(s sqlWorld) string { return `GRANT SELECT ON dovecot_passdb TO ` + s.roleName }},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := newSQLWorld(t)
			if _, err := s.db.Exec(c.break_(s)); err != nil {
				t.Fatal(err)
			}
			pw, guid, g := s.createWhileDown("patient")
			if msg := str(g.body, "data", "sync_error"); msg != c.msg {
				t.Errorf("sync_error while Dovecot cannot read the view: %q, want %q", msg, c.msg)
			}
			// Dovecot answers FAIL or, for a denied query, a temporary failure.
			if ok, err := s.dovecot.Auth("patient@example.com", pw); ok {
				t.Errorf("Dovecot authenticates a credential it cannot read (%v)", err)
			}

			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { s.outbox.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			if _, err := s.db.Exec(c.mend(s)); err != nil {
				t.Fatal(err)
			}
			s.waitRemoteSynced(guid)
			if !s.auth("patient@example.com", pw) {
				t.Errorf("converged credential refused by Dovecot\n%s", s.dovecot.Log())
			}
		})
	}
}

// Credentials made before the target was dovecot-sql (here with sync off)
// have no job of it, but Dovecot reads them: the worker marks them synced
// when it starts.
func TestDovecotSQLWorkerMarksEarlierCredentials(t *testing.T) {
	t.Parallel()
	s := newSQLWorld(t)
	off := newEnvOn(t, s.url, opts{}) // the same database, sync off
	r := off.do(req{method: "POST", path: credsPath, auth: s.alice.auth, body: `{"username":"earlier"}`})
	wantStatus(t, r, http.StatusCreated)
	if dig(r.body, "data", "remote_synced") != false {
		t.Fatalf("remote_synced with sync off: %s", r.raw)
	}
	guid := str(r.body, "data", "credential", "user_smtp_guid")
	if !s.auth("earlier@example.com", str(r.body, "data", "password")) {
		t.Fatalf("Dovecot refuses a credential in the view\n%s", s.dovecot.Log())
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.outbox.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	s.waitRemoteSynced(guid)
}
