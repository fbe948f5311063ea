package httpapi

import (
	"context"
	"net/http"
	"slices"

	"github.com/smtpcreds/smtpcreds/gen"
	"github.com/smtpcreds/smtpcreds/internal/dnscheck"
	"github.com/smtpcreds/smtpcreds/internal/domains"
	"github.com/smtpcreds/smtpcreds/internal/idempotency"
)

// ListDomains serves GET /api/domains.
func (h *Handler) ListDomains(ctx context.Context, req gen.ListDomainsRequestObject) (gen.ListDomainsResponseObject, error) {
	page, limit, search := 1, 10, ""
	if req.Params.Page != nil {
		page = *req.Params.Page
	}
	if req.Params.Limit != nil {
		limit = *req.Params.Limit
	}
	if req.Params.Search != nil {
		search = *req.Params.Search
	}
	p, err := h.domains.List(ctx, accountFrom(ctx).ID, search, page, limit)
	if err != nil {
		return nil, err
	}
	items := make([]gen.Domain, len(p.Items))
	for i, d := range p.Items {
		items[i] = toAPIDomain(d)
	}
	return gen.ListDomains200JSONResponse{Body: gen.DomainPage{
		Success: true, Data: items, Pagination: toAPIPagination(p.Total, p.Page, p.Limit),
	}}, nil
}

// CreateDomain serves POST /api/domains.
func (h *Handler) CreateDomain(ctx context.Context, req gen.CreateDomainRequestObject) (gen.CreateDomainResponseObject, error) {
	var in gen.DomainInput
	if req.Body != nil {
		in = *req.Body
	}
	bits, err := domains.KeyBits("dkim_key_length", in.DkimKeyLength)
	if err != nil {
		return nil, err
	}
	name := ""
	if in.Domain != nil {
		name = *in.Domain
	}
	if key := req.Params.IdempotencyKey; key != nil {
		r, replayed, err := h.domains.CreateOnce(ctx, accountFrom(ctx).ID, name, bits, *key,
			func(d domains.Domain) (idempotency.Response, error) {
				return encoded(http.StatusCreated, domainCreated(d))
			})
		if err != nil {
			return nil, err
		}
		return stored{r: r, replayed: replayed}, nil
	}
	d, err := h.domains.Create(ctx, accountFrom(ctx).ID, name, bits)
	if err != nil {
		return nil, err
	}
	return gen.CreateDomain201JSONResponse{Body: domainCreated(d)}, nil
}

func domainCreated(d domains.Domain) gen.DomainCreated {
	return gen.DomainCreated{Success: true, Message: "Domain added successfully.", Data: toAPIDomain(d)}
}

// GetDomain serves GET /api/domains/{domain}.
func (h *Handler) GetDomain(ctx context.Context, req gen.GetDomainRequestObject) (gen.GetDomainResponseObject, error) {
	d, err := h.domains.Get(ctx, accountFrom(ctx).ID, req.Domain)
	if err != nil {
		return nil, err
	}
	return gen.GetDomain200JSONResponse{Body: gen.DomainEnvelope{Success: true, Data: toAPIDomain(d)}}, nil
}

// UpdateDomain serves PUT /api/domains/{domain}.
func (h *Handler) UpdateDomain(ctx context.Context, req gen.UpdateDomainRequestObject) (gen.UpdateDomainResponseObject, error) {
	var in gen.TrackingInput
	if req.Body != nil {
		in = *req.Body
	}
	d, err := h.domains.UpdateTracking(ctx, accountFrom(ctx).ID, req.Domain, in.OpenTrack, in.ClickTrack, in.UnsubTrack)
	if err != nil {
		return nil, err
	}
	return gen.UpdateDomain200JSONResponse{Body: gen.TrackingUpdated{
		Success: true, Message: "Domain updated successfully.",
		Data: gen.Tracking{OpenTrack: d.OpenTrack, ClickTrack: d.ClickTrack, UnsubTrack: d.UnsubTrack},
	}}, nil
}

// DeleteDomain serves DELETE /api/domains/{domain}.
func (h *Handler) DeleteDomain(ctx context.Context, req gen.DeleteDomainRequestObject) (gen.DeleteDomainResponseObject, error) {
	if err := h.domains.Delete(ctx, accountFrom(ctx).ID, req.Domain); err != nil {
		return nil, err
	}
	return gen.DeleteDomain200JSONResponse{Body: gen.MessageResponse{Success: true, Message: "Domain deleted successfully."}}, nil
}

