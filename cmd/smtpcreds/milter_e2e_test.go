package main

import (
	"database/sql"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"

	gomilter "github.com/d--j/go-milter"
)

// Two `smtpcreds milter` processes on one database share a login's limit
// exactly: 24 messages at once, alternating between them, against a limit
// of 9 an hour: 9 pass, 15 are deferred with 4.7.1, and the API's
// database counts 9.
func TestMilterProcessesShareLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	bin := buildBinary(t)
	t.Parallel()
	env := map[string]string{
		"DATABASE_URL":                     emptyDatabase(t),
		"SMTPCREDS_DKIM_KEY":               randomHexKey(t),
		"SMTPCREDS_TOKEN_KEY":              randomHexKey(t),
		"SMTPCREDS_LOGIN_LIMIT_PER_HOUR":   "9",
		"SMTPCREDS_LOGIN_LIMIT_PER_MINUTE": "0",
		"SMTPCREDS_MILTER_ADDR":            "inet:127.0.0.1:0",
	}
	mustRun(t, bin, env, "migrate")
	createToken(t, bin, env, "accounts", "create", "acme")
	mustRun(t, bin, env, "domains", "add", "acme", "acme.example", "--verified")
	// The credential's row, as the API would make it (no sync target here:
	// the milter trusts the login Postfix authenticated).
	dbExec(t, env["DATABASE_URL"], `INSERT INTO credentials (guid, account_id, domain_id, username, password_hash)
		SELECT gen_random_uuid(), account_id, id, 'mailer', '{SSHA512}x' FROM domains WHERE name = 'acme.example'`)
	var addrs []string
	for range 2 {
		m := startMilter(t, bin, maps.Clone(env))
		addrs = append(addrs, m.addr)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string]int{}
	for i := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reply, err := milterSend(addrs[i%2], "mailer@acme.example", fmt.Sprintf("m%d", i))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				t.Errorf("message %d: %v", i, err)
			case reply == "":
				got["accepted"]++
			case strings.HasPrefix(reply, "451 4.7.1") && strings.Contains(reply, "limit of 9 messages per hour"):
				got["deferred"]++
			default:
				t.Errorf("message %d: %q", i, reply)
			}
		}()
	}
	wg.Wait()
	if got["accepted"] != 9 || got["deferred"] != 15 {
		t.Errorf("accepted %d, deferred %d; want 9 and 15", got["accepted"], got["deferred"])
	}
	var queued int
	dbQueryRow(t, env["DATABASE_URL"], `SELECT messages_queued FROM credential_usage`, &queued)
	if queued != 9 {
		t.Errorf("credential_usage.messages_queued = %d, want 9", queued)
	}
}

// milterSend hands one message of login to the milter at addr as Postfix
// does, and returns its refusal ("" when accepted).
func milterSend(addr, login, subject string) (string, error) {
	macros := gomilter.NewMacroBag()
	s, err := gomilter.NewClient("tcp", addr).Session(macros)
	if err != nil {
		return "", err
	}
	defer s.Close()
	steps := []func() (*gomilter.Action, error){
		func() (*gomilter.Action, error) { return s.Conn("client.test", gomilter.FamilyInet, 40000, "192.0.2.1") },
		func() (*gomilter.Action, error) { return s.Helo("client.test") },
		func() (*gomilter.Action, error) {
			macros.Set(gomilter.MacroAuthAuthen, login)
			return s.Mail(login, "")
		},
		func() (*gomilter.Action, error) { return s.Rcpt("someone@rcpt.example", "") },
		func() (*gomilter.Action, error) { return s.DataStart() },
		func() (*gomilter.Action, error) { return s.HeaderField("From", " <"+login+">", nil) },
		func() (*gomilter.Action, error) { return s.HeaderField("Subject", " "+subject, nil) },
		func() (*gomilter.Action, error) { return s.HeaderEnd() },
	}
	for _, step := range steps {
		act, err := step()
		if err != nil {
			return "", err
		}
		if act.StopProcessing() {
			return act.SMTPReply, nil
		}
	}
	_, act, err := s.BodyReadFrom(strings.NewReader("hello\r\n"))
	if err != nil {
		return "", err
	}
	if act.StopProcessing() {
		return act.SMTPReply, nil
	}
	return "", nil
}

// dbExec runs statement on the database at dsn.
func dbExec(t *testing.T, dsn, statement string) {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(statement); err != nil {
		t.Fatalf("%s: %v", statement, err)
	}
}

// dbQueryRow scans query's one row into dest.
func dbQueryRow(t *testing.T, dsn, query string, dest ...any) {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRow(query).Scan(dest...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}
