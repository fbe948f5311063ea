// Package validation carries rule violations from the domain packages to the
// HTTP layer, so that one place renders them as the 422 envelope.
//
// Messages name the field and the rule and never echo the submitted value.
package validation

import (
	"sort"
	"strings"
)

// Error lists the violated rules, per field.
type Error struct {
	Fields map[string][]string
}

// New returns an Error with one message for field.
func New(field, message string) *Error {
	return &Error{Fields: map[string][]string{field: {message}}}
}

// Add appends a message for field.
func (e *Error) Add(field, message string) {
	if e.Fields == nil {
		e.Fields = map[string][]string{}
	}
	e.Fields[field] = append(e.Fields[field], message)
}

func (e *Error) Error() string {
	keys := make([]string, 0, len(e.Fields))
	for k := range e.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("validation failed:")
	for _, k := range keys {
		b.WriteString(" " + k + ": " + strings.Join(e.Fields[k], "; "))
	}
	return b.String()
}
