package main

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"strconv"
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

// setting is one flag and the environment variable that sets its default.
type setting struct {
	flag, env, def, usage string
}

var settings = []setting{
	{"database-url", "DATABASE_URL", "", "PostgreSQL URL"},
	{"addr", "SMTPCREDS_ADDR", "127.0.0.1:8080", "HTTP listen address"},
	{"token-key", "SMTPCREDS_TOKEN_KEY", "", "token HMAC key, hex or base64, >= 32 bytes"},
	{"token-key-file", "SMTPCREDS_TOKEN_KEY_FILE", "", "file holding the token HMAC key"},
	{"dkim-key", "SMTPCREDS_DKIM_KEY", "", "AES-256 key sealing DKIM private keys, hex or base64, 32 bytes"},
	{"dkim-key-file", "SMTPCREDS_DKIM_KEY_FILE", "", "file holding the DKIM sealing key"},
	{"dkim-selector", "SMTPCREDS_DKIM_SELECTOR", "smtpcreds", "DKIM selector of new keys"},
	{"spf-include", "SMTPCREDS_SPF_INCLUDE", "_spf.smtpcreds.example", "domain users include in their SPF record"},
	{"mx-host", "SMTPCREDS_MX_HOST", "mx.smtpcreds.example", "the relay's MX host users point MX records at"},
	{"tracking-cname", "SMTPCREDS_TRACKING_CNAME", "track.smtpcreds.example", "CNAME target of tracking domains"},
	{"dns-resolver", "SMTPCREDS_DNS_RESOLVER", "", "host:port of the resolver for DNS checks (default: the system resolver)"},
	{"dns-timeout", "SMTPCREDS_DNS_TIMEOUT", "3s", "timeout of one DNS check"},
	{"sync-target", "SMTPCREDS_SYNC_TARGET", "", "passwd-file, webhook, dovecot-sql (Dovecot reads the dovecot_passdb view of this database) or none (default: passwd-file when a file is set, else webhook when a URL is set, else none)"},
	{"passwd-file", "SMTPCREDS_PASSWD_FILE", "", "Dovecot passwd-file to keep in sync; %d in the path means one file per domain, %2Mu shard files by login (as in Dovecot's args)"},
	{"passwd-file-group", "SMTPCREDS_PASSWD_FILE_GROUP", "", "group of the passwd-file (Dovecot's auth process must read it; mode is 0640)"},
	{"webhook-url", "SMTPCREDS_WEBHOOK_URL", "", "URL of a sync agent receiving HMAC-signed change events"},
	{"webhook-secret", "SMTPCREDS_WEBHOOK_SECRET", "", "shared secret signing webhook events (16+ characters)"},
	{"dovecot-sql-role", "SMTPCREDS_DOVECOT_SQL_ROLE", "dovecot", "the database role Dovecot's SQL passdb connects as (sync target dovecot-sql checks that it may read the view)"},
	{"sync-timeout", "SMTPCREDS_SYNC_TIMEOUT", "2s", "how long a request waits for the sync target before answering remote_synced false"},
	{"operator-addr", "SMTPCREDS_OPERATOR_ADDR", "", "operator listener for /metrics (and pprof); empty = off; keep it private, e.g. 127.0.0.1:9090"},
	{"pprof", "SMTPCREDS_PPROF", "false", "serve net/http/pprof on the operator listener"},
	{"auth-cache", "SMTPCREDS_AUTH_CACHE", "true", "cache token digests and failed-login counts in process, kept true by LISTEN/NOTIFY (turn off behind a pooler that cannot LISTEN)"},
	{"request-timeout", "SMTPCREDS_REQUEST_TIMEOUT", "5s", "bound on one API request; an unreachable database fails requests with 503 after it"},
	{"rate-limit", "SMTPCREDS_RATE_LIMIT", "120", "requests per minute per account, 0 = off"},
	{"auth-fail-limit", "SMTPCREDS_AUTH_FAIL_LIMIT", "10", "failed logins per minute per client address, 0 = off"},
	{"max-credentials-per-domain", "SMTPCREDS_MAX_CREDENTIALS_PER_DOMAIN", "1000", "credential cap per domain, 0 = none"},
	{"password-scheme", "SMTPCREDS_PASSWORD_SCHEME", "SSHA512", "SSHA512, SHA512-CRYPT, BLF-CRYPT or ARGON2ID"},
	{"trusted-proxies", "SMTPCREDS_TRUSTED_PROXIES", "", "comma-separated CIDRs whose X-Forwarded-For is trusted"},
	{"log-format", "SMTPCREDS_LOG_FORMAT", "json", "json or text"},
	{"log-level", "SMTPCREDS_LOG_LEVEL", "info", "debug, info, warn or error"},
	{"db-max-conns", "SMTPCREDS_DB_MAX_CONNS", "20", "database connection pool size"},
	{"shutdown-timeout", "SMTPCREDS_SHUTDOWN_TIMEOUT", "15s", "how long in-flight requests may finish on shutdown"},
	{"shutdown-delay", "SMTPCREDS_SHUTDOWN_DELAY", "0s", "after SIGTERM, keep serving this long with /readyz failing, so a load balancer stops sending first"},
	{"data-dir", "SMTPCREDS_DATA_DIR", ".data", "local state of `smtpcreds dev` (PostgreSQL, keys)"},
}

