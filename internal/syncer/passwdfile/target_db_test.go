package passwdfile_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/dbtest"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/syncer"
	"github.com/smtpcreds/smtpcreds/internal/syncer/passwdfile"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

// world is a database with domain example.com and a passwd-file template.
type world struct {
	db       *sqlx.DB
	account  int64
	domainID int64
	w        *passwdfile.Writer
}

func newWorld(t *testing.T, tmpl string) world {
	t.Helper()
	db := dbtest.New(t)
	wd := world{db: db}
	if err := db.Get(&wd.account, `INSERT INTO accounts (name, token_digest) VALUES ('a', '\x00') RETURNING id`); err != nil {
		t.Fatal(err)
	}
	if err := db.Get(&wd.domainID, `INSERT INTO domains (account_id, name, is_verified) VALUES ($1, 'example.com', true) RETURNING id`, wd.account); err != nil {
		t.Fatal(err)
	}
	w, err := passwdfile.New(filepath.Join(t.TempDir(), tmpl), "")
	if err != nil {
		t.Fatal(err)
	}
	wd.w = w
	return wd
}

// process is a new server process's outbox: nothing in memory.
func (wd world) process() *syncer.Service {
	return syncer.New(wd.db, passwdfile.NewTarget(wd.w, nil), syncer.Config{ApplyTimeout: 5 * time.Second}, nil)
}

// change creates (or re-hashes) user's credential and applies it.
func (wd world) change(t *testing.T, s *syncer.Service, user, hash string) {
	t.Helper()
	ctx := context.Background()
	tx := wd.db.MustBegin()
	defer tx.Rollback() //nolint:errcheck
	var id, version int64
	if err := tx.QueryRowx(`
		INSERT INTO credentials (guid, account_id, domain_id, username, password_hash)
		VALUES (gen_random_uuid(), $1, $2, $3, $4)
		ON CONFLICT (domain_id, username) DO UPDATE SET password_hash = EXCLUDED.password_hash, version = credentials.version + 1
		RETURNING id, version`, wd.account, wd.domainID, user, hash).Scan(&id, &version); err != nil {
		t.Fatal(err)
	}
	p, err := s.Enqueue(ctx, tx, syncer.Event{Type: syncer.CredentialUpserted, Domain: "example.com",
		Login: user + "@example.com", CredentialID: id, Version: version, PasswordHash: hash})
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if !s.Apply(ctx, p) {
		t.Fatalf("apply of %s not confirmed", user)
	}
}

// behindTheBack inserts a credential without a sync job: only a whole
// read of the domain puts it in the files.
func (wd world) behindTheBack(t *testing.T, user string) {
	t.Helper()
	wd.db.MustExec(`INSERT INTO credentials (guid, account_id, domain_id, username, password_hash, synced_version)
		VALUES (gen_random_uuid(), $1, $2, $3, '{PLAIN}x', 1)`, wd.account, wd.domainID, user)
}

// files returns the lines of every file of example.com, sorted, and each
// file's inode by shard.
func (wd world) files(t *testing.T) ([]string, map[string]uint64) {
	t.Helper()
	var lines []string
	inos := map[string]uint64{}
	for _, sh := range wd.w.Shards() {
		data, err := os.ReadFile(wd.w.Path("example.com", sh))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(wd.w.Path("example.com", sh))
		inos[sh] = fi.Sys().(*syscall.Stat_t).Ino
		lines = append(lines, strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")...)
	}
	slices.Sort(lines)
	return lines, inos
}

// wantFilesMatchDB checks the files hold exactly the domain's credentials.
func (wd world) wantFilesMatchDB(t *testing.T) {
	t.Helper()
	var want []string
	if err := wd.db.Select(&want, `SELECT username || '@example.com:' || password_hash FROM credentials WHERE status`); err != nil {
		t.Fatal(err)
	}
	slices.Sort(want)
	if got, _ := wd.files(t); !slices.Equal(got, want) {
		t.Fatalf("files hold\n%q\ndatabase\n%q", got, want)
	}
}

func (wd world) holds(t *testing.T, login string) bool {
	lines, _ := wd.files(t)
	return slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, login+":") })
}

