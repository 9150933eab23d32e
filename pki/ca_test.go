package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const testTD = "vigil.test"

// newTestCA initialises a deployment in a temporary directory and loads it.
func newTestCA(t testing.TB) *CA {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := Init(dir, testTD, []string{"localhost", "vigil.example"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}); err != nil {
		t.Fatal(err)
	}
	ca, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func newCSR(t testing.TB) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(key, "agent")
	if err != nil {
		t.Fatal(err)
	}
	return csr, key
}

func TestInit(t *testing.T) {
	ca := newTestCA(t)
	dir := ca.dir

	modes := map[string]os.FileMode{
		RootCertFile: 0o644, RootKeyFile: 0o600, IssuingCertFile: 0o644,
		IssuingKeyFile: 0o600, ServerCertFile: 0o644, ServerKeyFile: 0o600,
	}
	for name, want := range modes {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %#o, want %#o", name, got, want)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(modes) {
		t.Errorf("dir holds %d entries, want %d (temporary files left?)", len(entries), len(modes))
	}

	root, iss := ca.Root, ca.Issuing
	if ca.TrustDomain != testTD {
		t.Errorf("trust domain %q", ca.TrustDomain)
	}
	if !root.IsCA || !iss.IsCA || iss.MaxPathLen != 0 || !iss.MaxPathLenZero {
		t.Errorf("CA constraints: root IsCA %v, issuing IsCA %v MaxPathLen %d", root.IsCA, iss.IsCA, iss.MaxPathLen)
	}
	for _, c := range []*x509.Certificate{root, iss} {
		pub, ok := c.PublicKey.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			t.Errorf("%s: key %T, want P-256", c.Subject.CommonName, c.PublicKey)
		}
	}
	if life := root.NotAfter.Sub(root.NotBefore); life < RootTTL || life > RootTTL+time.Hour {
		t.Errorf("root lifetime %s", life)
	}
	if life := iss.NotAfter.Sub(iss.NotBefore); life < IssuingTTL || life > IssuingTTL+time.Hour {
		t.Errorf("issuing lifetime %s", life)
	}
	if err := iss.CheckSignatureFrom(root); err != nil {
		t.Errorf("issuing not signed by root: %v", err)
	}

	srv, err := ca.ServerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	if len(srv.Certificate) != 3 || !bytes.Equal(srv.Certificate[1], iss.Raw) || !bytes.Equal(srv.Certificate[2], root.Raw) {
		t.Fatalf("server chain has %d certificates, want leaf, issuing, root", len(srv.Certificate))
	}
	leaf := srv.Leaf
	if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.IsCA {
		t.Errorf("server EKU %v IsCA %v", leaf.ExtKeyUsage, leaf.IsCA)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life < ServerTTL || life > ServerTTL+time.Hour {
		t.Errorf("server lifetime %s", life)
	}
	inter := x509.NewCertPool()
	inter.AddCert(iss)
	for _, name := range []string{"localhost", "vigil.example", "127.0.0.1", "::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: ca.Pool(), Intermediates: inter}); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "other.example", Roots: ca.Pool(), Intermediates: inter}); err == nil {
		t.Error("server certificate valid for other.example")
	}
	if p := ca.Pin(); p != SPKIPin(root) {
		t.Errorf("Pin() = %s", p)
	}
}

func TestInitErrors(t *testing.T) {
	localhost := []string{"localhost"}
	tests := []struct {
		name    string
		setup   func(dir string)
		td      string
		dns     []string
		ips     []net.IP
		wantErr error
	}{
		{"bad trust domain", nil, "Bad_Domain", localhost, nil, ErrInvalidName},
		{"no names", nil, testTD, nil, nil, nil},
		{"bad dns name", nil, testTD, []string{"a b"}, nil, ErrInvalidName},
		{"bad ip", nil, testTD, nil, []net.IP{{1, 2, 3}}, nil},
		{"existing key", func(dir string) {
			if err := os.WriteFile(filepath.Join(dir, IssuingKeyFile), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, testTD, localhost, nil, ErrExists},
		{"existing deployment", func(dir string) {
			if err := Init(dir, testTD, localhost, nil); err != nil {
				t.Fatal(err)
			}
		}, testTD, localhost, nil, ErrExists},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.setup != nil {
				tt.setup(dir)
			}
			before, _ := os.ReadDir(dir)
			err := Init(dir, tt.td, tt.dns, tt.ips)
			if err == nil {
				t.Fatal("Init succeeded")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v does not wrap %v", err, tt.wantErr)
			}
			after, _ := os.ReadDir(dir)
			if len(after) != len(before) {
				t.Fatalf("Init left %d files, had %d", len(after), len(before))
			}
		})
	}
}

