package httpapi

import (
	"bytes"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/smtpcreds/smtpcreds/gen"
	"github.com/smtpcreds/smtpcreds/internal/apitoken"
	"github.com/smtpcreds/smtpcreds/internal/basicauth"
	"github.com/smtpcreds/smtpcreds/internal/credentials"
	"github.com/smtpcreds/smtpcreds/internal/validation"
)

// Micro-benchmarks of per-request costs (issue 5 budgets: validation
// <= 20 µs and <= 150 allocs, authentication without the database <= 20 µs).
// They time the pieces NewServer wires, in isolation; make bench reports them.

// validatorServer is a bare Echo with the request validator of NewServer in
// front of a handler that does nothing.
func validatorServer(b *testing.B) *echo.Echo {
	spec, err := gen.GetSpec()
	if err != nil {
		b.Fatal(err)
	}
	spec.Servers = nil
	e := echo.New()
	e.HTTPErrorHandler = (&errorHandler{log: discardLogger()}).handle
	e.Use(requestValidator(spec, func(echo.Context) bool { return false }))
	// The API's routes, as gen registers them, each doing nothing.
	for path, item := range spec.Paths.Map() {
		for method := range item.Operations() {
			e.Add(method, echoPath(path), func(c echo.Context) error { return c.NoContent(http.StatusOK) })
		}
	}
	return e
}

func benchRequest(b *testing.B, e *echo.Echo, method, target, body string, want int) {
	b.ReportAllocs()
	for b.Loop() {
		var r *http.Request
		if body != "" {
			r = httptest.NewRequest(method, target, strings.NewReader(body))
		} else {
			r = httptest.NewRequest(method, target, nil)
		}
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		e.ServeHTTP(w, r)
		if w.Code != want {
			b.Fatalf("status %d, want %d: %s", w.Code, want, w.Body)
		}
	}
}

func BenchmarkRequestValidationCreate(b *testing.B) {
	benchRequest(b, validatorServer(b), "POST", "/api/domains/example.com/credentials", `{"username":"myuser"}`, http.StatusOK)
}

func BenchmarkRequestValidationList(b *testing.B) {
	benchRequest(b, validatorServer(b), "GET", "/api/domains/example.com/credentials?page=2&limit=50", "", http.StatusOK)
}

// BenchmarkErrorEnvelope422 is the validator finding a bad parameter and
// the error handler writing the 422 envelope.
func BenchmarkErrorEnvelope422(b *testing.B) {
	benchRequest(b, validatorServer(b), "GET", "/api/domains/example.com/credentials?limit=500", "", http.StatusUnprocessableEntity)
}

// BenchmarkErrorEnvelopeDomain is a domain error through the one error handler.
func BenchmarkErrorEnvelopeDomain(b *testing.B) {
	h := &errorHandler{log: discardLogger()}
	e := echo.New()
	errs := []error{credentials.ErrDomainNotFound, validation.New("username", "The username has already been taken."), errUnauthorized}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c := e.NewContext(httptest.NewRequest("GET", "/", nil), httptest.NewRecorder())
		h.handle(errs[i%len(errs)], c)
		i++
	}
}

// BenchmarkAuthenticationNoDB is what authenticating a request costs besides
// the account lookup: parse the header, check the token's form and checksum,
// HMAC it and compare in constant time.
func BenchmarkAuthenticationNoDB(b *testing.B) {
	key := bytes.Repeat([]byte{7}, 32)
	tok, err := apitoken.New()
	if err != nil {
		b.Fatal(err)
	}
	stored := apitoken.Digest(key, tok)
	header := "Basic " + base64.StdEncoding.EncodeToString([]byte("acme:"+tok))
	b.ReportAllocs()
	for b.Loop() {
		user, pass, ok := basicauth.Parse(header)
		if !ok || user != "acme" || !apitoken.WellFormed(pass) || !apitoken.Equal(apitoken.Digest(key, pass), stored) {
			b.Fatal(errors.New("authentication failed"))
		}
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// The validator finds a request's route among the operations of the path
// Echo matched, by echoPath: every route gen registers must be one of them,
// or the validator falls back to trying every path.
func TestValidatorHasARouterForEveryRoute(t *testing.T) {
	t.Parallel()
	spec, err := gen.GetSpec()
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]bool{}
	for p := range spec.Paths.Map() {
		paths[echoPath(p)] = true
	}
	e := echo.New()
	gen.RegisterHandlers(e, gen.NewStrictHandler(&Handler{}, nil))
	if len(e.Routes()) == 0 {
		t.Fatal("gen registered no routes")
	}
	for _, r := range e.Routes() {
		if !paths[r.Path] {
			t.Errorf("route %s %s has no path of the spec as echoPath spells it (paths: %v)", r.Method, r.Path, paths)
		}
	}
	if got := echoPath("/api/domains/{domain}/credentials/{guid}/reset-password"); got != "/api/domains/:domain/credentials/:guid/reset-password" {
		t.Errorf("echoPath = %q", got)
	}
}