// VerifyDomain serves POST /api/domains/{domain}/verify-mandatory.
func (h *Handler) VerifyDomain(ctx context.Context, req gen.VerifyDomainRequestObject) (gen.VerifyDomainResponseObject, error) {
	d, out, err := h.domains.VerifyMandatory(ctx, accountFrom(ctx).ID, req.Domain)
	if err != nil {
		return nil, err
	}
	recs := gen.MandatoryRecords{Dkim: out.DKIM.OK, Spf: out.SPF.OK, Mx: out.MX.OK}
	return gen.VerifyDomain200JSONResponse{Body: gen.DomainVerification{
		Success: true, Message: "Domain verification completed.", Records: recs,
		Data: gen.DomainVerificationData{
			Domain: d.Name, IsVerified: d.Verified, VerifiedBy: toAPIVerifiedBy(d), Records: recs, CheckedAt: out.CheckedAt.Unix(),
			Checks: gen.MandatoryChecks{Dkim: toAPICheck(out.DKIM), Spf: toAPICheck(out.SPF), Mx: toAPICheck(out.MX)},
		},
	}}, nil
}

// SetupAuthDomain serves POST /api/domains/{domain}/setup-auth-domain.
func (h *Handler) SetupAuthDomain(ctx context.Context, req gen.SetupAuthDomainRequestObject) (gen.SetupAuthDomainResponseObject, error) {
	var in gen.AuthDomainInput
	if req.Body != nil {
		in = *req.Body
	}
	bits, err := domains.KeyBits("dkim_key_length", in.DkimKeyLength)
	if err != nil {
		return nil, err
	}
	d, err := h.domains.SetupAuthDomain(ctx, accountFrom(ctx).ID, req.Domain, in.AuthDomain, bits)
	if err != nil {
		return nil, err
	}
	return gen.SetupAuthDomain200JSONResponse{Body: gen.AuthDomainSetup{
		Success: true, Message: "Auth domain set up successfully.",
		Data: gen.AuthDomainSetupData{
			AuthDomain: d.AuthDomain, AuthDomainDkimSelector: d.AuthDKIMSelector,
			AuthDomainDkimRecord: domains.DKIMRecord(d.AuthDKIMPublicKey), AuthDomainIsVerified: d.AuthVerified,
			DnsRecords: toAPIRecords(d.Records, "auth_dkim", "auth_spf", "auth_mx"),
		},
	}}, nil
}

// VerifyAuthDomain serves POST /api/domains/{domain}/verify-auth-domain.
func (h *Handler) VerifyAuthDomain(ctx context.Context, req gen.VerifyAuthDomainRequestObject) (gen.VerifyAuthDomainResponseObject, error) {
	d, out, err := h.domains.VerifyAuthDomain(ctx, accountFrom(ctx).ID, req.Domain)
	if err != nil {
		return nil, err
	}
	recs := gen.AuthRecords{AuthDkim: out.DKIM.OK, AuthSpf: out.SPF.OK, AuthMx: out.MX.OK}
	return gen.VerifyAuthDomain200JSONResponse{Body: gen.AuthDomainVerification{
		Success: true, Message: "Auth domain verification completed.", Records: recs,
		Data: gen.AuthDomainVerificationData{
			AuthDomain: d.AuthDomain, AuthDomainIsVerified: d.AuthVerified, Records: recs, CheckedAt: out.CheckedAt.Unix(),
			Checks: gen.AuthChecks{AuthDkim: toAPICheck(out.DKIM), AuthSpf: toAPICheck(out.SPF), AuthMx: toAPICheck(out.MX)},
		},
	}}, nil
}

// DeleteAuthDomain serves DELETE /api/domains/{domain}/auth-domain.
func (h *Handler) DeleteAuthDomain(ctx context.Context, req gen.DeleteAuthDomainRequestObject) (gen.DeleteAuthDomainResponseObject, error) {
	if err := h.domains.DeleteAuthDomain(ctx, accountFrom(ctx).ID, req.Domain); err != nil {
		return nil, err
	}
	return gen.DeleteAuthDomain200JSONResponse{Body: gen.MessageResponse{Success: true, Message: "Auth domain deleted successfully."}}, nil
}

// SetupTracklink serves POST /api/domains/{domain}/setup-tracklink.
func (h *Handler) SetupTracklink(ctx context.Context, req gen.SetupTracklinkRequestObject) (gen.SetupTracklinkResponseObject, error) {
	name := ""
	if req.Body != nil && req.Body.TrackingDomain != nil {
		name = *req.Body.TrackingDomain
	}
	d, err := h.domains.SetupTracking(ctx, accountFrom(ctx).ID, req.Domain, name)
	if err != nil {
		return nil, err
	}
	return gen.SetupTracklink200JSONResponse{Body: gen.TracklinkSetup{
		Success: true, Message: "Tracking domain set up successfully.",
		Data: gen.TracklinkSetupData{
			TrackingDomain: d.TrackingDomain, CnameTarget: h.domains.Config().TrackingTarget,
			TracklinkDomainIsVerified: d.TrackingVerified, DnsRecords: toAPIRecords(d.Records, "tracking"),
		},
	}}, nil
}

