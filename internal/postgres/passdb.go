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

// passdbCheckSQL reports whether role ($1) can read the view (it exists, and
// may use the view's schema and select from it), and runs, for the logins
// $2, the lookup Dovecot's password query (SELECT password FROM
// dovecot_passdb WHERE username = '%Ln' AND domain = '%Ld') runs: the same
// view, the same two keys. (CASE, so that a missing role is false, not an
// error.)
const passdbCheckSQL = `
	SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)
	            THEN has_schema_privilege($1, (SELECT relnamespace FROM pg_class WHERE oid = 'dovecot_passdb'::regclass), 'USAGE')
	                 AND has_table_privilege($1, 'dovecot_passdb'::regclass, 'SELECT')
	            ELSE false END,
	       (SELECT count(p.password)
	        FROM unnest($2::text[]) AS l(login)
	        JOIN dovecot_passdb p ON p.username = split_part(l.login, '@', 1) AND p.domain = split_part(l.login, '@', 2))`

// CheckPassdb runs Dovecot's lookup through the view for logins
// (username@domain) and reports whether role, the role Dovecot connects as,
// may read the view. An error means the view is missing or broken.
func (PassdbRepo) CheckPassdb(ctx context.Context, q sqlx.QueryerContext, role string, logins []string) (readable bool, err error) {
	var found int64
	if err := queryRowHot(ctx, q, passdbCheckSQL, role, pq.Array(logins)).Scan(&readable, &found); err != nil {
		return false, fmt.Errorf("dovecot passdb: %w", translate(err))
	}
	return readable, nil
}
