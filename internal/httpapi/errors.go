package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/labstack/echo/v4"

	"github.com/smtpcreds/smtpcreds/internal/credentials"
	"github.com/smtpcreds/smtpcreds/internal/domains"
	"github.com/smtpcreds/smtpcreds/internal/metrics"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/ratelimit"
	"github.com/smtpcreds/smtpcreds/internal/relay"
	"github.com/smtpcreds/smtpcreds/internal/validation"
)

// Messages of the envelopes in shared/CONTRACT.md.
const (
	msgInternal       = "An error occurred while processing the request."
	msgTooMany        = "Too many attempts. Please try again later."
	msgValidation     = "Validation failed."
	msgDomainNotFound = "Domain not found"
	msgCredNotFound   = "Credential not found"
	msgNotFound       = "Not found"
	msgMethod         = "Method not allowed"
	msgTooLarge       = "The request body is too large (at most 16 KiB)."
	msgMalformed      = "The request body is not valid JSON."
	msgNotObject      = "The request body must be a JSON object."
	msgContentType    = "Unsupported Content-Type: send application/json."
	msgUnreadable     = "The request body could not be read."
	msgUnavailable    = "The service is temporarily unavailable. Please try again later."
	// retryAfterUnavailable is the Retry-After of 503s, in seconds.
	retryAfterUnavailable = "5"
	unauthorizedReason    = "Unauthorized"
)

// The vendor's 404s of the relay routes.
const (
	msgLogDomainNotFound = "Domain not found or you do not own this domain"
	msgNoQuota           = "User quota not found"
)

// errUnauthorized is raised by authenticate for every failed login.
var errUnauthorized = errors.New("unauthorized")

// rateLimited is raised when a limit is exceeded; limit names it for metrics.
type rateLimited struct {
	d     ratelimit.Decision
	limit string
}

func (e *rateLimited) Error() string { return "rate limited" }

// envelope is every error body; fields left empty are omitted.
type envelope struct {
	Success bool                `json:"success"`
	Error   string              `json:"error,omitempty"`
	Message string              `json:"message"`
	Errors  map[string][]string `json:"errors,omitempty"`
}

type errorHandler struct {
	log     *slog.Logger
	metrics *metrics.Metrics
}

// handle is Echo's HTTPErrorHandler: the one place that turns an error into a
// response, through the status table in classify.
func (h *errorHandler) handle(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	status, body := classify(err)
	hdr := c.Response().Header()
	switch {
	case status == http.StatusUnauthorized:
		hdr.Set(echo.HeaderWWWAuthenticate, `Basic realm="smtpcreds"`)
		h.metrics.AuthFailed()
	case status == http.StatusServiceUnavailable:
		hdr.Set("Retry-After", retryAfterUnavailable)
		h.log.WarnContext(c.Request().Context(), "database unavailable",
			"request_id", requestID(c), "method", c.Request().Method, "route", c.Path(), "error", err.Error())
	case status == http.StatusMethodNotAllowed:
		if allow, ok := c.Get(echo.ContextKeyHeaderAllow).(string); ok {
			hdr.Set(echo.HeaderAllow, allow)
		}
	case status == http.StatusInternalServerError:
		h.log.ErrorContext(c.Request().Context(), "request failed",
			"request_id", requestID(c), "method", c.Request().Method, "route", c.Path(), "error", err.Error())
	}
	var rl *rateLimited
	if errors.As(err, &rl) {
		h.metrics.RateLimited(rl.limit)
		hdr.Set("Retry-After", strconv.Itoa(rl.d.RetryAfter))
		hdr.Set("X-RateLimit-Limit", strconv.Itoa(rl.d.Limit))
		hdr.Set("X-RateLimit-Remaining", strconv.Itoa(rl.d.Remaining))
	}
	if err := writeJSON(c, status, body); err != nil {
		h.log.WarnContext(c.Request().Context(), "write error response", "request_id", requestID(c), "error", err.Error())
	}
}

func writeJSON(c echo.Context, status int, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	if c.Request().Method == http.MethodHead {
		return c.NoContent(status)
	}
	return c.JSONBlob(status, b)
}

