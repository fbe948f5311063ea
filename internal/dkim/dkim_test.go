package dkim_test

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/smtpcreds/smtpcreds/internal/dkim"
)

// Keys are slow to generate (especially under -race), so each size is
// generated once and shared by the tests that only read it.
var (
	key1024  = sync.OnceValues(func() (*rsa.PrivateKey, error) { return dkim.GenerateKey(dkim.Bits1024) })
	key2048  = sync.OnceValues(func() (*rsa.PrivateKey, error) { return dkim.GenerateKey(dkim.Bits2048) })
	key2048b = sync.OnceValues(func() (*rsa.PrivateKey, error) { return dkim.GenerateKey(dkim.Bits2048) })
)

func mustKey(t testing.TB, f func() (*rsa.PrivateKey, error)) *rsa.PrivateKey {
	t.Helper()
	k, err := f()
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	return k
}

func TestGenerateKeySizes(t *testing.T) {
	for _, tc := range []struct {
		bits int
		f    func() (*rsa.PrivateKey, error)
	}{{dkim.Bits1024, key1024}, {dkim.Bits2048, key2048}} {
		k := mustKey(t, tc.f)
		if got := k.N.BitLen(); got != tc.bits {
			t.Errorf("GenerateKey(%d): modulus has %d bits", tc.bits, got)
		}
		if err := k.Validate(); err != nil {
			t.Errorf("GenerateKey(%d): Validate: %v", tc.bits, err)
		}
	}
}

func TestGenerateKeyRejectsOtherSizes(t *testing.T) {
	for _, bits := range []int{0, -1, 512, 1023, 2047, 3072, 4096} {
		k, err := dkim.GenerateKey(bits)
		if !errors.Is(err, dkim.ErrKeySize) {
			t.Errorf("GenerateKey(%d): err = %v, want ErrKeySize", bits, err)
		}
		if k != nil {
			t.Errorf("GenerateKey(%d) returned a key", bits)
		}
	}
}

func TestRecord(t *testing.T) {
	for _, f := range []func() (*rsa.PrivateKey, error){key1024, key2048} {
		k := mustKey(t, f)
		rec, err := dkim.Record(&k.PublicKey)
		if err != nil {
			t.Fatalf("Record: %v", err)
		}
		const prefix = "v=DKIM1; k=rsa; p="
		p, ok := strings.CutPrefix(rec, prefix)
		if !ok {
			t.Fatalf("Record = %q, want prefix %q", rec, prefix)
		}
		b64, err := dkim.PublicKeyBase64(&k.PublicKey)
		if err != nil {
			t.Fatalf("PublicKeyBase64: %v", err)
		}
		if p != b64 {
			t.Errorf("p= %q differs from PublicKeyBase64 %q", p, b64)
		}
		if strings.ContainsAny(p, " \t\r\n;") {
			t.Errorf("p= contains whitespace or ';': %q", p)
		}
		der, err := base64.StdEncoding.Strict().DecodeString(p)
		if err != nil {
			t.Fatalf("p= is not std padded base64: %v", err)
		}
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			t.Fatalf("p= is not a SubjectPublicKeyInfo: %v", err)
		}
		rsaPub, ok := pub.(*rsa.PublicKey)
		if !ok {
			t.Fatalf("p= holds a %T, want *rsa.PublicKey", pub)
		}
		if !rsaPub.Equal(&k.PublicKey) {
			t.Error("p= parses to a different public key")
		}
		t.Logf("%d-bit record is %d bytes", k.N.BitLen(), len(rec))
	}
}

func TestRecordInvalidKey(t *testing.T) {
	for _, pub := range []*rsa.PublicKey{nil, {}, {E: 65537}} {
		if _, err := dkim.Record(pub); !errors.Is(err, dkim.ErrInvalidKey) {
			t.Errorf("Record(%v): err = %v, want ErrInvalidKey", pub, err)
		}
		if _, err := dkim.PublicKeyBase64(pub); !errors.Is(err, dkim.ErrInvalidKey) {
			t.Errorf("PublicKeyBase64(%v): err = %v, want ErrInvalidKey", pub, err)
		}
	}
}

const (
	testDomain   = "example.com"
	testSelector = "smtpcreds"
	testTXTName  = testSelector + "._domainkey." + testDomain
)

