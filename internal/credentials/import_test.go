package credentials_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/credentials"
	"github.com/smtpcreds/smtpcreds/internal/dbtest"
	"github.com/smtpcreds/smtpcreds/internal/dovecottest"
	"github.com/smtpcreds/smtpcreds/internal/password"
	"github.com/smtpcreds/smtpcreds/internal/syncer"
	"github.com/smtpcreds/smtpcreds/internal/syncer/dovecotsql"
	"github.com/smtpcreds/smtpcreds/internal/syncer/passwdfile"
	"github.com/smtpcreds/smtpcreds/internal/syncer/webhook"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

// importWorld is an account "acme" with the verified domains example.com
// and example.net and the unverified pending.test, and an account "other"
// with the verified other.test.
type importWorld struct {
	t   *testing.T
	db  *sqlx.DB
	acc int64
}

func newImportWorld(t *testing.T) importWorld {
	t.Helper()
	return newImportWorldOn(t, dbtest.New(t))
}

func newImportWorldOn(t *testing.T, db *sqlx.DB) importWorld {
	t.Helper()
	var acc, other int64
	mustGet(t, db, &acc, `INSERT INTO accounts (name, token_digest) VALUES ('acme', '\x00') RETURNING id`)
	mustGet(t, db, &other, `INSERT INTO accounts (name, token_digest) VALUES ('other', '\x01') RETURNING id`)
	db.MustExec(`INSERT INTO domains (account_id, name, is_verified) VALUES
		($1, 'example.com', true), ($1, 'example.net', true), ($1, 'pending.test', false), ($2, 'other.test', true)`, acc, other)
	return importWorld{t: t, db: db, acc: acc}
}

func mustGet(t *testing.T, db *sqlx.DB, dest any, q string, args ...any) {
	t.Helper()
	if err := db.Get(dest, q, args...); err != nil {
		t.Fatal(err)
	}
}

// refusals collects what Import refuses, as "LINE: why".
type refusals []string

func (r *refusals) add(line int64, why string) { *r = append(*r, fmt.Sprintf("%d: %s", line, why)) }

func (w importWorld) run(svc *credentials.Service, file string, opt credentials.ImportOptions) (credentials.ImportReport, refusals) {
	w.t.Helper()
	var got refusals
	opt.Refused = got.add
	rep, err := svc.Import(context.Background(), w.acc, strings.NewReader(file), opt)
	if err != nil {
		w.t.Fatalf("import: %v", err)
	}
	return rep, got
}

func (w importWorld) logins() []string {
	w.t.Helper()
	var out []string
	if err := w.db.Select(&out, `SELECT c.username || '@' || d.name FROM credentials c JOIN domains d ON d.id = c.domain_id ORDER BY c.id`); err != nil {
		w.t.Fatal(err)
	}
	return out
}

