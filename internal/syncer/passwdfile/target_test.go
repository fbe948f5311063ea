package passwdfile

import (
	"errors"
	"path/filepath"
	"testing"
)

// Sync errors reach API users: the passwd-file directory is replaced
// wherever it appears as a path, and only there.
func TestTargetErrorsHideTheDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "auth")
	w, err := New(filepath.Join(dir, "%d", "%2Mu"), "")
	if err != nil {
		t.Fatal(err)
	}
	r := newRenderer(w)
	for in, want := range map[string]string{
		"open " + dir + "/example.com/b4: denied": "open <passwd-file dir>/example.com/b4: denied",
		dir + " is not a directory":               "<passwd-file dir> is not a directory",
		"files in " + dir + ": not synced":        "files in <passwd-file dir>: not synced",
		"at the end " + dir:                       "at the end <passwd-file dir>",
		dir + "ority/x and " + dir + ".bak kept":  dir + "ority/x and " + dir + ".bak kept",
	} {
		if got := r.hidePaths(errors.New(in)).Error(); got != want {
			t.Errorf("hidePaths(%q) = %q, want %q", in, got, want)
		}
	}
	rel, err := New("%d", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := newRenderer(rel).hidePaths(errors.New("example.com: bad")).Error(); got != "example.com: bad" {
		t.Errorf("a template in the working directory changed the text to %q", got)
	}
}
