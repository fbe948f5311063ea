// Package webhook is the sync target that posts each batch of events to a
// sync agent on another host, for auth backends smtpcreds cannot write itself.
//
// Target (target.go) is the target; Sender delivers: each
// delivery is one HTTP POST of a JSON body, signed with HMAC-SHA256 over a
// timestamp and the body so that the agent can check who sent it and refuse
// replays of old deliveries.
//
// The signature header has the form
//
//	X-Smtpcreds-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>
//
// and X-Smtpcreds-Delivery carries an id that is the same for every attempt
// of one delivery, so that a receiver can drop redeliveries. Receivers check
// the signature with Verify. The signature covers the timestamp and the body
// only, not the delivery header: a receiver that deduplicates should use an
// id carried in the (signed) body, and must itself drop replays of a
// delivery within the timestamp tolerance.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Header names and values of a delivery.
const (
	DeliveryHeader  = "X-Smtpcreds-Delivery"
	SignatureHeader = "X-Smtpcreds-Signature"
	UserAgent       = "smtpcreds"
)

// MinSecretLen is the shortest secret New and Verify accept, in bytes.
const MinSecretLen = 16

// DefaultTimeout bounds a delivery when New is given no timeout.
const DefaultTimeout = 5 * time.Second

// maxSnippet is how much of a failed response's body an error quotes;
// maxDrain is how much more is read so that the connection can be reused.
const (
	maxSnippet = 200
	maxDrain   = 64 << 10
)

// Verification errors; Verify wraps them, test with errors.Is.
var (
	// ErrMalformedSignature means the header is not "t=<digits>,v1=<64 hex>".
	ErrMalformedSignature = errors.New("webhook: malformed signature header")
	// ErrStaleSignature means the timestamp is further than the tolerance
	// from now, in either direction.
	ErrStaleSignature = errors.New("webhook: signature timestamp outside tolerance")
	// ErrBadSignature means no signature in the header matches.
	ErrBadSignature = errors.New("webhook: signature mismatch")
)

// StatusError is the error Send returns when the receiver answers with a
// status other than 2xx (a 3xx included: redirects are never followed).
type StatusError struct {
	// StatusCode is the response's status code.
	StatusCode int
	// Status is the response's status line text, e.g. "500 Internal Server Error".
	Status string
	// Body is at most the first 200 bytes of the response body, with control
	// characters removed and invalid UTF-8 replaced.
	Body string
}

// Error names the status and quotes the body snippet.
func (e *StatusError) Error() string {
	msg := "webhook: receiver answered " + e.Status
	if e.Body != "" {
		msg += ": " + strconv.Quote(e.Body)
	}
	return msg
}

// Sender posts signed deliveries to one URL. It is safe for concurrent use.
type Sender struct {
	url    string
	secret []byte
	client *http.Client
}

// New returns a Sender posting to rawURL, which must be an absolute http or
// https URL with a host, signing with secret (at least MinSecretLen bytes; it
// is copied). timeout bounds each Send as a whole, connection, request and
// reading the response; 0 means DefaultTimeout. New returns an error for a
// bad URL, a short secret or a negative timeout; the error never contains
// the secret (nor a password in the URL).
func New(rawURL string, secret []byte, timeout time.Duration) (*Sender, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, errors.New("webhook: invalid URL") // the url error would echo the URL, password included
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("webhook: URL %s: scheme must be http or https", u.Redacted())
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("webhook: URL %s has no host", u.Redacted())
	}
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("webhook: secret must be at least %d bytes", MinSecretLen)
	}
	if timeout < 0 {
		return nil, fmt.Errorf("webhook: negative timeout %v", timeout)
	}
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	return &Sender{
		url:    u.String(),
		secret: bytes.Clone(secret),
		client: &http.Client{
			Transport: transport,
			Timeout:   timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}, nil
}

