//go:build unix

package suppress

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/vigil-edge/vigil/internal/fsutil"
	"github.com/vigil-edge/vigil/internal/fsutil/fsutiltest"
)

// TestLoadRefusesFIFO: a suppressions.json that is a named pipe (the state
// directory belongs to the agent's service user) is refused at once: opening
// a FIFO for reading waits for a writer, and the agent's start waited for
// good. A symbolic link is refused too (Save writes the file by rename: a
// link is never its own), and a missing file is still the empty set.
func TestLoadRefusesFIFO(t *testing.T) {
	t.Run("fifo", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), FileName)
		fsutiltest.Mkfifo(t, path)
		err := fsutiltest.ReturnsWithin(t, path, func() error { _, err := Load(path); return err })
		if !errors.Is(err, fsutil.ErrNotRegular) {
			t.Fatalf("FIFO: got %v, want an error wrapping fsutil.ErrNotRegular", err)
		}
	})
	t.Run("symlink", func(t *testing.T) {
		dir := t.TempDir()
		target := filepath.Join(dir, "elsewhere.json")
		if err := os.WriteFile(target, []byte(`{"version":1,"generation":3,"rules":[]}`), 0o600); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, FileName)
		if err := os.Symlink(target, path); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(path); !errors.Is(err, fsutil.ErrNotRegular) {
			t.Fatalf("symbolic link: got %v, want it refused", err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		s, err := Load(filepath.Join(t.TempDir(), FileName))
		if err != nil || s.Rules == nil || len(s.Rules) != 0 {
			t.Fatalf("missing file: got %+v, %v; want the empty set", s, err)
		}
	})
}