const testMessage = "From: Alice <alice@example.com>\r\n" +
	"To: Bob <bob@example.org>\r\n" +
	"Subject: DKIM round trip\r\n" +
	"Date: Mon, 02 Jan 2006 15:04:05 +0000\r\n" +
	"Message-ID: <round-trip@example.com>\r\n" +
	"\r\n" +
	"Hello Bob,\r\n" +
	"\r\n" +
	"this message is signed with a key from internal/dkim.\r\n"

// signAndVerify signs testMessage with signer, then verifies it with the TXT
// lookup for testTXTName answering record. It returns the single
// verification.
func signAndVerify(t *testing.T, signer *rsa.PrivateKey, record string) *msgdkim.Verification {
	t.Helper()
	var signed bytes.Buffer
	err := msgdkim.Sign(&signed, strings.NewReader(testMessage), &msgdkim.SignOptions{
		Domain:   testDomain,
		Selector: testSelector,
		Signer:   signer,
	})
	if err != nil {
		t.Fatalf("dkim.Sign: %v", err)
	}
	if !strings.HasPrefix(signed.String(), "DKIM-Signature:") {
		t.Fatalf("signed message does not start with DKIM-Signature:\n%s", signed.String())
	}
	lookups := 0
	verifs, err := msgdkim.VerifyWithOptions(&signed, &msgdkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			lookups++
			if name != testTXTName {
				t.Errorf("LookupTXT(%q), want %q", name, testTXTName)
				return nil, errors.New("no such record")
			}
			return []string{record}, nil
		},
	})
	if err != nil {
		t.Fatalf("VerifyWithOptions: %v", err)
	}
	if lookups != 1 {
		t.Errorf("LookupTXT called %d times, want 1", lookups)
	}
	if len(verifs) != 1 {
		t.Fatalf("got %d verifications, want 1", len(verifs))
	}
	return verifs[0]
}

// TestDKIMSignVerify is the end-to-end check that what we publish lets a
// real DKIM verifier accept mail signed with the private key we keep.
func TestDKIMSignVerify(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func() (*rsa.PrivateKey, error)
	}{{"2048", key2048}, {"1024", key1024}} {
		t.Run(tc.name, func(t *testing.T) {
			priv := mustKey(t, tc.f)
			rec, err := dkim.Record(&priv.PublicKey)
			if err != nil {
				t.Fatalf("Record: %v", err)
			}
			v := signAndVerify(t, priv, rec)
			if v.Err != nil {
				t.Fatalf("verification failed: %v", v.Err)
			}
			if v.Domain != testDomain {
				t.Errorf("verified domain = %q, want %q", v.Domain, testDomain)
			}
		})
	}
}

// TestDKIMSignVerifyAfterSealing signs with a key that went through
// SealKey/OpenKey, as production will.
func TestDKIMSignVerifyAfterSealing(t *testing.T) {
	priv := mustKey(t, key2048)
	s := newSealer(t, 1)
	sealed, err := s.SealKey(priv, []byte(testDomain))
	if err != nil {
		t.Fatalf("SealKey: %v", err)
	}
	opened, err := s.OpenKey(sealed, []byte(testDomain))
	if err != nil {
		t.Fatalf("OpenKey: %v", err)
	}
	rec, err := dkim.Record(&priv.PublicKey)
	if err != nil {
		t.Fatalf("Record: %v", err)
	}
	if v := signAndVerify(t, opened, rec); v.Err != nil {
		t.Fatalf("verification failed: %v", v.Err)
	}
}

func TestDKIMVerifyWrongKeyFails(t *testing.T) {
	signer := mustKey(t, key2048)
	other := mustKey(t, key2048b)
	rec, err := dkim.Record(&other.PublicKey)
	if err != nil {
		t.Fatalf("Record: %v", err)
	}
	v := signAndVerify(t, signer, rec)
	if v.Err == nil {
		t.Fatal("verification against another key's record succeeded")
	}
	// The record itself is well formed, so this is a plain "fail" (the
	// signature does not match), neither a permerror about the record nor a
	// temperror.
	if msgdkim.IsPermFail(v.Err) || msgdkim.IsTempFail(v.Err) {
		t.Errorf("err = %v, want a signature mismatch, not a perm/temp error", v.Err)
	}
	if !strings.Contains(v.Err.Error(), "signature did not verify") {
		t.Errorf("err = %v, want a signature mismatch", v.Err)
	}
}
