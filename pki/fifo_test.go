//go:build unix

package pki

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/internal/fsutil"
	"github.com/vigil-edge/vigil/internal/fsutil/fsutiltest"
)

// TestReadRefusesFIFO: a named pipe where a key or certificate file is
// expected (agent.key, agent.pem and ca.pem in the agent's state directory,
// which its service user can write; the server's PKI files) is refused at
// once. Opening a FIFO for reading waits for a writer, so ReadKey, which
// opened first and checked the type after, and ReadCerts, which never
// checked it, held LoadCredentials (the agent's start, `vigil-agent status`)
// for good. The key's mode check still applies to the file read.
func TestReadRefusesFIFO(t *testing.T) {
	for _, tc := range []struct {
		name string
		read func(path string) error
	}{
		{"ReadKey", func(p string) error { _, err := ReadKey(p); return err }},
		{"ReadCerts", func(p string) error { _, err := ReadCerts(p); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "fifo.pem")
			fsutiltest.Mkfifo(t, path)
			err := fsutiltest.ReturnsWithin(t, path, func() error { return tc.read(path) })
			if !errors.Is(err, fsutil.ErrNotRegular) {
				t.Fatalf("FIFO: got %v, want an error wrapping fsutil.ErrNotRegular", err)
			}
		})
		t.Run(tc.name+" missing", func(t *testing.T) {
			if err := tc.read(filepath.Join(t.TempDir(), "none.pem")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("missing file: got %v, want an error wrapping os.ErrNotExist", err)
			}
		})
	}
	t.Run("ReadKey mode of the file read", func(t *testing.T) {
		key, err := NewKey()
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		path := filepath.Join(dir, "agent.key")
		if err := WriteKey(path, key); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, 0o640); err != nil {
			t.Fatal(err)
		}
		// Through a link (followed), the mode that counts is the key file's.
		link := filepath.Join(dir, "link.key")
		if err := os.Symlink("agent.key", link); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{path, link} {
			if _, err := ReadKey(p); err == nil || !strings.Contains(err.Error(), "group or others") {
				t.Fatalf("%s mode 0640: got %v, want it refused for its mode", p, err)
			}
		}
		if err := os.Chmod(path, 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := ReadKey(link); err != nil || !got.Equal(key) {
			t.Fatalf("0600 key through a link: got %v", err)
		}
	})
}