// Send posts body (JSON) once, with Content-Type application/json, User-Agent
// smtpcreds, X-Smtpcreds-Delivery: deliveryID and an X-Smtpcreds-Signature
// made with Sign at the current time. It returns nil only when the receiver
// answers 2xx. It returns a *StatusError for any other status (a redirect is
// not followed and fails), the transport error if the request fails or
// times out, or an error wrapping ctx.Err() if ctx ends first. deliveryID
// must be 1-200 printable ASCII characters. Send does not retry; the
// response body is always drained (up to a bound) and closed.
func (s *Sender) Send(ctx context.Context, deliveryID string, body []byte) error {
	if !validDeliveryID(deliveryID) {
		return errors.New("webhook: delivery id must be 1-200 printable ASCII characters")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook: delivery %s: %w", deliveryID, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", UserAgent)
	req.Header.Set(DeliveryHeader, deliveryID)
	req.Header.Set(SignatureHeader, Sign(s.secret, time.Now(), body))

	resp, err := s.client.Do(req)
	if err != nil {
		// *url.Error: names the method and URL (password redacted).
		return fmt.Errorf("webhook: delivery %s: %w", deliveryID, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
		return nil
	}
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, maxSnippet))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	return fmt.Errorf("webhook: delivery %s: %w", deliveryID, &StatusError{
		StatusCode: resp.StatusCode,
		Status:     status(resp),
		Body:       clean(snippet),
	})
}

func status(resp *http.Response) string {
	if resp.Status != "" {
		return clean([]byte(resp.Status))
	}
	return strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode)
}

func validDeliveryID(id string) bool {
	if len(id) == 0 || len(id) > 200 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// clean makes untrusted response text safe to log: invalid UTF-8 becomes
// U+FFFD and control characters are dropped.
func clean(b []byte) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(string(b), "\uFFFD"))
}

// Sign returns the X-Smtpcreds-Signature value for body sent at t:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>".
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// maxHeaderLen bounds the signature header Verify parses (a few v1 values).
const maxHeaderLen = 1024

// Verify checks a received X-Smtpcreds-Signature header against body, for
// receivers (and tests). The header holds comma-separated key=value pairs:
// exactly one t (unix seconds, digits only) and one or more v1 (64 hex
// digits; several allow a sender to sign with more than one secret during a
// rotation); other keys are ignored, for future signature versions. It
// returns nil if some v1 equals the HMAC computed with secret (compared in
// constant time) and t is within tolerance of now, in either direction.
//
// Otherwise it returns an error wrapping ErrMalformedSignature (bad syntax,
// or a header longer than 1024 bytes), ErrStaleSignature, or
// ErrBadSignature. A secret shorter than MinSecretLen or a tolerance that is
// not positive is an error, never a success.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if len(secret) < MinSecretLen {
		return fmt.Errorf("webhook: secret must be at least %d bytes", MinSecretLen)
	}
	if tolerance <= 0 {
		return errors.New("webhook: tolerance must be positive")
	}
	if len(header) > maxHeaderLen {
		return fmt.Errorf("%w: too long", ErrMalformedSignature)
	}
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(part, "=")
		if !ok || k == "" || v == "" {
			return fmt.Errorf("%w: %q is not key=value", ErrMalformedSignature, part)
		}
		switch k {
		case "t":
			if ts != "" {
				return fmt.Errorf("%w: more than one t", ErrMalformedSignature)
			}
			if len(v) > 18 || strings.Trim(v, "0123456789") != "" {
				return fmt.Errorf("%w: bad timestamp", ErrMalformedSignature)
			}
			ts = v
		case "v1":
			sig, err := hex.DecodeString(v)
			if err != nil || len(sig) != sha256.Size {
				return fmt.Errorf("%w: v1 is not %d hex digits", ErrMalformedSignature, 2*sha256.Size)
			}
			sigs = append(sigs, sig)
		}
	}
	if ts == "" || len(sigs) == 0 {
		return fmt.Errorf("%w: t and v1 are required", ErrMalformedSignature)
	}
	sec, _ := strconv.ParseInt(ts, 10, 64) // at most 18 digits: fits
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrStaleSignature
	}
	want := mac(secret, ts, body)
	match := false
	for _, sig := range sigs { // no early exit: every candidate is compared
		if hmac.Equal(want, sig) {
			match = true
		}
	}
	if !match {
		return ErrBadSignature
	}
	return nil
}
