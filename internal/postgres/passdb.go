package postgres

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// PassdbRepo reads the dovecot_passdb view, which a Dovecot passdb with the
// SQL driver queries (sync target dovecot-sql).
type PassdbRepo struct{}

// passdbLookupSQL answers, for many logins at once, what Dovecot's password
// query (SELECT password FROM dovecot_passdb WHERE username = '%Ln' AND
// domain = '%Ld') answers for each: the same view, the same two keys.
const passdbLookupSQL = `
	SELECT p.login, p.password
	FROM unnest($1::text[]) AS l(login)
	JOIN dovecot_passdb p ON p.username = split_part(l.login, '@', 1) AND p.domain = split_part(l.login, '@', 2)`

// Passwords returns the password (hash) Dovecot reads for each of logins
// (username@domain) that the view holds; a login it does not hold is
// absent.
func (PassdbRepo) Passwords(ctx context.Context, q sqlx.QueryerContext, logins []string) (map[string]string, error) {
	rows, err := queryHot(ctx, q, passdbLookupSQL, pq.Array(logins))
	if err != nil {
		return nil, fmt.Errorf("dovecot passdb: %w", translate(err))
	}
	defer rows.Close()
	out := make(map[string]string, len(logins))
	for rows.Next() {
		var login, pw string
		if err := rows.Scan(&login, &pw); err != nil {
			return nil, fmt.Errorf("dovecot passdb: %w", err)
		}
		out[login] = pw
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("dovecot passdb: %w", translate(err))
	}
	return out, nil
}
