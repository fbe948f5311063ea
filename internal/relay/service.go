package relay

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/hostname"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// This file is the API's side of the relay: the account's quota, a
// domain's message log, and the pruning of both tables the milter fills.

var (
	// ErrNoQuota: the operator set no daily account limit, so there is no
	// quota to report.
	ErrNoQuota = errors.New("no quota configured")
	// ErrLogDomainNotFound: the domain of a log request does not exist or
	// another account owns it.
	ErrLogDomainNotFound = errors.New("log domain not found")
)

// FilterError is a malformed message log filter; Message says which and
// why, without echoing the value.
type FilterError struct{ Message string }

func (e *FilterError) Error() string { return e.Message }

// DefaultLogRetention is how long the message log keeps a message when the
// configuration says 0.
const DefaultLogRetention = 30 * 24 * time.Hour

// Log limits: a page holds 1 to MaxLogLimit events (DefaultLogLimit when
// not asked).
const (
	DefaultLogLimit = 1000
	MaxLogLimit     = 10000
)

// pruneBatch bounds the rows one pruning statement deletes, and
// pruneBatches the statements of one call (the rest waits for the next).
const (
	pruneBatch   = 10000
	pruneBatches = 100
)

// ServiceConfig is the operator's relay settings the API side needs.
type ServiceConfig struct {
	// Account are the per-account limits; Account.PerDay is the quota
	// (0: none).
	Account Limits
	// LogRetention is how long the message log keeps a message (0:
	// DefaultLogRetention).
	LogRetention time.Duration
}

// Service answers the account's quota and the domains' message logs from
// what the milter recorded, and prunes what is past keeping.
type Service struct {
	db   *sqlx.DB
	repo postgres.RelayRepo
	cfg  ServiceConfig
	now  func() time.Time
}

// NewService returns a Service over db.
func NewService(db *sqlx.DB, cfg ServiceConfig) *Service {
	if cfg.LogRetention <= 0 {
		cfg.LogRetention = DefaultLogRetention
	}
	return &Service{db: db, cfg: cfg, now: time.Now}
}

// Quota is an account's sending quota for the current UTC day.
type Quota struct {
	// Max is the daily limit, Left what remains of it today (0 when over).
	Max, Left int64
	// UsagePercentage is (Max-Left)/Max*100, rounded to 2 decimals.
	UsagePercentage float64
	// ResetsAt is when the day ends (00:00 UTC).
	ResetsAt time.Time
}

// Quota returns accountID's quota for today: the daily account limit less
// the messages the milter counted against it today (one primary-key read).
// ErrNoQuota when no daily account limit is set.
func (s *Service) Quota(ctx context.Context, accountID int64) (Quota, error) {
	limit := int64(s.cfg.Account.PerDay)
	if limit <= 0 {
		return Quota{}, ErrNoQuota
	}
	now := s.now()
	hits, err := s.repo.CounterHits(ctx, s.db, AccountKey(accountID, Day), Day.Start(now))
	if err != nil {
		return Quota{}, fmt.Errorf("quota: %w", err)
	}
	left := max(limit-hits, 0)
	pct := math.Round(float64(limit-left)/float64(limit)*100*100) / 100
	return Quota{Max: limit, Left: left, UsagePercentage: pct, ResetsAt: Day.End(now)}, nil
}

// LogQuery asks for one page of a domain's message log. Empty fields do
// not filter.
type LogQuery struct {
	// Start and End are RFC 3339 date-times, compared at whole seconds and
	// both inclusive.
	Start, End string
	// Sender and Recipient are whole addresses (case-insensitive).
	Sender, Recipient string
	// Subject is a part of the subject (case-insensitive).
	Subject string
	// EventType is one of the vendor's event types.
	EventType string
	// Tags is accepted for the vendor's clients: no tags are recorded, so
	// any non-empty value matches nothing.
	Tags string
	// Limit is 1..MaxLogLimit; Offset at least 0.
	Limit  int
	Offset int64
}

// Event is one message the milter decided on.
type Event struct {
	ID   int64
	At   time.Time
	Type string // queued, permanent_fail or temporary_fail
	// QueueID is Postfix's queue id ("" when it had none yet).
	QueueID    string
	Sender     string
	Recipients []string
	// From is the From: header ("" when none was seen).
	From string
	// Subject is nil unless subjects are stored.
	Subject *string
	Size    int64
	// Login is the SMTP login; CredentialGUID its credential's (nil once
	// deleted).
	Login          string
	CredentialGUID *uuid.UUID
	ClientIP       *string
	DKIMSigned     bool
	// Reason says why a message was refused or deferred ("" when queued).
	Reason string
}

// LogPage is one page of a domain's message log, newest first.
type LogPage struct {
	Events []Event
	// Total counts the events the filters select in all pages.
	Total  int64
	Limit  int
	Offset int64
}

