package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"time"

	"github.com/smtpcreds/smtpcreds/gen"
	"github.com/smtpcreds/smtpcreds/internal/credentials"
	"github.com/smtpcreds/smtpcreds/internal/idempotency"
	"github.com/smtpcreds/smtpcreds/internal/password"
	"github.com/smtpcreds/smtpcreds/internal/validation"
)

const noStore = "no-store"

// ListCredentials serves GET /api/domains/{domain}/credentials.
func (h *Handler) ListCredentials(ctx context.Context, req gen.ListCredentialsRequestObject) (gen.ListCredentialsResponseObject, error) {
	page, limit := 1, 15
	if req.Params.Page != nil {
		page = *req.Params.Page
	}
	if req.Params.Limit != nil {
		limit = *req.Params.Limit
	}
	p, err := h.credentials.ListStatus(ctx, accountFrom(ctx).ID, req.Domain, page, limit, req.Params.Status)
	if err != nil {
		return nil, err
	}
	items := make([]gen.Credential, len(p.Items))
	for i, c := range p.Items {
		items[i] = toAPICredential(c)
	}
	return gen.ListCredentials200JSONResponse{Body: gen.CredentialPage{
		Success:    true,
		Data:       items,
		Domain:     p.Domain,
		Pagination: toAPIPagination(p.Total, p.Page, p.Limit),
	}}, nil
}

// CreateCredential serves POST /api/domains/{domain}/credentials.
func (h *Handler) CreateCredential(ctx context.Context, req gen.CreateCredentialRequestObject) (gen.CreateCredentialResponseObject, error) {
	var username string
	switch {
	case req.JSONBody != nil && req.JSONBody.Username != nil:
		username = *req.JSONBody.Username
	case req.FormdataBody != nil && req.FormdataBody.Username != nil:
		username = *req.FormdataBody.Username
	case req.MultipartBody != nil:
		var err error
		if username, err = multipartUsername(req.MultipartBody); err != nil {
			return nil, err
		}
	}
	if key := req.Params.IdempotencyKey; key != nil {
		r, replayed, err := h.credentials.CreateOnce(ctx, accountFrom(ctx).ID, req.Domain, username, *key,
			func(is credentials.Issued) (idempotency.Response, error) {
				return encoded(http.StatusCreated, credentialCreated(is))
			})
		if err != nil {
			return nil, err
		}
		return stored{r: r, replayed: replayed, noStore: true}, nil
	}
	issued, err := h.credentials.Create(ctx, accountFrom(ctx).ID, req.Domain, username)
	if err != nil {
		return nil, err
	}
	cc := noStore
	return gen.CreateCredential201JSONResponse{
		Headers: gen.CreateCredential201ResponseHeaders{CacheControl: &cc},
		Body:    credentialCreated(issued),
	}, nil
}

func credentialCreated(issued credentials.Issued) gen.CredentialCreated {
	return gen.CredentialCreated{
		Success: true,
		Message: "Credential created successfully.",
		Data: gen.IssuedCredential{
			Credential:   toAPICredential(issued.Credential),
			Password:     issued.Password,
			StrengthInfo: toAPIStrength(issued.Strength),
			RemoteSynced: issued.Credential.RemoteSynced,
		},
	}
}

// GetCredential serves GET /api/domains/{domain}/credentials/{credential}.
func (h *Handler) GetCredential(ctx context.Context, req gen.GetCredentialRequestObject) (gen.GetCredentialResponseObject, error) {
	c, err := h.credentials.Get(ctx, accountFrom(ctx).ID, req.Domain, req.Credential)
	if err != nil {
		return nil, err
	}
	return gen.GetCredential200JSONResponse{Body: gen.CredentialEnvelope{Success: true, Data: toAPICredential(c)}}, nil
}

