package password

import "testing"

func BenchmarkGenerate(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Generate(); err != nil {
			b.Fatal(err)
		}
	}
}

func benchmarkHash(b *testing.B, s Scheme) {
	pw, err := Generate()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Hash(s, pw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHashSSHA512(b *testing.B)     { benchmarkHash(b, SSHA512) }
func BenchmarkHashSHA512Crypt(b *testing.B) { benchmarkHash(b, SHA512Crypt) }
func BenchmarkHashBLFCrypt(b *testing.B)    { benchmarkHash(b, BLFCrypt) }
func BenchmarkHashArgon2ID(b *testing.B)    { benchmarkHash(b, Argon2ID) }

// BenchmarkGenerateAndHash measures the whole "new credential" path:
// generate a password and hash it for the passdb.
func BenchmarkGenerateAndHash(b *testing.B) {
	for _, s := range []Scheme{SSHA512, SHA512Crypt} {
		b.Run(string(s), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				pw, err := Generate()
				if err != nil {
					b.Fatal(err)
				}
				if _, err := Hash(s, pw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
