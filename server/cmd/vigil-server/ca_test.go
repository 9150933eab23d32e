package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/pki"
)

func TestCARotateIssuing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if out, err := execute(context.Background(), "init", "--data", dir, "--dns", "localhost", "--log-format", "text"); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	before, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	out, err := execute(context.Background(), "ca", "rotate-issuing", "--data", dir)
	if err != nil {
		t.Fatalf("rotate-issuing: %v\n%s", err, out)
	}
	after, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if after.Issuing.Equal(before.Issuing) || !after.Root.Equal(before.Root) || after.Pin() != before.Pin() {
		t.Fatal("want a new issuing CA under the same root (same pin)")
	}
	if _, err := after.ServerCertificate(); err != nil {
		t.Fatalf("server certificate after the rotation: %v", err)
	}
	for _, want := range []string{"retired issuing CA", "new issuing CA", "restart vigil-server"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// A root key given elsewhere (kept offline): the default place is empty.
	offline := filepath.Join(t.TempDir(), "root.key")
	if err := os.Rename(filepath.Join(dir, pki.RootKeyFile), offline); err != nil {
		t.Fatal(err)
	}
	if _, err := execute(context.Background(), "ca", "rotate-issuing", "--data", dir); err == nil {
		t.Fatal("rotation without the root key succeeded")
	}
	if out, err := execute(context.Background(), "ca", "rotate-issuing", "--data", dir, "--root-key", offline); err != nil {
		t.Fatalf("rotation with --root-key: %v\n%s", err, out)
	}
}

// Keys written by root into the server's directory would be unreadable by
// the server: the command refuses to run as another user than the owner.
func TestCARotateIssuingOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to give the data directory to another user")
	}
	dir := filepath.Join(t.TempDir(), "data")
	if out, err := execute(context.Background(), "init", "--data", dir, "--dns", "localhost", "--log-format", "text"); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err := execute(context.Background(), "ca", "rotate-issuing", "--data", dir)
	if err == nil || !strings.Contains(err.Error(), "owner") {
		t.Fatalf("rotation as root in another user's directory: %v, want a refusal", err)
	}
}

func TestCAStatus(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if out, err := execute(context.Background(), "init", "--data", dir, "--dns", "localhost", "--log-format", "text"); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	out, err := execute(context.Background(), "ca", "status", "--data", dir)
	if err != nil {
		t.Fatalf("ca status: %v\n%s", err, out)
	}
	for _, want := range []string{"root ", "issuing ", "server "} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "rotate") {
		t.Errorf("a fresh deployment is told to act:\n%s", out)
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		now  time.Time
		want map[string]string // role: substring of its note ("" none)
	}{
		{ca.Issuing.NotAfter.Add(-100 * 24 * time.Hour), map[string]string{"root": "", "issuing": "", "server": "ENDED"}},
		{ca.Issuing.NotAfter.Add(-30 * 24 * time.Hour), map[string]string{"root": "", "issuing": "rotate-issuing", "server": "ENDED"}},
		{ca.Issuing.NotAfter.Add(time.Hour), map[string]string{"issuing": "ENDED: rotate"}},
		{ca.Root.NotAfter.Add(-24 * time.Hour), map[string]string{"root": "new deployment"}},
	} {
		certs, err := caStatus(dir, tc.now)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range certs {
			want, ok := tc.want[c.Role]
			if !ok {
				continue
			}
			if (want == "") != (c.Note == "") || !strings.Contains(c.Note, want) {
				t.Errorf("at %s, %s: note %q, want %q", tc.now.Format(time.DateOnly), c.Role, c.Note, want)
			}
		}
	}
}