// DeleteCredential serves DELETE /api/domains/{domain}/credentials/{credential}.
func (h *Handler) DeleteCredential(ctx context.Context, req gen.DeleteCredentialRequestObject) (gen.DeleteCredentialResponseObject, error) {
	synced, err := h.credentials.Delete(ctx, accountFrom(ctx).ID, req.Domain, req.Credential)
	if err != nil {
		return nil, err
	}
	return gen.DeleteCredential200JSONResponse{Body: gen.CredentialDeleted{
		Success: true, Message: "Credential deleted successfully.",
		Data: gen.DeletionSync{RemoteSynced: synced},
	}}, nil
}

// ResetCredentialPassword serves PUT .../credentials/{credential}/reset-password.
func (h *Handler) ResetCredentialPassword(ctx context.Context, req gen.ResetCredentialPasswordRequestObject) (gen.ResetCredentialPasswordResponseObject, error) {
	var grace time.Duration
	if req.Body != nil && req.Body.GracePeriodSeconds != nil {
		grace = time.Duration(*req.Body.GracePeriodSeconds) * time.Second
	}
	if key := req.Params.IdempotencyKey; key != nil {
		r, replayed, err := h.credentials.ResetPasswordOnce(ctx, accountFrom(ctx).ID, req.Domain, req.Credential, grace, *key,
			func(is credentials.Issued) (idempotency.Response, error) {
				return encoded(http.StatusOK, passwordReset(is))
			})
		if err != nil {
			return nil, err
		}
		return stored{r: r, replayed: replayed, noStore: true}, nil
	}
	issued, err := h.credentials.ResetPassword(ctx, accountFrom(ctx).ID, req.Domain, req.Credential, grace)
	if err != nil {
		return nil, err
	}
	cc := noStore
	return gen.ResetCredentialPassword200JSONResponse{
		Headers: gen.ResetCredentialPassword200ResponseHeaders{CacheControl: &cc},
		Body:    passwordReset(issued),
	}, nil
}

func passwordReset(issued credentials.Issued) gen.PasswordReset {
	return gen.PasswordReset{
		Success: true,
		Message: "Password reset successfully.",
		Data: gen.ReissuedCredential{
			Credential:   toAPICredential(issued.Credential),
			NewPassword:  issued.Password,
			StrengthInfo: toAPIStrength(issued.Strength),
			RemoteSynced: issued.Credential.RemoteSynced,
		},
	}
}

// multipartUsername reads the username field of a multipart/form-data body
// (the body is already bounded by MaxBodyBytes).
func multipartUsername(r *multipart.Reader) (string, error) {
	for {
		part, err := r.NextPart()
		if errors.Is(err, io.EOF) {
			return "", nil
		}
		if err != nil {
			return "", validation.New("username", "The request body is not valid multipart/form-data.")
		}
		if part.FormName() != "username" {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(part, credentials.MaxUsernameLen+1))
		if err != nil {
			return "", validation.New("username", "The request body is not valid multipart/form-data.")
		}
		if len(b) == 0 {
			return "", nil
		}
		return string(b), nil
	}
}

func toAPICredential(c credentials.Credential) gen.Credential {
	out := gen.Credential{
		Id:           c.ID,
		UserSmtpGuid: c.GUID,
		Username:     c.Username,
		Login:        c.Login(),
		CreatedAt:    c.CreatedAt.Unix(),
		ModifiedAt:   c.ModifiedAt.Unix(),
		IsVerified:   c.RemoteSynced,
		RemoteSynced: c.RemoteSynced,
		Status:       c.Active,
	}
	if c.PasswordChangedAt != nil {
		t := c.PasswordChangedAt.Unix()
		out.LastPasswordChanged = &t
	}
	if c.LastSyncedAt != nil {
		t := c.LastSyncedAt.Unix()
		out.LastSyncedAt = &t
	}
	if c.ExpiresAt != nil {
		t := c.ExpiresAt.Unix()
		out.ExpiresAt = &t
	}
	if c.AllowedSenders != nil {
		out.AllowedSenders = &c.AllowedSenders
	}
	out.LimitPerMinute, out.LimitPerHour, out.LimitPerDay = c.LimitPerMinute, c.LimitPerHour, c.LimitPerDay
	if c.PreviousExpiresAt != nil && c.PreviousExpiresAt.After(time.Now()) {
		t := c.PreviousExpiresAt.Unix()
		out.PreviousPasswordExpiresAt = &t
	}
	if !c.RemoteSynced {
		out.SyncError = c.SyncError
	}
	// Usage, as the relay records it.
	if c.Usage.LastUsedAt != nil {
		t := c.Usage.LastUsedAt.Unix()
		out.LastUsedAt = &t
	}
	out.LastUsedIp = c.Usage.LastUsedIP
	out.MessagesQueued, out.MessagesRefused = c.Usage.MessagesQueued, c.Usage.MessagesRefused
	return out
}

