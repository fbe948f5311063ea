package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// pkg is what the rules need from `go list -json`.
type pkg struct {
	ImportPath   string
	Imports      []string // the package's own files
	TestImports  []string // its _test.go files in the same package
	XTestImports []string // its _test.go files in package <name>_test
}

// rules checks the import graph of module mod and returns one line per edge
// that breaks a rule:
//
//   - gen (generated from openapi.yaml) is imported only by internal/httpapi,
//     internal/app (the composition root) and cmd/..., and their tests: the
//     wire types stop at the HTTP edge.
//   - internal/syncer (the outbox) imports none of its targets
//     internal/syncer/...; they register with it from the composition root.
//     Its external tests (package syncer_test) may use targets.
//   - Nothing under internal/ imports an edge (internal/httpapi, or
//     internal/milter beside it) or cmd/...: imports go down. Exceptions:
//     internal/app, which wires everything; test-only helper packages
//     (named *test, like dbtest); and an edge's own tests.
func rules(mod string, pkgs []pkg) []string {
	var (
		gen     = mod + "/gen"
		httpapi = mod + "/internal/httpapi"
		milter  = mod + "/internal/milter"
		app     = mod + "/internal/app"
		syncer  = mod + "/internal/syncer"
		cmd     = mod + "/cmd"
	)
	under := func(p, root string) bool { return p == root || strings.HasPrefix(p, root+"/") }
	var bad []string
	for _, p := range pkgs {
		for _, e := range edges(p) {
			from, to := p.ImportPath, e.to
			if to == gen && !under(from, httpapi) && from != app && !under(from, cmd) {
				bad = append(bad, fmt.Sprintf("%s imports %s%s: only internal/httpapi, internal/app and cmd/... may use the generated API types", rel(mod, from), rel(mod, to), e.kind))
			}
			if from == syncer && e.kind != xtest && under(to, syncer) && to != syncer {
				bad = append(bad, fmt.Sprintf("%s imports %s%s: the syncer must not know its targets; wire them in the composition root", rel(mod, from), rel(mod, to), e.kind))
			}
			if under(from, mod+"/internal") && (to == httpapi || to == milter || under(to, cmd)) &&
				from != app && !strings.HasSuffix(from, "test") && from != to {
				bad = append(bad, fmt.Sprintf("%s imports %s%s: imports go down; only internal/app (and cmd/) may import an edge (HTTP, milter) or the commands", rel(mod, from), rel(mod, to), e.kind))
			}
		}
	}
	slices.Sort(bad)
	return slices.Compact(bad)
}

const xtest = " (in its external tests)"

type edge struct{ to, kind string }

// edges lists p's imports, each with where it comes from: "" for the
// package itself, " (in its tests)" or xtest.
func edges(p pkg) []edge {
	var es []edge
	for _, to := range p.Imports {
		es = append(es, edge{to, ""})
	}
	for _, to := range p.TestImports {
		es = append(es, edge{to, " (in its tests)"})
	}
	for _, to := range p.XTestImports {
		es = append(es, edge{to, xtest})
	}
	return es
}

func rel(mod, p string) string {
	if p == mod {
		return "(module root)"
	}
	return strings.TrimPrefix(p, mod+"/")
}

func TestImportRules(t *testing.T) {
	mod, pkgs := listModule(t)
	if len(pkgs) < 10 {
		t.Fatalf("go list found %d packages in %s; expected the whole module", len(pkgs), mod)
	}
	for _, v := range rules(mod, pkgs) {
		t.Error(v)
	}
}

// TestRulesCatchViolations shows that each rule can fail, and that every
// violating edge is reported, not just the first.
func TestRulesCatchViolations(t *testing.T) {
	const m = "example.com/m"
	pkgs := []pkg{
		{ImportPath: m + "/internal/httpapi", Imports: []string{m + "/gen"}, XTestImports: []string{m + "/internal/httpapi"}},
		{ImportPath: m + "/internal/app", Imports: []string{m + "/gen", m + "/internal/httpapi", m + "/internal/syncer/webhook"}},
		{ImportPath: m + "/cmd/x", Imports: []string{m + "/gen", m + "/internal/app"}},
		{ImportPath: m + "/internal/dbtest", Imports: []string{m + "/internal/httpapi"}},
		{ImportPath: m + "/internal/syncer", XTestImports: []string{m + "/internal/syncer/webhook"}},
		// violations
		{ImportPath: m + "/internal/domains", Imports: []string{m + "/gen"}, TestImports: []string{m + "/internal/httpapi"}},
		{ImportPath: m + "/internal/credentials", XTestImports: []string{m + "/gen", m + "/cmd/x"}},
		{ImportPath: m + "/internal/syncer", Imports: []string{m + "/internal/syncer/passwdfile"}, TestImports: []string{m + "/internal/syncer/webhook"}},
		{ImportPath: m + "/internal/syncer/webhook", Imports: []string{m + "/internal/httpapi"}},
		{ImportPath: m + "/internal/relay", TestImports: []string{m + "/internal/milter"}},
		{ImportPath: m, Imports: []string{m + "/gen"}},
	}
	got := rules(m, pkgs)
	want := []string{
		"(module root) imports gen",
		"internal/credentials imports cmd/x (in its external tests)",
		"internal/credentials imports gen (in its external tests)",
		"internal/domains imports gen:",
		"internal/domains imports internal/httpapi (in its tests)",
		"internal/relay imports internal/milter (in its tests)",
		"internal/syncer imports internal/syncer/passwdfile:",
		"internal/syncer imports internal/syncer/webhook (in its tests)",
		"internal/syncer/webhook imports internal/httpapi:",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d violations, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("violation %d = %q, want it to start with %q", i, got[i], want[i])
		}
	}
}

// listModule runs `go list -json ./...` at the module root.
func listModule(t *testing.T) (string, []pkg) {
	t.Helper()
	gomod := goCmd(t, "", "env", "GOMOD")
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	mod := strings.TrimSpace(string(goCmd(t, root, "list", "-m")))
	out := goCmd(t, root, "list", "-json", "./...")
	var pkgs []pkg
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list -json: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return mod, pkgs
}

func goCmd(t *testing.T, dir string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}
