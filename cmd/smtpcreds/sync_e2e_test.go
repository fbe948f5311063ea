package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/gen"
	"github.com/smtpcreds/smtpcreds/internal/dovecottest"
	"github.com/smtpcreds/smtpcreds/internal/syncer"
	"github.com/smtpcreds/smtpcreds/internal/syncer/passwdfile"
)

// kill9 kills the server without letting it clean up.
func (s *server) kill9(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill -9: %v", err)
	}
	<-s.done
	_ = s.cmd.Wait()
	s.waited = true
}

// kill -9 of the server in the middle of a burst of creates: after a
// restart every credential converges, every acknowledged one exists exactly
// once and authenticates in Dovecot, and the passwd-file always parses and
// equals the database's rendering.
func TestSyncSurvivesKill9MidBurst(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the real binary and Dovecot")
	}
	bin := buildBinary(t)
	passwd := filepath.Join(dovecottest.TempDir(t), "passwd")
	dc := dovecottest.Start(t, dovecottest.Options{PasswdFile: passwd, Scheme: "SSHA512"})

	env := serverEnv(t, map[string]string{
		"SMTPCREDS_RATE_LIMIT":        "0",
		"SMTPCREDS_PASSWD_FILE":       passwd,
		"SMTPCREDS_PASSWD_FILE_GROUP": dc.Group(),
	})
	dbURL := env["DATABASE_URL"]
	mustRun(t, bin, env, "migrate")
	token := createToken(t, bin, env, "accounts", "create", "burst")
	mustRun(t, bin, env, "domains", "add", "burst", "burst.example", "--verified")
	db, err := sqlx.Connect("postgres", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	// The file must parse at every moment, but for a partial last line (an
	// append under way, of a create not yet acknowledged): a reader checks
	// it throughout.
	stopReader := make(chan struct{})
	readerDone := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stopReader:
				readerDone <- nil
				return
			default:
			}
			data, err := os.ReadFile(passwd)
			if err == nil {
				whole := data[:bytes.LastIndexByte(data, '\n')+1]
				if _, err := passwdfile.Parse(whole); err != nil {
					readerDone <- fmt.Errorf("passwd-file unparsable mid-burst: %v", err)
					return
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()

	srv := startServer(t, bin, env)
	client := newClient(t, srv.addr, "burst", token)
	var (
		mu    sync.Mutex
		acked = map[string]string{} // login -> password
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(context.Background())
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				user := fmt.Sprintf("w%d-%d", w, i)
				r, err := client.CreateCredentialWithResponse(ctx, "burst.example", nil, gen.CredentialInput{Username: &user})
				if err != nil || r.StatusCode() != http.StatusCreated {
					return // the server died under us
				}
				mu.Lock()
				acked[user+"@burst.example"] = r.JSON201.Data.Password
				mu.Unlock()
			}
		}()
	}
	// Kill once a good number of creates were acknowledged.
	deadline := time.Now().Add(time.Minute)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 40 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d creates acknowledged in a minute; log:\n%s", n, srv.logText())
		}
		time.Sleep(5 * time.Millisecond)
	}
	srv.kill9(t)
	cancel()
	wg.Wait()

	srv = startServer(t, bin, env)
	// Jobs the killed process had claimed are reclaimed when their lease
	// (15 s at most) runs out.
	converged := time.Now().Add(45 * time.Second)
	for {
		var unsynced, pending int
		if err := db.Get(&unsynced, `SELECT count(*) FROM credentials WHERE synced_version < version`); err != nil {
			t.Fatal(err)
		}
		if err := db.Get(&pending, `SELECT count(*) FROM sync_jobs WHERE done_at IS NULL`); err != nil {
			t.Fatal(err)
		}
		if unsynced == 0 && pending == 0 {
			break
		}
		if time.Now().After(converged) {
			t.Fatalf("not converged 45s after restart: %d unsynced credentials, %d pending jobs; log:\n%s", unsynced, pending, srv.logText())
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stopReader)
	if err := <-readerDone; err != nil {
		t.Fatal(err)
	}

	// The file holds exactly the database's credentials, each line whole
	// (Parse is strict), in any order: creates are appended.
	var rows []syncer.Entry
	if err := db.Select(&rows, `SELECT c.username || '@' || d.name AS login, c.password_hash AS hash
		FROM credentials c JOIN domains d ON d.id = c.domain_id ORDER BY login`); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(passwd)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(rows, func(a, b syncer.Entry) int { return strings.Compare(a.Login, b.Login) })
	if lines, err := passwdfile.Parse(got); err != nil || !slices.Equal(lines, rows) {
		want, _ := passwdfile.Render(rows)
		t.Fatalf("passwd-file (%v) differs from the database's credentials:\nfile:\n%s\ndatabase:\n%s", err, got, want)
	}
	// Every acknowledged credential exists exactly once and authenticates.
	inDB := map[string]int{}
	for _, r := range rows {
		inDB[r.Login]++
	}
	dc.WaitNextSecond()
	for login, pw := range acked {
		if inDB[login] != 1 {
			t.Errorf("%s acknowledged with 201 but in the database %d times", login, inDB[login])
			continue
		}
		ok, err := dc.Auth(login, pw)
		if err != nil || !ok {
			t.Errorf("Dovecot refuses acknowledged %s (%v)", login, err)
		}
		if bytes.Contains(got, []byte(pw)) {
			t.Errorf("plaintext password of %s in the passwd-file", login)
		}
	}
	t.Logf("%d acknowledged before kill -9, %d credentials in all after convergence", len(acked), len(rows))
	srv.stop(t)
}