// usageError is bad command-line input: one line on stderr, exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// helpText is asked-for help: printed on stdout, exit code 0.
type helpText string

func (h helpText) Error() string { return string(h) }

// parseConfig parses args (after the subcommand) into a config and returns
// the positional arguments. extra registers subcommand-specific flags.
func parseConfig(name string, args []string, getenv func(string) string, extra func(*flag.FlagSet)) (config, []string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	raw := map[string]*string{}
	for _, s := range settings {
		def := getenv(s.env)
		if def == "" {
			def = s.def
		}
		raw[s.flag] = fs.String(s.flag, def, s.usage+" ("+s.env+")")
	}
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(interleave(fs, args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			var b strings.Builder
			fs.SetOutput(&b)
			fs.PrintDefaults()
			return config{}, nil, helpText("usage: smtpcreds " + name + " [flags]\n\n" + b.String())
		}
		return config{}, nil, usagef("%s: %v", name, err)
	}
	var c config
	var err error
	bad := func(flag string, e error) error { return usagef("%s: invalid -%s: %v", name, flag, e) }
	c.DatabaseURL = *raw["database-url"]
	c.Addr = *raw["addr"]
	c.DataDir = *raw["data-dir"]
	c.LogFormat = *raw["log-format"]
	if c.LogFormat != "json" && c.LogFormat != "text" {
		return c, nil, bad("log-format", fmt.Errorf("want json or text"))
	}
	if err = c.LogLevel.UnmarshalText([]byte(*raw["log-level"])); err != nil {
		return c, nil, bad("log-level", err)
	}
	for flag, p := range map[string]*int{
		"rate-limit": &c.RateLimit, "auth-fail-limit": &c.AuthFailLimit,
		"max-credentials-per-domain": &c.MaxPerDomain, "db-max-conns": &c.DBMaxConns,
	} {
		n, err := strconv.Atoi(*raw[flag])
		if err != nil || n < 0 {
			return c, nil, bad(flag, fmt.Errorf("want a non-negative integer"))
		}
		*p = n
	}
	if c.DBMaxConns == 0 {
		return c, nil, bad("db-max-conns", fmt.Errorf("want at least 1"))
	}
	if c.PasswordScheme, err = password.ParseScheme(*raw["password-scheme"]); err != nil {
		return c, nil, bad("password-scheme", err)
	}
	if c.TrustedProxies, err = parsePrefixes(*raw["trusted-proxies"]); err != nil {
		return c, nil, bad("trusted-proxies", err)
	}
	if c.ShutdownTimeout, err = time.ParseDuration(*raw["shutdown-timeout"]); err != nil {
		return c, nil, bad("shutdown-timeout", err)
	}
	if c.ShutdownDelay, err = time.ParseDuration(*raw["shutdown-delay"]); err != nil || c.ShutdownDelay < 0 {
		return c, nil, bad("shutdown-delay", fmt.Errorf("want a duration such as 5s"))
	}
	if c.TokenKey, err = loadKey(*raw["token-key"], *raw["token-key-file"], 32); err != nil {
		return c, nil, bad("token-key", err)
	}
	if c.DKIMKey, err = loadKey(*raw["dkim-key"], *raw["dkim-key-file"], 32); err != nil {
		return c, nil, bad("dkim-key", err)
	}
	if len(c.DKIMKey) > 32 {
		return c, nil, bad("dkim-key", fmt.Errorf("want exactly 32 bytes, got %d", len(c.DKIMKey)))
	}
	c.DNS = dnsConfig{
		Selector: *raw["dkim-selector"], SPFInclude: *raw["spf-include"], MXHost: *raw["mx-host"],
		TrackingTarget: *raw["tracking-cname"], Resolver: *raw["dns-resolver"],
	}
	if c.DNS.Timeout, err = time.ParseDuration(*raw["dns-timeout"]); err != nil || c.DNS.Timeout <= 0 {
		return c, nil, bad("dns-timeout", fmt.Errorf("want a positive duration such as 3s"))
	}
	c.OperatorAddr = *raw["operator-addr"]
	if c.AuthCache, err = strconv.ParseBool(*raw["auth-cache"]); err != nil {
		return c, nil, bad("auth-cache", fmt.Errorf("want true or false"))
	}
	if c.Pprof, err = strconv.ParseBool(*raw["pprof"]); err != nil {
		return c, nil, bad("pprof", fmt.Errorf("want true or false"))
	}
	if c.Pprof && c.OperatorAddr == "" {
		return c, nil, bad("pprof", fmt.Errorf("needs -operator-addr"))
	}
	if c.RequestTimeout, err = time.ParseDuration(*raw["request-timeout"]); err != nil || c.RequestTimeout <= 0 {
		return c, nil, bad("request-timeout", fmt.Errorf("want a positive duration such as 5s"))
	}
	if c.Sync, err = parseSync(raw); err != nil {
		return c, nil, usagef("%s: %v", name, err)
	}
	for flag, v := range map[string]string{"dkim-selector": c.DNS.Selector, "mx-host": c.DNS.MXHost, "tracking-cname": c.DNS.TrackingTarget} {
		if v == "" || strings.ContainsAny(v, " :/") {
			return c, nil, bad(flag, fmt.Errorf("want a host name"))
		}
	}
	return c, fs.Args(), nil
}

