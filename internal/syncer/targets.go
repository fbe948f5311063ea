package syncer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/smtpcreds/smtpcreds/internal/sync/passwdfile"
	"github.com/smtpcreds/smtpcreds/internal/sync/webhook"
)

// PasswdFile keeps Dovecot passwd-file(s) equal to the database: each apply
// renders the scope's whole state, so retries are idempotent and a crash
// leaves either the old or the new file.
type PasswdFile struct {
	w *passwdfile.Writer
}

// NewPasswdFile returns the target writing w's file(s).
func NewPasswdFile(w *passwdfile.Writer) *PasswdFile { return &PasswdFile{w: w} }

// Name implements Target.
func (*PasswdFile) Name() string { return "passwd-file" }

// Scope implements Target: one file holds every domain, or one file per domain.
func (p *PasswdFile) Scope(domain string) string {
	if p.w.PerDomain() {
		return domain
	}
	return ""
}

// NeedsSnapshot implements Target.
func (*PasswdFile) NeedsSnapshot() bool { return true }

// Apply implements Target: it rewrites the scope's file; a per-domain file
// with no logins left is removed.
func (p *PasswdFile) Apply(_ context.Context, b Batch) error {
	entries := b.Entries
	var err error
	if p.w.PerDomain() && len(entries) == 0 {
		err = p.w.Remove(b.Scope)
	} else {
		err = p.w.Write(b.Scope, entries)
	}
	if err != nil {
		// Users see this text: the server's paths are not theirs to know.
		dir := filepath.Dir(p.w.Path(b.Scope))
		return errors.New(strings.ReplaceAll(err.Error(), dir, "<passwd-file dir>"))
	}
	return nil
}

// Webhook posts each batch of events, HMAC-signed, to a sync agent on
// another host, which applies them to its own backend. Events carry versions
// so that the agent can drop stale ones.
type Webhook struct {
	s *webhook.Sender
}

// NewWebhook returns the target posting through s.
func NewWebhook(s *webhook.Sender) *Webhook { return &Webhook{s: s} }

// Name implements Target.
func (*Webhook) Name() string { return "webhook" }

// Scope implements Target: events of one domain are delivered in order.
func (*Webhook) Scope(domain string) string { return domain }

// NeedsSnapshot implements Target.
func (*Webhook) NeedsSnapshot() bool { return false }

// Apply implements Target: one POST of {"delivery_id", "events"}; a 2xx
// confirms every event in it.
func (h *Webhook) Apply(ctx context.Context, b Batch) error {
	// The same jobs always make the same delivery id (ids are sorted):
	// receivers can use it to ignore a redelivery.
	delivery := fmt.Sprintf("jobs-%d-%d-%d", b.JobIDs[0], b.JobIDs[len(b.JobIDs)-1], len(b.JobIDs))
	body, err := json.Marshal(struct {
		DeliveryID string  `json:"delivery_id"`
		Events     []Event `json:"events"`
	}{delivery, b.Events})
	if err != nil {
		return err
	}
	return h.s.Send(ctx, delivery, body)
}
