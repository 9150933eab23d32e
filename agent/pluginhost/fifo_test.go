//go:build unix

package pluginhost

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/vigil-edge/vigil/internal/fsutil"
	"github.com/vigil-edge/vigil/internal/fsutil/fsutiltest"
)

// TestPinRefusesFIFO: a plugin binary replaced by a named pipe after New
// checked its type (by path) is refused when it is pinned, at once: the
// pin's open waited for a writer, for good, and with it the plugin's first
// launch and the agent's start.
func TestPinRefusesFIFO(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "plugin")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{Path: bin, KeepPrivileges: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(bin); err != nil {
		t.Fatal(err)
	}
	fsutiltest.Mkfifo(t, bin)
	err = fsutiltest.ReturnsWithin(t, bin, func() error { _, _, err := h.pin(); return err })
	if !errors.Is(err, fsutil.ErrNotRegular) {
		t.Fatalf("FIFO: got %v, want an error wrapping fsutil.ErrNotRegular", err)
	}
	if h.Checksum() != nil {
		t.Fatal("a FIFO was pinned")
	}
}
