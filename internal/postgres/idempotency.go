package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// IdempotencyRow is a stored idempotency key: the request it was first
// used for and the response that answered it (sealed by the caller).
type IdempotencyRow struct {
	Fingerprint []byte    `db:"fingerprint"`
	Status      int       `db:"status"`
	Response    []byte    `db:"response"`
	Final       bool      `db:"final"`
	CreatedAt   time.Time `db:"created_at"`
}

// IdempotencyRepo stores idempotency keys (table idempotency_keys), each
// scoped by its account.
type IdempotencyRepo struct{}

// Claim takes key for accountID in the caller's transaction, for the
// request whose fingerprint is given, for ttl. It returns claimed true
// when the key was free (or had expired): the caller then makes its
// change and Saves the response in the same transaction. Otherwise it
// returns the key's row as committed by the transaction that claimed it:
// a claim made by a transaction still in progress is waited for (the
// unique index holds this one until the other commits or rolls back, and
// a rolled back claim is taken here), so that of concurrent requests with
// one key exactly one makes the change.
func (IdempotencyRepo) Claim(ctx context.Context, tx sqlx.QueryerContext, accountID int64, key string, fingerprint []byte, ttl time.Duration) (claimed bool, row IdempotencyRow, err error) {
	var n int
	err = sqlx.GetContext(ctx, tx, &n, `
		WITH c AS (
			INSERT INTO idempotency_keys AS k (account_id, key, fingerprint, expires_at)
			VALUES ($1, $2, $3, now() + $4 * interval '1 millisecond')
			ON CONFLICT (account_id, key) DO UPDATE
				SET fingerprint = EXCLUDED.fingerprint, status = 0, response = '', final = false,
				    created_at = now(), expires_at = EXCLUDED.expires_at
				WHERE k.expires_at <= now()
			RETURNING 1)
		SELECT count(*) FROM c`, accountID, key, fingerprint, ttl.Milliseconds())
	if err != nil {
		return false, IdempotencyRow{}, fmt.Errorf("claim idempotency key: %w", translate(err))
	}
	if n == 1 {
		return true, IdempotencyRow{}, nil
	}
	row, err = IdempotencyRepo{}.Get(ctx, tx, accountID, key)
	return false, row, err
}

// Get returns the key's row; ErrNotFound when there is none.
func (IdempotencyRepo) Get(ctx context.Context, q sqlx.QueryerContext, accountID int64, key string) (IdempotencyRow, error) {
	var r IdempotencyRow
	err := sqlx.GetContext(ctx, q, &r, `
		SELECT fingerprint, status, response, final, created_at FROM idempotency_keys
		WHERE account_id = $1 AND key = $2`, accountID, key)
	if err != nil {
		return IdempotencyRow{}, fmt.Errorf("get idempotency key: %w", translate(err))
	}
	return r, nil
}

// Save stores the (sealed) response of a claimed key; final says the
// response will not change before it is sent.
func (IdempotencyRepo) Save(ctx context.Context, q sqlx.ExecerContext, accountID int64, key string, status int, response []byte, final bool) error {
	_, err := q.ExecContext(ctx, `
		UPDATE idempotency_keys SET status = $3, response = $4, final = $5
		WHERE account_id = $1 AND key = $2`, accountID, key, status, response, final)
	if err != nil {
		return fmt.Errorf("save idempotency key: %w", translate(err))
	}
	return nil
}

// Prune deletes the expired keys, at most batch of them; it returns how
// many it deleted.
func (IdempotencyRepo) Prune(ctx context.Context, q sqlx.ExecerContext, batch int) (int64, error) {
	res, err := q.ExecContext(ctx, `
		DELETE FROM idempotency_keys WHERE (account_id, key) IN (
			SELECT account_id, key FROM idempotency_keys WHERE expires_at <= now() LIMIT $1)`, batch)
	if err != nil {
		return 0, fmt.Errorf("prune idempotency keys: %w", translate(err))
	}
	return res.RowsAffected()
}
