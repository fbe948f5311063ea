package main

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/app"
	"github.com/smtpcreds/smtpcreds/internal/password"
)

// config is every setting, parsed once here from flags and environment
// variables (a flag wins over its variable). Nothing in internal/ reads the
// environment.
type config struct {
	DatabaseURL     string
	Addr            string
	TokenKey        []byte
	RateLimit       int
	AuthFailLimit   int
	MaxPerDomain    int
	PasswordScheme  password.Scheme
	TrustedProxies  []netip.Prefix
	LogFormat       string
	LogLevel        slog.Level
	DBMaxConns      int
	ShutdownTimeout time.Duration
	DataDir         string
	DKIMKey         []byte
	DNS             dnsConfig
	Sync            syncConfig
	Relay           app.RelayConfig
	MilterAddr      string
	OperatorAddr    string
	Pprof           bool
	AuthCache       bool
	RequestTimeout  time.Duration
	ShutdownDelay   time.Duration
}

// syncConfig chooses and configures the SMTP-backend sync target.
type syncConfig struct {
	Target        string // passwd-file, webhook, dovecot-sql or none
	PasswdFile    string
	PasswdGroup   string
	WebhookURL    string
	WebhookSecret []byte
	DovecotRole   string // the database role Dovecot's SQL passdb connects as
	Timeout       time.Duration
}

// dnsConfig is the operator's DNS setup: the records users must publish and
// the resolver the checks ask.
type dnsConfig struct {
	Selector       string
	SPFInclude     string
	MXHost         string
	TrackingTarget string
	Resolver       string
	Timeout        time.Duration
}

// The flag groups below are the one declaration of every setting: its flag,
// its environment variable, its default and its meaning. Kong builds each
// command's flags and help from the groups the command embeds, and
// configTable renders the README's configuration table from the same tags
// (a test keeps the README in step). In help and docdefault, {x} marks code:
// the README shows it as a code span, the terminal help as plain x.
// docdefault describes a default that is not a literal value.
//
// Each group's apply checks its values and copies them into a config, so
// that a command builds its config from exactly the flags it accepts.

// dbFlags: every command that opens the database.
type dbFlags struct {
	DatabaseURL string `name:"database-url" env:"DATABASE_URL" placeholder:"URL" group:"database" help:"PostgreSQL URL (required except for {dev})"`
	DBMaxConns  int    `name:"db-max-conns" env:"SMTPCREDS_DB_MAX_CONNS" default:"20" group:"database" help:"database pool size"`
}

func (f dbFlags) apply(c *config) error {
	c.DatabaseURL = f.DatabaseURL
	if f.DBMaxConns < 1 {
		return invalid("db-max-conns", "want at least 1")
	}
	c.DBMaxConns = f.DBMaxConns
	return nil
}

// tokenKeyFlags: the key of API token digests.
type tokenKeyFlags struct {
	TokenKey     string `name:"token-key" env:"SMTPCREDS_TOKEN_KEY" placeholder:"KEY" group:"keys" help:"key for token digests (hex or base64, ≥ 32 bytes); keep it outside the database"`
	TokenKeyFile string `name:"token-key-file" env:"SMTPCREDS_TOKEN_KEY_FILE" placeholder:"FILE" group:"keys" help:"file holding that key"`
}

func (f tokenKeyFlags) apply(c *config) (err error) {
	if c.TokenKey, err = loadKey(f.TokenKey, f.TokenKeyFile, 32); err != nil {
		return invalid("token-key", err.Error())
	}
	return nil
}

// dkimKeyFlags: the key sealing DKIM private keys.
type dkimKeyFlags struct {
	DKIMKey     string `name:"dkim-key" env:"SMTPCREDS_DKIM_KEY" placeholder:"KEY" group:"keys" help:"AES-256 key (32 bytes, hex or base64) sealing DKIM private keys; keep it outside the database"`
	DKIMKeyFile string `name:"dkim-key-file" env:"SMTPCREDS_DKIM_KEY_FILE" placeholder:"FILE" group:"keys" help:"file holding that key"`
}

