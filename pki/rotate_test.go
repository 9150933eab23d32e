package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// agentCert signs an agent certificate with c, valid around now.
func agentCert(t *testing.T, c *CA, id string) *tls.Certificate {
	t.Helper()
	csr, key := newCSR(t)
	chain, err := c.SignAgentCSR(csr, "acme", id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
}

func TestRotateIssuing(t *testing.T) {
	old := newTestCA(t)
	before := agentCert(t, old, "a1") // signed by the issuing CA about to be retired
	oldKey, err := os.ReadFile(filepath.Join(old.dir, IssuingKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	prev, err := old.ServerCertificate()
	if err != nil {
		t.Fatal(err)
	}

	r, err := RotateIssuing(old.dir, "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if r.Resumed || r.Old == nil || !r.Old.Equal(old.Issuing) || r.Issuing.Equal(old.Issuing) {
		t.Fatalf("rotation = %+v, want a new issuing CA replacing the old one", r)
	}
	ca, err := LoadCA(old.dir)
	if err != nil {
		t.Fatalf("the rotated deployment does not load: %v", err)
	}
	if !ca.Issuing.Equal(r.Issuing) || !ca.Root.Equal(old.Root) || ca.TrustDomain != old.TrustDomain {
		t.Fatal("LoadCA after the rotation: want the new issuing CA under the same root and trust domain")
	}
	if ca.Issuing.NotAfter.After(ca.Root.NotAfter) || !ca.Issuing.MaxPathLenZero ||
		len(ca.Issuing.PermittedURIDomains) != 1 || ca.Issuing.PermittedURIDomains[0] != testTD {
		t.Fatalf("new issuing CA: NotAfter %s (root %s), MaxPathLenZero %v, permitted %v",
			ca.Issuing.NotAfter, ca.Root.NotAfter, ca.Issuing.MaxPathLenZero, ca.Issuing.PermittedURIDomains)
	}
	if key, _ := os.ReadFile(filepath.Join(old.dir, IssuingKeyFile)); string(key) == string(oldKey) {
		t.Fatal("the old issuing key is still on disk")
	}
	if fi, err := os.Stat(filepath.Join(old.dir, IssuingKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("issuing key mode: %v %v, want 0600", fi, err)
	}
	for _, n := range []string{stagedIssuingKey, stagedIssuingCert, stagedServerCert} {
		if _, err := os.Lstat(filepath.Join(old.dir, n)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("staged file %s left behind: %v", n, err)
		}
	}
	// The server certificate: same names and key, new issuer.
	srv, err := ca.ServerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	if !r.Server.Equal(srv.Leaf) || srv.Leaf.Subject.String() != prev.Leaf.Subject.String() ||
		len(srv.Leaf.DNSNames) != len(prev.Leaf.DNSNames) || len(srv.Leaf.IPAddresses) != len(prev.Leaf.IPAddresses) {
		t.Fatalf("server certificate after rotation: %v %v", srv.Leaf.Subject, srv.Leaf.DNSNames)
	}

	// Over real TLS: an agent certificate from before the rotation and one
	// from after are both accepted by the rotated server, and both kinds of
	// agent, trusting only the root, accept its certificate.
	after := agentCert(t, ca, "a2")
	for name, cert := range map[string]*tls.Certificate{"before": before, "after": after} {
		res := handshake(t, ServerTLSConfig(srv, ca.Pool()), AgentTLSConfig(cert, ca.Pool(), "localhost"))
		if res.serverErr != nil || res.clientErr != nil {
			t.Fatalf("agent certificate %s the rotation: server %v, client %v", name, res.serverErr, res.clientErr)
		}
		if len(res.server.PeerCertificates) == 0 {
			t.Fatalf("agent certificate %s the rotation: no client certificate seen", name)
		}
	}
	if after.Leaf.CheckSignatureFrom(r.Issuing) != nil {
		t.Fatal("an agent certificate signed after the rotation is not from the new issuing CA")
	}
}

// A rotation cut short is finished, or discarded and done again, by the
// next run: every crash point leaves a deployment that loads afterwards.
func TestRotateIssuingInterrupted(t *testing.T) {
	for _, tc := range []struct {
		name string
		// crash leaves dir as a crash at some point would (after a full
		// staging, with the first `renamed` of the three files renamed).
		renamed    int
		partial    bool // the staging itself was cut short
		wantResume bool
	}{
		{name: "staging cut short", partial: true},
		{name: "staged, nothing renamed", renamed: 0, wantResume: true},
		{name: "key renamed", renamed: 1, wantResume: true},
		{name: "key and issuing renamed", renamed: 2, wantResume: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := newTestCA(t)
			dir := ca.dir
			// Stage a full rotation in a copy, then move its staged files in.
			other := filepath.Join(t.TempDir(), "pki")
			if err := os.MkdirAll(other, 0o700); err != nil {
				t.Fatal(err)
			}
			for _, n := range []string{RootCertFile, RootKeyFile, IssuingCertFile, IssuingKeyFile, ServerCertFile, ServerKeyFile} {
				cp(t, dir, other, n)
			}
			if _, err := RotateIssuing(other, "", time.Now()); err != nil {
				t.Fatal(err)
			}
			order := [][2]string{{IssuingKeyFile, stagedIssuingKey}, {IssuingCertFile, stagedIssuingCert}, {ServerCertFile, stagedServerCert}}
			for i, p := range order {
				data, err := os.ReadFile(filepath.Join(other, p[0]))
				if err != nil {
					t.Fatal(err)
				}
				target := p[1]
				if i < tc.renamed {
					target = p[0]
				}
				if tc.partial && i > 0 {
					break
				}
				if err := os.WriteFile(filepath.Join(dir, target), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tc.renamed > 0 {
				if c, err := LoadCA(dir); err == nil {
					if _, err := c.ServerCertificate(); err == nil {
						t.Fatal("the crash state serves: the test does not make the state it means to")
					}
				} else if !strings.Contains(err.Error(), "rotate-issuing") {
					t.Errorf("LoadCA of an interrupted rotation: %v, want a hint to run the rotation again", err)
				}
			}

			r, err := RotateIssuing(dir, "", time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if r.Resumed != tc.wantResume {
				t.Fatalf("Resumed = %v, want %v", r.Resumed, tc.wantResume)
			}
			got, err := LoadCA(dir)
			if err != nil {
				t.Fatalf("deployment after the second run: %v", err)
			}
			if _, err := got.ServerCertificate(); err != nil {
				t.Fatal(err)
			}
			if got.Issuing.Equal(ca.Issuing) {
				t.Fatal("still the old issuing CA")
			}
			for _, n := range []string{stagedIssuingKey, stagedIssuingCert, stagedServerCert} {
				if _, err := os.Lstat(filepath.Join(dir, n)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("staged file %s left behind", n)
				}
			}
		})
	}
}

// An issuing CA that has ended (agents could not renew, the server could
// not renew its certificate) is replaced, and signing works again.
func TestRotateIssuingAfterItEnded(t *testing.T) {
	ca := newTestCA(t)
	later := ca.Issuing.NotAfter.Add(24 * time.Hour)
	ca.now = func() time.Time { return later }
	csr, _ := newCSR(t)
	if _, err := ca.SignAgentCSR(csr, "acme", "a1", time.Hour); !errors.Is(err, ErrIssuingCAExpiring) {
		t.Fatalf("signing after the issuing CA ended: %v, want ErrIssuingCAExpiring", err)
	}
	if _, err := RotateIssuing(ca.dir, "", later); err != nil {
		t.Fatal(err)
	}
	fresh, err := LoadCA(ca.dir)
	if err != nil {
		t.Fatal(err)
	}
	fresh.now = func() time.Time { return later }
	if _, err := fresh.SignAgentCSR(csr, "acme", "a1", time.Hour); err != nil {
		t.Fatalf("signing after the rotation: %v", err)
	}
	if _, renewed, err := fresh.RenewServerCertificate(later, 0); err != nil || renewed {
		t.Fatalf("server certificate after the rotation: renewed %v, %v (want current, no error)", renewed, err)
	}
	if !fresh.Issuing.NotAfter.After(later.Add(4 * 365 * 24 * time.Hour)) {
		t.Fatalf("new issuing CA ends %s, want about five years after %s", fresh.Issuing.NotAfter, later)
	}
}

func TestRotateIssuingRefuses(t *testing.T) {
	wrongKey := func(t *testing.T, dir string) string {
		k, err := NewKey()
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "other.key")
		if err := WriteKey(p, k); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string) (rootKey string, now time.Time)
		is    error
	}{
		{name: "root key of another CA", setup: func(t *testing.T, dir string) (string, time.Time) {
			return wrongKey(t, dir), time.Now()
		}},
		{name: "root key missing (kept offline, not given)", setup: func(t *testing.T, dir string) (string, time.Time) {
			rm(t, dir, RootKeyFile)
			return "", time.Now()
		}, is: os.ErrNotExist},
		{name: "root key readable by others", setup: func(t *testing.T, dir string) (string, time.Time) {
			if err := os.Chmod(filepath.Join(dir, RootKeyFile), 0o644); err != nil {
				t.Fatal(err)
			}
			return "", time.Now()
		}},
		{name: "root about to end", setup: func(t *testing.T, dir string) (string, time.Time) {
			return "", time.Now().Add(RootTTL - 24*time.Hour)
		}, is: ErrRootExpiring},
		{name: "server key does not match", setup: func(t *testing.T, dir string) (string, time.Time) {
			k, _ := NewKey()
			rm(t, dir, ServerKeyFile)
			if err := WriteKey(filepath.Join(dir, ServerKeyFile), k); err != nil {
				t.Fatal(err)
			}
			return "", time.Now()
		}},
		{name: "no root certificate", setup: func(t *testing.T, dir string) (string, time.Time) {
			rm(t, dir, RootCertFile)
			return "", time.Now()
		}, is: os.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := newTestCA(t)
			before, err := os.ReadFile(filepath.Join(ca.dir, IssuingKeyFile))
			if err != nil {
				t.Fatal(err)
			}
			rootKey, now := tc.setup(t, ca.dir)
			_, err = RotateIssuing(ca.dir, rootKey, now)
			if err == nil {
				t.Fatal("rotation succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %v, want %v", err, tc.is)
			}
			if after, _ := os.ReadFile(filepath.Join(ca.dir, IssuingKeyFile)); string(after) != string(before) {
				t.Fatal("a refused rotation changed the issuing key")
			}
			entries, _ := os.ReadDir(ca.dir)
			for _, e := range entries {
				if e.Name()[0] == '.' {
					t.Errorf("refused rotation left %s", e.Name())
				}
			}
		})
	}
}

// Two rotations at once (an operator's second terminal, a retried
// automation): they share the staged file names, so unserialised, one's
// staged key could be renamed into place with the other's certificate, and
// both report success over a deployment that no longer loads. They take
// turns; the deployment loads afterwards with the issuing CA of one of them.
func TestRotateIssuingConcurrent(t *testing.T) {
	for round := range 20 {
		ca := newTestCA(t)
		const n = 6
		results := make([]*Rotation, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				results[i], errs[i] = RotateIssuing(ca.dir, "", time.Now())
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: rotation %d: %v", round, i, err)
			}
		}
		got, err := LoadCA(ca.dir)
		if err != nil {
			t.Fatalf("round %d: the deployment after concurrent rotations does not load: %v", round, err)
		}
		if _, err := got.ServerCertificate(); err != nil {
			t.Fatalf("round %d: server certificate after concurrent rotations: %v", round, err)
		}
		found := false
		for _, r := range results {
			found = found || r.Issuing.Equal(got.Issuing)
		}
		if !found {
			t.Fatalf("round %d: the issuing CA in force is none that a rotation reported", round)
		}
	}
}

// A running server renewing its certificate while `ca rotate-issuing` runs:
// had the rotation come between the renewal's read of server.pem and its
// write, the renewal (with the old issuing CA it loaded) overwrote the
// rotated server.pem, and the server failed at its next start (server.pem
// not signed by the issuing CA). The renewal holds the rotation's lock.
func TestRenewDuringRotation(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	replaceServerCert(t, ca, now.Add(-time.Hour), now.Add(time.Hour)) // due
	rotatedInside := false
	ca.writeFile = func(p string, data []byte, perm os.FileMode) error {
		// A rotation tries to get in between (it can when nothing holds
		// the directory's lock).
		d, err := os.Open(ca.dir)
		if err != nil {
			t.Fatal(err)
		}
		if syscall.Flock(int(d.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			d.Close()
			if _, err := RotateIssuing(ca.dir, "", now); err != nil {
				t.Fatal(err)
			}
			rotatedInside = true
		} else {
			d.Close()
		}
		return writeAtomic(p, data, perm, true)
	}
	_, _, renewErr := ca.RenewServerCertificate(now, 0)
	if !rotatedInside {
		if renewErr != nil {
			t.Fatal(renewErr)
		}
		// The rotation the renewal kept out runs now.
		if _, err := RotateIssuing(ca.dir, "", now); err != nil {
			t.Fatal(err)
		}
	}
	got, err := LoadCA(ca.dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := got.ServerCertificate(); err != nil {
		t.Fatalf("after a renewal and a rotation at once, the server would not start: %v", err)
	}
}
