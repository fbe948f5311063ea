package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// The API's side of the relay tables (RelayRepo is in relaywrite.go, the
// milter's side): it reads what the milter recorded, the shared send
// counters and the message log, and prunes both. Reads are scoped by the
// owning account in SQL; the prunes are the operator's housekeeping and
// span every account.

// CounterHits returns the hits of the send_counters row key in the window
// starting at windowStart (Unix seconds): 0 when there is no row or it
// holds another window (a past one: the milter starts a new window on its
// next message). One primary-key read.
func (RelayRepo) CounterHits(ctx context.Context, q sqlx.QueryerContext, key string, windowStart int64) (int64, error) {
	var hits []int64
	err := sqlx.SelectContext(ctx, q, &hits,
		`SELECT hits FROM send_counters WHERE key = $1 AND window_start = $2`, key, windowStart)
	if err != nil {
		return 0, fmt.Errorf("send counter: %w", translate(err))
	}
	if len(hits) == 0 {
		return 0, nil
	}
	return hits[0], nil
}

// MessageLogFilter selects message_log rows of one domain; zero fields
// select everything.
type MessageLogFilter struct {
	// From and Until bound at: From <= at < Until.
	From, Until *time.Time
	// Sender and Recipient are whole addresses, matched case-insensitively.
	Sender, Recipient string
	// Subject is a part of the subject, matched case-insensitively.
	Subject   string
	EventType string
}

// where is f's condition on message_log m, whose domain_id must equal
// domainExpr, with its parameters following args (the caller's own).
func (f MessageLogFilter) where(domainExpr string, args ...any) (string, []any) {
	conds := []string{"m.domain_id = " + domainExpr}
	add := func(cond string, arg any) {
		args = append(args, arg)
		conds = append(conds, strings.ReplaceAll(cond, "$?", "$"+strconv.Itoa(len(args))))
	}
	if f.From != nil {
		add("m.at >= $?", *f.From)
	}
	if f.Until != nil {
		add("m.at < $?", *f.Until)
	}
	if f.Sender != "" {
		add("lower(m.envelope_sender) = $?", strings.ToLower(f.Sender))
	}
	if f.Recipient != "" {
		add("EXISTS (SELECT FROM unnest(m.recipients) r WHERE lower(r) = $?)", strings.ToLower(f.Recipient))
	}
	if f.Subject != "" {
		add("lower(m.subject) LIKE $?", likePattern(f.Subject))
	}
	if f.EventType != "" {
		add("m.event_type = $?", f.EventType)
	}
	return strings.Join(conds, " AND "), args
}

// LogDomain finds accountID's domain called name and counts its
// message_log rows that f selects, in one statement. ErrNotFound when
// accountID owns no such domain.
//
// The rows are scoped by the account through the domain (a domain's rows
// are its account's), so that without other filters the count reads
// message_log_domain_at_idx over the time range alone (an index-only
// scan); other filters are checked on the rows it finds.
func (RelayRepo) LogDomain(ctx context.Context, q sqlx.QueryerContext, accountID int64, name string, f MessageLogFilter) (domainID, total int64, err error) {
	where, args := f.where("d.id", accountID, name)
	var r struct {
		ID    int64 `db:"id"`
		Total int64 `db:"total"`
	}
	err = sqlx.GetContext(ctx, q, &r, `
		SELECT d.id, (SELECT count(*) FROM message_log m WHERE `+where+`) AS total
		FROM domains d WHERE d.account_id = $1 AND d.name = $2`, args...)
	if err != nil {
		return 0, 0, fmt.Errorf("message log domain: %w", translate(err))
	}
	return r.ID, r.Total, nil
}

// MessageLogRow is a row of message_log with its credential's guid (nil
// once the credential is deleted).
type MessageLogRow struct {
	ID             int64          `db:"id"`
	At             time.Time      `db:"at"`
	EventType      string         `db:"event_type"`
	QueueID        string         `db:"queue_id"`
	EnvelopeSender string         `db:"envelope_sender"`
	Recipients     pq.StringArray `db:"recipients"`
	HeaderFrom     string         `db:"header_from"`
	Subject        *string        `db:"subject"`
	Size           int64          `db:"size"`
	Login          string         `db:"login"`
	CredentialGUID *uuid.UUID     `db:"credential_guid"`
	ClientIP       *string        `db:"client_ip"`
	DKIMSigned     bool           `db:"dkim_signed"`
	Reason         string         `db:"reason"`
}

// ListLog returns up to limit message_log rows of domainID owned by
// accountID that f selects, newest first, skipping offset: a backward
// scan of message_log_domain_at_idx from the end of f's time range.
func (RelayRepo) ListLog(ctx context.Context, q sqlx.QueryerContext, accountID, domainID int64, f MessageLogFilter, limit int, offset int64) ([]MessageLogRow, error) {
	where, args := f.where("$2", accountID, domainID)
	where += " AND m.account_id = $1"
	args = append(args, limit, offset)
	n := len(args)
	rows := []MessageLogRow{}
	err := sqlx.SelectContext(ctx, q, &rows, `
		SELECT m.id, m.at, m.event_type, m.queue_id, m.envelope_sender, m.recipients, m.header_from,
		       m.subject, m.size, m.login, c.guid AS credential_guid, host(m.client_ip) AS client_ip,
		       m.dkim_signed, m.reason
		FROM (SELECT * FROM message_log m WHERE `+where+`
		      ORDER BY m.at DESC, m.id DESC LIMIT $`+strconv.Itoa(n-1)+` OFFSET $`+strconv.Itoa(n)+`) m
		LEFT JOIN credentials c ON c.id = m.credential_id
		ORDER BY m.at DESC, m.id DESC`, args...)
	if err != nil {
		return nil, fmt.Errorf("list message log: %w", translate(err))
	}
	return rows, nil
}

// PruneLog deletes up to batch message_log rows logged before before,
// oldest first, and returns how many it deleted: one short statement, so
// that pruning a large backlog in a loop never holds many locks for long.
func (RelayRepo) PruneLog(ctx context.Context, q sqlx.ExecerContext, before time.Time, batch int) (int64, error) {
	res, err := q.ExecContext(ctx, `
		DELETE FROM message_log WHERE id IN (
			SELECT id FROM message_log WHERE at < $1 ORDER BY at LIMIT $2)`, before, batch)
	if err != nil {
		return 0, fmt.Errorf("prune message log: %w", translate(err))
	}
	return res.RowsAffected()
}

// PruneCounters deletes up to batch send_counters rows whose window ended
// before endedBefore (Unix seconds) and returns how many it deleted. The
// window's length is the key's last letter (m, h, d: see
// relay.CredentialKey). The condition is on the deleted row itself, so
// that a row a milter moved to a new window meanwhile is re-checked and
// kept.
func (RelayRepo) PruneCounters(ctx context.Context, q sqlx.ExecerContext, endedBefore int64, batch int) (int64, error) {
	const ended = `window_start + CASE right(key, 1) WHEN 'm' THEN 60 WHEN 'h' THEN 3600 ELSE 86400 END < $1`
	res, err := q.ExecContext(ctx, `
		DELETE FROM send_counters WHERE `+ended+` AND key IN (
			SELECT key FROM send_counters WHERE `+ended+` LIMIT $2)`, endedBefore, batch)
	if err != nil {
		return 0, fmt.Errorf("prune send counters: %w", translate(err))
	}
	return res.RowsAffected()
}