func TestImportDoveadmHashesAuthenticateInDovecot(t *testing.T) {
	t.Parallel()
	w := newImportWorld(t)
	dir := dovecottest.TempDir(t)
	tmpl := filepath.Join(dir, "auth", "%d")
	dc := dovecottest.Start(t, dovecottest.Options{PasswdFile: tmpl, Scheme: "SSHA512"})
	files, err := passwdfile.New(tmpl, dc.Group())
	if err != nil {
		t.Fatal(err)
	}
	outbox := syncer.New(w.db, passwdfile.NewTarget(files, nil), syncer.Config{ApplyTimeout: 30 * time.Second}, nil)
	svc := credentials.NewService(w.db, outbox, credentials.Config{MaxPerDomain: 1000, Scheme: password.SSHA512})

	// Every scheme smtpcreds serves, hashed by doveadm, and the bare and
	// {CRYPT} forms of crypt strings.
	type login struct{ login, pw, line string }
	var want []login
	file := "# exported from the old server\n\n"
	for i, scheme := range []string{"SSHA512", "SHA512-CRYPT", "BLF-CRYPT", "ARGON2ID"} {
		pw := fmt.Sprintf("Pw%d:with colon,comma", i)
		h := dovecottest.Hash(t, scheme, pw)
		l := login{fmt.Sprintf("user%d@example.com", i), pw, ""}
		if i == 3 {
			l.login = "user3@example.net"
		}
		l.line = l.login + ":" + h + ":1000:1000::/home/x::userdb_quota_rule=*:storage=1G"
		want = append(want, l)
	}
	bare := strings.TrimPrefix(dovecottest.Hash(t, "SHA512-CRYPT", "bare-pw"), "{SHA512-CRYPT}")
	want = append(want, login{"bare@example.com", "bare-pw", "Bare@Example.COM:" + bare})
	crypt := strings.TrimPrefix(dovecottest.Hash(t, "BLF-CRYPT", "crypt-pw"), "{BLF-CRYPT}")
	want = append(want, login{"crypt@example.net", "crypt-pw", "crypt@example.net:{CRYPT}" + crypt + ":"})
	for _, l := range want {
		file += l.line + "\r\n"
	}

	rep, got := w.run(svc, file, credentials.ImportOptions{})
	if len(got) != 0 || rep.Read != int64(len(want)) || rep.Created != int64(len(want)) || rep.Skipped != 0 || rep.Refused != 0 {
		t.Fatalf("report %+v, refused %q", rep, got)
	}
	if rep.Format != credentials.FormatPasswd {
		t.Errorf("format %q, want passwd", rep.Format)
	}
	if !outbox.Apply(context.Background(), rep.Pending) {
		t.Fatal("the import's sync jobs were not applied")
	}
	var unsynced int
	mustGet(t, w.db, &unsynced, `SELECT count(*) FROM credentials WHERE synced_version < version`)
	if unsynced != 0 {
		t.Errorf("%d imported credentials not marked synced", unsynced)
	}
	dc.WaitNextSecond()
	for _, l := range want {
		if ok, err := dc.Auth(l.login, l.pw); err != nil || !ok {
			t.Errorf("Dovecot refuses %s with its original password (%v)\n%s", l.login, err, dc.Log())
		}
		if ok, _ := dc.Auth(l.login, l.pw+"x"); ok {
			t.Errorf("Dovecot accepts %s with a wrong password", l.login)
		}
	}

	// Again: everything exists, nothing changes, no job.
	before := w.logins()
	var jobs int
	mustGet(t, w.db, &jobs, `SELECT count(*) FROM sync_jobs`)
	rep, got = w.run(svc, file, credentials.ImportOptions{})
	if len(got) != 0 || rep.Created != 0 || rep.Skipped != int64(len(want)) || rep.Pending.Len() != 0 {
		t.Fatalf("re-run: report %+v, refused %q", rep, got)
	}
	var jobsAfter int
	mustGet(t, w.db, &jobsAfter, `SELECT count(*) FROM sync_jobs`)
	if after := w.logins(); strings.Join(after, ",") != strings.Join(before, ",") || jobsAfter != jobs {
		t.Errorf("re-run changed something: %v -> %v, %d -> %d jobs", before, after, jobs, jobsAfter)
	}
}

