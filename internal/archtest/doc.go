// Package archtest enforces the import rules of STYLE.md's one-way picture,
// so that a new edge that breaks the layering fails `make lint`.
//
// It has no code of its own: imports_test.go reads the package graph with
// `go list -json ./...` and reports every edge that breaks a rule. Run it
// with -count=1 (make lint does): the go command cannot see that the result
// depends on other packages' files, so a cached pass may be stale.
package archtest
