// Package smtpcreds carries the published API contract, openapi.yaml, into the
// binary and holds the go:generate line that turns it into package gen.
package smtpcreds

import _ "embed"

//go:generate go tool oapi-codegen -config oapi-codegen.yaml openapi.yaml

// OpenAPI is the raw openapi.yaml, served as-is at GET /openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte
