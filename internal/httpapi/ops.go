package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// healthz says the process is alive; it touches nothing else.
func healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]any{"success": true, "status": "ok"})
}

// readyz runs the readiness checks (database reachable, migrations current,
// sync worker running): 200 when every check says "ok" (or "disabled"), else
// 503 with what is wrong. Each check is bounded, so readyz answers fast during an outage.
func readyz(ready func(context.Context) map[string]string) echo.HandlerFunc {
	return func(c echo.Context) error {
		checks := map[string]string{}
		if ready != nil {
			ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
			defer cancel()
			checks = ready(ctx)
		}
		ok := true
		for _, v := range checks {
			if v != "ok" && v != "disabled" {
				ok = false
			}
		}
		status := http.StatusOK
		if !ok {
			status = http.StatusServiceUnavailable
			c.Response().Header().Set("Retry-After", retryAfterUnavailable)
		}
		return c.JSON(status, map[string]any{"success": ok, "status": map[bool]string{true: "ready", false: "unavailable"}[ok], "checks": checks})
	}
}

// timeout bounds API requests, so that a database that does not answer
// fails them with 503 instead of holding them.
func timeout(d time.Duration, isAPIRoute func(echo.Context) bool) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if !isAPIRoute(c) {
				return next(c)
			}
			ctx, cancel := context.WithTimeout(c.Request().Context(), d)
			defer cancel()
			c.SetRequest(c.Request().WithContext(ctx))
			return next(c)
		}
	}
}
