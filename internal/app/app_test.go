package app_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smtpcreds/smtpcreds/internal/app"
	"github.com/smtpcreds/smtpcreds/internal/dbtest"
	"github.com/smtpcreds/smtpcreds/internal/proctest"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

// A server built without a sync target says so at start, since its
// credentials then reach no SMTP server; one with a target does not.
func TestNoSyncTargetIsLogged(t *testing.T) {
	t.Parallel()
	key := []byte("0123456789abcdef0123456789abcdef")
	for _, c := range []struct {
		sync app.SyncConfig
		warn bool
	}{
		{app.SyncConfig{Target: "none"}, true},
		{app.SyncConfig{Target: "passwd-file", PasswdFile: filepath.Join(t.TempDir(), "passwd")}, false},
	} {
		var logs proctest.Buffer
		a, err := app.New(context.Background(), app.Config{
			DatabaseURL: dbtest.NewURL(t), DBMaxConns: 4, TokenKey: key, DKIMKey: key, Sync: c.sync,
		}, app.Deps{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		a.Close()
		if got := strings.Contains(logs.String(), "no sync target"); got != c.warn {
			t.Errorf("target %q: warned %v, want %v; log:\n%s", c.sync.Target, got, c.warn, logs.String())
		}
	}
}
