package httpapi

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/smtpcreds/smtpcreds/internal/validation"
)

// msgJSONAsForm explains the commonest mistake with a form body: curl's -d
// sends application/x-www-form-urlencoded, so a JSON document arrives as
// one form key and every field looks missing.
const msgJSONAsForm = "The request body is JSON, but its Content-Type is application/x-www-form-urlencoded " +
	"(what curl -d sends): send it with Content-Type: application/json."

// jsonSentAsForm refuses, with a 422 on "body" whose message names the fix,
// a form-encoded request whose body is a JSON object or array, instead of
// letting the form's fields be reported missing. Form bodies proper (the
// vendor's PHP SDK sends them) pass untouched. skip exempts requests that
// are not API routes.
func jsonSentAsForm(skip func(echo.Context) bool) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			if skip(c) || req.Body == nil || req.Body == http.NoBody {
				return next(c)
			}
			mt, _, err := mime.ParseMediaType(req.Header.Get(echo.HeaderContentType))
			if err != nil || mt != echo.MIMEApplicationForm {
				return next(c)
			}
			br := bufio.NewReader(req.Body)
			if first, ok := firstNonSpace(br); ok && (first == '{' || first == '[') {
				return validation.New("body", msgJSONAsForm)
			}
			req.Body = struct {
				io.Reader
				io.Closer
			}{br, req.Body}
			return next(c)
		}
	}
}

// firstNonSpace returns the first byte of r that is not JSON whitespace,
// leaving it and everything after it unread (peeked).
func firstNonSpace(r *bufio.Reader) (byte, bool) {
	for n := 1; n <= r.Size(); n++ {
		b, err := r.Peek(n)
		if len(b) < n {
			return 0, false
		}
		switch c := b[n-1]; c {
		case ' ', '\t', '\r', '\n':
			if err != nil {
				return 0, false
			}
		default:
			return c, true
		}
	}
	return 0, false
}

// emptyArrayAsNoBody treats a JSON body of "[]" as no body on the routes
// whose input is optional and that the vendor SDKs call with "[]" for none
// (reset-password: the PHP SDK's empty array), so that the spec's object
// schema for their optional input does not refuse it. skip exempts the
// other requests.
func emptyArrayAsNoBody(skip func(echo.Context) bool) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			if skip(c) || req.Body == nil || req.Body == http.NoBody {
				return next(c)
			}
			br := bufio.NewReader(req.Body)
			body := struct {
				io.Reader
				io.Closer
			}{br, req.Body}
			if first, ok := firstNonSpace(br); !ok || first != '[' {
				req.Body = body
				return next(c)
			}
			data, err := io.ReadAll(br)
			if err != nil {
				return err // the body limit's 413, or a read error
			}
			if string(bytes.TrimSpace(data)) == "[]" {
				req.Body, req.ContentLength = http.NoBody, 0
			} else {
				req.Body = io.NopCloser(bytes.NewReader(data))
			}
			return next(c)
		}
	}
}
