package webhook

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/smtpcreds/smtpcreds/internal/syncer"
)

// TargetName is the webhook target's name in the outbox.
const TargetName = "webhook"

// Target posts each batch of events, HMAC-signed, to a sync agent on
// another host, which applies them to its own backend. Events carry
// versions so that the agent can drop stale ones.
type Target struct {
	s *Sender
}

var _ syncer.Target = (*Target)(nil)

// NewTarget returns the target posting through s.
func NewTarget(s *Sender) *Target { return &Target{s: s} }

// Name implements syncer.Target.
func (*Target) Name() string { return TargetName }

// Scope implements syncer.Target: events of one domain are delivered in order.
func (*Target) Scope(domain string) string { return domain }

// Apply implements syncer.Target: one POST of {"delivery_id", "events"}; a
// 2xx confirms every event in it.
func (t *Target) Apply(ctx context.Context, b syncer.Batch) error {
	// The same jobs always make the same delivery id (ids are sorted):
	// receivers can use it to ignore a redelivery.
	delivery := fmt.Sprintf("jobs-%d-%d-%d", b.JobIDs[0], b.JobIDs[len(b.JobIDs)-1], len(b.JobIDs))
	body, err := json.Marshal(struct {
		DeliveryID string         `json:"delivery_id"`
		Events     []syncer.Event `json:"events"`
	}{delivery, b.Events})
	if err != nil {
		return err
	}
	return t.s.Send(ctx, delivery, body)
}
