package milter

import (
	"context"
	"crypto/rsa"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/relay"
)

// login is a cached SMTP login.
type login struct {
	relay.Login
	CredentialID      int64
	Active            bool
	DomainVerified    bool
	DomainActive      bool
	PasswordChangedAt time.Time // zero when never reset
	ExpiresAt         time.Time // zero when it never expires
	PreviousExpiresAt time.Time // end of a reset's grace period; zero when none
	Limits            relay.Limits
	HasLimit          [3]bool // whether Limits' minute, hour, day are the credential's own
}

// domain is a cached domain with its keys unsealed; found false records
// that no domain has the name.
type domain struct {
	found bool
	relay.Domain
	Name         string
	Selector     string
	Key          *rsa.PrivateKey
	AuthDomain   string
	AuthSelector string
	AuthKey      *rsa.PrivateKey // nil unless the auth domain is verified
}

// cache holds logins and domains while the relay channel is listened to.
// An announcement "c<id>" drops credential id's login, "*" everything; a
// lost connection empties it (postgres.Cache).
type cache struct {
	logins  *postgres.Cache[login]
	domains *postgres.Cache[domain]

	mu   sync.Mutex
	byID map[int64]string // credential id → login key
}

func newCache() *cache {
	return &cache{
		logins:  postgres.NewCache[login](100_000),
		domains: postgres.NewCache[domain](100_000),
		byID:    map[int64]string{},
	}
}

// Live implements postgres.Subscriber.
func (c *cache) Live(live bool) {
	c.logins.Live(live)
	c.domains.Live(live)
	c.mu.Lock()
	clear(c.byID)
	c.mu.Unlock()
}

// Notified implements postgres.Subscriber.
func (c *cache) Notified(payload string) {
	if id, err := strconv.ParseInt(strings.TrimPrefix(payload, "c"), 10, 64); err == nil && strings.HasPrefix(payload, "c") {
		c.mu.Lock()
		key := c.byID[id]
		delete(c.byID, id)
		c.mu.Unlock()
		// Dropping "" when the login is not cached still tells a read in
		// flight not to cache what it read.
		c.logins.Drop(key)
		return
	}
	c.logins.Clear()
	c.domains.Clear()
	c.mu.Lock()
	clear(c.byID)
	c.mu.Unlock()
}

var errUnknownLogin = errors.New("unknown login")

// login returns the SMTP login name (username@domain), errUnknownLogin when
// it is not a credential.
func (m *Milter) login(ctx context.Context, name string) (login, error) {
	key := strings.ToLower(name)
	l, gen, ok := m.cache.logins.Get(key)
	if ok {
		return l, nil
	}
	at := strings.LastIndexByte(key, '@')
	if at <= 0 {
		return login{}, errUnknownLogin
	}
	row, err := postgres.RelayRepo{}.Login(ctx, m.db, key[:at], key[at+1:])
	if errors.Is(err, postgres.ErrNotFound) {
		return login{}, errUnknownLogin
	}
	if err != nil {
		return login{}, err
	}
	l = login{
		Login: relay.Login{
			Name: key, AccountID: row.AccountID, DomainID: row.DomainID, Domain: row.Domain,
			AllowedSenders: lower(row.AllowedSenders),
		},
		CredentialID: row.CredentialID, Active: row.Active,
		DomainVerified: row.DomainVerified, DomainActive: row.DomainActive,
		Limits: m.cfg.Login,
	}
	for _, t := range []struct {
		v    *time.Time
		into *time.Time
	}{{row.PasswordChangedAt, &l.PasswordChangedAt}, {row.ExpiresAt, &l.ExpiresAt}, {row.PreviousExpiresAt, &l.PreviousExpiresAt}} {
		if t.v != nil {
			*t.into = *t.v
		}
	}
	for i, own := range []struct {
		v    *int
		into *int
	}{{row.LimitPerMinute, &l.Limits.PerMinute}, {row.LimitPerHour, &l.Limits.PerHour}, {row.LimitPerDay, &l.Limits.PerDay}} {
		if own.v != nil {
			*own.into, l.HasLimit[i] = *own.v, true
		}
	}
	m.cache.mu.Lock()
	if len(m.cache.byID) >= 200_000 {
		clear(m.cache.byID)
		m.cache.logins.Clear()
	}
	m.cache.byID[l.CredentialID] = key
	m.cache.mu.Unlock()
	m.cache.logins.Put(key, l, gen)
	return l, nil
}

// domain returns the domain called name (lowercase ASCII), found false when
// there is none. Keys that do not unseal are left nil (the message goes
// unsigned by them) and logged.
func (m *Milter) domain(ctx context.Context, name string) (domain, error) {
	d, gen, ok := m.cache.domains.Get(name)
	if ok {
		return d, nil
	}
	row, err := postgres.RelayRepo{}.Domain(ctx, m.db, name)
	if errors.Is(err, postgres.ErrNotFound) {
		m.cache.domains.Put(name, domain{}, gen)
		return domain{}, nil
	}
	if err != nil {
		return domain{}, err
	}
	d = domain{
		found:  true,
		Domain: relay.Domain{ID: row.ID, AccountID: row.AccountID, Verified: row.Verified, Active: row.Active},
		Name:   row.Name, Selector: row.DKIMSelector,
		AuthDomain: row.AuthDomain, AuthSelector: row.AuthDKIMSelector,
	}
	if len(row.DKIMPrivateKey) > 0 {
		if d.Key, err = m.sealer.OpenKey(row.DKIMPrivateKey, []byte("dkim:"+row.Name)); err != nil {
			m.log.Error("milter: a DKIM key does not unseal; its domain's mail goes unsigned", "domain", row.Name, "error", err.Error())
			d.Key = nil
		}
	}
	if row.AuthVerified && row.AuthDomain != "" && len(row.AuthDKIMPrivateKey) > 0 {
		if d.AuthKey, err = m.sealer.OpenKey(row.AuthDKIMPrivateKey, []byte("auth_dkim:"+row.AuthDomain)); err != nil {
			m.log.Error("milter: an auth-domain DKIM key does not unseal", "domain", row.Name, "error", err.Error())
			d.AuthKey = nil
		}
	}
	m.cache.domains.Put(name, d, gen)
	return d, nil
}

func lower(list []string) []string {
	out := make([]string, 0, len(list))
	for _, s := range list {
		out = append(out, strings.ToLower(s))
	}
	return out
}
