package domains

import (
	"time"

	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// Domain is a sending domain as its owner sees it. It never carries a
// private key.
type Domain struct {
	ID       int64
	Name     string
	Verified bool
	// VerifiedBy says what keeps the domain verified: VerifiedByDNS,
	// VerifiedByOperator, or "" while it is not verified.
	VerifiedBy string
	Active     bool
	CreatedAt  time.Time
	ModifiedAt time.Time

	DKIMSelector  string
	DKIMKeyBits   int
	DKIMPublicKey string
	DKIMOK        bool
	SPFOK         bool
	MXOK          bool
	CheckedAt     *time.Time

	OpenTrack, ClickTrack, UnsubTrack bool

	AuthDomain        string
	AuthDKIMSelector  string
	AuthDKIMPublicKey string
	AuthVerified      bool
	AuthCheckedAt     *time.Time

	TrackingDomain    string
	TrackingVerified  bool
	TrackingCheckedAt *time.Time

	// SPFRecord is the SPF value to publish (at the domain and the auth domain).
	SPFRecord string
	// Records lists every DNS record to publish.
	Records []Record
}

// What keeps a domain verified (Domain.VerifiedBy).
const (
	// VerifiedByDNS: the last DNS check found DKIM and SPF.
	VerifiedByDNS = "dns"
	// VerifiedByOperator: an operator marked the domain verified. The mark
	// stands until the operator withdraws it; DNS checks store and report
	// their results but do not unverify the domain.
	VerifiedByOperator = "operator"
)

// OwnedDomain is a domain with the name of its account: the operator's view.
type OwnedDomain struct {
	Domain
	Account   string
	accountID int64
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Record is one DNS record the domain owner publishes.
type Record struct {
	Purpose  string // dkim, spf, mx, auth_dkim, auth_spf, auth_mx, tracking
	Type     string // TXT, MX, CNAME
	Name     string
	Value    string
	Priority int // MX only
}

// DKIMName is where the domain's DKIM key is published.
func (d Domain) DKIMName() string { return d.DKIMSelector + "._domainkey." + d.Name }

// AuthDKIMName is where the auth domain's DKIM key is published.
func (d Domain) AuthDKIMName() string { return d.AuthDKIMSelector + "._domainkey." + d.AuthDomain }

// DKIMRecord is the TXT value of a DKIM public key ("" without a key).
func DKIMRecord(publicKeyB64 string) string {
	if publicKeyB64 == "" {
		return ""
	}
	return "v=DKIM1; k=rsa; p=" + publicKeyB64
}

// spfRecord is the SPF value that passes the SPF check under cfg.
func (c Config) spfRecord() string {
	if c.SPFInclude != "" {
		return "v=spf1 include:" + c.SPFInclude + " ~all"
	}
	return "v=spf1 a:" + c.MXHost + " ~all"
}

func (s *Service) fromRow(r postgres.DomainRow) Domain {
	d := Domain{
		ID: r.ID, Name: r.Name, Verified: r.IsVerified, VerifiedBy: deref(r.VerifiedBy), Active: r.Status,
		CreatedAt: r.CreatedAt, ModifiedAt: r.ModifiedAt,
		DKIMSelector: r.DKIMSelector, DKIMKeyBits: r.DKIMKeyBits, DKIMPublicKey: r.DKIMPublicKey,
		DKIMOK: r.DKIMVerified, SPFOK: r.SPFVerified, MXOK: r.MXVerified, CheckedAt: r.CheckedAt,
		OpenTrack: r.OpenTrack, ClickTrack: r.ClickTrack, UnsubTrack: r.UnsubTrack,
		AuthDomain: r.AuthDomain, AuthDKIMSelector: r.AuthDKIMSelector, AuthDKIMPublicKey: r.AuthDKIMPublicKey,
		AuthVerified: r.AuthVerified, AuthCheckedAt: r.AuthCheckedAt,
		TrackingDomain: r.TrackingDomain, TrackingVerified: r.TrackingVerified, TrackingCheckedAt: r.TrackingCheckedAt,
		SPFRecord: s.cfg.spfRecord(),
	}
	d.Records = s.records(d)
	return d
}

func (s *Service) records(d Domain) []Record {
	recs := []Record{
		{Purpose: "dkim", Type: "TXT", Name: d.DKIMName(), Value: DKIMRecord(d.DKIMPublicKey)},
		{Purpose: "spf", Type: "TXT", Name: d.Name, Value: d.SPFRecord},
		{Purpose: "mx", Type: "MX", Name: d.Name, Value: s.cfg.MXHost, Priority: 10},
	}
	if d.AuthDomain != "" {
		recs = append(recs,
			Record{Purpose: "auth_dkim", Type: "TXT", Name: d.AuthDKIMName(), Value: DKIMRecord(d.AuthDKIMPublicKey)},
			Record{Purpose: "auth_spf", Type: "TXT", Name: d.AuthDomain, Value: d.SPFRecord},
			Record{Purpose: "auth_mx", Type: "MX", Name: d.AuthDomain, Value: s.cfg.MXHost, Priority: 10},
		)
	}
	if d.TrackingDomain != "" {
		recs = append(recs, Record{Purpose: "tracking", Type: "CNAME", Name: d.TrackingDomain, Value: s.cfg.TrackingTarget})
	}
	return recs
}
