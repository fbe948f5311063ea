// Package dkim makes the RSA keys that DKIM-sign a domain's mail, renders the
// public half as the TXT record to publish, and keeps the private half sealed.
//
// The TXT record goes at "<selector>._domainkey.<domain>".
//
// Key generation is slow (a 2048-bit key takes tens of milliseconds of CPU on
// a fast machine, 100ms or more on a small one, with a long random tail) so it
// belongs off the request hot path: it is done once per domain, when the
// domain is created or its key is rotated, never per message.
//
// Private keys are stored as the output of [Sealer.SealKey]: PKCS#8 DER
// encrypted with AES-256-GCM under a key that lives outside the database, with
// associated data binding each ciphertext to its owner (for example the domain
// name) so that a ciphertext copied to another row fails to open.
//
// The package only uses the standard library.
package dkim

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
)

// Key sizes, in bits, accepted by [GenerateKey]. 2048 is the recommended
// size; 1024 is the minimum verifiers accept (RFC 8301) and exists only for
// DNS providers that cannot publish a TXT record longer than 255 bytes.
const Bits1024, Bits2048 = 1024, 2048

// ErrKeySize is returned by [GenerateKey] for a key size other than
// [Bits1024] or [Bits2048].
var ErrKeySize = errors.New("dkim: key size must be 1024 or 2048 bits")

// ErrInvalidKey is returned when a nil or incomplete key is passed in.
var ErrInvalidKey = errors.New("dkim: invalid RSA key")

// GenerateKey returns a new RSA private key of the given size, which must be
// [Bits1024] or [Bits2048]; any other size returns [ErrKeySize].
//
// Generating a 2048-bit key costs tens to hundreds of milliseconds of CPU,
// with high variance: call it once per domain, not on a hot path.
func GenerateKey(bits int) (*rsa.PrivateKey, error) {
	if bits != Bits1024 && bits != Bits2048 {
		return nil, ErrKeySize
	}
	priv, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, fmt.Errorf("dkim: generating %d-bit RSA key: %w", bits, err)
	}
	return priv, nil
}

// PublicKeyBase64 returns the standard, padded base64 encoding of pub's DER
// SubjectPublicKeyInfo: the value of the p= tag of a DKIM key record.
// It returns [ErrInvalidKey] if pub is nil or has no modulus.
func PublicKeyBase64(pub *rsa.PublicKey) (string, error) {
	if pub == nil || pub.N == nil || pub.E == 0 {
		return "", ErrInvalidKey
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("dkim: encoding public key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(der), nil
}

// Record returns the DKIM key record for pub, "v=DKIM1; k=rsa; p=<base64>",
// as it is to be published in the TXT record at
// "<selector>._domainkey.<domain>". It returns the errors of
// [PublicKeyBase64].
//
// The record of a 2048-bit key is about 410 bytes, longer than the 255 bytes
// a single DNS character-string can hold: whoever publishes it must split it
// into several strings within one TXT record (which resolvers concatenate),
// not into several TXT records.
func Record(pub *rsa.PublicKey) (string, error) {
	p, err := PublicKeyBase64(pub)
	if err != nil {
		return "", err
	}
	return "v=DKIM1; k=rsa; p=" + p, nil
}
