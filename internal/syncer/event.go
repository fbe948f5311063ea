package syncer

// Event types.
const (
	CredentialUpserted = "credential.upserted"
	CredentialDeleted  = "credential.deleted"
	DomainDeleted      = "domain.deleted"
	// CredentialsImported: credentials were added in bulk (an import) to
	// the domains of Domains, all in one scope; the event names none of
	// them. A target that reads state reads the scope whole (Batch.Scan).
	// Targets that do neither get one CredentialUpserted event per
	// credential instead (see Service.Bulk).
	CredentialsImported = "credentials.imported"
)

// Event is one change, as stored in the outbox and as sent to event targets.
// It never holds a plaintext password: PasswordHash is what the backend stores.
type Event struct {
	Type         string   `json:"type"`
	Domain       string   `json:"domain"`
	Login        string   `json:"login,omitempty"`
	Username     string   `json:"username,omitempty"`
	CredentialID int64    `json:"credential_id,omitempty"`
	GUID         string   `json:"user_smtp_guid,omitempty"`
	Version      int64    `json:"version,omitempty"`
	PasswordHash string   `json:"password_hash,omitempty"`
	Logins       []string `json:"logins,omitempty"`
	// Domains are the domains a CredentialsImported event added to.
	Domains    []string `json:"domains,omitempty"`
	OccurredAt int64    `json:"occurred_at"`
	// Reason says why a credential.deleted event removes a login whose
	// credential still exists: ReasonDisabled or ReasonExpired ("" for a
	// deletion). The login must stop authenticating either way.
	Reason string `json:"reason,omitempty"`
	// PreviousPasswordHash is, on a credential.upserted event during a
	// grace period, the replaced password's hash, which also authenticates
	// until PreviousPasswordExpiresAt (Unix seconds). An upserted event
	// without it ends any grace period.
	PreviousPasswordHash      string `json:"previous_password_hash,omitempty"`
	PreviousPasswordExpiresAt int64  `json:"previous_password_expires_at,omitempty"`
}

// Reasons of a credential.deleted event whose credential is kept, and of
// the credential.upserted event that ends a grace period.
const (
	ReasonDisabled   = "disabled"
	ReasonExpired    = "expired"
	ReasonGraceEnded = "grace_ended"
)

// PreviousSuffix makes the key under which a state-reading target holds the
// previous password of a login in a grace period: "<login>/previous" (a
// login never holds '/', nor, by default, may Dovecot's users type one).
// Dovecot finds it through a second passdb whose username_format is
// "%u/previous".
const PreviousSuffix = "/previous"

// Entry is one credential as a backend holds it: a login and the hash it
// verifies.
type Entry struct {
	// Login is the user name the SMTP server looks up, "user@domain".
	Login string
	// Hash is the stored password, "{SCHEME}..." as Dovecot expects. It is
	// never included in error messages.
	Hash string
}

// changedCredentials returns the credentials the events change and their
// logins, or false when an event changes more than single credentials (a
// domain deletion), or does not name its login.
func changedCredentials(events []Event) (ids []int64, logins []string, ok bool) {
	ids = make([]int64, 0, len(events))
	logins = make([]string, 0, len(events))
	for _, e := range events {
		if e.Type != CredentialUpserted && e.Type != CredentialDeleted || e.CredentialID == 0 || e.Login == "" {
			return nil, nil, false
		}
		ids, logins = append(ids, e.CredentialID), append(logins, e.Login)
	}
	return ids, logins, true
}
