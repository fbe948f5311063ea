package httpapi

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/smtpcreds/smtpcreds/internal/metrics"
)

const (
	requestIDKey  = "request_id"
	logAccountKey = "account"
)

// requestID returns the id requestLog gave the request.
func requestID(c echo.Context) string {
	id, _ := c.Get(requestIDKey).(string)
	return id
}

// validRequestID accepts client ids that are safe to log and echo.
func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// requestLog gives every request an id (the client's X-Request-ID when it is
// sane), echoes it, and writes one access line after the response. It logs
// no header and no body, so no secret can reach the log through it.
func requestLog(log *slog.Logger, m *metrics.Metrics) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			id := c.Request().Header.Get(echo.HeaderXRequestID)
			if !validRequestID(id) {
				id = newRequestID()
			}
			c.Set(requestIDKey, id)
			c.Response().Header().Set(echo.HeaderXRequestID, id)
			if err := next(c); err != nil {
				c.Error(err) // write the error response now, so its status is logged
			}
			account, _ := c.Get(logAccountKey).(string)
			m.ObserveRequest(c.Path(), c.Request().Method, c.Response().Status, time.Since(start))
			log.LogAttrs(c.Request().Context(), slog.LevelInfo, "request",
				slog.String(requestIDKey, id),
				slog.String("method", c.Request().Method),
				slog.String("route", c.Path()),
				slog.String("path", c.Request().URL.Path),
				slog.Int("status", c.Response().Status),
				slog.Int64("bytes", c.Response().Size),
				slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
				slog.String("client_ip", c.RealIP()),
				slog.String(logAccountKey, account),
			)
			return nil
		}
	}
}