// interleave moves flags after positional arguments to the front, so that
// `accounts create NAME --flag` works as well as `--flag NAME`.
func interleave(fs *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		if f := fs.Lookup(name); f != nil {
			if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
				continue
			}
			if i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
		}
	}
	return append(flags, pos...)
}

func parseSync(raw map[string]*string) (syncConfig, error) {
	sc := syncConfig{
		Target: *raw["sync-target"], PasswdFile: *raw["passwd-file"], PasswdGroup: *raw["passwd-file-group"],
		WebhookURL: *raw["webhook-url"], WebhookSecret: []byte(*raw["webhook-secret"]),
		DovecotRole: *raw["dovecot-sql-role"],
	}
	d, err := time.ParseDuration(*raw["sync-timeout"])
	if err != nil || d <= 0 {
		return sc, fmt.Errorf("invalid -sync-timeout: want a positive duration such as 2s")
	}
	sc.Timeout = d
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
			return sc, fmt.Errorf("sync target dovecot-sql needs -dovecot-sql-role (SMTPCREDS_DOVECOT_SQL_ROLE), the role Dovecot connects as")
		}
	case "passwd-file":
		if sc.PasswdFile == "" {
			return sc, fmt.Errorf("sync target passwd-file needs -passwd-file (SMTPCREDS_PASSWD_FILE)")
		}
	case "webhook":
		if sc.WebhookURL == "" || len(sc.WebhookSecret) < 16 {
			return sc, fmt.Errorf("sync target webhook needs -webhook-url and a -webhook-secret of 16+ characters")
		}
	default:
		return sc, fmt.Errorf("invalid -sync-target %q: want passwd-file, webhook, dovecot-sql or none", sc.Target)
	}
	// Settings of another target would be ignored: a typo'd or stale
	// target must not leave the operator believing the file or the agent
	// is kept in sync. A group alone is allowed with none: `dev` then
	// syncs its default passwd-file, with that group.
	if sc.Target != "passwd-file" && (sc.PasswdFile != "" || (sc.PasswdGroup != "" && sc.Target != "none")) {
		return sc, fmt.Errorf("-passwd-file or -passwd-file-group is set, but the sync target is %s, which would ignore it: unset it or choose -sync-target passwd-file", sc.Target)
	}
	if sc.Target != "webhook" && (sc.WebhookURL != "" || len(sc.WebhookSecret) > 0) {
		return sc, fmt.Errorf("-webhook-url or -webhook-secret is set, but the sync target is %s, which would ignore it: unset it or choose -sync-target webhook", sc.Target)
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
		OperatorAddr:    c.OperatorAddr,
		Pprof:           c.Pprof,
		ShutdownDelay:   c.ShutdownDelay,
		ShutdownTimeout: c.ShutdownTimeout,
	}
}
