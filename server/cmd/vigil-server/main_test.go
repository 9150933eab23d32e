package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/pki"
)

func execute(ctx context.Context, args ...string) (string, error) {
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

func TestInitAndRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	out, err := execute(context.Background(), "init", "--data", dir, "--trust-domain", "cert.example", "--dns", "vigil.cert.example,localhost", "--log-format", "text")
	if err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, ca.Pin()) || ca.TrustDomain != "cert.example" {
		t.Fatalf("init output lacks the pin %s:\n%s", ca.Pin(), out)
	}
	for name, mode := range map[string]os.FileMode{"admin.token": 0o600, "root.key": 0o600, "issuing.key": 0o600, "server.key": 0o600, "ca.pem": 0, "vigil.db": 0} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if mode != 0 && fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	tok, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
	if len(strings.TrimSpace(string(tok))) < 20 || strings.Contains(out, strings.TrimSpace(string(tok))) {
		t.Fatal("admin token missing, or printed")
	}
	// A second init refuses to touch the deployment.
	if _, err := execute(context.Background(), "init", "--data", dir); !errors.Is(err, pki.ErrExists) {
		t.Fatalf("second init: %v, want ErrExists", err)
	}
	// run serves until its context ends, then stops cleanly.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := execute(ctx, "run", "--data", dir, "--quic", "127.0.0.1:0", "--api", "127.0.0.1:0", "--log-format", "json", "--log-level", "warn")
		done <- err
	}()
	time.Sleep(500 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop")
	}
}

func TestBadFlags(t *testing.T) {
	if _, err := execute(context.Background(), "run"); err == nil {
		t.Fatal("run without --data succeeded")
	}
	if _, err := execute(context.Background(), "init", "--data", t.TempDir(), "--log-format", "xml"); err == nil {
		t.Fatal("bad --log-format accepted")
	}
}
