//go:build unix

package state

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/internal/fsutil/fsutiltest"
)

// TestReadIdentityRefusesSpecialFiles: identity.json that is a FIFO is
// refused at once (opening a FIFO for reading waits for a writer: the agent's
// start and `vigil-agent status` hung for good), and so is a symbolic link
// (the agent writes the file itself, by rename: a link is never its own) and
// a file over the size limit.
func TestReadIdentityRefusesSpecialFiles(t *testing.T) {
	t.Run("fifo", func(t *testing.T) {
		d := Dir(t.TempDir())
		fsutiltest.Mkfifo(t, d.Path(IdentityFile))
		err := fsutiltest.ReturnsWithin(t, d.Path(IdentityFile), func() error { _, err := d.ReadIdentity(); return err })
		if err == nil || errors.Is(err, ErrNotEnrolled) || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("FIFO identity.json: got %v, want a not-a-regular-file error", err)
		}
	})
	t.Run("symlink", func(t *testing.T) {
		d := Dir(t.TempDir())
		target := filepath.Join(t.TempDir(), "elsewhere.json")
		if err := os.WriteFile(target, []byte(`{"agent_id":"a-1","entity":"acme","server":"h:1","trust_domain":"vigil.test"}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, d.Path(IdentityFile)); err != nil {
			t.Fatal(err)
		}
		if _, err := d.ReadIdentity(); err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Fatalf("symbolic link identity.json: got %v, want it refused", err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		d := Dir(t.TempDir())
		if err := os.WriteFile(d.Path(IdentityFile), make([]byte, maxIdentityFile+1), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := d.ReadIdentity(); err == nil {
			t.Fatal("oversized identity.json read")
		}
	})
	t.Run("missing", func(t *testing.T) {
		if _, err := Dir(t.TempDir()).ReadIdentity(); !errors.Is(err, ErrNotEnrolled) {
			t.Fatalf("missing identity.json: got %v, want ErrNotEnrolled", err)
		}
	})
}
