package accounts

import "github.com/smtpcreds/smtpcreds/internal/postgres"

// CacheTokens makes Authenticate keep the token digests of accounts that
// authenticated recently, so that a call costs an HMAC instead of a round
// trip. Call it before serving, and hand the subscriber it returns to
// postgres.Listen on postgres.AccountsChannel: a token change is announced
// when it commits and drops the digest (at once in the process that made
// it), and nothing cached is used while the listening connection is down.
func (s *Service) CacheTokens() postgres.Subscriber {
	s.cache = postgres.NewCache[postgres.AccountRow](100_000)
	return s.cache
}
