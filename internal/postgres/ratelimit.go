package postgres

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// RateCounterRepo keeps fixed one-minute request counters shared by every
// server process on the database. Windows come from the database clock so
// that processes on different hosts agree.
type RateCounterRepo struct{}

// Hit adds one to key's counter in the current window and returns the new
// count and the seconds left in the window.
func (RateCounterRepo) Hit(ctx context.Context, q sqlx.QueryerContext, key string) (hits int, secondsLeft float64, err error) {
	err = queryRowHot(ctx, q, `
		INSERT INTO rate_counters AS r (key, window_start, hits)
		VALUES ($1, floor(extract(epoch FROM now()) / 60)::bigint, 1)
		ON CONFLICT (key) DO UPDATE
		SET hits = CASE WHEN r.window_start = EXCLUDED.window_start THEN r.hits + 1 ELSE 1 END,
		    window_start = EXCLUDED.window_start
		RETURNING hits, ((window_start + 1) * 60 - extract(epoch FROM now()))::float8`, key).
		Scan(&hits, &secondsLeft)
	if err != nil {
		return 0, 0, fmt.Errorf("rate counter hit: %w", translate(err))
	}
	return hits, secondsLeft, nil
}

// AuthFailChannel is the LISTEN/NOTIFY channel on which a failed login is
// announced (the payload is the counter's key), so that processes caching
// counts drop theirs.
const AuthFailChannel = "smtpcreds_authfail"

// HitAnnounced is Hit, announcing the key on AuthFailChannel in the same
// statement.
func (RateCounterRepo) HitAnnounced(ctx context.Context, q sqlx.QueryerContext, key string) (hits int, secondsLeft float64, err error) {
	err = q.QueryRowxContext(ctx, `
		WITH h AS (
			INSERT INTO rate_counters AS r (key, window_start, hits)
			VALUES ($1, floor(extract(epoch FROM now()) / 60)::bigint, 1)
			ON CONFLICT (key) DO UPDATE
			SET hits = CASE WHEN r.window_start = EXCLUDED.window_start THEN r.hits + 1 ELSE 1 END,
			    window_start = EXCLUDED.window_start
			RETURNING hits, ((window_start + 1) * 60 - extract(epoch FROM now()))::float8 AS secs)
		SELECT hits, secs FROM h, pg_notify('`+AuthFailChannel+`', $1)`, key).
		Scan(&hits, &secondsLeft)
	if err != nil {
		return 0, 0, fmt.Errorf("rate counter hit: %w", translate(err))
	}
	return hits, secondsLeft, nil
}

// Count returns key's count in the current window (0 when none) and the
// seconds left in the window, without changing it.
func (RateCounterRepo) Count(ctx context.Context, q sqlx.QueryerContext, key string) (hits int, secondsLeft float64, err error) {
	err = q.QueryRowxContext(ctx, `
		SELECT coalesce((SELECT hits FROM rate_counters
		                  WHERE key = $1 AND window_start = floor(extract(epoch FROM now()) / 60)::bigint), 0),
		       ((floor(extract(epoch FROM now()) / 60) + 1) * 60 - extract(epoch FROM now()))::float8`, key).
		Scan(&hits, &secondsLeft)
	if err != nil {
		return 0, 0, fmt.Errorf("rate counter count: %w", translate(err))
	}
	return hits, secondsLeft, nil
}

// Prune deletes counters of windows that have ended.
func (RateCounterRepo) Prune(ctx context.Context, q sqlx.ExecerContext) (int64, error) {
	res, err := q.ExecContext(ctx,
		`DELETE FROM rate_counters WHERE window_start < floor(extract(epoch FROM now()) / 60)::bigint`)
	if err != nil {
		return 0, fmt.Errorf("prune rate counters: %w", translate(err))
	}
	n, _ := res.RowsAffected()
	return n, nil
}