func TestLoadCAErrors(t *testing.T) {
	other := newTestCA(t)
	tests := []struct {
		name    string
		corrupt func(t *testing.T, dir string)
	}{
		{"missing root", func(t *testing.T, dir string) { rm(t, dir, RootCertFile) }},
		{"missing issuing key", func(t *testing.T, dir string) { rm(t, dir, IssuingKeyFile) }},
		{"key readable by others", func(t *testing.T, dir string) {
			if err := os.Chmod(filepath.Join(dir, IssuingKeyFile), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"key of another CA", func(t *testing.T, dir string) { cp(t, other.dir, dir, IssuingKeyFile) }},
		{"issuing of another CA", func(t *testing.T, dir string) { cp(t, other.dir, dir, IssuingCertFile) }},
		{"root is garbage", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, RootCertFile), []byte("garbage"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := newTestCA(t).dir
			tt.corrupt(t, dir)
			if _, err := LoadCA(dir); err == nil {
				t.Fatal("LoadCA succeeded")
			}
		})
	}
	t.Run("server key of another deployment", func(t *testing.T) {
		ca := newTestCA(t)
		cp(t, other.dir, ca.dir, ServerKeyFile)
		if _, err := ca.ServerCertificate(); err == nil {
			t.Fatal("ServerCertificate succeeded")
		}
	})
	t.Run("server cert of another deployment", func(t *testing.T) {
		ca := newTestCA(t)
		cp(t, other.dir, ca.dir, ServerCertFile)
		cp(t, other.dir, ca.dir, ServerKeyFile)
		if _, err := ca.ServerCertificate(); err == nil {
			t.Fatal("ServerCertificate succeeded")
		}
	})
}

func rm(t *testing.T, dir, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func cp(t *testing.T, from, to, name string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(from, name))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(to, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestSignAgentCSR(t *testing.T) {
	ca := newTestCA(t)
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	ca.now = func() time.Time { return now }

	goodCSR, goodKey := newCSR(t)

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaCSR, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	p384Key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384CSR, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, p384Key)
	if err != nil {
		t.Fatal(err)
	}
	badSig := bytes.Clone(goodCSR)
	badSig[len(badSig)-1] ^= 0x01
	evil, _ := url.Parse(AgentURI(testTD, "other", "a-victim"))
	sanKey, _ := NewKey()
	sanCSR, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "a-victim", Organization: []string{"other"}},
		URIs:           []*url.URL{evil},
		DNSNames:       []string{"evil.example"},
		EmailAddresses: []string{"x@example.org"},
	}, sanKey)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name         string
		csr          []byte
		entity, id   string
		ttl          time.Duration
		wantErr      error // nil and !ok: any error
		ok           bool
		wantLifetime time.Duration
	}{
		{"ok", goodCSR, "acme", "a-0123456789ab", time.Hour, nil, true, time.Hour},
		{"default ttl", goodCSR, "acme", "a1", 0, nil, true, DefaultAgentTTL},
		{"negative ttl", goodCSR, "acme", "a1", -time.Hour, nil, true, DefaultAgentTTL},
		{"SANs in CSR ignored", sanCSR, "acme", "a2", time.Hour, nil, true, time.Hour},
		{"ttl too long", goodCSR, "acme", "a1", MaxAgentTTL + time.Hour, nil, false, 0},
		{"nil", nil, "acme", "a1", 0, ErrBadCSR, false, 0},
		{"garbage", []byte("not a CSR"), "acme", "a1", 0, ErrBadCSR, false, 0},
		{"truncated", goodCSR[:len(goodCSR)/2], "acme", "a1", 0, ErrBadCSR, false, 0},
		{"trailing data", append(bytes.Clone(goodCSR), 0), "acme", "a1", 0, ErrBadCSR, false, 0},
		{"huge", make([]byte, maxCSRSize+1), "acme", "a1", 0, ErrBadCSR, false, 0},
		{"certificate instead of CSR", ca.Root.Raw, "acme", "a1", 0, ErrBadCSR, false, 0},
		{"RSA key", rsaCSR, "acme", "a1", 0, ErrBadCSR, false, 0},
		{"P-384 key", p384CSR, "acme", "a1", 0, ErrBadCSR, false, 0},
		{"bad signature", badSig, "acme", "a1", 0, ErrBadCSR, false, 0},
		{"empty entity", goodCSR, "", "a1", 0, ErrInvalidName, false, 0},
		{"bad entity", goodCSR, "Acme", "a1", 0, ErrInvalidName, false, 0},
		{"entity with slash", goodCSR, "acme/agent/x", "a1", 0, ErrInvalidName, false, 0},
		{"bad agent id", goodCSR, "acme", "a 1", 0, ErrInvalidName, false, 0},
		{"long agent id", goodCSR, "acme", string(make([]byte, 64)), 0, ErrInvalidName, false, 0},
	}
	inter := x509.NewCertPool()
	inter.AddCert(ca.Issuing)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, err := ca.SignAgentCSR(tt.csr, tt.entity, tt.id, tt.ttl)
			if !tt.ok {
				if err == nil {
					t.Fatal("SignAgentCSR succeeded")
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v does not wrap %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(chain) != 2 || !bytes.Equal(chain[1], ca.Issuing.Raw) {
				t.Fatalf("chain of %d, want leaf, issuing", len(chain))
			}
			leaf, err := x509.ParseCertificate(chain[0])
			if err != nil {
				t.Fatal(err)
			}
			id, err := IdentityFromCert(leaf, testTD)
			if err != nil {
				t.Fatal(err)
			}
			if id != (Identity{testTD, tt.entity, tt.id}) {
				t.Fatalf("identity %+v", id)
			}
			if len(leaf.DNSNames)+len(leaf.EmailAddresses)+len(leaf.IPAddresses) != 0 || len(leaf.URIs) != 1 {
				t.Fatalf("extra SANs: %v %v %v", leaf.DNSNames, leaf.EmailAddresses, leaf.IPAddresses)
			}
			if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || leaf.IsCA {
				t.Fatalf("EKU %v IsCA %v", leaf.ExtKeyUsage, leaf.IsCA)
			}
			if !leaf.NotBefore.Equal(now.Add(-ClockSkew)) || !leaf.NotAfter.Equal(now.Add(tt.wantLifetime)) {
				t.Fatalf("validity %s .. %s", leaf.NotBefore, leaf.NotAfter)
			}
			if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128 {
				t.Fatalf("serial %s", leaf.SerialNumber)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{
				Roots: ca.Pool(), Intermediates: inter, CurrentTime: now,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			}); err != nil {
				t.Fatalf("verify: %v", err)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{
				Roots: ca.Pool(), Intermediates: inter, CurrentTime: now,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}); err == nil {
				t.Fatal("agent certificate valid for server auth")
			}
			if tt.name == "ok" && !goodKey.PublicKey.Equal(leaf.PublicKey) {
				t.Fatal("leaf key is not the CSR's")
			}
		})
	}

	t.Run("serials differ", func(t *testing.T) {
		a, err1 := ca.SignAgentCSR(goodCSR, "acme", "a1", 0)
		b, err2 := ca.SignAgentCSR(goodCSR, "acme", "a1", 0)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		la, _ := x509.ParseCertificate(a[0])
		lb, _ := x509.ParseCertificate(b[0])
		if la.SerialNumber.Cmp(lb.SerialNumber) == 0 {
			t.Fatal("equal serials")
		}
	})
	t.Run("not after issuing CA", func(t *testing.T) {
		late := ca.Issuing.NotAfter.Add(-time.Hour)
		ca := *ca
		ca.now = func() time.Time { return late }
		chain, err := ca.SignAgentCSR(goodCSR, "acme", "a1", 0)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(chain[0])
		if leaf.NotAfter.After(ca.Issuing.NotAfter) {
			t.Fatalf("leaf NotAfter %s after issuing %s", leaf.NotAfter, ca.Issuing.NotAfter)
		}
	})
}

func FuzzSignAgentCSR(f *testing.F) {
	ca := newTestCA(f)
	csr, _ := newCSR(f)
	f.Add(csr)
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x82, 0xff, 0xff})
	f.Add(ca.Root.Raw)
	f.Fuzz(func(t *testing.T, data []byte) {
		chain, err := ca.SignAgentCSR(data, "acme", "a1", time.Hour)
		if err != nil {
			if !errors.Is(err, ErrBadCSR) {
				t.Fatalf("error %v does not wrap ErrBadCSR", err)
			}
			return
		}
		// Only a well-formed, self-signed P-256 CSR may be accepted.
		if _, err := CheckCSR(data); err != nil {
			t.Fatalf("signed a CSR that CheckCSR refuses: %v", err)
		}
		if len(chain) != 2 {
			t.Fatalf("chain of %d", len(chain))
		}
	})
}
