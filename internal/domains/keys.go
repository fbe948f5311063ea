package domains

import (
	"crypto/rsa"
	"fmt"
	"strings"

	"github.com/smtpcreds/smtpcreds/internal/dkim"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/validation"
)

// KeyBits turns the API's dkim_key_length into a key size: 0 (or absent)
// means 2048; 1024 and 2048 are accepted; anything else is a
// *validation.Error on field.
func KeyBits(field string, n *int) (int, error) {
	if n == nil || *n == 0 {
		return dkim.Bits2048, nil
	}
	if *n == dkim.Bits1024 || *n == dkim.Bits2048 {
		return *n, nil
	}
	return 0, validation.New(field, "The "+strings.ReplaceAll(field, "_", " ")+" must be 1024 or 2048.")
}

// newKey makes a DKIM key pair for owner (a domain name, bound into the
// sealed key so that it cannot be moved to another row).
func (s *Service) newKey(purpose, owner string, bits int) (pub string, sealed []byte, err error) {
	priv, err := dkim.GenerateKey(bits)
	if err != nil {
		return "", nil, err
	}
	return s.sealKey(priv, purpose, owner)
}

func (s *Service) sealKey(priv *rsa.PrivateKey, purpose, owner string) (string, []byte, error) {
	pub, err := dkim.PublicKeyBase64(&priv.PublicKey)
	if err != nil {
		return "", nil, err
	}
	sealed, err := s.sealer.SealKey(priv, []byte(purpose+":"+owner))
	if err != nil {
		return "", nil, err
	}
	return pub, sealed, nil
}

func (s *Service) newDomain(name string, bits int, verified bool) (postgres.NewDomain, error) {
	pub, sealed, err := s.newKey("dkim", name, bits)
	if err != nil {
		return postgres.NewDomain{}, fmt.Errorf("dkim key: %w", err)
	}
	return postgres.NewDomain{
		Name: name, Verified: verified, DKIMSelector: s.cfg.Selector, DKIMKeyBits: bits,
		DKIMPublicKey: pub, DKIMSealedKey: sealed,
	}, nil
}