func (f dkimKeyFlags) apply(c *config) (err error) {
	if c.DKIMKey, err = loadKey(f.DKIMKey, f.DKIMKeyFile, 32); err != nil {
		return invalid("dkim-key", err.Error())
	}
	if len(c.DKIMKey) > 32 {
		return invalid("dkim-key", fmt.Sprintf("want exactly 32 bytes, got %d", len(c.DKIMKey)))
	}
	return nil
}

// dnsRecordFlags: what the DNS records users publish point at.
type dnsRecordFlags struct {
	DKIMSelector  string `name:"dkim-selector" env:"SMTPCREDS_DKIM_SELECTOR" default:"smtpcreds" placeholder:"SELECTOR" group:"dns" help:"DKIM selector of new keys ({<selector>._domainkey.<domain>})"`
	SPFInclude    string `name:"spf-include" env:"SMTPCREDS_SPF_INCLUDE" default:"_spf.smtpcreds.example" placeholder:"HOST" group:"dns" help:"the domain users {include:} in their SPF record; set it to your relay's"`
	MXHost        string `name:"mx-host" env:"SMTPCREDS_MX_HOST" default:"mx.smtpcreds.example" placeholder:"HOST" group:"dns" help:"your relay's MX host"`
	TrackingCNAME string `name:"tracking-cname" env:"SMTPCREDS_TRACKING_CNAME" default:"track.smtpcreds.example" placeholder:"HOST" group:"dns" help:"CNAME target of link-tracking domains"`
}

func (f dnsRecordFlags) apply(c *config) error {
	c.DNS.Selector, c.DNS.SPFInclude, c.DNS.MXHost, c.DNS.TrackingTarget = f.DKIMSelector, f.SPFInclude, f.MXHost, f.TrackingCNAME
	for _, h := range []struct{ flag, v string }{{"dkim-selector", f.DKIMSelector}, {"mx-host", f.MXHost}, {"tracking-cname", f.TrackingCNAME}} {
		if h.v == "" || strings.ContainsAny(h.v, " :/") {
			return invalid(h.flag, "want a host name")
		}
	}
	return nil
}

// dnsCheckFlags: how DNS checks ask.
type dnsCheckFlags struct {
	DNSResolver string        `name:"dns-resolver" env:"SMTPCREDS_DNS_RESOLVER" placeholder:"IP[:PORT]" docdefault:"system resolver" group:"dns" help:"{ip[:port]} of the resolver DNS checks ask"`
	DNSTimeout  time.Duration `name:"dns-timeout" env:"SMTPCREDS_DNS_TIMEOUT" default:"3s" group:"dns" help:"bound on one DNS check (the records of one verify are looked up in parallel)"`
}

func (f dnsCheckFlags) apply(c *config) error {
	if f.DNSTimeout <= 0 {
		return invalid("dns-timeout", "want a positive duration such as 3s")
	}
	c.DNS.Resolver, c.DNS.Timeout = f.DNSResolver, f.DNSTimeout
	return nil
}

