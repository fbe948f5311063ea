package httpapi_test

import (
	"flag"
	"sort"
	"strings"
	"testing"
)

// TestEveryDocumentedStatus runs last (file order) and checks that the tests
// above produced every (operation, status) pair openapi.yaml documents, each
// response validated against the spec.
func TestEveryDocumentedStatus(t *testing.T) {
	if f := flag.Lookup("test.run"); f != nil && f.Value.String() != "" {
		t.Skip("only meaningful when the whole package runs")
	}
	var missing []string
	for _, pair := range documentedStatuses(t) {
		if _, ok := observed.Load(pair); !ok {
			missing = append(missing, pair)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("documented but never produced by a test: %v", missing)
	}
}

// TestNoSecretInAnyLog runs last: no password, token or Authorization header
// that any test above saw reached any server log.
func TestNoSecretInAnyLog(t *testing.T) {
	secrets := 0
	allSecrets.Range(func(_, _ any) bool { secrets++; return true })
	if secrets < 20 {
		t.Fatalf("only %d secrets collected: the suite did not run", secrets)
	}
	allLogs.Range(func(k, _ any) bool {
		logs := k.(*syncBuffer).String()
		allSecrets.Range(func(s, what any) bool {
			if strings.Contains(logs, s.(string)) {
				t.Errorf("a %s reached a server log", what)
			}
			return true
		})
		return true
	})
}
