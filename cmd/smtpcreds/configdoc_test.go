package main

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the README's configuration table from the flag declarations")

// The README's configuration table is the one the flag declarations
// render: a flag added, renamed or re-documented without the README (or
// the other way round) fails here. -update rewrites the README.
func TestREADMEConfigTable(t *testing.T) {
	const path = "../../README.md"
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want, err := configTable()
	if err != nil {
		t.Fatal(err)
	}
	s := string(readme)
	begin, end := strings.Index(s, configTableBegin), strings.Index(s, configTableEnd)
	if begin < 0 || end < begin {
		t.Fatalf("README.md lacks the markers %q ... %q", configTableBegin, configTableEnd)
	}
	got := s[begin+len(configTableBegin)+1 : end]
	if got == want {
		return
	}
	if *update {
		s = s[:begin+len(configTableBegin)+1] + want + s[end:]
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Log("README.md: configuration table rewritten")
		return
	}
	t.Errorf("README.md's configuration table differs from the flags (go test ./cmd/smtpcreds -run TestREADMEConfigTable -update rewrites it):\n--- README\n%s\n--- flags\n%s", got, want)
}