func TestImportRefusesBadLinesWithTheirNumbers(t *testing.T) {
	t.Parallel()
	w := newImportWorld(t)
	svc := credentials.NewService(w.db, nil, credentials.Config{MaxPerDomain: 1000, Scheme: password.SSHA512})
	good, err := password.Hash(password.SHA512Crypt, "pw")
	if err != nil {
		t.Fatal(err)
	}
	file := strings.Join([]string{
		"ok1@example.com:" + good,                                     // 1
		"plain@example.com:{PLAIN}hunter2",                            // 2
		"clear@example.com:{CLEAR}hunter2",                            // 3
		"md5@example.com:{PLAIN-MD5}5f4dcc3b5aa765d61d8327deb882cf99", // 4
		"cram@example.com:{CRAM-MD5}abcdef",                           // 5
		"nosuch@example.com:hunter2",                                  // 6
		"foreign@other.test:" + good,                                  // 7
		"pending@pending.test:" + good,                                // 8
		"nobody@nowhere.test:" + good,                                 // 9
		"this line has no separator",                                  // 10
		"nodomain:" + good,                                            // 11
		"bad..name@example.com:" + good,                               // 12
		"ok1@EXAMPLE.com:" + good,                                     // 13: duplicate of 1
		"broken@example.com:{SHA512-CRYPT}$6$salt$short",              // 14
		"ok2@example.net:" + good + ":extra:fields",                   // 15
		"empty@example.com:",                                          // 16
		"plain@example.com:" + good,                                   // 17: duplicate of 2
		"ok1@example.com:{PLAIN}hunter2",                              // 18: plaintext, and a duplicate of 1
		"secret@example.com:{hunter2}",                                // 19: braces around what may be a password
	}, "\n")
	rep, got := w.run(svc, file, credentials.ImportOptions{})
	wantPrefixes := []string{
		"2: plain@example.com: {PLAIN} keeps the password in clear",
		"3: clear@example.com: {CLEAR} keeps the password in clear",
		"4: md5@example.com: {PLAIN-MD5} keeps the password in clear",
		"5: cram@example.com: unsupported scheme {CRAM-MD5}",
		"6: nosuch@example.com: no {SCHEME} prefix",
		"7: foreign domain: other.test is not a domain of this account",
		"8: domain pending.test is not verified",
		"9: foreign domain: nowhere.test",
		"10: malformed",
		"11: malformed: the login has no @domain",
		"12: bad username",
		"13: duplicate: line 1",
		"14: broken@example.com: malformed hash",
		"16: empty@example.com: no password hash",
		"17: duplicate: line 2",
		"18: ok1@example.com: {PLAIN} keeps the password in clear",
		"19: secret@example.com: unknown scheme: smtpcreds serves",
	}
	if len(got) != len(wantPrefixes) {
		t.Fatalf("refused %d lines, want %d:\n%s", len(got), len(wantPrefixes), strings.Join(got, "\n"))
	}
	for i, p := range wantPrefixes {
		if !strings.HasPrefix(got[i], p) {
			t.Errorf("refusal %d = %q, want it to start with %q", i, got[i], p)
		}
	}
	for _, r := range got {
		if strings.Contains(strings.ToLower(r), "hunter2") || strings.Contains(r, good) {
			t.Errorf("a refusal quotes the password or hash: %q", r)
		}
	}
	if rep.Read != 19 || rep.Created != 2 || rep.Skipped != 0 || rep.Refused != 17 {
		t.Errorf("report %+v, want read 19, created 2, refused 17", rep)
	}
	if l := w.logins(); strings.Join(l, ",") != "ok1@example.com,ok2@example.net" {
		t.Errorf("imported %v, want ok1@example.com and ok2@example.net only", l)
	}
	var stored string
	mustGet(t, w.db, &stored, `SELECT password_hash FROM credentials WHERE username = 'ok2'`)
	if stored != good {
		t.Errorf("stored hash differs from the file's")
	}
}