// A process that did not write the files (a restart, another server)
// trusts them by their stored fingerprints: its first create is appended,
// without reading the domain whole (a credential inserted behind the
// syncer's back stays out of the files); a change of the scope's token
// behind its back, and a file changed behind its back, make the next
// apply write the domain whole.
func TestTargetTrustsFilesByFingerprint(t *testing.T) {
	for _, tmpl := range []string{"%d", "%d/%1Mu"} {
		t.Run(strings.ReplaceAll(tmpl, "%", ""), func(t *testing.T) {
			t.Parallel()
			wd := newWorld(t, tmpl)
			first := wd.process()
			for _, u := range []string{"alice", "bob", "carol", "dave", "erin", "frank"} {
				wd.change(t, first, u, "{PLAIN}"+u)
			}
			wd.wantFilesMatchDB(t)
			_, before := wd.files(t)

			wd.behindTheBack(t, "hidden")
			restarted := wd.process()
			wd.change(t, restarted, "gina", "{PLAIN}gina")
			if wd.holds(t, "hidden@example.com") {
				t.Fatal("the restarted process read the domain whole for a create")
			}
			if !wd.holds(t, "gina@example.com") {
				t.Fatal("gina is not in the files")
			}
			if _, after := wd.files(t); !mapsSubset(before, after) {
				t.Fatalf("files replaced (inodes %v -> %v), not appended to", before, after)
			}

			// Another process again, then back: each trusts the other's files.
			wd.change(t, first, "hank", "{PLAIN}hank")
			wd.change(t, restarted, "ivy", "{PLAIN}ivy")
			if wd.holds(t, "hidden@example.com") {
				t.Fatal("an apply after another process's read the domain whole")
			}

			// The token changed behind the syncer's back (a bulk import):
			// the next apply writes the domain whole.
			wd.db.MustExec(`UPDATE sync_scopes SET token = token + 1`)
			wd.change(t, first, "jack", "{PLAIN}jack")
			wd.wantFilesMatchDB(t) // hidden included

			// A file changed behind the syncer's back is in doubt.
			wd.behindTheBack(t, "hidden2")
			kim := "kim"
			path := wd.w.Path("example.com", wd.w.Shard(kim+"@example.com"))
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString("intruder@example.com:{PLAIN}x\n"); err != nil {
				t.Fatal(err)
			}
			f.Close()
			wd.change(t, wd.process(), kim, "{PLAIN}kim")
			wd.wantFilesMatchDB(t) // no intruder, hidden2 included
		})
	}
}

// With shards, a reset rewrites its shard only, read back and checked
// against its fingerprint; without, it streams the domain's file whole.
func TestTargetResetRewritesItsShard(t *testing.T) {
	wd := newWorld(t, "%d/%1Mu")
	s := wd.process()
	users := []string{"alice", "bob", "carol", "dave", "erin", "frank", "gina", "hank"}
	for _, u := range users {
		wd.change(t, s, u, "{PLAIN}"+u)
	}
	wd.behindTheBack(t, "hidden")
	_, before := wd.files(t)
	wd.change(t, wd.process(), "carol", "{PLAIN}new")
	_, after := wd.files(t)
	sh := wd.w.Shard("carol@example.com")
	for k, ino := range before {
		if changed := after[k] != ino; changed != (k == sh) {
			t.Errorf("shard %s: replaced %v, want replaced only carol's shard %s", k, changed, sh)
		}
	}
	if wd.holds(t, "hidden@example.com") && wd.w.Shard("hidden@example.com") != sh {
		t.Error("the reset read the domain whole")
	}
	lines, _ := wd.files(t)
	if !slices.Contains(lines, "carol@example.com:{PLAIN}new") {
		t.Errorf("files hold %q, not carol's new hash", lines)
	}
}

