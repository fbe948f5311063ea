package httpapi_test

import (
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/smtpcreds/smtpcreds/gen"
	"github.com/smtpcreds/smtpcreds/internal/dbtest"
	"github.com/smtpcreds/smtpcreds/internal/proctest"
)

// TestMain runs the tests (in parallel, in any order), then checks what the
// whole suite left behind: every (operation, status) pair openapi.yaml
// documents was produced, and no secret any test saw reached any server
// log. A failed check prints what is wrong and fails the test binary. The
// checks are skipped when -run, -skip or -list picks tests.
func TestMain(m *testing.M) {
	code := dbtest.Run(m)
	if picked() {
		os.Exit(code)
	}
	if !noSecretInAnyLog(os.Stderr, code == 0) {
		code = 1
	}
	if code == 0 && !everyDocumentedStatus(os.Stderr) {
		code = 1
	}
	os.Exit(code)
}

// picked reports whether the command line chose some tests only.
func picked() bool {
	for _, name := range []string{"test.run", "test.skip", "test.list"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return true
		}
	}
	return false
}

// everyDocumentedStatus checks that the tests produced every (operation,
// status) pair openapi.yaml documents, each response validated against the
// spec; it reports the missing ones on w.
func everyDocumentedStatus(w io.Writer) bool {
	var missing []string
	for _, pair := range documentedStatuses() {
		if _, ok := observed.Load(pair); !ok {
			missing = append(missing, pair)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		fmt.Fprintf(w, "FAIL: documented but never produced by a test: %v\n", missing)
		return false
	}
	return true
}

// noSecretInAnyLog checks that no password, token or Authorization header
// that any test saw reached any server log; it reports leaks on w. When
// complete is set, the suite ran whole, so that too few secrets means the
// harness stopped collecting them.
func noSecretInAnyLog(w io.Writer, complete bool) bool {
	secrets := 0
	allSecrets.Range(func(_, _ any) bool { secrets++; return true })
	if complete && secrets < 20 {
		fmt.Fprintf(w, "FAIL: only %d secrets collected: the suite did not run\n", secrets)
		return false
	}
	ok := true
	allLogs.Range(func(k, _ any) bool {
		logs := k.(*proctest.Buffer).String()
		allSecrets.Range(func(s, what any) bool {
			if strings.Contains(logs, s.(string)) {
				fmt.Fprintf(w, "FAIL: a %s reached a server log\n", what)
				ok = false
			}
			return true
		})
		return true
	})
	return ok
}

// documentedStatuses lists every (operationId, status) pair in openapi.yaml.
func documentedStatuses() []string {
	spec, err := gen.GetSpec()
	if err != nil {
		panic(err)
	}
	var out []string
	for _, item := range spec.Paths.Map() {
		for _, op := range item.Operations() {
			for code := range op.Responses.Map() {
				out = append(out, op.OperationID+" "+code)
			}
		}
	}
	return out
}
