package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/alecthomas/kong"
)

// The README's configuration table is rendered from the flag declarations
// (config.go), so that the flags, their help and the documentation cannot
// drift: TestREADMEConfigTable compares it with the README between these
// markers (go test ./cmd/smtpcreds -run TestREADMEConfigTable -update
// rewrites it).
const (
	configTableBegin = "<!-- config-table:begin (generated from cmd/smtpcreds/config.go; see configdoc.go) -->"
	configTableEnd   = "<!-- config-table:end -->"
)

// envOnly are the settings read from the environment alone (not flags).
var envOnly = [][2]string{
	{"SMTPCREDS_PG_BIN", "found on {PATH} or {/usr/lib/postgresql/*/bin}|PostgreSQL binaries for {dev} and tests"},
}

// configTable is the README's configuration table: every flag of dev (which
// has every setting), in declaration order, then envOnly.
func configTable() (string, error) {
	k, envOf, err := newParser(&cli{}, func(string) string { return "" }, io.Discard, io.Discard)
	if err != nil {
		return "", err
	}
	var dev *kong.Node
	for _, c := range k.Model.Children {
		if c.Name == "dev" {
			dev = c
		}
	}
	if dev == nil {
		return "", fmt.Errorf("no dev command")
	}
	md := func(s string) string { return codeSpan.ReplaceAllString(s, "`$1`") }
	var b strings.Builder
	b.WriteString("| flag | environment | default | meaning |\n|---|---|---|---|\n")
	for _, f := range dev.Flags {
		env := envOf[f.Name]
		def := "–"
		if d := f.Tag.Get("docdefault"); d != "" {
			def = md(d)
		} else if f.HasDefault {
			def = "`" + f.Default + "`"
		}
		fmt.Fprintf(&b, "| `--%s` | `%s` | %s | %s |\n", f.Name, env, def, md(f.Help))
	}
	for _, e := range envOnly {
		def, meaning, _ := strings.Cut(e[1], "|")
		fmt.Fprintf(&b, "| – | `%s` | %s | %s |\n", e[0], md(def), md(meaning))
	}
	return b.String(), nil
}
