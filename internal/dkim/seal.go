package dkim

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
)

// SealerKeySize is the length in bytes of the key given to [NewSealer]
// (AES-256).
const SealerKeySize = 32

// sealVersion is the first byte of every sealed key. It is also
// authenticated, as a prefix of the associated data.
const sealVersion byte = 1

// nonceSize is the length of the random GCM nonce following the version byte.
const nonceSize = 12

// ErrSealerKey is returned by [NewSealer] when the key is not
// [SealerKeySize] bytes long.
var ErrSealerKey = errors.New("dkim: sealer key must be 32 bytes")

// ErrSealed is returned, wrapped, by [Sealer.OpenKey] when a sealed key
// cannot be opened: it was tampered with or truncated, it was sealed under
// another key or with other associated data, its version is unknown, or it
// does not hold an RSA private key. The cases are deliberately not told
// apart.
var ErrSealed = errors.New("dkim: cannot open sealed key")

// Sealer encrypts private keys at rest with AES-256-GCM under a key that
// lives outside the database. The format of a sealed key is
//
//	version (1 byte, currently 1) || nonce (12 random bytes) || GCM ciphertext and tag
//
// where the plaintext is the PKCS#8 DER encoding of the private key and the
// associated data is the version byte followed by the caller's aad.
//
// A Sealer is safe for concurrent use. Its zero value is not usable: create
// one with [NewSealer].
type Sealer struct {
	aead cipher.AEAD
}

// NewSealer returns a Sealer using key, which must be exactly
// [SealerKeySize] (32) bytes, else it returns [ErrSealerKey]. The key is not
// retained: the caller may clear it afterwards.
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) != SealerKeySize {
		return nil, ErrSealerKey
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		// Unreachable with a 32-byte key; the error carries no key material.
		return nil, fmt.Errorf("dkim: creating cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("dkim: creating GCM: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// String keeps the cipher state out of logs.
func (s *Sealer) String() string { return "dkim.Sealer{…}" }

// GoString keeps the cipher state out of logs formatted with %#v.
func (s *Sealer) GoString() string { return s.String() }

// SealKey encrypts priv, encoded as PKCS#8 DER, and returns
// version || nonce || ciphertext. aad is the associated data binding the
// ciphertext to its owner (for example the domain name): the same aad must be
// given to [Sealer.OpenKey]. Each call uses a fresh random nonce, so sealing
// the same key twice gives different outputs.
//
// It returns [ErrInvalidKey] if priv is nil or fails validation, and an error
// if the system random source fails.
func (s *Sealer) SealKey(priv *rsa.PrivateKey, aad []byte) ([]byte, error) {
	if s == nil || s.aead == nil {
		return nil, errors.New("dkim: SealKey on a Sealer not made by NewSealer")
	}
	if priv == nil || priv.N == nil {
		return nil, ErrInvalidKey
	}
	if err := priv.Validate(); err != nil {
		// Don't wrap: the details are about the key's components.
		return nil, ErrInvalidKey
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, ErrInvalidKey
	}
	defer clear(der)

	out := make([]byte, 1+nonceSize, 1+nonceSize+len(der)+s.aead.Overhead())
	out[0] = sealVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("dkim: reading nonce: %w", err)
	}
	return s.aead.Seal(out, out[1:], der, additionalData(aad)), nil
}

// OpenKey decrypts a key sealed by [Sealer.SealKey] with the same aad. Any
// failure (tampered, truncated or empty input, another sealing key, another
// aad, unknown version, contents that are not an RSA private key) returns an
// error wrapping [ErrSealed].
func (s *Sealer) OpenKey(sealed, aad []byte) (*rsa.PrivateKey, error) {
	if s == nil || s.aead == nil {
		return nil, errors.New("dkim: OpenKey on a Sealer not made by NewSealer")
	}
	if len(sealed) == 0 {
		return nil, fmt.Errorf("%w: empty input", ErrSealed)
	}
	if sealed[0] != sealVersion {
		return nil, fmt.Errorf("%w: unknown version %d", ErrSealed, sealed[0])
	}
	if len(sealed) < 1+nonceSize+s.aead.Overhead() {
		return nil, fmt.Errorf("%w: input too short", ErrSealed)
	}
	nonce, ciphertext := sealed[1:1+nonceSize], sealed[1+nonceSize:]
	der, err := s.aead.Open(nil, nonce, ciphertext, additionalData(aad))
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed", ErrSealed)
	}
	defer clear(der)
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		// Not wrapped: parse errors could in principle describe the plaintext.
		return nil, fmt.Errorf("%w: malformed PKCS#8", ErrSealed)
	}
	priv, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: not an RSA private key", ErrSealed)
	}
	return priv, nil
}

// additionalData returns the GCM associated data: the version byte followed
// by the caller's aad, so the version is authenticated too.
func additionalData(aad []byte) []byte {
	ad := make([]byte, 0, 1+len(aad))
	ad = append(ad, sealVersion)
	return append(ad, aad...)
}

// dataAAD prefixes the associated data of [Sealer.Seal], so that sealed
// data never opens as a key (a key's aad, a domain name, holds no NUL) nor
// a key as data.
const dataAAD = "data\x00"

// Seal encrypts plaintext (any bytes: a stored response holding a
// password) in the format of [Sealer.SealKey], bound to aad, for
// [Sealer.Open]; each call uses a fresh random nonce.
func (s *Sealer) Seal(plaintext, aad []byte) ([]byte, error) {
	if s == nil || s.aead == nil {
		return nil, errors.New("dkim: Seal on a Sealer not made by NewSealer")
	}
	out := make([]byte, 1+nonceSize, 1+nonceSize+len(plaintext)+s.aead.Overhead())
	out[0] = sealVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("dkim: reading nonce: %w", err)
	}
	return s.aead.Seal(out, out[1:], plaintext, additionalData(append([]byte(dataAAD), aad...))), nil
}

// Open decrypts data sealed by [Sealer.Seal] with the same aad; any failure
// returns an error wrapping [ErrSealed], the cases not told apart.
func (s *Sealer) Open(sealed, aad []byte) ([]byte, error) {
	if s == nil || s.aead == nil {
		return nil, errors.New("dkim: Open on a Sealer not made by NewSealer")
	}
	if len(sealed) < 1+nonceSize+s.aead.Overhead() || sealed[0] != sealVersion {
		return nil, fmt.Errorf("%w: malformed input", ErrSealed)
	}
	nonce, ciphertext := sealed[1:1+nonceSize], sealed[1+nonceSize:]
	out, err := s.aead.Open(nil, nonce, ciphertext, additionalData(append([]byte(dataAAD), aad...)))
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed", ErrSealed)
	}
	return out, nil
}
