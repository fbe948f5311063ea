package syncer

import (
	"context"
	"encoding/json"
	"testing"
)

// The key a drafted job's statement adds the credential id under is the
// one Event's JSON holds it in, and a draft leaves it to the statement.
func TestCredentialIDKeyIsEventsJSONKey(t *testing.T) {
	var m map[string]any
	b, err := json.Marshal(Event{CredentialID: 42})
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m[credentialIDKey] != float64(42) {
		t.Errorf("Event{CredentialID: 42} is %s, with no %q: 42", b, credentialIDKey)
	}
	d, err := New(nil, namedTarget{}, Config{}, nil).Draft(Event{CredentialID: 42, Domain: "a.example"})
	if err != nil {
		t.Fatal(err)
	}
	if d.IDKey != credentialIDKey {
		t.Errorf("draft's IDKey %q, want %q", d.IDKey, credentialIDKey)
	}
	m = nil
	if err := json.Unmarshal(d.Event, &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m[credentialIDKey]; ok {
		t.Errorf("draft's event %s already holds %q", d.Event, credentialIDKey)
	}
}

// namedTarget is a Target that only has a name and scopes.
type namedTarget struct{}

func (namedTarget) Name() string                       { return "named" }
func (namedTarget) Scope(domain string) string         { return domain }
func (namedTarget) NeedsSnapshot() bool                { return false }
func (namedTarget) Apply(context.Context, Batch) error { return nil }