// relayFlags: the relay's policy, for the milter (and for serve, which
// answers the account's quota from the same limits).
type relayFlags struct {
	LoginLimitPerMinute   int           `name:"login-limit-per-minute" env:"SMTPCREDS_LOGIN_LIMIT_PER_MINUTE" default:"60" group:"relay" help:"messages one SMTP login may send per minute, {0} = no limit (a credential's own limit wins)"`
	LoginLimitPerHour     int           `name:"login-limit-per-hour" env:"SMTPCREDS_LOGIN_LIMIT_PER_HOUR" default:"1000" group:"relay" help:"messages one SMTP login may send per hour, {0} = no limit"`
	LoginLimitPerDay      int           `name:"login-limit-per-day" env:"SMTPCREDS_LOGIN_LIMIT_PER_DAY" default:"5000" group:"relay" help:"messages one SMTP login may send per UTC day, {0} = no limit"`
	AccountLimitPerMinute int           `name:"account-limit-per-minute" env:"SMTPCREDS_ACCOUNT_LIMIT_PER_MINUTE" default:"0" group:"relay" help:"messages all logins of an account may send per minute, {0} = no limit"`
	AccountLimitPerHour   int           `name:"account-limit-per-hour" env:"SMTPCREDS_ACCOUNT_LIMIT_PER_HOUR" default:"0" group:"relay" help:"messages all logins of an account may send per hour, {0} = no limit"`
	AccountLimitPerDay    int           `name:"account-limit-per-day" env:"SMTPCREDS_ACCOUNT_LIMIT_PER_DAY" default:"20000" group:"relay" help:"messages all logins of an account may send per UTC day: the quota {GET /api/quota} reports, {0} = no limit"`
	SenderScope           string        `name:"sender-scope" env:"SMTPCREDS_SENDER_SCOPE" default:"login-domain" enum:"login-domain,account" group:"relay" help:"what a login may send as: {login-domain} (its own domain) or {account} (any verified domain of its account)"`
	MessageLogRetention   time.Duration `name:"message-log-retention" env:"SMTPCREDS_MESSAGE_LOG_RETENTION" default:"720h" group:"relay" help:"how long the message log keeps a message"`
	MessageLogSubjects    bool          `name:"message-log-subjects" env:"SMTPCREDS_MESSAGE_LOG_SUBJECTS" default:"false" group:"relay" help:"store messages' subjects in the message log"`
}

func (f relayFlags) apply(c *config) error {
	for _, n := range []struct {
		flag string
		v    int
		into *int
	}{
		{"login-limit-per-minute", f.LoginLimitPerMinute, &c.Relay.Login.PerMinute},
		{"login-limit-per-hour", f.LoginLimitPerHour, &c.Relay.Login.PerHour},
		{"login-limit-per-day", f.LoginLimitPerDay, &c.Relay.Login.PerDay},
		{"account-limit-per-minute", f.AccountLimitPerMinute, &c.Relay.Account.PerMinute},
		{"account-limit-per-hour", f.AccountLimitPerHour, &c.Relay.Account.PerHour},
		{"account-limit-per-day", f.AccountLimitPerDay, &c.Relay.Account.PerDay},
	} {
		if n.v < 0 {
			return invalid(n.flag, "want a non-negative integer")
		}
		*n.into = n.v
	}
	if f.MessageLogRetention <= 0 {
		return invalid("message-log-retention", "want a positive duration such as 720h")
	}
	c.Relay.AccountSenders = f.SenderScope == "account"
	c.Relay.LogRetention, c.Relay.LogSubjects = f.MessageLogRetention, f.MessageLogSubjects
	return nil
}

// milterFlags: where the milter listens, for milter (and serve, which
// hosts it too when set).
type milterFlags struct {
	MilterAddr string `name:"milter-addr" env:"SMTPCREDS_MILTER_ADDR" placeholder:"ADDR" docdefault:"{inet:127.0.0.1:8891} for {milter}; off for {serve}" group:"relay" help:"where the milter listens for Postfix: {inet:HOST:PORT} or {unix:PATH} (Postfix's {smtpd_milters} names the same); set for {serve} to host the milter in the API process"`
}

func (f milterFlags) apply(c *config) error {
	if f.MilterAddr != "" && !strings.HasPrefix(f.MilterAddr, "inet:") && !strings.HasPrefix(f.MilterAddr, "unix:") {
		return invalid("milter-addr", "want inet:HOST:PORT or unix:PATH")
	}
	c.MilterAddr = f.MilterAddr
	return nil
}

