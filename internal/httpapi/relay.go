package httpapi

import (
	"context"

	"github.com/smtpcreds/smtpcreds/gen"
	"github.com/smtpcreds/smtpcreds/internal/relay"
)

// GetQuota serves GET /api/quota.
func (h *Handler) GetQuota(ctx context.Context, _ gen.GetQuotaRequestObject) (gen.GetQuotaResponseObject, error) {
	q, err := h.relay.Quota(ctx, accountFrom(ctx).ID)
	if err != nil {
		return nil, err
	}
	return gen.GetQuota200JSONResponse{Body: gen.QuotaEnvelope{Success: true, Data: gen.Quota{
		CurrentQuota: q.Left, MaxQuota: q.Max, UsagePercentage: q.UsagePercentage, ResetsAt: q.ResetsAt.Unix(),
	}}}, nil
}

// GetDomainLog serves GET /api/domains/{domain}/log.
func (h *Handler) GetDomainLog(ctx context.Context, req gen.GetDomainLogRequestObject) (gen.GetDomainLogResponseObject, error) {
	p := req.Params
	q := relay.LogQuery{
		Start: deref(p.Start), End: deref(p.End), Sender: deref(p.Sender), Recipient: deref(p.Recipient),
		Subject: deref(p.Subject), Tags: deref(p.Tags), Limit: relay.DefaultLogLimit,
	}
	if p.EventType != nil {
		q.EventType = string(*p.EventType)
	}
	if p.Limit != nil {
		q.Limit = *p.Limit
	}
	if p.Offset != nil {
		q.Offset = *p.Offset
	}
	page, err := h.relay.Log(ctx, accountFrom(ctx).ID, req.Domain, q)
	if err != nil {
		return nil, err
	}
	events := make([]gen.MessageLogEvent, len(page.Events))
	for i, e := range page.Events {
		events[i] = toAPIEvent(e)
	}
	limit := int64(page.Limit)
	return gen.GetDomainLog200JSONResponse{Body: gen.MessageLogPage{
		Success: true, Data: events, Count: len(events), Offset: page.Offset, Limit: page.Limit,
		Pagination: gen.MessageLogPagination{
			Total: page.Total, PerPage: page.Limit,
			CurrentPage: page.Offset/limit + 1, LastPage: max(1, (page.Total+limit-1)/limit),
		},
	}}, nil
}

func toAPIEvent(e relay.Event) gen.MessageLogEvent {
	ts := e.At.Unix()
	out := gen.MessageLogEvent{
		Id: e.ID, Timestamp: ts, CreatedAt: ts, EventType: e.Type,
		Sender: e.Sender, Recipients: e.Recipients, Subject: e.Subject, Size: e.Size,
		Credential: e.Login, UserSmtpGuid: e.CredentialGUID, ClientIp: e.ClientIP, SenderIp: e.ClientIP,
		DkimSigned: e.DKIMSigned,
	}
	out.MessageId = nonEmpty(e.QueueID)
	out.From = nonEmpty(e.From)
	out.Reason = nonEmpty(e.Reason)
	out.EventDetail = out.Reason
	return out
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// nonEmpty is s, or nil when s is empty.
func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
