package webhook

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var secret = []byte("0123456789abcdef-test-secret")

func newSender(t *testing.T, url string, timeout time.Duration) *Sender {
	t.Helper()
	s, err := New(url, secret, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// server starts an httptest server on 127.0.0.1 (httptest's default).
func server(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Fatalf("test server not on 127.0.0.1: %s", srv.URL)
	}
	return srv
}

func noSecret(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), string(secret)) {
		t.Fatalf("error reveals the secret: %v", err)
	}
}

func TestSendSuccess(t *testing.T) {
	body := []byte(`{"delivery_id":"jobs-1-3-3","events":[]}`)
	var got atomic.Int32
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch {
		case r.Method != http.MethodPost:
			t.Errorf("method %s", r.Method)
		case r.Header.Get("Content-Type") != "application/json":
			t.Errorf("Content-Type %q", r.Header.Get("Content-Type"))
		case r.Header.Get("User-Agent") != "smtpcreds":
			t.Errorf("User-Agent %q", r.Header.Get("User-Agent"))
		case r.Header.Get(DeliveryHeader) != "jobs-1-3-3":
			t.Errorf("delivery %q", r.Header.Get(DeliveryHeader))
		case string(b) != string(body):
			t.Errorf("body %q", b)
		}
		if err := Verify(secret, r.Header.Get(SignatureHeader), b, time.Now(), time.Minute); err != nil {
			t.Errorf("Verify: %v", err)
		}
		got.Add(1)
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, strings.Repeat("ok", 1000))
	})
	s := newSender(t, srv.URL+"/sync", time.Second)
	for range 2 { // the second reuses the drained connection
		if err := s.Send(context.Background(), "jobs-1-3-3", body); err != nil {
			t.Fatal(err)
		}
	}
	if got.Load() != 2 {
		t.Fatalf("server saw %d requests", got.Load())
	}
}

func TestSendFailures(t *testing.T) {
	var redirected atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/500", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, "db down\r\n\x1b[31mred\x00"+strings.Repeat("x", 500))
	})
	mux.HandleFunc("/302", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/target", http.StatusFound)
	})
	mux.HandleFunc("/target", func(w http.ResponseWriter, r *http.Request) {
		redirected.Add(1)
	})
	mux.HandleFunc("/404", func(w http.ResponseWriter, r *http.Request) {
		http.NotFound(w, r)
	})
	srv := server(t, mux.ServeHTTP)

	err := newSender(t, srv.URL+"/500", time.Second).Send(context.Background(), "d1", []byte(`{}`))
	var se *StatusError
	if !errors.As(err, &se) || se.StatusCode != 500 {
		t.Fatalf("500: %v", err)
	}
	if !strings.Contains(err.Error(), "500 Internal Server Error") || !strings.Contains(err.Error(), "d1") {
		t.Fatalf("error does not name the status and delivery: %v", err)
	}
	if len(se.Body) > 200 || !strings.HasPrefix(se.Body, "db down[31mred") {
		t.Fatalf("snippet %q (%d bytes)", se.Body, len(se.Body))
	}
	for _, r := range se.Body {
		if r < 0x20 || r == 0x7f {
			t.Fatalf("snippet keeps control character %q", r)
		}
	}
	noSecret(t, err)

	err = newSender(t, srv.URL+"/302", time.Second).Send(context.Background(), "d2", []byte(`{}`))
	if !errors.As(err, &se) || se.StatusCode != http.StatusFound || !strings.Contains(err.Error(), "302") {
		t.Fatalf("302: %v", err)
	}
	if redirected.Load() != 0 {
		t.Fatal("redirect was followed")
	}
	noSecret(t, err)

	err = newSender(t, srv.URL+"/404", time.Second).Send(context.Background(), "d3", []byte(`{}`))
	if !errors.As(err, &se) || se.StatusCode != 404 {
		t.Fatalf("404: %v", err)
	}

	if err := newSender(t, srv.URL, time.Second).Send(context.Background(), "bad\nid", nil); err == nil {
		t.Fatal("delivery id with a newline accepted")
	}
	if err := newSender(t, srv.URL, time.Second).Send(context.Background(), "", nil); err == nil {
		t.Fatal("empty delivery id accepted")
	}
}

// hangingServer never answers until the client goes away or the test ends.
func hangingServer(t *testing.T) *httptest.Server {
	release := make(chan struct{})
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	return srv
}

func TestSendTimeout(t *testing.T) {
	srv := hangingServer(t)
	s := newSender(t, srv.URL, 200*time.Millisecond)
	start := time.Now()
	err := s.Send(context.Background(), "d", []byte(`{}`))
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("Send to a hanging server succeeded")
	}
	if elapsed > 3*time.Second {
		t.Fatalf("Send took %v with a 200ms timeout", elapsed)
	}
	noSecret(t, err)
	t.Logf("after %v: %v", elapsed, err)
}

