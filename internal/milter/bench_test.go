package milter

import (
	"crypto/rand"
	"crypto/rsa"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/relaytest"
)

// BenchmarkRelay sends messages through a real Postfix at concurrency 16
// (8 sessions per core on this benchmark's GOMAXPROCS of 2; each session
// authenticates once and sends message after message), without the milter
// ("plain") and with it ("milter"). make bench reports the ratio of their
// rates and the milter's added p50/p99 (p50-ms, p99-ms: from MAIL FROM to
// the end of DATA, as a client waits).
func BenchmarkRelay(b *testing.B) {
	w := newWorld(b)
	w.account("shop")
	w.domain("shop", "shop.example", true)
	w.credential("shop", "shop.example", "bench")
	_, addr := w.milter(Config{}) // no limits: the bench measures the work, not the policy
	const login = "bench@shop.example"
	relays := map[string]*relaytest.Relay{
		"plain":  relaytest.Start(b, relaytest.Options{Milter: "", Logins: w.logins}),
		"milter": relaytest.Start(b, relaytest.Options{Milter: addr, Logins: w.logins}),
	}
	msg := message("<"+login+">", "bench", "X-Pad: "+strings.Repeat("x", 200)) + strings.Repeat("a body line of a typical message, about sixty bytes long..\r\n", 150)
	for _, name := range []string{"plain", "milter"} {
		r := relays[name]
		b.Run(name, func(b *testing.B) {
			var mu sync.Mutex
			var lat []time.Duration
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				c, err := r.Dial(b, login, w.logins[login])
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				var mine []time.Duration
				for pb.Next() {
					start := time.Now()
					if err := relaytest.Send(c, login, []string{"x@rcpt.example"}, msg); err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, time.Since(start))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			b.StopTimer()
			if len(lat) > 0 {
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			}
		})
	}
}

// BenchmarkSign is the DKIM cost of one ~10 KB message: a 2048-bit RSA
// signature over headers hashed as they stream.
func BenchmarkSign(b *testing.B) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	d := &domain{found: true, Name: "shop.example", Selector: "s1", Key: key}
	d.Verified, d.Active = true, true
	headers := []field{{"From", " <a@shop.example>"}, {"To", " <b@rcpt.example>"}, {"Subject", " hello"},
		{"Date", " Wed, 02 Dec 2026 12:00:00 +0000"}, {"Message-ID", " <x@client.test>"}}
	body := []byte(strings.Repeat("a body line of a typical message, about sixty bytes long..\r\n", 160))
	b.ReportAllocs()
	for b.Loop() {
		s, err := startSigning(d, headers)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.write(body); err != nil {
			b.Fatal(err)
		}
		if _, err := s.finish(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMilterMessage is the milter's own cost of one authenticated
// message (a session each, as go-milter's client plays Postfix): the
// protocol, the policy on cached logins and domains, the signature, and
// the statement that counts and logs it.
func BenchmarkMilterMessage(b *testing.B) {
	w := newWorld(b)
	w.account("shop")
	w.domain("shop", "shop.example", true)
	w.credential("shop", "shop.example", "bench")
	_, addr := w.milter(Config{})
	const login = "bench@shop.example"
	tx := transaction{login: login, sender: login, rcpts: []string{"x@rcpt.example"},
		headers: headersOf("<"+login+">", "bench"),
		body:    strings.Repeat("a body line of a typical message, about sixty bytes long..\r\n", 150)}
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if o := run(b, addr, tx); !o.accepted() {
				b.Errorf("refused: %+v", o.act)
				return
			}
		}
	})
}
