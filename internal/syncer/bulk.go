package syncer

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// Bulk is how a bulk insert of credentials (an import) reaches the target:
// nil when sync is disabled. With PerCredential, the insert statement
// writes one CredentialUpserted job per credential itself (a target that
// replays events, the webhook: its receiver needs every login and hash);
// otherwise the caller enqueues one CredentialsImported job per scope it
// added to (EnqueueImported) in the insert's transaction, and the target
// reads the scope's state (passwd-file) or the database itself (dovecot-sql).
func (s *Service) Bulk() *postgres.BulkJobs {
	if s == nil {
		return nil
	}
	_, live := s.target.(Live)
	b := &postgres.BulkJobs{Target: s.target.Name(), PerCredential: !s.readsState && !live}
	if b.PerCredential {
		t := reflect.TypeFor[Event]()
		b.Type = CredentialUpserted
		b.Keys = postgres.BulkKeys{
			Type: jsonKey(t, "Type"), Domain: jsonKey(t, "Domain"), Login: jsonKey(t, "Login"),
			Username: jsonKey(t, "Username"), ID: credentialIDKey, GUID: jsonKey(t, "GUID"),
			Version: jsonKey(t, "Version"), Hash: jsonKey(t, "PasswordHash"), OccurredAt: jsonKey(t, "OccurredAt"),
		}
	}
	return b
}

// Scope is the target's scope of domain ("" when sync is disabled).
func (s *Service) Scope(domain string) string {
	if s == nil {
		return ""
	}
	return s.target.Scope(domain)
}

// EnqueueImported writes one CredentialsImported job per scope of the
// domains, in the transaction of the bulk insert that added credentials
// to them. Nothing for an empty list, a disabled sync, or a PerCredential
// target (whose insert wrote its jobs).
func (s *Service) EnqueueImported(ctx context.Context, q sqlx.QueryerContext, domains []string) (Pending, error) {
	if s == nil || len(domains) == 0 || s.Bulk().PerCredential {
		return Pending{}, nil
	}
	byScope := map[string][]string{}
	var scopes []string
	for _, d := range domains {
		sc := s.target.Scope(d)
		if _, ok := byScope[sc]; !ok {
			scopes = append(scopes, sc)
		}
		byScope[sc] = append(byScope[sc], d)
	}
	var p Pending
	for _, sc := range scopes {
		ds := byScope[sc]
		slices.Sort(ds)
		b, err := json.Marshal(Event{Type: CredentialsImported, Domain: ds[0], Domains: ds, OccurredAt: time.Now().Unix()})
		if err != nil {
			return Pending{}, fmt.Errorf("enqueue import job: %w", err)
		}
		id, err := s.repo.Insert(ctx, q, s.target.Name(), sc, b)
		if err != nil {
			return Pending{}, err
		}
		p.ids, p.scopes = append(p.ids, id), append(p.scopes, sc)
	}
	return p, nil
}

// Inserted is the Pending of jobs a bulk insert wrote itself (ids) in the
// scopes of domains.
func (s *Service) Inserted(ids []int64, domains []string) Pending {
	if s == nil || len(ids) == 0 {
		return Pending{}
	}
	p := Pending{ids: ids}
	for _, d := range domains {
		if sc := s.target.Scope(d); !slices.Contains(p.scopes, sc) {
			p.scopes = append(p.scopes, sc)
		}
	}
	return p
}

// Merge returns the jobs of p and q together.
func (p Pending) Merge(q Pending) Pending {
	out := Pending{ids: append(slices.Clip(p.ids), q.ids...), scopes: slices.Clone(p.scopes)}
	for _, sc := range q.scopes {
		if !slices.Contains(out.scopes, sc) {
			out.scopes = append(out.scopes, sc)
		}
	}
	return out
}

// Len is the number of jobs of p.
func (p Pending) Len() int { return len(p.ids) }

// importedDomains returns the domains of the CredentialsImported events.
func importedDomains(events []Event) []string {
	var out []string
	for _, e := range events {
		if e.Type == CredentialsImported {
			out = append(out, e.Domains...)
		}
	}
	return out
}
