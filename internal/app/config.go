package app

import (
	"net/netip"
	"time"

	"github.com/smtpcreds/smtpcreds/internal/password"
	"github.com/smtpcreds/smtpcreds/internal/relay"
)

// Config is every setting the server is built from. cmd/smtpcreds fills it
// from flags and the environment; the tests fill it directly. Zero values
// mean what the packages they reach take them to mean (a zero timeout is
// the package's default), except where a field says otherwise.
type Config struct {
	DatabaseURL string
	// DBMaxConns sizes the main pool; the rate-counter pool gets half (at
	// least 2).
	DBMaxConns int
	// Addr is the API's listen address (Run only).
	Addr string
	// TokenKey is the HMAC key of API tokens (32+ bytes); DKIMKey seals
	// DKIM private keys (32 bytes).
	TokenKey, DKIMKey []byte

	RateLimit      int // requests per minute per account, 0 = off
	AuthFailLimit  int // failed logins per minute per client address, 0 = off
	MaxPerDomain   int // credential cap per domain, 0 = none
	PasswordScheme password.Scheme
	TrustedProxies []netip.Prefix
	// AuthCache keeps token digests and failed-login counts in process,
	// kept true by LISTEN/NOTIFY.
	AuthCache      bool
	RequestTimeout time.Duration

	DNS   DNSConfig
	Sync  SyncConfig
	Relay RelayConfig

	// MilterAddr is where the milter listens (inet:HOST:PORT or
	// unix:PATH): NewRelay's, and Run's too when set for New.
	MilterAddr string

	// OperatorAddr is the listener of /metrics (and pprof when Pprof);
	// empty: none (Run only).
	OperatorAddr string
	Pprof        bool

	// ShutdownDelay is how long Run keeps serving with /readyz failing
	// once its context ends; ShutdownTimeout bounds in-flight requests
	// after that.
	ShutdownDelay   time.Duration
	ShutdownTimeout time.Duration
}

// DNSConfig is the operator's DNS setup: the records users must publish
// and the resolver the checks ask ("" = the system's).
type DNSConfig struct {
	Selector       string
	SPFInclude     string
	MXHost         string
	TrackingTarget string
	Resolver       string
	Timeout        time.Duration
}

// SyncConfig picks and configures the SMTP-backend sync target.
type SyncConfig struct {
	// Target is passwd-file, webhook or dovecot-sql; anything else (none,
	// "") turns sync off.
	Target        string
	PasswdFile    string // path template, see passwdfile.New
	PasswdGroup   string
	WebhookURL    string
	WebhookSecret []byte
	// WebhookTimeout bounds one delivery (0: the webhook package's default).
	WebhookTimeout time.Duration
	DovecotRole    string // the database role Dovecot's SQL passdb connects as
	// Timeout is how long a request waits for the target before answering
	// remote_synced false.
	Timeout time.Duration
	// The worker's pace (0: the syncer's defaults; tests shorten them).
	PollInterval, BaseBackoff, MaxBackoff time.Duration
}

// RelayConfig is the relay side's policy: the milter applies it to
// messages, and the API answers the account's quota from the same limits.
type RelayConfig struct {
	// Login and Account are the default sending limits of one SMTP login
	// and of all logins of one account; a credential's own limits win over
	// Login. Account.PerDay is the quota GET /api/quota reports.
	Login, Account relay.Limits
	// AccountSenders lets a login send as any verified domain of its
	// account, not only its own domain.
	AccountSenders bool
	// LogRetention is how long the message log keeps a message (0: 30 days).
	LogRetention time.Duration
	// LogSubjects stores messages' subjects in the log.
	LogSubjects bool
}