func mapsSubset(a, b map[string]uint64) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// A whole write (here: the scope's token changed behind the syncer's
// back) streams a login's previous password of a grace period into the
// login's file, right after the login, for a file per domain and shards.
func TestTargetWholeWriteKeepsPreviousPasswords(t *testing.T) {
	for _, tmpl := range []string{"%d", "%d/%1Mu"} {
		t.Run(strings.ReplaceAll(tmpl, "%", ""), func(t *testing.T) {
			t.Parallel()
			wd := newWorld(t, tmpl)
			s := wd.process()
			for _, u := range []string{"a", "b", "c"} {
				wd.change(t, s, u, "{PLAIN}"+u)
			}
			wd.db.MustExec(`INSERT INTO credential_previous_passwords (credential_id, password_hash, expires_at)
				SELECT id, '{PLAIN}old-b', now() + interval '1 hour' FROM credentials WHERE username = 'b'`)
			wd.db.MustExec(`UPDATE sync_scopes SET token = token + 1 WHERE scope = 'example.com'`)
			wd.change(t, s, "d", "{PLAIN}d")
			lines, _ := wd.files(t)
			want := []string{"a@example.com:{PLAIN}a", "b@example.com/previous:{PLAIN}old-b", "b@example.com:{PLAIN}b",
				"c@example.com:{PLAIN}c", "d@example.com:{PLAIN}d"}
			if !slices.Equal(lines, want) {
				t.Fatalf("files hold\n%q\nwant\n%q", lines, want)
			}
			// In the file, the previous password follows its login.
			data, err := os.ReadFile(wd.w.Path("example.com", wd.w.Shard("b@example.com")))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(data), "b@example.com:{PLAIN}b\nb@example.com/previous:{PLAIN}old-b\n") {
				t.Errorf("b's file:\n%s", data)
			}
		})
	}
}

// A grouped apply reads the stored fingerprints of the shards its logins
// are in, naming each shard in SQL (postgres.ClaimGroup): the names must be
// the Writer's, or every grouped create would fall back to an apply alone.
func TestGroupClaimNamesTheWritersShards(t *testing.T) {
	wd := newWorld(t, "%d/%2Mu")
	s := wd.process()
	ctx := context.Background()
	tx := wd.db.MustBegin()
	defer tx.Rollback() //nolint:errcheck
	var logins []string
	for _, user := range []string{"alice", "bob", "carol", "d.e-f_9", "zz"} {
		var id int64
		if err := tx.Get(&id, `INSERT INTO credentials (guid, account_id, domain_id, username, password_hash)
			VALUES (gen_random_uuid(), $1, $2, $3, '{SSHA512}x') RETURNING id`, wd.account, wd.domainID, user); err != nil {
			t.Fatal(err)
		}
		login := user + "@example.com"
		if _, err := s.Enqueue(ctx, tx, syncer.Event{Type: syncer.CredentialUpserted, Domain: "example.com",
			Login: login, CredentialID: id, Version: 1, PasswordHash: "{SSHA512}x"}); err != nil {
			t.Fatal(err)
		}
		logins = append(logins, login)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	claimTx := wd.db.MustBegin()
	defer claimTx.Rollback() //nolint:errcheck
	digits := passwdfile.NewTarget(wd.w, nil).MD5Digits()
	claim, err := postgres.SyncRepo{}.ClaimGroup(ctx, claimTx, passwdfile.TargetName, []string{"example.com"},
		postgres.EventKeys{ID: "credential_id", Login: "login"}, digits)
	if err != nil {
		t.Fatal(err)
	}
	if len(claim.Jobs) != len(logins) {
		t.Fatalf("claimed %d jobs, want %d", len(claim.Jobs), len(logins))
	}
	for _, j := range claim.Jobs {
		var e syncer.Event
		if err := json.Unmarshal(j.Event, &e); err != nil || !slices.Contains(logins, e.Login) {
			t.Fatalf("job %d: event %s (%v)", j.ID, j.Event, err)
		}
		if want := wd.w.Shard(e.Login); j.Part != want || want == "" {
			t.Errorf("%s: the claim names its shard %q, the Writer %q", e.Login, j.Part, want)
		}
	}
}
