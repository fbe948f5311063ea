// Package httpapi is the HTTP face of smtpcreds: thin handlers that fill the
// generated strict-server interface, so that the wire contract lives in gen.
//
// It wires authentication, rate limits and request validation around the
// handlers, and is the only place that writes error envelopes. It is the
// only package besides tests that imports gen.
package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	oapimw "github.com/oapi-codegen/echo-middleware"

	"github.com/smtpcreds/smtpcreds"
	"github.com/smtpcreds/smtpcreds/gen"
	"github.com/smtpcreds/smtpcreds/internal/accounts"
	"github.com/smtpcreds/smtpcreds/internal/credentials"
	"github.com/smtpcreds/smtpcreds/internal/docs"
	"github.com/smtpcreds/smtpcreds/internal/domains"
	"github.com/smtpcreds/smtpcreds/internal/metrics"
	"github.com/smtpcreds/smtpcreds/internal/ratelimit"
	"github.com/smtpcreds/smtpcreds/internal/relay"
)

// MaxBodyBytes is the largest request body accepted; larger ones get 413.
const MaxBodyBytes = 16 << 10

// Deps are the services the API calls.
type Deps struct {
	Accounts    *accounts.Service
	Credentials *credentials.Service
	Domains     *domains.Service
	Limiter     *ratelimit.Limiter
	// Relay answers the quota and the message log.
	Relay  *relay.Service
	Logger *slog.Logger
	// TrustedProxies are the peers whose X-Forwarded-For is believed when
	// taking the client address; empty means the TCP peer is the client.
	TrustedProxies []netip.Prefix
	// Metrics records requests, rejections and failures (nil: off).
	Metrics *metrics.Metrics
	// Ready reports the readiness checks served at /readyz: each check's
	// name and "ok" or what is wrong. Nil means always ready.
	Ready func(ctx context.Context) map[string]string
	// RequestTimeout bounds each API request, database work included, so
	// that an unreachable database fails requests fast (0: 10 s).
	RequestTimeout time.Duration
}

// Handler implements the generated strict-server interface.
type Handler struct {
	credentials *credentials.Service
	domains     *domains.Service
	relay       *relay.Service
}

var _ gen.StrictServerInterface = (*Handler)(nil)

// NewServer builds the whole HTTP API: the same constructor serves main and
// the tests. The spec is parsed and the validator's router built once here.
func NewServer(d Deps) (*echo.Echo, error) {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	spec, err := gen.GetSpec()
	if err != nil {
		return nil, fmt.Errorf("load embedded spec: %w", err)
	}
	spec.Servers = nil // routes are matched on paths only

	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.IPExtractor = ipExtractor(d.TrustedProxies)
	if d.RequestTimeout <= 0 {
		d.RequestTimeout = 10 * time.Second
	}
	eh := &errorHandler{log: d.Logger, metrics: d.Metrics}
	e.HTTPErrorHandler = eh.handle
	// isAPIRoute is true when the request matched one of the API's routes
	// with its method, so that authentication and validation leave 404 and
	// 405 to Echo.

	e.Use(requestLog(d.Logger, d.Metrics))
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisableStackAll: true, DisablePrintStack: true}))
	e.Use(middleware.BodyLimit(fmt.Sprintf("%dB", MaxBodyBytes)))
	e.Use(answerOptions)
	routes := map[string]bool{}
	isAPIRoute := func(c echo.Context) bool {
		return routes[c.Path()] && c.Get(echo.ContextKeyHeaderAllow) == nil
	}
	e.Use(timeout(d.RequestTimeout, isAPIRoute))
	e.Use(authenticate(d.Accounts, d.Limiter, isAPIRoute))
	e.Use(jsonSentAsForm(func(c echo.Context) bool { return !isAPIRoute(c) }))
	e.Use(emptyArrayAsNoBody(func(c echo.Context) bool {
		return !isAPIRoute(c) || c.Path() != "/api/domains/:domain/credentials/:credential/reset-password"
	}))
	e.Use(requestValidator(spec, func(c echo.Context) bool { return !isAPIRoute(c) }))

	gen.RegisterHandlers(e, gen.NewStrictHandler(&Handler{credentials: d.Credentials, domains: d.Domains, relay: d.Relay}, nil))
	for _, r := range e.Routes() {
		routes[r.Path] = true
	}
	// Operational routes: unauthenticated, outside the rate limit.
	e.GET("/healthz", healthz)
	e.GET("/readyz", readyz(d.Ready))
	// The root leads a browser (or a curl -L) to the API reference.
	e.Match([]string{http.MethodGet, http.MethodHead}, "/", func(c echo.Context) error {
		return c.Redirect(http.StatusFound, "/docs")
	})
	// The spec and its interactive reference, served from the binary.
	dh := echo.WrapHandler(docs.Handler(smtpcreds.OpenAPI))
	for _, p := range docs.Paths() {
		e.Match([]string{http.MethodGet, http.MethodHead}, p, dh)
	}
	return e, nil
}

