package enroll

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/state"
	"github.com/vigil-edge/vigil/agent/uplink/uplinktest"
	"github.com/vigil-edge/vigil/pki/pkitest"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestEnrollAfterInterruptedEnrollment: an enrollment that stopped (crash,
// full disk) after it wrote agent.key and agent.pem but before identity.json,
// the file that marks a complete enrollment, leaves a directory that the
// agent cannot run from and that the installers take for not enrolled. The
// next enrollment with a new token must complete it, not refuse it as
// "already enrolled".
func TestEnrollAfterInterruptedEnrollment(t *testing.T) {
	srv := uplinktest.New(t, func(s *uplinktest.Server) { s.Token = "vge_test.secret" })
	dir := state.Dir(filepath.Join(t.TempDir(), "state"))
	opts := Options{Server: srv.Addr, Token: srv.Token, Pin: srv.Pin(), StateDir: dir, Timeout: 10 * time.Second}
	if _, err := Enroll(context.Background(), opts, quiet); err != nil {
		t.Fatal(err)
	}
	// The crash: everything but identity.json was written.
	if err := os.Remove(dir.Path(state.IdentityFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := dir.LoadCredentials(); err == nil {
		t.Fatal("an interrupted enrollment loads")
	}

	id, err := Enroll(context.Background(), opts, quiet)
	if err != nil {
		t.Fatalf("enrollment after an interrupted one: %v", err)
	}
	creds, err := dir.LoadCredentials()
	if err != nil || creds.Identity.AgentID != id.AgentID {
		t.Fatalf("credentials after completing the enrollment: %v %v", creds, err)
	}
}

// TestMatchOwnerFollowsNoLink: enroll run with sudo gives the new files to
// the state directory's owner, the service user. That user can rename and
// link in its own directory: a file swapped for a symbolic or hard link to
// a root file between its write and the chown must not hand that root file
// to the service user.
func TestMatchOwnerFollowsNoLink(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	tests := []struct {
		name  string
		plant func(t *testing.T, target, path string)
	}{
		{"symlink", func(t *testing.T, target, path string) {
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
		}},
		{"hard link", func(t *testing.T, target, path string) {
			if err := os.Link(target, path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			target := filepath.Join(base, "root-secret")
			if err := os.WriteFile(target, []byte("root only"), 0o600); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(base, "state")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			tt.plant(t, target, filepath.Join(dir, state.KeyFile))
			if err := os.Chown(dir, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			if err := matchOwner(dir, state.KeyFile); err == nil {
				t.Error("matchOwner accepted a link in place of the file it wrote")
			}
			fi, err := os.Stat(target)
			if err != nil {
				t.Fatal(err)
			}
			if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
				t.Fatalf("the link's target was given to %d:%d", st.Uid, st.Gid)
			}
		})
	}
}

// TestCheckResponseClockBehind: the server sets NotBefore ClockSkew in the
// past; a sensor whose clock is further behind (no NTP yet) had its freshly
// issued certificate refused as "not yet valid" after the server consumed
// the one-time token. The server, which checks the certificate later, has
// the right time: the agent accepts a certificate valid from its issuance,
// and still refuses an expired one or one that does not chain to the pin.
func TestCheckResponseClockBehind(t *testing.T) {
	d := pkitest.New(t, "vigil.test")
	other := pkitest.New(t, "vigil.test")
	pin := sha256.Sum256(d.CA.Root.RawSubjectPublicKeyInfo)
	now := time.Now()
	tests := []struct {
		name                string
		d                   *pkitest.Deployment
		notBefore, notAfter time.Time
		ok                  bool
	}{
		{"valid now", d, now.Add(-5 * time.Minute), now.Add(time.Hour), true},
		{"clock 20 min behind the server", d, now.Add(15 * time.Minute), now.Add(time.Hour), true},
		{"clock a day behind", d, now.Add(24 * time.Hour), now.Add(48 * time.Hour), true},
		{"expired", d, now.Add(-2 * time.Hour), now.Add(-time.Hour), false},
		{"not yet valid, other CA", other, now.Add(15 * time.Minute), now.Add(time.Hour), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.d.AgentCertValidity(t, "acme", "a-1", "", tt.notBefore, tt.notAfter)
			resp := &wirev1.EnrollResponse{CertChainDer: c.Certificate, RootCaDer: d.CA.Root.Raw, AgentId: "a-1", Entity: "acme"}
			_, _, err := checkResponse(resp, c.PrivateKey.(*ecdsa.PrivateKey), pin[:])
			if (err == nil) != tt.ok {
				t.Fatalf("checkResponse: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// TestEnrollAsRootGivesFilesToOwner: enroll run as root into the service
// user's state directory leaves every file to that user, identity.json
// (written after the others were given away) included, and loadable.
func TestEnrollAsRootGivesFilesToOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	srv := uplinktest.New(t, func(s *uplinktest.Server) { s.Token = "vge_test.secret" })
	dir := state.Dir(filepath.Join(t.TempDir(), "state"))
	if err := os.Mkdir(string(dir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(string(dir), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	opts := Options{Server: srv.Addr, Token: srv.Token, Pin: srv.Pin(), StateDir: dir, Timeout: 10 * time.Second}
	if _, err := Enroll(context.Background(), opts, quiet); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{state.KeyFile, state.CertFile, state.CAFile, state.IdentityFile} {
		fi, err := os.Lstat(dir.Path(n))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || st.Gid != 65534 {
			t.Errorf("%s owned by %d:%d", n, st.Uid, st.Gid)
		}
	}
	if _, err := dir.LoadCredentials(); err != nil {
		t.Fatal(err)
	}
}