// classify is the status table: domain sentinels, the validator's and
// Echo's errors map to the contract's envelopes; anything else is a 500.
func classify(err error) (int, envelope) {
	var (
		verr *validation.Error
		ferr *relay.FilterError
		rl   *rateLimited
		herr *echo.HTTPError
	)
	switch {
	case errors.As(err, &verr):
		return http.StatusUnprocessableEntity, envelope{Message: msgValidation, Errors: verr.Fields}
	case errors.As(err, &ferr):
		return http.StatusBadRequest, envelope{Message: ferr.Message}
	case errors.Is(err, relay.ErrLogDomainNotFound):
		return http.StatusNotFound, envelope{Message: msgLogDomainNotFound}
	case errors.Is(err, relay.ErrNoQuota):
		return http.StatusNotFound, envelope{Message: msgNoQuota}
	case errors.Is(err, credentials.ErrDomainNotFound), errors.Is(err, domains.ErrNotFound):
		return http.StatusNotFound, envelope{Message: msgDomainNotFound}
	case errors.Is(err, credentials.ErrNotFound):
		return http.StatusNotFound, envelope{Message: msgCredNotFound}
	case errors.Is(err, errUnauthorized):
		return http.StatusUnauthorized, envelope{Error: unauthorizedReason, Message: unauthorizedReason}
	case errors.As(err, &rl):
		return http.StatusTooManyRequests, envelope{Message: msgTooMany}
	case errors.As(err, &herr):
		if herr.Internal != nil && isValidatorError(herr.Internal) {
			return classifyValidator(herr.Internal)
		}
		return classifyHTTP(herr)
	case postgres.IsUnavailable(err):
		return http.StatusServiceUnavailable, envelope{Message: msgUnavailable}
	}
	return http.StatusInternalServerError, envelope{Message: msgInternal}
}

func classifyHTTP(herr *echo.HTTPError) (int, envelope) {
	switch herr.Code {
	case http.StatusNotFound:
		return http.StatusNotFound, envelope{Message: msgNotFound}
	case http.StatusMethodNotAllowed:
		return http.StatusMethodNotAllowed, envelope{Message: msgMethod}
	case http.StatusRequestEntityTooLarge:
		return http.StatusRequestEntityTooLarge, envelope{Message: msgTooLarge}
	case http.StatusBadRequest:
		// Echo's binder: malformed JSON or form data.
		return http.StatusBadRequest, envelope{Message: msgMalformed}
	case http.StatusUnsupportedMediaType:
		return http.StatusBadRequest, envelope{Message: msgContentType}
	}
	if herr.Code >= 400 && herr.Code < 500 {
		return herr.Code, envelope{Message: http.StatusText(herr.Code)}
	}
	return http.StatusInternalServerError, envelope{Message: msgInternal}
}

func isValidatorError(err error) bool {
	var (
		re *openapi3filter.RequestError
		me openapi3.MultiError
	)
	return errors.As(err, &re) || errors.As(err, &me)
}

// classifyValidator turns the request validator's findings into one
// response: a malformed body or path wins over field errors; field errors are
// gathered into one 422. Messages are built from the spec, never from the
// submitted value.
func classifyValidator(err error) (int, envelope) {
	fields := &validation.Error{}
	status := 0
	var worst envelope
	for _, re := range requestErrors(err) {
		st, env := classifyRequestError(re, fields)
		if st != http.StatusUnprocessableEntity && (status == 0 || st < status) {
			status, worst = st, env
		}
	}
	if status != 0 {
		return status, worst
	}
	if len(fields.Fields) == 0 {
		return http.StatusBadRequest, envelope{Message: msgMalformed}
	}
	return http.StatusUnprocessableEntity, envelope{Message: msgValidation, Errors: fields.Fields}
}

// requestErrors flattens the validator's findings. A RequestError unwraps to
// its own MultiError of schema errors, so it is taken before looking for one.
func requestErrors(err error) []*openapi3filter.RequestError {
	if re, ok := err.(*openapi3filter.RequestError); ok {
		return []*openapi3filter.RequestError{re}
	}
	if me, ok := err.(openapi3.MultiError); ok {
		var out []*openapi3filter.RequestError
		for _, e := range me {
			out = append(out, requestErrors(e)...)
		}
		return out
	}
	var re *openapi3filter.RequestError
	if errors.As(err, &re) {
		return []*openapi3filter.RequestError{re}
	}
	return nil
}