// requestValidator checks requests against the spec (built once, here):
// schemas, parameters and bodies; the uuid format; several findings at once.
// Authentication is not its job (authenticate ran already). skip exempts
// requests that are not API routes.
func requestValidator(spec *openapi3.T, skip func(echo.Context) bool) echo.MiddlewareFunc {
	opts := &oapimw.Options{
		MultiErrorHandler: func(me openapi3.MultiError) *echo.HTTPError { return &echo.HTTPError{Code: 400, Internal: me} },
		Options: openapi3filter.Options{
			AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
			MultiError:         true,
			KeepValidatedValue: true,
			SchemaValidationOptions: []openapi3.SchemaValidationOption{
				openapi3.WithStringFormatValidator("uuid",
					openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringForUUIDOfRFC9562)),
			},
		},
	}
	all, err := gorillamux.NewRouter(spec)
	if err != nil {
		panic(fmt.Sprintf("httpapi: the validator's router: %v", err)) // the embedded spec is checked by the tests
	}
	// Echo has matched the route before this middleware runs: the request
	// is looked up among the operations of that one path (one regexp)
	// instead of every path's in turn, by a router of the same kind, so
	// that path parameters come out the same.
	byPath := map[string]routers.Router{}
	for path, item := range spec.Paths.Map() {
		one := *spec
		one.Paths = openapi3.NewPaths(openapi3.WithPath(path, item))
		r, err := gorillamux.NewRouter(&one)
		if err != nil {
			panic(fmt.Sprintf("httpapi: the validator's router for %s: %v", path, err))
		}
		byPath[echoPath(path)] = r
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if skip(c) {
				return next(c)
			}
			r := byPath[c.Path()]
			if r == nil {
				r = all
			}
			if err := oapimw.ValidateRequestFromContext(c, r, opts); err != nil {
				return err
			}
			return next(c)
		}
	}
}

// echoPath is an OpenAPI path template as Echo spells it: "{name}"
// becomes ":name".
func echoPath(path string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(path, '{')
		j := strings.IndexByte(path, '}')
		if i < 0 || j < i {
			b.WriteString(path)
			return b.String()
		}
		b.WriteString(path[:i])
		b.WriteString(":" + path[i+1:j])
		path = path[j+1:]
	}
}

// answerOptions answers OPTIONS on a known path with the allowed methods in
// a JSON body, where Echo would send an empty 204: every response is JSON.
func answerOptions(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		allow, ok := c.Get(echo.ContextKeyHeaderAllow).(string)
		if c.Request().Method != http.MethodOptions || !ok {
			return next(c)
		}
		c.Response().Header().Set(echo.HeaderAllow, allow)
		return c.JSON(http.StatusOK, map[string]any{"success": true, "message": "Allowed methods: " + allow})
	}
}

func ipExtractor(trusted []netip.Prefix) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		_, n, err := net.ParseCIDR(p.Masked().String())
		if err == nil {
			opts = append(opts, echo.TrustIPRange(n))
		}
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}
