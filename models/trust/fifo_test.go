//go:build unix

package trust_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/internal/fsutil/fsutiltest"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/sign/signtest"
	"github.com/vigil-edge/vigil/models/trust"
)

// TestLoadRefusesSpecialFiles: a trust.json that is a FIFO (in the agent's
// state directory, writable by the service user) is refused at once instead
// of hanging the updater, `vigil-agent update` or the server at start
// (opening a FIFO for reading waits for a writer). A policy reached through a
// symbolic link still loads (seeds and admins' files may be links), and a
// file over MaxPolicySize is refused as before.
func TestLoadRefusesSpecialFiles(t *testing.T) {
	t.Run("fifo", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "trust.json")
		fsutiltest.Mkfifo(t, path)
		err := fsutiltest.ReturnsWithin(t, path, func() error { _, err := trust.Load(path); return err })
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("FIFO trust.json: got %v, want a not-a-regular-file error", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		if _, err := trust.Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("directory: got %v, want a not-a-regular-file error", err)
		}
	})
	t.Run("symlink", func(t *testing.T) {
		dir := t.TempDir()
		b, err := signtest.Policy(t, 1, signtest.NewSigner(t, sign.AlgEd25519)).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "seed.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("seed.json", filepath.Join(dir, "trust.json")); err != nil {
			t.Fatal(err)
		}
		if _, err := trust.Load(filepath.Join(dir, "trust.json")); err != nil {
			t.Fatalf("policy through a symbolic link: %v", err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "trust.json")
		if err := os.WriteFile(path, make([]byte, trust.MaxPolicySize+1), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := trust.Load(path); !errors.Is(err, trust.ErrInvalidPolicy) {
			t.Fatalf("oversized policy: got %v, want ErrInvalidPolicy", err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		if _, err := trust.Load(filepath.Join(t.TempDir(), "none.json")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("missing policy: got %v, want os.ErrNotExist", err)
		}
	})
}