func toAPIStrength(s password.StrengthInfo) gen.StrengthInfo {
	return gen.StrengthInfo{
		Length: s.Length, Alphabet: s.Alphabet, AlphabetSize: s.AlphabetSize,
		EntropyBits: s.EntropyBits, Strength: s.Strength,
	}
}

// toAPIPagination is the pagination object of every list route; the last
// page is max(1, ceil(total/limit)).
func toAPIPagination(total int64, page, limit int) gen.Pagination {
	last := (total + int64(limit) - 1) / int64(limit)
	if last < 1 {
		last = 1
	}
	return gen.Pagination{
		Total: total, Page: page, Limit: limit, Offset: int64(page-1) * int64(limit), LastPage: last,
		CurrentPage: page, PerPage: limit,
	}
}

// UpdateCredential serves PATCH /api/domains/{domain}/credentials/{credential}.
func (h *Handler) UpdateCredential(ctx context.Context, req gen.UpdateCredentialRequestObject) (gen.UpdateCredentialResponseObject, error) {
	var p credentials.Patch
	if req.Body != nil {
		var err error
		if p, err = toPatch(*req.Body); err != nil {
			return nil, err
		}
	}
	c, err := h.credentials.Update(ctx, accountFrom(ctx).ID, req.Domain, req.Credential, p)
	if err != nil {
		return nil, err
	}
	return gen.UpdateCredential200JSONResponse{Body: gen.CredentialUpdated{
		Success: true, Message: "Credential updated successfully.",
		Data: gen.UpdatedCredential{Credential: toAPICredential(c), RemoteSynced: c.RemoteSynced},
	}}, nil
}

// toPatch reads a PATCH body, kept as raw fields so that an absent field
// (kept) differs from null (cleared); the validator already checked the
// types against openapi.yaml.
func toPatch(body gen.CredentialUpdate) (credentials.Patch, error) {
	var p credentials.Patch
	bad := func(field, rule string) error { return validation.New(field, "The "+field+" must be "+rule+".") }
	isNull := func(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }
	if raw, ok := body["status"]; ok {
		var b bool
		if isNull(raw) || json.Unmarshal(raw, &b) != nil {
			return p, bad("status", "a boolean")
		}
		p.Status = &b
	}
	if raw, ok := body["expires_at"]; ok {
		p.ExpiresAt.Set = true
		if !isNull(raw) {
			var s string
			if json.Unmarshal(raw, &s) != nil {
				return p, bad("expires_at", "an RFC 3339 date-time or null")
			}
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				return p, bad("expires_at", "an RFC 3339 date-time or null")
			}
			p.ExpiresAt.Value = &t
		}
	}
	if raw, ok := body["allowed_senders"]; ok {
		p.AllowedSenders.Set = true
		if !isNull(raw) && json.Unmarshal(raw, &p.AllowedSenders.Value) != nil {
			return p, bad("allowed_senders", "an array of strings or null")
		}
	}
	for name, f := range map[string]*credentials.Field[*int]{
		"limit_per_minute": &p.LimitPerMinute, "limit_per_hour": &p.LimitPerHour, "limit_per_day": &p.LimitPerDay,
	} {
		raw, ok := body[name]
		if !ok {
			continue
		}
		f.Set = true
		if !isNull(raw) {
			var n int
			if json.Unmarshal(raw, &n) != nil {
				return p, bad(name, "an integer or null")
			}
			f.Value = &n
		}
	}
	return p, nil
}
