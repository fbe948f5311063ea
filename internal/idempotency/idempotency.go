// Package idempotency keeps the responses to idempotency keys (the
// Idempotency-Key header), so that a client whose response was lost can
// send the request again and get the same response instead of a second
// change: the same password, not a "taken" error.
//
// A key belongs to an account and lives 24 hours (TTL). The service that
// makes the change claims the key (Claim) and saves the response (Save) in
// the transaction of the change itself, so that a change is never committed
// without the response that reports it, and a crash between the commit and
// the response still replays. Stored responses are sealed under the
// server's sealing key (they may hold a password), bound to the account and
// the key. Of concurrent requests with one key exactly one makes the
// change: the others wait, in PostgreSQL, for its commit and replay it.
package idempotency

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/dkim"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/validation"
)

// TTL is how long a key and its response are kept.
const TTL = 24 * time.Hour

// MaxKeyLen bounds a key's length.
const MaxKeyLen = 255

// Field is the name of the key in validation errors.
const Field = "idempotency_key"

// ErrMismatch: the key was first used for a different request.
var ErrMismatch = validation.New(Field,
	"The idempotency key was already used for a different request; use a new key for a new request.")

// Response is a response as sent: its status and body bytes.
type Response struct {
	Status int
	Body   []byte
}

// Key is a request's idempotency key, scoped to its account, and the
// fingerprint of what the request asks.
type Key struct {
	AccountID   int64
	Key         string
	Fingerprint []byte
}

// NewKey returns the Key of key for accountID and a request described by
// parts (the operation's name first, then its inputs as the service
// normalised them), or a *validation.Error when key is not 1-255 printable
// ASCII characters.
func NewKey(accountID int64, key string, parts ...string) (Key, error) {
	if len(key) == 0 || len(key) > MaxKeyLen {
		return Key{}, validation.New(Field, fmt.Sprintf("The idempotency key must be 1 to %d characters.", MaxKeyLen))
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return Key{}, validation.New(Field, "The idempotency key must be printable ASCII characters.")
		}
	}
	h := sha256.New()
	for _, p := range parts {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	return Key{AccountID: accountID, Key: key, Fingerprint: h.Sum(nil)}, nil
}

// Store keeps the responses.
type Store struct {
	db     *sqlx.DB
	sealer *dkim.Sealer
	repo   postgres.IdempotencyRepo
	// wait bounds how long a replay waits for the first request to store
	// its final response (after its commit, it waits for the sync).
	wait time.Duration
}

// NewStore returns a Store sealing under sealer. wait bounds how long a
// replay of a key whose first request has committed but not yet answered
// waits for its final response (set it a little above the sync's apply
// timeout); after it, the response stored at the commit is replayed.
func NewStore(db *sqlx.DB, sealer *dkim.Sealer, wait time.Duration) *Store {
	return &Store{db: db, sealer: sealer, wait: wait}
}

// Claim takes k in tx, the change's transaction. It returns true when the
// caller is to make the change (and Save its response in tx); false when
// the key was already used: the caller then ends tx and calls Replay. A
// concurrent request holding the key is waited for until its transaction
// ends.
func (s *Store) Claim(ctx context.Context, tx sqlx.QueryerContext, k Key) (bool, error) {
	claimed, _, err := s.repo.Claim(ctx, tx, k.AccountID, k.Key, k.Fingerprint, TTL)
	if err != nil {
		return false, fmt.Errorf("idempotency key: %w", err)
	}
	return claimed, nil
}

// Save stores r as the response to k, in the change's transaction tx.
// final says it is the response that will be sent; otherwise Finish
// replaces it once it is known (after the sync).
func (s *Store) Save(ctx context.Context, tx sqlx.ExecerContext, k Key, r Response, final bool) error {
	sealed, err := s.sealer.Seal(r.Body, aad(k))
	if err != nil {
		return fmt.Errorf("idempotency key: %w", err)
	}
	return s.repo.Save(ctx, tx, k.AccountID, k.Key, r.Status, sealed, final)
}

// Finish stores r, the response about to be sent for k, as final: replays
// then send exactly it. A failure is returned but leaves the response
// saved at the commit in place, which replays as it is.
func (s *Store) Finish(ctx context.Context, k Key, r Response) error {
	return s.Save(context.WithoutCancel(ctx), s.db, k, r, true)
}

// Replay returns the response stored for k, after waiting (a bounded
// time) for it to be final. ErrMismatch when k was first used for another
// request.
//
// The first request may still be waiting for its sync when its key is
// replayed: its response is final once it answers, at the latest wait
// after it committed. A replay waits until then (or until shortly before
// its own context ends), and then replays the response saved at the
// commit: its first request died without answering.
func (s *Store) Replay(ctx context.Context, k Key) (Response, error) {
	pause := 10 * time.Millisecond
	for {
		row, err := s.repo.Get(ctx, s.db, k.AccountID, k.Key)
		if errors.Is(err, postgres.ErrNotFound) {
			// Pruned between the claim and here: the key has expired.
			return Response{}, validation.New(Field, "The idempotency key has expired; use a new key.")
		}
		if err != nil {
			return Response{}, fmt.Errorf("idempotency key: %w", err)
		}
		if string(row.Fingerprint) != string(k.Fingerprint) {
			return Response{}, ErrMismatch
		}
		deadline := row.CreatedAt.Add(s.wait)
		if d, ok := ctx.Deadline(); ok && d.Add(-time.Second).Before(deadline) {
			deadline = d.Add(-time.Second)
		}
		if row.Final || time.Now().After(deadline) {
			body, err := s.sealer.Open(row.Response, aad(k))
			if err != nil {
				return Response{}, fmt.Errorf("idempotency key: stored response: %w", err)
			}
			return Response{Status: row.Status, Body: body}, nil
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return Response{}, ctx.Err()
		case <-t.C:
		}
		pause = min(pause*2, 200*time.Millisecond)
	}
}

// Prune deletes expired keys and their responses; run it every minute or so.
func (s *Store) Prune(ctx context.Context) error {
	for {
		n, err := s.repo.Prune(ctx, s.db, 10000)
		if err != nil || n < 10000 {
			return err
		}
	}
}

// aad binds a sealed response to its account and key.
func aad(k Key) []byte {
	return []byte("idempotency\x00" + strconv.FormatInt(k.AccountID, 10) + "\x00" + k.Key)
}