func classifyRequestError(re *openapi3filter.RequestError, fields *validation.Error) (int, envelope) {
	if p := re.Parameter; p != nil {
		op := operation(re)
		if p.In == openapi3.ParameterInPath {
			switch {
			case p.Name == "credential":
				return http.StatusNotFound, envelope{Message: msgCredNotFound}
			case op != nil && strings.EqualFold(op.OperationID, "getDomainLog"): // the generator capitalizes ids
				return http.StatusNotFound, envelope{Message: msgLogDomainNotFound}
			}
			return http.StatusNotFound, envelope{Message: msgDomainNotFound}
		}
		if op != nil && op.Responses.Value("400") != nil && op.Responses.Value("422") == nil {
			// A route that documents a malformed query as 400, not 422 (the
			// vendor's message log): one message naming the parameter.
			return http.StatusBadRequest, envelope{Message: paramMessage(p)}
		}
		fields.Add(p.Name, paramMessage(p))
		return http.StatusUnprocessableEntity, envelope{}
	}
	if re.RequestBody == nil {
		return http.StatusBadRequest, envelope{Message: msgMalformed}
	}
	var herr *echo.HTTPError
	switch {
	case errors.As(re.Err, &herr) && herr.Code == http.StatusRequestEntityTooLarge:
		return http.StatusRequestEntityTooLarge, envelope{Message: msgTooLarge}
	case re.Err == nil && strings.HasPrefix(re.Reason, "header Content-Type"):
		return http.StatusBadRequest, envelope{Message: msgContentType}
	case re.Reason == "reading failed":
		return http.StatusBadRequest, envelope{Message: msgUnreadable}
	case re.Reason == "failed to decode request body":
		return http.StatusBadRequest, envelope{Message: msgMalformed}
	}
	schemaErrs := schemaErrors(re.Err)
	if len(schemaErrs) == 0 {
		return http.StatusBadRequest, envelope{Message: msgMalformed}
	}
	for _, se := range schemaErrs {
		ptr := se.JSONPointer()
		if len(ptr) == 0 {
			if se.SchemaField == "required" {
				// A missing required property is reported on the object.
				if name := missingProperty(se); name != "" {
					fields.Add(name, fmt.Sprintf("The %s field is required.", name))
					continue
				}
			}
			return http.StatusBadRequest, envelope{Message: msgNotObject}
		}
		fields.Add(ptr[0], schemaMessage(ptr[0], se))
	}
	return http.StatusUnprocessableEntity, envelope{}
}

func schemaErrors(err error) []*openapi3.SchemaError {
	if se, ok := err.(*openapi3.SchemaError); ok {
		return []*openapi3.SchemaError{se}
	}
	var me openapi3.MultiError
	if errors.As(err, &me) {
		var out []*openapi3.SchemaError
		for _, e := range me {
			out = append(out, schemaErrors(e)...)
		}
		return out
	}
	var se *openapi3.SchemaError
	if errors.As(err, &se) {
		return []*openapi3.SchemaError{se}
	}
	return nil
}

// missingProperty extracts the property name kin-openapi names in its
// "property \"x\" is missing" reason.
func missingProperty(se *openapi3.SchemaError) string {
	r := se.Reason
	i := strings.IndexByte(r, '"')
	j := strings.LastIndexByte(r, '"')
	if i < 0 || j <= i {
		return ""
	}
	return r[i+1 : j]
}

func schemaMessage(field string, se *openapi3.SchemaError) string {
	s := se.Schema
	switch se.SchemaField {
	case "type", "nullable":
		if s != nil && s.Type != nil && len(s.Type.Slice()) > 0 {
			return fmt.Sprintf("The %s must be of type %s.", field, s.Type.Slice()[0])
		}
	case "required":
		return fmt.Sprintf("The %s field is required.", field)
	case "maxLength":
		if s != nil && s.MaxLength != nil {
			return fmt.Sprintf("The %s must be at most %d characters.", field, *s.MaxLength)
		}
	case "minLength":
		if s != nil {
			return fmt.Sprintf("The %s must be at least %d characters.", field, s.MinLength)
		}
	case "enum":
		return fmt.Sprintf("The selected %s is invalid.", field)
	}
	return fmt.Sprintf("The %s is invalid.", field)
}

// operation is the operation a request error is about (nil when unknown).
func operation(re *openapi3filter.RequestError) *openapi3.Operation {
	if re.Input == nil || re.Input.Route == nil {
		return nil
	}
	return re.Input.Route.Operation
}

func paramMessage(p *openapi3.Parameter) string {
	if p.Schema != nil && p.Schema.Value != nil {
		s := p.Schema.Value
		switch {
		case s.Format == "date-time":
			return relay.TimeFilterMessage(p.Name)
		case len(s.Enum) > 0:
			vals := make([]string, len(s.Enum))
			for i, v := range s.Enum {
				vals[i] = fmt.Sprint(v)
			}
			return fmt.Sprintf("The %s must be one of: %s.", p.Name, strings.Join(vals, ", "))
		case s.Type.Is("string") && s.MaxLength != nil:
			return fmt.Sprintf("The %s must be at most %d characters.", p.Name, *s.MaxLength)
		}
		if s.Type.Is("integer") && s.Min != nil && s.Max != nil {
			return fmt.Sprintf("The %s must be an integer between %d and %d.", p.Name, int64(*s.Min), int64(*s.Max))
		}
		if s.Type.Is("integer") {
			return fmt.Sprintf("The %s must be an integer.", p.Name)
		}
	}
	return fmt.Sprintf("The %s is invalid.", p.Name)
}
