//go:build unix

package bundle

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/vigil-edge/vigil/internal/fsutil/fsutiltest"
)

// TestRefusesFIFO: a named pipe where a bundle is expected is refused at once, by Read and by
// Digest. Opening a FIFO for reading waits for a writer, so a Read that opened first and checked
// the file type after waited forever (a FIFO named *.vgb in a model directory hung the agent's
// bundle discovery), and so did Digest, which never checked it (discovery digests the bundles it
// lists; the server digests stored bundles).
func TestRefusesFIFO(t *testing.T) {
	for _, tc := range []struct {
		name string
		call func(path string) error
	}{
		{"Read", func(p string) error { _, err := Read(p, DefaultLimits()); return err }},
		{"Digest", func(p string) error { _, err := Digest(p); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "m-1"+Extension)
			fsutiltest.Mkfifo(t, path)
			err := fsutiltest.ReturnsWithin(t, path, func() error { return tc.call(path) })
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("FIFO: got %v, want an error wrapping ErrInvalid", err)
			}
		})
		t.Run(tc.name+" missing", func(t *testing.T) {
			if err := tc.call(filepath.Join(t.TempDir(), "none"+Extension)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("missing file: got %v, want an error wrapping os.ErrNotExist", err)
			}
		})
	}
}
