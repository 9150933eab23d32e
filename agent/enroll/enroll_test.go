package enroll

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/state"
	"github.com/vigil-edge/vigil/agent/uplink"
	"github.com/vigil-edge/vigil/agent/uplink/uplinktest"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestEnroll(t *testing.T) {
	srv := uplinktest.New(t, func(s *uplinktest.Server) { s.Token = "vge_test.secret" })
	dir := state.Dir(filepath.Join(t.TempDir(), "state"))
	ctx := context.Background()
	opts := Options{Server: srv.Addr, Token: srv.Token, Pin: srv.Pin(), StateDir: dir, Timeout: 10 * time.Second}

	id, err := Enroll(ctx, opts, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if id.Entity != "acme" || id.TrustDomain != "vigil.test" || id.Server != srv.Addr {
		t.Fatalf("identity %+v", id)
	}
	creds, err := dir.LoadCredentials()
	if err != nil {
		t.Fatal(err)
	}
	if creds.Identity.AgentID != id.AgentID || !creds.Root.Equal(srv.PKI.CA.Root) {
		t.Fatal("stored credentials do not match the enrollment")
	}
	for _, n := range []string{state.KeyFile, state.IdentityFile} {
		fi, err := os.Stat(dir.Path(n))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, %v", n, fi.Mode(), err)
		}
	}
	if fi, _ := os.Stat(string(dir)); fi.Mode().Perm() != 0o700 {
		t.Fatalf("state dir mode %v", fi.Mode())
	}

	// No re-enrollment over an identity without Force.
	if _, err := Enroll(ctx, opts, quiet); !errors.Is(err, ErrAlreadyEnrolled) {
		t.Fatalf("re-enroll: %v", err)
	}
	// A renewal of the old identity interrupted after staging both files: the forced
	// re-enrollment discards them, or the next load would install the old pair over it.
	for _, n := range []string{state.KeyFile, state.CertFile} {
		b, err := os.ReadFile(dir.Path(n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dir.Path(n)+".new", b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	opts.Force = true
	id2, err := Enroll(ctx, opts, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if id2.AgentID == id.AgentID {
		t.Fatal("forced re-enrollment kept the agent id")
	}
	creds, err = dir.LoadCredentials()
	if err != nil || creds.Identity.AgentID != id2.AgentID {
		t.Fatalf("credentials after the forced re-enrollment over a staged renewal: %v %v", creds, err)
	}
}

func TestEnrollErrors(t *testing.T) {
	srv := uplinktest.New(t, func(s *uplinktest.Server) { s.Token = "vge_test.secret" })
	other := uplinktest.New(t) // another deployment: another CA

	tests := []struct {
		name  string
		opts  func(o *Options)
		check func(t *testing.T, err error)
	}{
		{"wrong token", func(o *Options) { o.Token = "vge_test.wrong" }, func(t *testing.T, err error) {
			se, ok := uplink.AsServerError(err)
			if !ok || se.Code != wirev1.CodeTokenInvalid || se.Message == "" {
				t.Fatalf("want token_invalid with a message, got %v", err)
			}
		}},
		{"wrong pin", func(o *Options) { o.Pin = other.Pin() }, nil},
		{"malformed pin", func(o *Options) { o.Pin = "sha256:zz" }, nil},
		{"empty token", func(o *Options) { o.Token = "" }, nil},
		{"bad server", func(o *Options) { o.Server = "no-port" }, nil},
		{"nobody listening", func(o *Options) { o.Server = "127.0.0.1:1"; o.Timeout = time.Second }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := state.Dir(t.TempDir())
			o := Options{Server: srv.Addr, Token: srv.Token, Pin: srv.Pin(), StateDir: dir, Timeout: 10 * time.Second}
			tt.opts(&o)
			_, err := Enroll(context.Background(), o, quiet)
			if err == nil {
				t.Fatal("enrollment succeeded")
			}
			if tt.check != nil {
				tt.check(t, err)
			}
			if dir.Enrolled() {
				t.Fatal("a failed enrollment left an identity behind")
			}
		})
	}
}

func TestMatchOwnerGivesFilesToStateDirOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "agent.key"), []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := matchOwner(dir, "agent.key"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "agent.key"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || st.Gid != 65534 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("owner %d:%d mode %v, want 65534:65534 0600", st.Uid, st.Gid, fi.Mode().Perm())
	}
}
