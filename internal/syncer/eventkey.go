package syncer

import (
	"reflect"
	"strings"

	"github.com/smtpcreds/smtpcreds/internal/postgres"
)

// credentialIDKey is the key of Event.CredentialID in an event's JSON: a
// drafted job's statement adds the new credential's id under it (see
// Draft), so the event's shape is spelled only by Event's tags.
var credentialIDKey = jsonKey(reflect.TypeFor[Event](), "CredentialID")

// eventKeys are the keys a claim reads the changed credentials by (see
// postgres.SyncRepo.ClaimLocked).
var eventKeys = postgres.EventKeys{ID: credentialIDKey, Login: jsonKey(reflect.TypeFor[Event](), "Login")}

// jsonKey is the JSON key encoding/json gives the field of t called field.
func jsonKey(t reflect.Type, field string) string {
	f, ok := t.FieldByName(field)
	if !ok {
		panic("syncer: no field " + t.Name() + "." + field)
	}
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if name == "" {
		return f.Name
	}
	return name
}
