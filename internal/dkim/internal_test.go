package dkim

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"testing"
)

// TestOpenKeyNonRSA seals, by hand and correctly authenticated, contents
// that are not an RSA PKCS#8 key: OpenKey must still refuse them.
func TestOpenKeyNonRSA(t *testing.T) {
	s, err := NewSealer(bytes.Repeat([]byte{7}, SealerKeySize))
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	aad := []byte("example.com")
	for name, plaintext := range map[string][]byte{
		"ecdsa":   ecDER,
		"garbage": []byte("not DER"),
		"empty":   {},
	} {
		nonce := make([]byte, nonceSize)
		if _, err := rand.Read(nonce); err != nil {
			t.Fatal(err)
		}
		sealed := append([]byte{sealVersion}, nonce...)
		sealed = s.aead.Seal(sealed, nonce, plaintext, additionalData(aad))
		k, err := s.OpenKey(sealed, aad)
		if !errors.Is(err, ErrSealed) || k != nil {
			t.Errorf("%s: OpenKey = %v, %v; want nil, ErrSealed", name, k, err)
		}
	}
}
