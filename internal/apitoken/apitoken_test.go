package apitoken

import (
	"bytes"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
	"testing/iotest"
)

func TestNewIsWellFormed(t *testing.T) {
	seen := map[string]bool{}
	for range 2000 {
		tok, err := New()
		if err != nil {
			t.Fatal(err)
		}
		if len(tok) != Len || Len != 36 {
			t.Fatalf("len(%q) = %d, Len = %d; want 36", tok, len(tok), Len)
		}
		if !strings.HasPrefix(tok, Prefix) {
			t.Fatalf("%q lacks prefix %q", tok, Prefix)
		}
		if !WellFormed(tok) {
			t.Fatalf("New() = %q is not WellFormed", tok)
		}
		if seen[tok] {
			t.Fatalf("duplicate token %q", tok)
		}
		seen[tok] = true
	}
}

// TestChecksumEncoding recomputes the checksum from its definition.
func TestChecksumEncoding(t *testing.T) {
	tok, err := New()
	if err != nil {
		t.Fatal(err)
	}
	crc := crc32.ChecksumIEEE([]byte(tok[:30]))
	var n uint64
	for _, c := range tok[30:] {
		n = n*62 + uint64(strings.IndexRune(alphabet, c))
	}
	if n != uint64(crc) {
		t.Fatalf("checksum %q decodes to %d, CRC-32 is %d", tok[30:], n, crc)
	}
	// Small and maximal CRC values are zero-padded / still fit.
	for c, want := range map[uint32]string{0: "000000", 61: "00000z", 62: "000010", 1<<32 - 1: "4gfFC3"} {
		var dst [checksumLen]byte
		encodeChecksum(dst[:], c)
		if string(dst[:]) != want {
			t.Errorf("checksum(%d) = %q, want %q", c, dst, want)
		}
	}
}

func TestSingleCharChangesBreakWellFormed(t *testing.T) {
	for range 20 {
		tok, err := New()
		if err != nil {
			t.Fatal(err)
		}
		b := []byte(tok)
		for i := range b {
			orig := b[i]
			for c := range 256 {
				if byte(c) == orig {
					continue
				}
				b[i] = byte(c)
				if WellFormed(string(b)) {
					t.Fatalf("changing byte %d of %q to %q keeps it WellFormed", i, tok, byte(c))
				}
			}
			b[i] = orig
		}
		// Adjacent transpositions (a common typo) are caught as well.
		for i := len(Prefix); i+1 < len(b); i++ {
			if b[i] == b[i+1] {
				continue
			}
			b[i], b[i+1] = b[i+1], b[i]
			if WellFormed(string(b)) {
				t.Fatalf("swapping bytes %d,%d of %q keeps it WellFormed", i, i+1, tok)
			}
			b[i], b[i+1] = b[i+1], b[i]
		}
	}
}

func TestWellFormedRejects(t *testing.T) {
	tok, err := New()
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		"",
		Prefix,
		tok[:Len-1],
		tok + "0",
		" " + tok[1:],
		"SMTPK_" + tok[6:],
		"ghp_" + tok[4:],
		strings.Repeat("0", Len),
		Prefix + strings.Repeat("0", 30),
		Prefix + strings.Repeat("é", 15),
	} {
		if WellFormed(bad) {
			t.Errorf("WellFormed(%q) = true", bad)
		}
	}
}

func TestNewReadError(t *testing.T) {
	old := randReader
	t.Cleanup(func() { randReader = old })
	randReader = iotest.ErrReader(errors.New("boom"))
	if tok, err := New(); err == nil || tok != "" {
		t.Fatalf("New() = %q, %v; want error", tok, err)
	}
	// A source producing only rejected bytes, then EOF, errors too.
	randReader = bytes.NewReader(bytes.Repeat([]byte{250}, 1000))
	if _, err := New(); err == nil {
		t.Fatal("New() succeeded with exhausted source")
	}
}

func TestDigest(t *testing.T) {
	tok, err := New()
	if err != nil {
		t.Fatal(err)
	}
	k1 := bytes.Repeat([]byte{1}, 32)
	k2 := bytes.Repeat([]byte{2}, 32)
	d1, d1b, d2 := Digest(k1, tok), Digest(k1, tok), Digest(k2, tok)
	if len(d1) != 32 {
		t.Fatalf("len(Digest) = %d, want 32", len(d1))
	}
	if !Equal(d1, d1b) {
		t.Fatal("Digest is not deterministic")
	}
	if Equal(d1, d2) {
		t.Fatal("Digest does not depend on the key")
	}
	other, _ := New()
	if Equal(d1, Digest(k1, other)) {
		t.Fatal("Digest does not depend on the token")
	}
	// RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
	const want = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
	if got := Digest([]byte("Jefe"), "what do ya want for nothing?"); hex.EncodeToString(got) != want {
		t.Fatalf("Digest = %x, want %s", got, want)
	}
}

func TestEqual(t *testing.T) {
	for _, tc := range []struct {
		a, b []byte
		want bool
	}{
		{[]byte("abc"), []byte("abc"), true},
		{[]byte("abc"), []byte("abd"), false},
		{[]byte("abc"), []byte("ab"), false},
		{nil, nil, false},
		{[]byte{}, nil, false},
		{nil, []byte("a"), false},
	} {
		if got := Equal(tc.a, tc.b); got != tc.want {
			t.Errorf("Equal(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func BenchmarkNew(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := New(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWellFormedAndDigest is the per-request cost of checking a
// presented token before the database lookup.
func BenchmarkWellFormedAndDigest(b *testing.B) {
	tok, err := New()
	if err != nil {
		b.Fatal(err)
	}
	key := bytes.Repeat([]byte{7}, 32)
	want := Digest(key, tok)
	b.ReportAllocs()
	for b.Loop() {
		if !WellFormed(tok) || !Equal(Digest(key, tok), want) {
			b.Fatal("token rejected")
		}
	}
}
