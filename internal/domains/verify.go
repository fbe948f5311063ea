package domains

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/dnscheck"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// MandatoryOutcome is the result of VerifyMandatory.
type MandatoryOutcome struct {
	DKIM, SPF, MX dnscheck.Result
	CheckedAt     time.Time
}

// VerifyMandatory looks the domain's DKIM, SPF and MX records up in DNS,
// stores the outcome and returns it with the updated domain. The domain is
// verified while DKIM and SPF pass; MX is reported but not required, since
// a domain may receive its mail elsewhere. A domain an operator marked
// verified stays verified whatever the check finds (VerifiedByOperator);
// the outcome is stored and returned all the same. ErrNotFound.
func (s *Service) VerifyMandatory(ctx context.Context, accountID int64, name string) (Domain, MandatoryOutcome, error) {
	d, err := s.Get(ctx, accountID, name)
	if err != nil {
		return Domain{}, MandatoryOutcome{}, err
	}
	var out MandatoryOutcome
	v, err := s.verify("verify domain", ErrNotFound, []probe{
		{"dkim", &out.DKIM, func() dnscheck.Result { return s.dns.DKIM(ctx, d.DKIMName(), d.DKIMPublicKey) }},
		{"spf", &out.SPF, func() dnscheck.Result { return s.dns.SPF(ctx, d.Name, s.cfg.SPFInclude, s.cfg.MXHost) }},
		{"mx", &out.MX, func() dnscheck.Result { return s.dns.MX(ctx, d.Name, s.cfg.MXHost) }},
	}, func(checks []byte) (postgres.DomainRow, error) {
		return s.repo.SaveCheck(ctx, s.db, accountID, d.Name, out.DKIM.OK, out.SPF.OK, out.MX.OK, out.DKIM.OK && out.SPF.OK, checks)
	})
	if err != nil {
		return Domain{}, MandatoryOutcome{}, err
	}
	out.CheckedAt = *v.CheckedAt
	return v, out, nil
}

// VerifyByName is VerifyMandatory for the domain called name, whichever
// account owns it: the operator's path. ErrNotFound.
func (s *Service) VerifyByName(ctx context.Context, name string) (OwnedDomain, MandatoryOutcome, error) {
	o, err := s.ByName(ctx, name)
	if err != nil {
		return OwnedDomain{}, MandatoryOutcome{}, err
	}
	d, out, err := s.VerifyMandatory(ctx, o.accountID, o.Name)
	if err != nil {
		return OwnedDomain{}, MandatoryOutcome{}, err
	}
	return OwnedDomain{Domain: d, Account: o.Account, accountID: o.accountID}, out, nil
}

// probe is one DNS check of a verification: the key its result is stored
// under in the checks JSON, where the result goes, and the lookup.
type probe struct {
	key  string
	into *dnscheck.Result
	run  func() dnscheck.Result
}

// verify is what the three verification flows share: it runs the probes side
// by side, so a verification takes one lookup timeout at worst, not three;
// stores their results with save as a JSON object keyed by probe; and returns
// the saved domain. save's postgres.ErrNotFound (the domain, or the auth or
// tracking domain checked, is gone meanwhile) becomes gone; other errors are
// wrapped with op.
func (s *Service) verify(op string, gone error, probes []probe, save func(checks []byte) (postgres.DomainRow, error)) (Domain, error) {
	done := make(chan struct{}, len(probes))
	for _, p := range probes {
		go func() { *p.into = p.run(); done <- struct{}{} }()
	}
	for range probes {
		<-done
	}
	results := make(map[string]dnscheck.Result, len(probes))
	for _, p := range probes {
		results[p.key] = *p.into
	}
	checks, err := json.Marshal(results)
	if err != nil {
		return Domain{}, fmt.Errorf("%s: %w", op, err)
	}
	row, err := save(checks)
	if errors.Is(err, postgres.ErrNotFound) {
		return Domain{}, gone
	}
	if err != nil {
		return Domain{}, fmt.Errorf("%s: %w", op, err)
	}
	return s.fromRow(row), nil
}

// AuthOutcome is the result of VerifyAuthDomain.
type AuthOutcome struct {
	DKIM, SPF, MX dnscheck.Result
	CheckedAt     time.Time
}

// VerifyAuthDomain checks the auth domain's DKIM, SPF and MX records; it is
// verified while DKIM and SPF pass. ErrNotFound; a *validation.Error when no
// auth domain is set up (or it was removed or replaced meanwhile).
func (s *Service) VerifyAuthDomain(ctx context.Context, accountID int64, name string) (Domain, AuthOutcome, error) {
	d, err := s.Get(ctx, accountID, name)
	if err != nil {
		return Domain{}, AuthOutcome{}, err
	}
	if d.AuthDomain == "" {
		return Domain{}, AuthOutcome{}, errNoAuth
	}
	var out AuthOutcome
	v, err := s.verify("verify auth domain", errNoAuth, []probe{
		{"auth_dkim", &out.DKIM, func() dnscheck.Result { return s.dns.DKIM(ctx, d.AuthDKIMName(), d.AuthDKIMPublicKey) }},
		{"auth_spf", &out.SPF, func() dnscheck.Result { return s.dns.SPF(ctx, d.AuthDomain, s.cfg.SPFInclude, s.cfg.MXHost) }},
		{"auth_mx", &out.MX, func() dnscheck.Result { return s.dns.MX(ctx, d.AuthDomain, s.cfg.MXHost) }},
	}, func(checks []byte) (postgres.DomainRow, error) {
		return s.repo.SaveAuthCheck(ctx, s.db, accountID, d.Name, d.AuthDomain, out.DKIM.OK && out.SPF.OK, checks)
	})
	if err != nil {
		return Domain{}, AuthOutcome{}, err
	}
	out.CheckedAt = *v.AuthCheckedAt
	return v, out, nil
}

// TrackingOutcome is the result of VerifyTracking.
type TrackingOutcome struct {
	CNAME     dnscheck.Result
	CheckedAt time.Time
}

// VerifyTracking checks the tracking domain's CNAME. ErrNotFound; a
// *validation.Error when none is set up (or it was removed or replaced
// meanwhile).
func (s *Service) VerifyTracking(ctx context.Context, accountID int64, name string) (Domain, TrackingOutcome, error) {
	d, err := s.Get(ctx, accountID, name)
	if err != nil {
		return Domain{}, TrackingOutcome{}, err
	}
	if d.TrackingDomain == "" {
		return Domain{}, TrackingOutcome{}, errNoTracking
	}
	var out TrackingOutcome
	v, err := s.verify("verify tracking domain", errNoTracking, []probe{
		{"cname", &out.CNAME, func() dnscheck.Result { return s.dns.CNAME(ctx, d.TrackingDomain, s.cfg.TrackingTarget) }},
	}, func(checks []byte) (postgres.DomainRow, error) {
		return s.repo.SaveTrackingCheck(ctx, s.db, accountID, d.Name, d.TrackingDomain, out.CNAME.OK, checks)
	})
	if err != nil {
		return Domain{}, TrackingOutcome{}, err
	}
	out.CheckedAt = *v.TrackingCheckedAt
	return v, out, nil
}
