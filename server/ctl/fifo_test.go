package ctl

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/vigil-edge/vigil/internal/fsutil"
	"github.com/vigil-edge/vigil/internal/fsutil/fsutiltest"
)

// TestClientFilesRefuseFIFO: `--token @FILE` and `--ca FILE` naming a named
// pipe are refused at once; os.ReadFile waited for a writer, for good.
func TestClientFilesRefuseFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	fsutiltest.Mkfifo(t, fifo)
	for name, call := range map[string]func() error{
		"token": func() error { _, err := NewClient("https://127.0.0.1:1", "@"+fifo, ""); return err },
		"ca":    func() error { _, err := NewClient("https://127.0.0.1:1", "secret", fifo); return err },
	} {
		if err := fsutiltest.ReturnsWithin(t, fifo, call); !errors.Is(err, fsutil.ErrNotRegular) {
			t.Errorf("%s: got %v, want an error wrapping fsutil.ErrNotRegular", name, err)
		}
	}
}
