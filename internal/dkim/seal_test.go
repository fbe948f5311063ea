package dkim_test

import (
	"bytes"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/smtpcreds/smtpcreds/internal/dkim"
)

// newSealer returns a Sealer whose key is 32 copies of b.
func newSealer(t testing.TB, b byte) *dkim.Sealer {
	t.Helper()
	s, err := dkim.NewSealer(bytes.Repeat([]byte{b}, dkim.SealerKeySize))
	if err != nil {
		t.Fatalf("NewSealer: %v", err)
	}
	return s
}

func TestNewSealerKeySize(t *testing.T) {
	for _, n := range []int{0, 1, 16, 24, 31, 33, 64} {
		s, err := dkim.NewSealer(make([]byte, n))
		if !errors.Is(err, dkim.ErrSealerKey) {
			t.Errorf("NewSealer(%d bytes): err = %v, want ErrSealerKey", n, err)
		}
		if s != nil {
			t.Errorf("NewSealer(%d bytes) returned a Sealer", n)
		}
	}
	if _, err := dkim.NewSealer(nil); !errors.Is(err, dkim.ErrSealerKey) {
		t.Errorf("NewSealer(nil): err = %v, want ErrSealerKey", err)
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	s := newSealer(t, 1)
	for _, f := range []func() (*rsa.PrivateKey, error){key1024, key2048} {
		priv := mustKey(t, f)
		for _, aad := range [][]byte{[]byte("example.com"), nil} {
			sealed, err := s.SealKey(priv, aad)
			if err != nil {
				t.Fatalf("SealKey: %v", err)
			}
			if sealed[0] != 1 {
				t.Errorf("version byte = %d, want 1", sealed[0])
			}
			got, err := s.OpenKey(sealed, aad)
			if err != nil {
				t.Fatalf("OpenKey: %v", err)
			}
			if !got.Equal(priv) {
				t.Error("opened key differs from sealed key")
			}
			if err := got.Validate(); err != nil {
				t.Errorf("opened key: Validate: %v", err)
			}
		}
	}
}

func TestSealIsRandomized(t *testing.T) {
	s := newSealer(t, 1)
	priv := mustKey(t, key1024)
	aad := []byte("example.com")
	a, err := s.SealKey(priv, aad)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.SealKey(priv, aad)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same key are identical")
	}
	if bytes.Equal(a[1:13], b[1:13]) {
		t.Error("two seals share a nonce")
	}
	if len(a) != len(b) {
		t.Errorf("seal lengths differ: %d vs %d", len(a), len(b))
	}
}

func TestOpenFailures(t *testing.T) {
	s := newSealer(t, 1)
	priv := mustKey(t, key1024)
	aad := []byte("example.com")
	sealed, err := s.SealKey(priv, aad)
	if err != nil {
		t.Fatal(err)
	}

	check := func(t *testing.T, name string, s *dkim.Sealer, in, aad []byte) {
		t.Helper()
		k, err := s.OpenKey(in, aad)
		if !errors.Is(err, dkim.ErrSealed) {
			t.Errorf("%s: err = %v, want ErrSealed", name, err)
		}
		if k != nil {
			t.Errorf("%s: returned a key", name)
		}
	}

	t.Run("another sealer key", func(t *testing.T) {
		check(t, "other key", newSealer(t, 2), sealed, aad)
	})
	t.Run("another aad", func(t *testing.T) {
		check(t, "other aad", s, sealed, []byte("example.org"))
		check(t, "nil aad", s, sealed, nil)
		check(t, "aad prefix", s, sealed, aad[:len(aad)-1])
		check(t, "aad extended", s, sealed, append(bytes.Clone(aad), '.'))
	})
	t.Run("flipped byte", func(t *testing.T) {
		for i := range sealed {
			for _, mask := range []byte{0x01, 0x80} {
				bad := bytes.Clone(sealed)
				bad[i] ^= mask
				check(t, fmt.Sprintf("byte %d ^ %#x", i, mask), s, bad, aad)
			}
		}
	})
	t.Run("truncated", func(t *testing.T) {
		for n := range len(sealed) {
			check(t, fmt.Sprintf("first %d bytes", n), s, sealed[:n], aad)
		}
	})
	t.Run("extended", func(t *testing.T) {
		check(t, "trailing byte", s, append(bytes.Clone(sealed), 0), aad)
	})
	t.Run("empty", func(t *testing.T) {
		check(t, "nil", s, nil, aad)
		check(t, "empty", s, []byte{}, aad)
	})
	t.Run("unknown version", func(t *testing.T) {
		for _, v := range []byte{0, 2, 0xff} {
			bad := bytes.Clone(sealed)
			bad[0] = v
			check(t, fmt.Sprintf("version %d", v), s, bad, aad)
		}
	})
}