// VerifyTracklink serves POST /api/domains/{domain}/verify-tracklink.
func (h *Handler) VerifyTracklink(ctx context.Context, req gen.VerifyTracklinkRequestObject) (gen.VerifyTracklinkResponseObject, error) {
	d, out, err := h.domains.VerifyTracking(ctx, accountFrom(ctx).ID, req.Domain)
	if err != nil {
		return nil, err
	}
	recs := gen.TracklinkRecords{Cname: out.CNAME.OK, TrackingDomain: d.TrackingDomain}
	return gen.VerifyTracklink200JSONResponse{Body: gen.TracklinkVerification{
		Success: true, Message: "Tracking domain verification completed.", Records: recs,
		Data: gen.TracklinkVerificationData{
			TrackingDomain: d.TrackingDomain, TracklinkDomainIsVerified: d.TrackingVerified, Records: recs,
			CheckedAt: out.CheckedAt.Unix(), Checks: gen.TracklinkChecks{Cname: toAPICheck(out.CNAME)},
		},
	}}, nil
}

// DeleteTracklink serves DELETE /api/domains/{domain}/tracklink.
func (h *Handler) DeleteTracklink(ctx context.Context, req gen.DeleteTracklinkRequestObject) (gen.DeleteTracklinkResponseObject, error) {
	if err := h.domains.DeleteTracking(ctx, accountFrom(ctx).ID, req.Domain); err != nil {
		return nil, err
	}
	return gen.DeleteTracklink200JSONResponse{Body: gen.MessageResponse{Success: true, Message: "Tracking domain deleted successfully."}}, nil
}

func toAPIDomain(d domains.Domain) gen.Domain {
	out := gen.Domain{
		Id: d.ID, Domain: d.Name, IsVerified: d.Verified, VerifiedBy: toAPIVerifiedBy(d), Status: d.Active,
		CreatedAt: d.CreatedAt.Unix(), ModifiedAt: d.ModifiedAt.Unix(),
		DnsSelector: d.DKIMSelector, DnsRecord: domains.DKIMRecord(d.DKIMPublicKey),
		DkimKeyLength: gen.DomainDkimKeyLength(d.DKIMKeyBits),
		DkimVerified:  d.DKIMOK, SpfVerified: d.SPFOK, MxVerified: d.MXOK, SpfRecord: d.SPFRecord,
		OpenTrack: d.OpenTrack, ClickTrack: d.ClickTrack, UnsubTrack: d.UnsubTrack,
		AuthDomain: d.AuthDomain, AuthDomainDkimSelector: d.AuthDKIMSelector,
		AuthDomainDkimRecord: domains.DKIMRecord(d.AuthDKIMPublicKey), AuthDomainIsVerified: d.AuthVerified,
		TracklinkDomain: d.TrackingDomain, TracklinkDomainIsVerified: d.TrackingVerified,
		DnsRecords: toAPIRecords(d.Records),
	}
	if d.CheckedAt != nil {
		t := d.CheckedAt.Unix()
		out.LastCheckedAt = &t
	}
	return out
}

// toAPIVerifiedBy is what keeps d verified: "dns", "operator", or nil.
func toAPIVerifiedBy(d domains.Domain) *gen.VerifiedBy {
	if d.VerifiedBy == "" {
		return nil
	}
	v := d.VerifiedBy
	return &v
}

// toAPIRecords converts the records whose purpose is listed (all when none is).
func toAPIRecords(recs []domains.Record, purposes ...string) []gen.DNSRecord {
	out := []gen.DNSRecord{}
	for _, r := range recs {
		if len(purposes) > 0 && !slices.Contains(purposes, r.Purpose) {
			continue
		}
		rec := gen.DNSRecord{Purpose: gen.DNSRecordPurpose(r.Purpose), Type: gen.DNSRecordType(r.Type), Name: r.Name, Value: r.Value}
		if r.Priority != 0 {
			p := r.Priority
			rec.Priority = &p
		}
		out = append(out, rec)
	}
	return out
}

func toAPICheck(r dnscheck.Result) gen.CheckResult {
	out := gen.CheckResult{Ok: r.OK, Name: r.Name, Type: r.Type, Expected: r.Expected, Found: r.Found}
	if out.Found == nil {
		out.Found = []string{}
	}
	if r.Problem != "" {
		p := r.Problem
		out.Problem = &p
	}
	return out
}