// Log returns one page of the message log of accountID's domain called
// domain. ErrLogDomainNotFound unless accountID owns the domain; a
// *FilterError when q is malformed. Two statements: the domain with the
// count, then the page (skipped when the offset is past the end).
func (s *Service) Log(ctx context.Context, accountID int64, domain string, q LogQuery) (LogPage, error) {
	f, err := q.filter()
	if err != nil {
		return LogPage{}, err
	}
	name, err := hostname.Normalize(domain)
	if err != nil {
		return LogPage{}, ErrLogDomainNotFound
	}
	domainID, total, err := s.repo.LogDomain(ctx, s.db, accountID, name, f)
	if errors.Is(err, postgres.ErrNotFound) {
		return LogPage{}, ErrLogDomainNotFound
	}
	if err != nil {
		return LogPage{}, fmt.Errorf("message log: %w", err)
	}
	page := LogPage{Events: []Event{}, Limit: q.Limit, Offset: q.Offset}
	if q.Tags != "" {
		return page, nil // no event has tags
	}
	page.Total = total
	if q.Offset >= total {
		return page, nil
	}
	rows, err := s.repo.ListLog(ctx, s.db, accountID, domainID, f, q.Limit, q.Offset)
	if err != nil {
		return LogPage{}, fmt.Errorf("message log: %w", err)
	}
	page.Events = make([]Event, len(rows))
	for i, r := range rows {
		page.Events[i] = Event{
			ID: r.ID, At: r.At, Type: r.EventType, QueueID: r.QueueID, Sender: r.EnvelopeSender,
			Recipients: []string(r.Recipients), From: r.HeaderFrom, Subject: r.Subject, Size: r.Size,
			Login: r.Login, CredentialGUID: r.CredentialGUID, ClientIP: r.ClientIP, DKIMSigned: r.DKIMSigned,
			Reason: r.Reason,
		}
		if page.Events[i].Recipients == nil {
			page.Events[i].Recipients = []string{}
		}
	}
	return page, nil
}

// EventTypes are the vendor's event types, which a log query may name;
// the milter records only queued, permanent_fail and temporary_fail.
var EventTypes = []string{"queued", "send", "delivered", "bounced", "failed", "opened", "clicked",
	"unsubscribed", "temporary_fail", "permanent_fail", "deferred"}

// filter checks q and turns it into the repository's filter.
func (q LogQuery) filter() (postgres.MessageLogFilter, error) {
	var f postgres.MessageLogFilter
	if q.Limit < 1 || q.Limit > MaxLogLimit {
		return f, &FilterError{fmt.Sprintf("The limit must be an integer between 1 and %d.", MaxLogLimit)}
	}
	if q.Offset < 0 {
		return f, &FilterError{"The offset must be an integer of at least 0."}
	}
	start, err := parseTime("start", q.Start)
	if err != nil {
		return f, err
	}
	end, err := parseTime("end", q.End)
	if err != nil {
		return f, err
	}
	if start != nil {
		from := time.Unix(start.Unix(), 0)
		f.From = &from
	}
	if end != nil {
		until := time.Unix(end.Unix()+1, 0) // the whole second of end
		f.Until = &until
	}
	if start != nil && end != nil && end.Unix() < start.Unix() {
		return f, &FilterError{"The end must not be before the start."}
	}
	if q.EventType != "" && !slices.Contains(EventTypes, q.EventType) {
		return f, &FilterError{"The event_type must be one of: " + strings.Join(EventTypes, ", ") + "."}
	}
	f.Sender, f.Recipient = strings.TrimSpace(q.Sender), strings.TrimSpace(q.Recipient)
	f.Subject, f.EventType = q.Subject, q.EventType
	return f, nil
}

// TimeFilterMessage is the message of a malformed start or end filter.
func TimeFilterMessage(name string) string {
	return "The " + name + " must be an RFC 3339 date-time (e.g. 2026-12-01T00:00:00Z)."
}

func parseTime(name, s string) (*time.Time, error) {
	if s == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return nil, &FilterError{TimeFilterMessage(name)}
	}
	return &t, nil
}

// PruneLog deletes the messages logged longer ago than the retention, in
// batches of short statements (each deletes at most 10000 rows, oldest
// first, and holds its locks only for itself), until none is left, ctx
// ends or it deleted a million (a backlog, after the retention was
// shortened: the next call goes on). It returns how many it deleted.
func (s *Service) PruneLog(ctx context.Context) (int64, error) {
	before := s.now().Add(-s.cfg.LogRetention)
	var total int64
	for range pruneBatches {
		n, err := s.repo.PruneLog(ctx, s.db, before, pruneBatch)
		total += n
		if err != nil || n < pruneBatch || ctx.Err() != nil {
			return total, err
		}
	}
	return total, nil
}

// PruneCounters deletes the send counters whose window ended more than a
// day ago (a sender's next message starts a new window anyway), in
// batches and up to a bound as PruneLog does. It returns how many it
// deleted.
func (s *Service) PruneCounters(ctx context.Context) (int64, error) {
	endedBefore := s.now().Add(-24 * time.Hour).Unix()
	var total int64
	for range pruneBatches {
		n, err := s.repo.PruneCounters(ctx, s.db, endedBefore, pruneBatch)
		total += n
		if err != nil || n < pruneBatch || ctx.Err() != nil {
			return total, err
		}
	}
	return total, nil
}
