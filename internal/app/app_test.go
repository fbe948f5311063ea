package app_test

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/smtpcreds/smtpcreds/internal/app"
	"github.com/smtpcreds/smtpcreds/internal/dbtest"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

// lockedBuffer is a log destination safe for the app's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

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
		var logs lockedBuffer
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