// serverFlags: the HTTP API of serve and dev.
type serverFlags struct {
	Addr            string        `name:"addr" env:"SMTPCREDS_ADDR" default:"127.0.0.1:8080" placeholder:"HOST:PORT" group:"server" help:"HTTP listen address"`
	RateLimit       int           `name:"rate-limit" env:"SMTPCREDS_RATE_LIMIT" default:"120" group:"server" help:"requests per minute per account, {0} = off"`
	AuthFailLimit   int           `name:"auth-fail-limit" env:"SMTPCREDS_AUTH_FAIL_LIMIT" default:"10" group:"server" help:"failed logins per minute per client address, {0} = off"`
	MaxPerDomain    int           `name:"max-credentials-per-domain" env:"SMTPCREDS_MAX_CREDENTIALS_PER_DOMAIN" default:"1000" group:"server" help:"credential cap per domain, {0} = none"`
	PasswordScheme  string        `name:"password-scheme" env:"SMTPCREDS_PASSWORD_SCHEME" default:"SSHA512" placeholder:"SCHEME" group:"server" help:"{SSHA512}, {SHA512-CRYPT}, {BLF-CRYPT} or {ARGON2ID}"`
	TrustedProxies  string        `name:"trusted-proxies" env:"SMTPCREDS_TRUSTED_PROXIES" placeholder:"CIDR,..." group:"server" help:"CIDRs whose {X-Forwarded-For} is believed for the client address"`
	RequestTimeout  time.Duration `name:"request-timeout" env:"SMTPCREDS_REQUEST_TIMEOUT" default:"5s" group:"server" help:"bound on one API request (database outages answer 503 after it)"`
	ShutdownTimeout time.Duration `name:"shutdown-timeout" env:"SMTPCREDS_SHUTDOWN_TIMEOUT" default:"15s" group:"server" help:"how long in-flight requests may finish after SIGTERM"`
	ShutdownDelay   time.Duration `name:"shutdown-delay" env:"SMTPCREDS_SHUTDOWN_DELAY" default:"0s" group:"server" help:"after SIGTERM, keep serving this long with {/readyz} failing"`
	OperatorAddr    string        `name:"operator-addr" env:"SMTPCREDS_OPERATOR_ADDR" placeholder:"HOST:PORT" docdefault:"– (off)" group:"server" help:"private listener for {/metrics} (and pprof)"`
	Pprof           bool          `name:"pprof" env:"SMTPCREDS_PPROF" default:"false" group:"server" help:"serve {net/http/pprof} on the operator listener"`
	AuthCache       bool          `name:"auth-cache" env:"SMTPCREDS_AUTH_CACHE" default:"true" group:"server" help:"keep token digests and failed-login counts in process, so an authenticated call costs no round trip; a token rotation or failed login anywhere reaches every process through PostgreSQL {LISTEN/NOTIFY} when it commits, and while the listening connection is down nothing cached is used. Turn it off behind a pooler in transaction mode, which cannot {LISTEN}"`
}

func (f serverFlags) apply(c *config) (err error) {
	c.Addr = f.Addr
	for _, n := range []struct {
		flag string
		v    int
		into *int
	}{{"rate-limit", f.RateLimit, &c.RateLimit}, {"auth-fail-limit", f.AuthFailLimit, &c.AuthFailLimit}, {"max-credentials-per-domain", f.MaxPerDomain, &c.MaxPerDomain}} {
		if n.v < 0 {
			return invalid(n.flag, "want a non-negative integer")
		}
		*n.into = n.v
	}
	if c.PasswordScheme, err = password.ParseScheme(f.PasswordScheme); err != nil {
		return invalid("password-scheme", err.Error())
	}
	if c.TrustedProxies, err = parsePrefixes(f.TrustedProxies); err != nil {
		return invalid("trusted-proxies", err.Error())
	}
	if f.RequestTimeout <= 0 {
		return invalid("request-timeout", "want a positive duration such as 5s")
	}
	if f.ShutdownDelay < 0 {
		return invalid("shutdown-delay", "want a duration such as 5s")
	}
	c.RequestTimeout, c.ShutdownTimeout, c.ShutdownDelay = f.RequestTimeout, f.ShutdownTimeout, f.ShutdownDelay
	c.OperatorAddr, c.Pprof, c.AuthCache = f.OperatorAddr, f.Pprof, f.AuthCache
	if c.Pprof && c.OperatorAddr == "" {
		return invalid("pprof", "needs --operator-addr")
	}
	return nil
}

