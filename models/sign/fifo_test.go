//go:build unix

package sign_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/internal/fsutil/fsutiltest"
	"github.com/vigil-edge/vigil/models/sign"
)

// TestKeyFilesRefuseFIFO: a named pipe named as a key file is refused at
// once instead of holding the caller (vigilctl, the server's trust tools) for
// good: opening a FIFO for reading waits for a writer. LoadSigner checked the
// type by path first; the read itself now refuses it too.
func TestKeyFilesRefuseFIFO(t *testing.T) {
	for _, tc := range []struct {
		name string
		read func(path string) error
	}{
		{"ReadPublicKeyFile", func(p string) error { _, _, err := sign.ReadPublicKeyFile(p); return err }},
		{"LoadSigner", func(p string) error { _, err := sign.LoadSigner(p, []byte("passphrase")); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "key.pem")
			fsutiltest.Mkfifo(t, path)
			err := fsutiltest.ReturnsWithin(t, path, func() error { return tc.read(path) })
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Fatalf("FIFO: got %v, want a not-a-regular-file error", err)
			}
		})
		t.Run(tc.name+" missing", func(t *testing.T) {
			if err := tc.read(filepath.Join(t.TempDir(), "none.pem")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("missing file: got %v, want an error wrapping os.ErrNotExist", err)
			}
		})
	}
}
