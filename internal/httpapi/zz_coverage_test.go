package httpapi_test

import (
	"flag"
	"sort"
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