// syncFlags: where credential changes go.
type syncFlags struct {
	SyncTarget      string        `name:"sync-target" env:"SMTPCREDS_SYNC_TARGET" placeholder:"TARGET" docdefault:"{passwd-file} if a file is set, else {webhook} if a URL is set, else {none}" group:"sync" help:"where credential changes go: {passwd-file}, {webhook}, {dovecot-sql} or {none}"`
	PasswdFile      string        `name:"passwd-file" env:"SMTPCREDS_PASSWD_FILE" placeholder:"PATH" docdefault:"– ({make run}: {./.data/dovecot/passwd})" group:"sync" help:"Dovecot passwd-file to keep in sync; {%d} = one file per domain, {%2Mu} = shards by login"`
	PasswdFileGroup string        `name:"passwd-file-group" env:"SMTPCREDS_PASSWD_FILE_GROUP" placeholder:"GROUP" group:"sync" help:"group of the file (Dovecot's auth process reads it)"`
	WebhookURL      string        `name:"webhook-url" env:"SMTPCREDS_WEBHOOK_URL" placeholder:"URL" group:"sync" help:"sync agent receiving signed change events"`
	WebhookSecret   string        `name:"webhook-secret" env:"SMTPCREDS_WEBHOOK_SECRET" placeholder:"SECRET" group:"sync" help:"HMAC secret of those events (16+ characters)"`
	DovecotSQLRole  string        `name:"dovecot-sql-role" env:"SMTPCREDS_DOVECOT_SQL_ROLE" default:"dovecot" placeholder:"ROLE" group:"sync" help:"the database role Dovecot's SQL passdb connects as (target {dovecot-sql} checks that it may read the view)"`
	SyncTimeout     time.Duration `name:"sync-timeout" env:"SMTPCREDS_SYNC_TIMEOUT" default:"2s" group:"sync" help:"how long a request waits for the target before answering {remote_synced: false}"`
}

func (f syncFlags) apply(c *config) (err error) {
	c.Sync, err = parseSync(f)
	return err
}

// logFlags: the log of serve and dev.
type logFlags struct {
	LogFormat string `name:"log-format" env:"SMTPCREDS_LOG_FORMAT" default:"json" placeholder:"json|text" group:"log" help:"{json} or {text} ({make run} uses text)"`
	LogLevel  string `name:"log-level" env:"SMTPCREDS_LOG_LEVEL" default:"info" placeholder:"LEVEL" group:"log" help:"{debug}, {info}, {warn}, {error}"`
}

func (f logFlags) apply(c *config) error {
	if f.LogFormat != "json" && f.LogFormat != "text" {
		return invalid("log-format", "want json or text")
	}
	c.LogFormat = f.LogFormat
	if err := c.LogLevel.UnmarshalText([]byte(f.LogLevel)); err != nil {
		return invalid("log-level", "want debug, info, warn or error")
	}
	return nil
}

// devFlags: the local state of dev.
type devFlags struct {
	DataDir string `name:"data-dir" env:"SMTPCREDS_DATA_DIR" default:".data" placeholder:"DIR" group:"dev" help:"local state of {smtpcreds dev} (PostgreSQL, keys, passwd-file)"`
}

func (f devFlags) apply(c *config) error {
	c.DataDir = f.DataDir
	return nil
}

// group is a flag group: it checks its values into a config.
type group interface{ apply(*config) error }