func TestSendContextCancel(t *testing.T) {
	srv := hangingServer(t)
	s := newSender(t, srv.URL, time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	err := s.Send(ctx, "d", []byte(`{}`))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Send: %v, want context.Canceled", err)
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Fatalf("Send took %v after cancellation", elapsed)
	}
}

func TestNew(t *testing.T) {
	for _, u := range []string{"", "ftp://h/x", "h/x", "http://", "http:///x", "https://:80/x", "://x", "http://user:hunter2@[::1"} {
		s, err := New(u, secret, 0)
		if err == nil {
			t.Errorf("New(%q) succeeded", u)
		} else if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("New(%q): error reveals the URL password: %v", u, err)
		}
		_ = s
	}
	if _, err := New("http://127.0.0.1/x", secret[:15], 0); err == nil {
		t.Error("15-byte secret accepted")
	}
	if _, err := New("http://127.0.0.1/x", secret, -time.Second); err == nil {
		t.Error("negative timeout accepted")
	}
	s, err := New("https://127.0.0.1:8443/x", secret, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s.client.Timeout != DefaultTimeout {
		t.Errorf("default timeout %v", s.client.Timeout)
	}
	// The secret is copied.
	sec := append([]byte(nil), secret...)
	s, _ = New("http://127.0.0.1/x", sec, 0)
	sec[0] ^= 0xff
	if string(s.secret) != string(secret) {
		t.Error("Sender shares the caller's secret slice")
	}
}

func TestSignKnownVector(t *testing.T) {
	// printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac '0123456789abcdef'
	got := Sign([]byte("0123456789abcdef"), time.Unix(1700000000, 999), []byte(`{"a":1}`))
	want := "t=1700000000,v1=9eb18f493f8ec135d9eb2dad817c369bb4e9cbfa818657897a7437c1cd8c3a23"
	if got != want {
		t.Fatalf("Sign = %s\nwant   %s", got, want)
	}
}

func TestVerify(t *testing.T) {
	now := time.Unix(1700000000, 0)
	body := []byte(`{"events":[1]}`)
	h := Sign(secret, now, body)
	tol := 5 * time.Minute
	if err := Verify(secret, h, body, now.Add(time.Minute), tol); err != nil {
		t.Fatalf("valid signature: %v", err)
	}
	other := Sign([]byte("another-secret-of-16+"), now, body)
	if err := Verify(secret, other+","+strings.TrimPrefix(h, "t=1700000000,"), body, now, tol); err != nil {
		t.Fatalf("rotation (two v1): %v", err)
	}
	if err := Verify(secret, h+",v0=whatever", body, now, tol); err != nil {
		t.Fatalf("unknown key: %v", err)
	}

	cases := []struct {
		name   string
		secret []byte
		header string
		body   string
		now    time.Time
		want   error
	}{
		{"modified body", secret, h, `{"events":[2]}`, now, ErrBadSignature},
		{"other secret", []byte("another-secret-of-16+"), h, string(body), now, ErrBadSignature},
		{"signed with other secret", secret, other, string(body), now, ErrBadSignature},
		{"old timestamp", secret, h, string(body), now.Add(tol + time.Second), ErrStaleSignature},
		{"future timestamp", secret, h, string(body), now.Add(-tol - time.Second), ErrStaleSignature},
		{"timestamp changed", secret, strings.Replace(h, "t=1700000000", "t=1700000001", 1), string(body), now, ErrBadSignature},
		{"empty", secret, "", string(body), now, ErrMalformedSignature},
		{"no v1", secret, "t=1700000000", string(body), now, ErrMalformedSignature},
		{"no t", secret, h[len("t=1700000000,"):], string(body), now, ErrMalformedSignature},
		{"two t", secret, "t=1700000000," + h, string(body), now, ErrMalformedSignature},
		{"negative t", secret, strings.Replace(h, "t=", "t=-", 1), string(body), now, ErrMalformedSignature},
		{"huge t", secret, strings.Replace(h, "t=", "t=99999999999999999999", 1), string(body), now, ErrMalformedSignature},
		{"short v1", secret, h[:len(h)-2], string(body), now, ErrMalformedSignature},
		{"non-hex v1", secret, h[:len(h)-1] + "g", string(body), now, ErrMalformedSignature},
		{"spaces", secret, strings.Replace(h, ",", ", ", 1), string(body), now, ErrMalformedSignature},
		{"no equals", secret, h + ",junk", string(body), now, ErrMalformedSignature},
		{"too long", secret, h + strings.Repeat(","+h[len("t=1700000000,"):], 20), string(body), now, ErrMalformedSignature},
	}
	for _, c := range cases {
		if err := Verify(c.secret, c.header, []byte(c.body), c.now, tol); !errors.Is(err, c.want) {
			t.Errorf("%s: Verify = %v, want %v", c.name, err, c.want)
		}
	}
	if err := Verify(secret[:8], h, body, now, tol); err == nil {
		t.Error("short secret verified")
	}
	if err := Verify(secret, h, body, now, 0); err == nil {
		t.Error("zero tolerance verified")
	}
}
