//go:build unix

package config

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/vigil-edge/vigil/internal/fsutil"
	"github.com/vigil-edge/vigil/internal/fsutil/fsutiltest"
)

// TestLoadRefusesFIFO: a configuration path that is a named pipe is refused
// at once instead of holding the agent's start (or `vigil-agent update
// --config`) for good: Load opened the file, which for a FIFO waits for a
// writer, before its fstat checks could run. The checks still apply to the
// file opened.
func TestLoadRefusesFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.yaml")
	fsutiltest.Mkfifo(t, path)
	err := fsutiltest.ReturnsWithin(t, path, func() error { _, err := Load(path); return err })
	if !errors.Is(err, fsutil.ErrNotRegular) {
		t.Fatalf("FIFO: got %v, want an error wrapping fsutil.ErrNotRegular", err)
	}
}