// buildConfig applies the groups in order into one config.
func buildConfig(groups ...group) (config, error) {
	var c config
	c.LogFormat = "json" // commands without log flags log nothing; keep the zero config sane
	for _, g := range groups {
		if err := g.apply(&c); err != nil {
			return config{}, err
		}
	}
	return c, nil
}

// invalid is a usage error about one flag's value (from the command line or
// its environment variable).
func invalid(flag, why string) error { return usagef("invalid --%s: %s", flag, why) }

// usageError is bad command-line input: one line on stderr, exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func parseSync(f syncFlags) (syncConfig, error) {
	sc := syncConfig{
		Target: f.SyncTarget, PasswdFile: f.PasswdFile, PasswdGroup: f.PasswdFileGroup,
		WebhookURL: f.WebhookURL, WebhookSecret: []byte(f.WebhookSecret),
		DovecotRole: f.DovecotSQLRole, Timeout: f.SyncTimeout,
	}
	if sc.Timeout <= 0 {
		return sc, invalid("sync-timeout", "want a positive duration such as 2s")
	}
	if sc.Target == "" {
		switch {
		case sc.PasswdFile != "":
			sc.Target = "passwd-file"
		case sc.WebhookURL != "":
			sc.Target = "webhook"
		default:
			sc.Target = "none"
		}
	}
	switch sc.Target {
	case "none":
	case "dovecot-sql":
		if sc.DovecotRole == "" {
			return sc, usagef("sync target dovecot-sql needs --dovecot-sql-role (SMTPCREDS_DOVECOT_SQL_ROLE), the role Dovecot connects as")
		}
	case "passwd-file":
		if sc.PasswdFile == "" {
			return sc, usagef("sync target passwd-file needs --passwd-file (SMTPCREDS_PASSWD_FILE)")
		}
	case "webhook":
		if sc.WebhookURL == "" || len(sc.WebhookSecret) < 16 {
			return sc, usagef("sync target webhook needs --webhook-url and a --webhook-secret of 16+ characters")
		}
	default:
		return sc, usagef("invalid --sync-target %q: want passwd-file, webhook, dovecot-sql or none", sc.Target)
	}
	// Settings of another target would be ignored: a typo'd or stale
	// target must not leave the operator believing the file or the agent
	// is kept in sync. A group alone is allowed with none: `dev` then
	// syncs its default passwd-file, with that group.
	if sc.Target != "passwd-file" && (sc.PasswdFile != "" || (sc.PasswdGroup != "" && sc.Target != "none")) {
		return sc, usagef("--passwd-file or --passwd-file-group is set, but the sync target is %s, which would ignore it: unset it or choose --sync-target passwd-file", sc.Target)
	}
	if sc.Target != "webhook" && (sc.WebhookURL != "" || len(sc.WebhookSecret) > 0) {
		return sc, usagef("--webhook-url or --webhook-secret is set, but the sync target is %s, which would ignore it: unset it or choose --sync-target webhook", sc.Target)
	}
	return sc, nil
}

// loadKey returns the key given inline, else the one in file, else nil.
func loadKey(inline, file string, minLen int) ([]byte, error) {
	if inline == "" && file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		inline = strings.TrimSpace(string(b))
	}
	if inline == "" {
		return nil, nil
	}
	return decodeKey(inline, minLen)
}

// decodeKey reads a key written as hex or standard base64; at least 32 bytes.
func decodeKey(s string, minLen int) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		if b, err = base64.StdEncoding.DecodeString(s); err != nil {
			return nil, fmt.Errorf("want hex or base64")
		}
	}
	if len(b) < minLen {
		return nil, fmt.Errorf("want at least %d bytes, got %d", minLen, len(b))
	}
	return b, nil
}

func parsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, err
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// logValue is the config as logged at start: secrets masked.
func (c config) logValue() slog.Value {
	return slog.GroupValue(
		slog.String("database_url", maskURL(c.DatabaseURL)),
		slog.String("addr", c.Addr),
		slog.Bool("token_key_set", len(c.TokenKey) > 0),
		slog.Bool("dkim_key_set", len(c.DKIMKey) > 0),
		slog.String("dkim_selector", c.DNS.Selector),
		slog.String("spf_include", c.DNS.SPFInclude),
		slog.String("mx_host", c.DNS.MXHost),
		slog.String("tracking_cname", c.DNS.TrackingTarget),
		slog.String("dns_resolver", c.DNS.Resolver),
		slog.String("dns_timeout", c.DNS.Timeout.String()),
		slog.String("sync_target", c.Sync.Target),
		slog.String("passwd_file", c.Sync.PasswdFile),
		slog.String("webhook_url", maskURL(c.Sync.WebhookURL)),
		slog.Bool("webhook_secret_set", len(c.Sync.WebhookSecret) > 0),
		slog.String("sync_timeout", c.Sync.Timeout.String()),
		slog.String("operator_addr", c.OperatorAddr),
		slog.Bool("pprof", c.Pprof),
		slog.Bool("auth_cache", c.AuthCache),
		slog.String("request_timeout", c.RequestTimeout.String()),
		slog.Int("rate_limit", c.RateLimit),
		slog.Int("auth_fail_limit", c.AuthFailLimit),
		slog.Int("max_credentials_per_domain", c.MaxPerDomain),
		slog.String("password_scheme", string(c.PasswordScheme)),
		slog.Int("trusted_proxies", len(c.TrustedProxies)),
		slog.Int("db_max_conns", c.DBMaxConns),
		slog.String("shutdown_timeout", c.ShutdownTimeout.String()),
		slog.Any("login_limits", c.Relay.Login),
		slog.Any("account_limits", c.Relay.Account),
		slog.Bool("account_senders", c.Relay.AccountSenders),
		slog.String("message_log_retention", c.Relay.LogRetention.String()),
		slog.Bool("message_log_subjects", c.Relay.LogSubjects),
		slog.String("milter_addr", c.MilterAddr),
	)
}

// maskURL hides the password of a database URL, whether in the user info
// or in a password= parameter.
func maskURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.Scheme != "" {
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.Redacted()
	}
	if strings.Contains(s, "password") {
		return "(key=value DSN with a password, masked)"
	}
	return s
}

// appConfig is the part of c the server is built from (internal/app).
func (c config) appConfig() app.Config {
	return app.Config{
		DatabaseURL:    c.DatabaseURL,
		DBMaxConns:     c.DBMaxConns,
		Addr:           c.Addr,
		TokenKey:       c.TokenKey,
		DKIMKey:        c.DKIMKey,
		RateLimit:      c.RateLimit,
		AuthFailLimit:  c.AuthFailLimit,
		MaxPerDomain:   c.MaxPerDomain,
		PasswordScheme: c.PasswordScheme,
		TrustedProxies: c.TrustedProxies,
		AuthCache:      c.AuthCache,
		RequestTimeout: c.RequestTimeout,
		DNS: app.DNSConfig{
			Selector: c.DNS.Selector, SPFInclude: c.DNS.SPFInclude, MXHost: c.DNS.MXHost,
			TrackingTarget: c.DNS.TrackingTarget, Resolver: c.DNS.Resolver, Timeout: c.DNS.Timeout,
		},
		Sync: app.SyncConfig{
			Target: c.Sync.Target, PasswdFile: c.Sync.PasswdFile, PasswdGroup: c.Sync.PasswdGroup,
			WebhookURL: c.Sync.WebhookURL, WebhookSecret: c.Sync.WebhookSecret,
			DovecotRole: c.Sync.DovecotRole, Timeout: c.Sync.Timeout,
		},
		Relay:           c.Relay,
		MilterAddr:      c.MilterAddr,
		OperatorAddr:    c.OperatorAddr,
		Pprof:           c.Pprof,
		ShutdownDelay:   c.ShutdownDelay,
		ShutdownTimeout: c.ShutdownTimeout,
	}
}
