package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// RelayChannel is the LISTEN/NOTIFY channel on which migration 00010's
// triggers announce changes the milter's cache must forget: "c<id>" for a
// credential, "*" for everything.
const RelayChannel = "smtpcreds_relay"

// RelayLoginRow is what the milter needs to know of an SMTP login.
type RelayLoginRow struct {
	CredentialID      int64      `db:"id"`
	AccountID         int64      `db:"account_id"`
	DomainID          int64      `db:"domain_id"`
	Domain            string     `db:"domain"`
	Active            bool       `db:"status"`
	DomainVerified    bool       `db:"domain_verified"`
	DomainActive      bool       `db:"domain_status"`
	PasswordChangedAt *time.Time `db:"password_changed_at"`
	ExpiresAt         *time.Time `db:"expires_at"`
	// PreviousExpiresAt is when the password a reset replaced stops
	// authenticating (a grace period); nil when there is none.
	PreviousExpiresAt *time.Time     `db:"previous_password_expires_at"`
	AllowedSenders    pq.StringArray `db:"allowed_senders"`
	LimitPerMinute    *int           `db:"limit_per_minute"`
	LimitPerHour      *int           `db:"limit_per_hour"`
	LimitPerDay       *int           `db:"limit_per_day"`
}

// RelayDomainRow is a domain as the milter signs and checks senders with
// it. The keys are sealed (see internal/dkim); nil when none.
type RelayDomainRow struct {
	ID                 int64  `db:"id"`
	AccountID          int64  `db:"account_id"`
	Name               string `db:"name"`
	Verified           bool   `db:"is_verified"`
	Active             bool   `db:"status"`
	DKIMSelector       string `db:"dkim_selector"`
	DKIMPrivateKey     []byte `db:"dkim_private_key"`
	AuthDomain         string `db:"auth_domain"`
	AuthVerified       bool   `db:"auth_verified"`
	AuthDKIMSelector   string `db:"auth_dkim_selector"`
	AuthDKIMPrivateKey []byte `db:"auth_dkim_private_key"`
}

// RelayRepo is the milter's side of the relay tables: who a login is,
// which domains it may sign for, and what each message did.
type RelayRepo struct{}

// Login returns the credential username@domain. ErrNotFound when there
// is none.
func (RelayRepo) Login(ctx context.Context, q sqlx.QueryerContext, username, domain string) (RelayLoginRow, error) {
	var r RelayLoginRow
	err := sqlx.GetContext(ctx, q, &r, `
		SELECT c.id, c.account_id, c.domain_id, d.name AS domain, c.status,
		       d.is_verified AS domain_verified, d.status AS domain_status,
		       c.password_changed_at, c.expires_at, p.expires_at AS previous_password_expires_at,
		       c.allowed_senders, c.limit_per_minute, c.limit_per_hour, c.limit_per_day
		FROM credentials c JOIN domains d ON d.id = c.domain_id
		LEFT JOIN credential_previous_passwords p ON p.credential_id = c.id
		WHERE d.name = $1 AND c.username = $2`, domain, username)
	if err != nil {
		return RelayLoginRow{}, fmt.Errorf("relay login: %w", translate(err))
	}
	return r, nil
}

// Domain returns the domain called name. ErrNotFound when there is none.
func (RelayRepo) Domain(ctx context.Context, q sqlx.QueryerContext, name string) (RelayDomainRow, error) {
	var r RelayDomainRow
	err := sqlx.GetContext(ctx, q, &r, `
		SELECT id, account_id, name, is_verified, status, dkim_selector, dkim_private_key,
		       auth_domain, auth_verified, auth_dkim_selector, auth_dkim_private_key
		FROM domains WHERE name = $1`, name)
	if err != nil {
		return RelayDomainRow{}, fmt.Errorf("relay domain: %w", translate(err))
	}
	return r, nil
}

// Message is one message the milter decided on, as the log keeps it.
type Message struct {
	AccountID, DomainID, CredentialID int64
	Login, QueueID, ClientIP          string
	Sender                            string
	Recipients                        []string
	From                              string
	Subject                           *string
	Size                              int64
	DKIMSigned                        bool
	// Event is queued, permanent_fail or temporary_fail; Reason says why
	// a message was refused.
	Event, Reason string
}

// Count names, for a queued message, the counters it is counted against:
// Keys[i] in window Windows[i] (Unix seconds), refused when its count has
// reached Limits[i] (> 0), with Reasons[i] as the log's and the client's
// reason. Keys must be in one order for every caller (sorted), so that
// concurrent messages lock their rows in the same order.
type Count struct {
	Keys    []string
	Windows []int64
	Limits  []int64
	Reasons []string
}

// Record logs m and adds it to its login's usage, in one statement. A
// queued message is first counted against c, all or nothing (send_count,
// migration 00010): when a counter has reached its limit, the message is
// logged as temporary_fail with that counter's reason instead, and Record
// returns the counter's index + 1; otherwise 0. The usage row goes with the
// credential: a message of a credential deleted meanwhile is an error.
func (RelayRepo) Record(ctx context.Context, q sqlx.QueryerContext, m Message, c Count) (int, error) {
	var r int
	err := sqlx.GetContext(ctx, q, &r, `
		WITH c AS MATERIALIZED (
		    SELECT CASE WHEN $13 = 'queued' THEN send_count($15::text[], $16::bigint[], $17::int[]) ELSE -1 END AS r
		), l AS (
		    INSERT INTO message_log (account_id, domain_id, credential_id, login, queue_id, client_ip,
		        envelope_sender, recipients, header_from, subject, size, dkim_signed, event_type, reason)
		    SELECT $1, $2, $3, $4, $5, NULLIF($6, '')::inet, $7, $8, $9, $10, $11,
		           $12 AND c.r <= 0,
		           CASE WHEN c.r > 0 THEN 'temporary_fail' ELSE $13 END,
		           CASE WHEN c.r > 0 THEN ($18::text[])[c.r] ELSE $14 END
		    FROM c
		), u AS (
		    INSERT INTO credential_usage AS u (credential_id, last_used_at, last_used_ip, messages_queued, messages_refused)
		    SELECT $3, now(), NULLIF($6, '')::inet, (c.r = 0)::int, (c.r <> 0)::int FROM c
		    ON CONFLICT (credential_id) DO UPDATE
		        SET last_used_at = excluded.last_used_at, last_used_ip = excluded.last_used_ip,
		            messages_queued = u.messages_queued + excluded.messages_queued,
		            messages_refused = u.messages_refused + excluded.messages_refused
		)
		SELECT greatest(r, 0) FROM c`,
		m.AccountID, m.DomainID, m.CredentialID, m.Login, m.QueueID, m.ClientIP,
		m.Sender, pq.StringArray(m.Recipients), m.From, m.Subject, m.Size, m.DKIMSigned,
		m.Event, m.Reason,
		pq.StringArray(c.Keys), pq.Int64Array(c.Windows), pq.Int64Array(c.Limits), pq.StringArray(c.Reasons))
	if err != nil {
		return 0, fmt.Errorf("record message: %w", translate(err))
	}
	return r, nil
}
