package httpapi

import (
	"context"
	"errors"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/smtpcreds/smtpcreds/internal/accounts"
	"github.com/smtpcreds/smtpcreds/internal/basicauth"
	"github.com/smtpcreds/smtpcreds/internal/ratelimit"
)

type accountKey struct{}

// accountFrom returns the authenticated account that authenticate put in ctx.
func accountFrom(ctx context.Context) accounts.Account {
	a, _ := ctx.Value(accountKey{}).(accounts.Account)
	return a
}

// authenticate runs before validation (a 401 wins over a 422) on every API
// route. A client address over its failed-login limit is refused before its
// token is looked at; an authenticated call counts against the account's
// limit, whose state every authenticated response reports in headers.
func authenticate(acc *accounts.Service, lim *ratelimit.Limiter, isAPIRoute func(echo.Context) bool) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if !isAPIRoute(c) {
				return next(c)
			}
			req := c.Request()
			ctx := req.Context()
			ip := c.RealIP()
			blocked, err := lim.AuthBlocked(ctx, ip)
			if err != nil {
				return err
			}
			if !blocked.Allowed {
				return &rateLimited{d: blocked, limit: "auth_failures"}
			}

			account, err := accounts.Account{}, accounts.ErrUnauthorized
			if user, pass, ok := basicauth.Parse(req.Header.Get(echo.HeaderAuthorization)); ok {
				account, err = acc.Authenticate(ctx, user, pass)
			}
			if errors.Is(err, accounts.ErrUnauthorized) {
				if ferr := lim.AuthFailed(ctx, ip); ferr != nil {
					return ferr
				}
				return errUnauthorized
			}
			if err != nil {
				return err
			}

			d, err := lim.Account(ctx, account.ID)
			if err != nil {
				return err
			}
			if d.Limit > 0 {
				h := c.Response().Header()
				h.Set("X-RateLimit-Limit", strconv.Itoa(d.Limit))
				h.Set("X-RateLimit-Remaining", strconv.Itoa(d.Remaining))
			}
			if !d.Allowed {
				return &rateLimited{d: d, limit: "account"}
			}
			c.Set(logAccountKey, account.Name)
			c.SetRequest(req.WithContext(context.WithValue(ctx, accountKey{}, account)))
			return next(c)
		}
	}
}
