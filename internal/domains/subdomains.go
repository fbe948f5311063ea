package domains

import (
	"context"
	"fmt"

	"github.com/smtpcreds/smtpcreds/internal/validation"
)

// SetupAuthDomain stores the auth (return-path) domain, by default
// bounce.<domain>, with a fresh DKIM key of bits. ErrNotFound; a
// *validation.Error when authDomain is not the domain or below it.
func (s *Service) SetupAuthDomain(ctx context.Context, accountID int64, name string, authDomain *string, bits int) (Domain, error) {
	d, err := s.Get(ctx, accountID, name)
	if err != nil {
		return Domain{}, err
	}
	auth := "bounce." + d.Name
	if authDomain != nil && *authDomain != "" {
		if auth, err = subdomainOf("auth_domain", *authDomain, d.Name); err != nil {
			return Domain{}, err
		}
	}
	pub, sealed, err := s.newKey("auth_dkim", auth, bits)
	if err != nil {
		return Domain{}, fmt.Errorf("setup auth domain: %w", err)
	}
	row, err := s.repo.SetAuthDomain(ctx, s.db, accountID, d.Name, auth, s.cfg.Selector, pub, sealed)
	if err != nil {
		return Domain{}, notFound("setup auth domain", err)
	}
	return s.fromRow(row), nil
}

var (
	errNoAuth     = validation.New("auth_domain", "No auth domain is set up for this domain.")
	errNoTracking = validation.New("tracking_domain", "No tracking domain is set up for this domain.")
)

// DeleteAuthDomain removes the auth domain and its key. ErrNotFound; a
// *validation.Error when none is set up.
func (s *Service) DeleteAuthDomain(ctx context.Context, accountID int64, name string) error {
	d, err := s.Get(ctx, accountID, name)
	if err != nil {
		return err
	}
	if d.AuthDomain == "" {
		return errNoAuth
	}
	_, err = s.repo.ClearAuthDomain(ctx, s.db, accountID, d.Name)
	return notFoundOr("delete auth domain", err)
}

// SetupTracking stores the link-tracking domain (the domain or below it).
// ErrNotFound; a *validation.Error for a bad or missing name.
func (s *Service) SetupTracking(ctx context.Context, accountID int64, name, tracking string) (Domain, error) {
	d, err := s.Get(ctx, accountID, name)
	if err != nil {
		return Domain{}, err
	}
	if tracking == "" {
		return Domain{}, validation.New("tracking_domain", "The tracking domain field is required.")
	}
	t, err := subdomainOf("tracking_domain", tracking, d.Name)
	if err != nil {
		return Domain{}, err
	}
	row, err := s.repo.SetTrackingDomain(ctx, s.db, accountID, d.Name, t)
	if err != nil {
		return Domain{}, notFound("setup tracking domain", err)
	}
	return s.fromRow(row), nil
}

// DeleteTracking removes the tracking domain. ErrNotFound; a
// *validation.Error when none is set up.
func (s *Service) DeleteTracking(ctx context.Context, accountID int64, name string) error {
	d, err := s.Get(ctx, accountID, name)
	if err != nil {
		return err
	}
	if d.TrackingDomain == "" {
		return errNoTracking
	}
	_, err = s.repo.ClearTrackingDomain(ctx, s.db, accountID, d.Name)
	return notFoundOr("delete tracking domain", err)
}
