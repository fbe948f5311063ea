package syncer

import (
	"slices"
	"testing"
)

func TestChangedCredentials(t *testing.T) {
	ids, logins, ok := changedCredentials([]Event{{Type: CredentialUpserted, CredentialID: 3, Login: "a@x.example"}, {Type: CredentialDeleted, CredentialID: 4, Login: "b@x.example"}})
	if !ok || !slices.Equal(ids, []int64{3, 4}) || !slices.Equal(logins, []string{"a@x.example", "b@x.example"}) {
		t.Errorf("got %v %v %v", ids, logins, ok)
	}
	if _, _, ok := changedCredentials([]Event{{Type: CredentialUpserted, CredentialID: 3, Login: "a@x.example"}}); !ok {
		t.Error("a credential event with its login must not call for a whole-scope read")
	}
	if _, _, ok := changedCredentials([]Event{{Type: CredentialUpserted, CredentialID: 3}}); ok {
		t.Error("an event without its login must call for a whole-scope read")
	}
	if _, _, ok := changedCredentials([]Event{{Type: CredentialUpserted, CredentialID: 3, Login: "a@x.example"}, {Type: DomainDeleted, Domain: "example.com"}}); ok {
		t.Error("a domain deletion must call for a whole-scope read")
	}
}