func TestImportCSV(t *testing.T) {
	t.Parallel()
	w := newImportWorld(t)
	svc := credentials.NewService(w.db, nil, credentials.Config{Scheme: password.SSHA512})
	argon := dovecottest.Hash(t, "ARGON2ID", "a-pw")
	file := "login,hash\n" +
		"a@example.com,\"" + argon + "\"\n" +
		"b@example.com," + argon + "\n" + // unquoted: the rest of the line
		"\"c@example.com\",\"" + strings.TrimPrefix(dovecottest.Hash(t, "SHA512-CRYPT", "c-pw"), "{SHA512-CRYPT}") + "\"\n" +
		"d@example.com:{SSHA512}abc\n" // not CSV
	rep, got := w.run(svc, file, credentials.ImportOptions{})
	if rep.Format != credentials.FormatCSV || rep.Created != 3 || rep.Refused != 1 || len(got) != 1 || !strings.HasPrefix(got[0], "5: malformed: expected login,hash") {
		t.Fatalf("report %+v, refused %q", rep, got)
	}
	var hashes []string
	if err := w.db.Select(&hashes, `SELECT password_hash FROM credentials ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	for i, h := range hashes {
		pw := []string{"a-pw", "a-pw", "c-pw"}[i]
		if ok, err := password.Verify(h, pw); !ok || err != nil {
			t.Errorf("credential %d: stored %q does not verify its password (%v)", i, h, err)
		}
	}
	// --format passwd reads the same file as passwd lines: all malformed.
	rep, _ = w.run(svc, "a@example.com,"+argon+"\n", credentials.ImportOptions{Format: credentials.FormatPasswd})
	if rep.Refused != 1 || rep.Created != 0 {
		t.Errorf("--format passwd on a CSV line: %+v", rep)
	}
}

func TestImportCap(t *testing.T) {
	t.Parallel()
	w := newImportWorld(t)
	svc := credentials.NewService(w.db, nil, credentials.Config{MaxPerDomain: 3, Scheme: password.SSHA512})
	if _, err := svc.Create(context.Background(), w.acc, "example.com", "existing"); err != nil {
		t.Fatal(err)
	}
	h, _ := password.Hash(password.SSHA512, "pw")
	var file strings.Builder
	fmt.Fprintf(&file, "existing@example.com:%s\n", h)
	for i := range 4 {
		fmt.Fprintf(&file, "u%d@example.com:%s\n", i, h)
	}
	fmt.Fprintf(&file, "n@example.net:%s\n", h)
	rep, got := w.run(svc, file.String(), credentials.ImportOptions{})
	if rep.Created != 3 || rep.Skipped != 1 || rep.Refused != 2 || len(got) != 2 ||
		!strings.HasPrefix(got[0], "4: over the cap: domain example.com") || !strings.HasPrefix(got[1], "5: over the cap") {
		t.Fatalf("report %+v, refused %q", rep, got)
	}
	var n int
	mustGet(t, w.db, &n, `SELECT count(*) FROM credentials c JOIN domains d ON d.id = c.domain_id WHERE d.name = 'example.com'`)
	if n != 3 {
		t.Errorf("example.com has %d credentials, cap 3", n)
	}
	rep, got = w.run(svc, file.String(), credentials.ImportOptions{IgnoreCap: true})
	if rep.Created != 2 || rep.Skipped != 4 || len(got) != 0 {
		t.Errorf("--ignore-cap: report %+v, refused %q", rep, got)
	}
}

// A state-reading target gets one job per scope per batch; a target that
// replays events one credential.upserted event per credential, as a
// create makes.
func TestImportJobs(t *testing.T) {
	t.Parallel()
	h, _ := password.Hash(password.SSHA512, "pw")
	var file strings.Builder
	for i := range 25 {
		fmt.Fprintf(&file, "u%d@example.com:%s\nu%d@example.net:%s\n", i, h, i, h)
	}
	t.Run("passwd-file", func(t *testing.T) {
		t.Parallel()
		w := newImportWorld(t)
		files, err := passwdfile.New(filepath.Join(t.TempDir(), "%d"), "")
		if err != nil {
			t.Fatal(err)
		}
		outbox := syncer.New(w.db, passwdfile.NewTarget(files, nil), syncer.Config{}, nil)
		svc := credentials.NewService(w.db, outbox, credentials.Config{Scheme: password.SSHA512})
		rep, _ := w.run(svc, file.String(), credentials.ImportOptions{BatchSize: 20})
		if rep.Created != 50 {
			t.Fatalf("report %+v", rep)
		}
		var events []string
		if err := w.db.Select(&events, `SELECT event::text FROM sync_jobs ORDER BY id`); err != nil {
			t.Fatal(err)
		}
		if len(events) != 6 { // 3 batches, 2 scopes (one file per domain)
			t.Fatalf("%d jobs, want 6 (3 batches x 2 domains):\n%s", len(events), strings.Join(events, "\n"))
		}
		for _, e := range events {
			var ev syncer.Event
			if err := json.Unmarshal([]byte(e), &ev); err != nil || ev.Type != syncer.CredentialsImported || len(ev.Domains) != 1 {
				t.Errorf("job event %s", e)
			}
		}
	})
	t.Run("webhook", func(t *testing.T) {
		t.Parallel()
		w := newImportWorld(t)
		s, err := webhook.New("http://127.0.0.1:1/hook", []byte("0123456789abcdef0123"), 0)
		if err != nil {
			t.Fatal(err)
		}
		outbox := syncer.New(w.db, webhook.NewTarget(s), syncer.Config{}, nil)
		svc := credentials.NewService(w.db, outbox, credentials.Config{Scheme: password.SSHA512})
		rep, _ := w.run(svc, file.String(), credentials.ImportOptions{BatchSize: 20})
		if rep.Created != 50 || rep.Pending.Len() != 50 {
			t.Fatalf("report %+v", rep)
		}
		var rows []struct {
			Scope string `db:"scope"`
			Event []byte `db:"event"`
			Login string `db:"login"`
			GUID  string `db:"guid"`
			ID    int64  `db:"id"`
			Hash  string `db:"password_hash"`
		}
		if err := w.db.Select(&rows, `
			SELECT j.scope, j.event, c.username || '@' || d.name AS login, c.guid::text AS guid, c.id, c.password_hash
			FROM sync_jobs j JOIN credentials c ON c.id = (j.event->>'credential_id')::bigint JOIN domains d ON d.id = c.domain_id
			ORDER BY j.id`); err != nil {
			t.Fatal(err)
		}
		if len(rows) != 50 {
			t.Fatalf("%d jobs naming a credential, want 50", len(rows))
		}
		for _, r := range rows {
			var ev syncer.Event
			if err := json.Unmarshal(r.Event, &ev); err != nil {
				t.Fatal(err)
			}
			want := syncer.Event{Type: syncer.CredentialUpserted, Domain: r.Scope, Login: r.Login, Username: strings.Split(r.Login, "@")[0],
				CredentialID: r.ID, GUID: r.GUID, Version: 1, PasswordHash: r.Hash, OccurredAt: ev.OccurredAt}
			if fmt.Sprint(ev) != fmt.Sprint(want) || ev.OccurredAt == 0 {
				t.Errorf("event %+v, want %+v", ev, want)
			}
		}
	})
}

// With the dovecot-sql target Dovecot reads the database: the imported
// logins authenticate once committed, and the import's one job per scope
// marks them synced.
func TestImportDovecotSQL(t *testing.T) {
	t.Parallel()
	dsn := dbtest.NewURL(t)
	db, err := sqlx.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	w := newImportWorldOn(t, db)
	role, rolePW := dbtest.ViewReader(t, dsn, "dovecot_passdb")
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	dc := dovecottest.Start(t, dovecottest.Options{
		SQL: &dovecottest.SQLPassdb{
			Connect:       fmt.Sprintf("host=%s port=%s dbname=%s user=%s password=%s", u.Hostname(), port, strings.TrimPrefix(u.Path, "/"), role, rolePW),
			PasswordQuery: `SELECT password FROM dovecot_passdb WHERE username = '%Ln' AND domain = '%Ld'`,
		},
		Scheme: "SSHA512",
	})
	outbox := syncer.New(db, dovecotsql.NewTarget(role), syncer.Config{ApplyTimeout: 30 * time.Second}, nil)
	svc := credentials.NewService(db, outbox, credentials.Config{Scheme: password.SSHA512})
	pws := map[string]string{}
	file := ""
	for i, scheme := range []string{"SSHA512", "SHA512-CRYPT", "BLF-CRYPT", "ARGON2ID"} {
		login, pw := fmt.Sprintf("s%d@example.com", i), fmt.Sprintf("pw %d", i)
		pws[login] = pw
		file += login + ":" + dovecottest.Hash(t, scheme, pw) + "\n"
	}
	rep, got := w.run(svc, file, credentials.ImportOptions{})
	if rep.Created != 4 || len(got) != 0 || rep.Pending.Len() != 1 {
		t.Fatalf("report %+v, refused %q", rep, got)
	}
	if !outbox.Apply(context.Background(), rep.Pending) {
		t.Fatal("the import's sync job was not applied")
	}
	var unsynced int
	mustGet(t, db, &unsynced, `SELECT count(*) FROM credentials WHERE synced_version < version`)
	if unsynced != 0 {
		t.Errorf("%d imported credentials not marked synced", unsynced)
	}
	for login, pw := range pws {
		if ok, err := dc.Auth(login, pw); err != nil || !ok {
			t.Errorf("Dovecot refuses %s with its original password (%v)\n%s", login, err, dc.Log())
		}
	}
}

// The cap holds exactly while the API creates in the same domain during
// an import.
func TestImportCapUnderConcurrentCreates(t *testing.T) {
	t.Parallel()
	w := newImportWorld(t)
	const limit = 60
	svc := credentials.NewService(w.db, nil, credentials.Config{MaxPerDomain: limit, Scheme: password.SSHA512})
	h, _ := password.Hash(password.SSHA512, "pw")
	var file strings.Builder
	for i := range 50 {
		fmt.Fprintf(&file, "imp%d@example.com:%s\n", i, h)
	}
	var wg sync.WaitGroup
	var apiCreated atomic.Int64
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				if _, err := svc.Create(context.Background(), w.acc, "example.com", fmt.Sprintf("api%d-%d", g, i)); err == nil {
					apiCreated.Add(1)
				}
			}
		}()
	}
	rep, _ := w.run(svc, file.String(), credentials.ImportOptions{BatchSize: 5})
	wg.Wait()
	var n int64
	mustGet(t, w.db, &n, `SELECT count(*) FROM credentials`)
	if n != limit || rep.Created+apiCreated.Load() != limit || rep.Created+rep.Refused != 50 {
		t.Errorf("%d credentials (import created %d, refused %d; API created %d), want exactly the cap %d",
			n, rep.Created, rep.Refused, apiCreated.Load(), limit)
	}
}