// TestErrorsDoNotLeakKeyMaterial checks that neither the sealing key nor the
// private key shows up in error messages or in the Sealer's formatting.
func TestErrorsDoNotLeakKeyMaterial(t *testing.T) {
	sealKey := bytes.Repeat([]byte{0xab}, dkim.SealerKeySize)
	s, err := dkim.NewSealer(sealKey)
	if err != nil {
		t.Fatal(err)
	}
	priv := mustKey(t, key1024)
	sealed, err := s.SealKey(priv, []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{
		hex.EncodeToString(sealKey), "abababab", "171, 171", "[171 171",
		priv.D.String(), priv.D.Text(16), priv.Primes[0].String(),
	}
	var msgs []string
	for _, in := range [][]byte{nil, sealed, sealed[:20], append([]byte{9}, sealed[1:]...)} {
		if _, err := s.OpenKey(in, []byte("b")); err != nil {
			msgs = append(msgs, err.Error())
		}
	}
	if _, err := dkim.NewSealer(sealKey[:31]); err != nil {
		msgs = append(msgs, err.Error())
	}
	msgs = append(msgs, fmt.Sprintf("%v", s), fmt.Sprintf("%+v", s), fmt.Sprintf("%#v", s), fmt.Sprint(*s))
	for _, m := range msgs {
		for _, secret := range secrets {
			if strings.Contains(strings.ToLower(m), strings.ToLower(secret)) {
				t.Errorf("message %q contains key material", m)
			}
		}
	}
}

func TestSealKeyInvalid(t *testing.T) {
	s := newSealer(t, 1)
	if _, err := s.SealKey(nil, nil); !errors.Is(err, dkim.ErrInvalidKey) {
		t.Errorf("SealKey(nil): err = %v, want ErrInvalidKey", err)
	}
	if _, err := s.SealKey(&rsa.PrivateKey{}, nil); !errors.Is(err, dkim.ErrInvalidKey) {
		t.Errorf("SealKey(empty key): err = %v, want ErrInvalidKey", err)
	}
	var zero dkim.Sealer
	if _, err := zero.SealKey(mustKey(t, key1024), nil); err == nil {
		t.Error("zero Sealer: SealKey succeeded")
	}
	if _, err := zero.OpenKey([]byte{1}, nil); err == nil {
		t.Error("zero Sealer: OpenKey succeeded")
	}
}

func TestSealerConcurrent(t *testing.T) {
	s := newSealer(t, 1)
	priv := mustKey(t, key1024)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			aad := fmt.Appendf(nil, "d%d.example", i)
			for range 20 {
				sealed, err := s.SealKey(priv, aad)
				if err != nil {
					t.Error(err)
					return
				}
				got, err := s.OpenKey(sealed, aad)
				if err != nil {
					t.Error(err)
					return
				}
				if !got.Equal(priv) {
					t.Error("round trip changed the key")
					return
				}
			}
		})
	}
	wg.Wait()
}

// Seal and Open round-trip any bytes, bound to their aad and key, and
// sealed data and sealed keys never open as each other.
func TestSealOpenData(t *testing.T) {
	t.Parallel()
	s := newSealer(t, 1)
	msg := []byte(`{"password":"secret"}`)
	sealed, err := s.Seal(msg, []byte("acct\x00key"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("secret")) {
		t.Fatal("sealed data holds the plaintext")
	}
	got, err := s.Open(sealed, []byte("acct\x00key"))
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := s.Open(sealed, []byte("acct\x00other")); !errors.Is(err, dkim.ErrSealed) {
		t.Errorf("Open with another aad: %v", err)
	}
	if _, err := newSealer(t, 2).Open(sealed, []byte("acct\x00key")); !errors.Is(err, dkim.ErrSealed) {
		t.Errorf("Open under another key: %v", err)
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	if _, err := s.Open(tampered, []byte("acct\x00key")); !errors.Is(err, dkim.ErrSealed) {
		t.Errorf("Open of tampered data: %v", err)
	}
	if _, err := s.Open(sealed[:5], nil); !errors.Is(err, dkim.ErrSealed) {
		t.Errorf("Open of truncated data: %v", err)
	}
	if _, err := s.OpenKey(sealed, []byte("acct\x00key")); !errors.Is(err, dkim.ErrSealed) {
		t.Errorf("OpenKey of sealed data: %v", err)
	}
}
