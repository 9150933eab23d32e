package pki

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// replaceServerCert rewrites the deployment's server.pem with a leaf valid
// from notBefore to notAfter, for the current server key and names, signed
// by the issuing key: a server certificate near or past its end.
func replaceServerCert(t testing.TB, ca *CA, notBefore, notAfter time.Time) *x509.Certificate {
	t.Helper()
	old, err := ca.ServerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	issKey, err := ReadKey(filepath.Join(ca.dir, IssuingKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               old.Leaf.Subject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              old.Leaf.DNSNames,
		IPAddresses:           old.Leaf.IPAddresses,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Issuing, old.Leaf.PublicKey, issKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteCerts(filepath.Join(ca.dir, ServerCertFile), [][]byte{der, ca.Issuing.Raw}); err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// verifyAsAgent checks cert the way agents do: an enrolled agent against the
// root pool (its ca.pem), an enrolling one against the root pin, for every
// name the server certificate had at Init.
func verifyAsAgent(t *testing.T, ca *CA, cert tls.Certificate, now time.Time) {
	t.Helper()
	var chain []*x509.Certificate
	for _, der := range cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	pin, err := ParsePin(ca.Pin())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"localhost", "vigil.example", "127.0.0.1", "::1"} {
		if _, err := chain[0].Verify(x509.VerifyOptions{
			DNSName: name, Roots: ca.Pool(), Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}); err != nil {
			t.Errorf("agent verification for %s: %v", name, err)
		}
	}
	if now.Sub(time.Now()).Abs() < time.Hour {
		if _, err := VerifyPinnedChain(chain, pin, "localhost"); err != nil {
			t.Errorf("enrollment (pinned) verification: %v", err)
		}
	}
}

func TestRenewServerCertificate(t *testing.T) {
	const day = 24 * time.Hour
	now := time.Now().Truncate(time.Second)
	tests := []struct {
		name        string
		left        time.Duration // remaining life of server.pem; 0: keep Init's
		before      time.Duration
		wantRenewed bool
	}{
		{"fresh from init", 0, 0, false},
		{"outside the default window", 31 * day, 0, false},
		{"inside the default window", 29 * day, 0, true},
		{"expires in an hour", time.Hour, 0, true},
		{"expired", -3 * day, 0, true},
		{"inside a custom window", 45 * day, 60 * day, true},
		{"outside a custom window", 45 * day, 10 * day, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := newTestCA(t)
			path := filepath.Join(ca.dir, ServerCertFile)
			orig, err := ca.ServerCertificate()
			if err != nil {
				t.Fatal(err)
			}
			if tt.left != 0 {
				replaceServerCert(t, ca, now.Add(-400*day), now.Add(tt.left))
			}
			cur, err := ca.ServerCertificate()
			if err != nil {
				t.Fatal(err)
			}
			before := readFile(t, path)

			got, renewed, err := ca.RenewServerCertificate(now, tt.before)
			if err != nil {
				t.Fatalf("RenewServerCertificate: %v", err)
			}
			if renewed != tt.wantRenewed {
				t.Fatalf("renewed = %v, want %v", renewed, tt.wantRenewed)
			}
			if got.Leaf == nil || len(got.Certificate) != 3 ||
				!bytes.Equal(got.Certificate[1], ca.Issuing.Raw) || !bytes.Equal(got.Certificate[2], ca.Root.Raw) {
				t.Fatalf("returned chain is not leaf, issuing, root")
			}
			if !tt.wantRenewed {
				if !bytes.Equal(readFile(t, path), before) {
					t.Error("server.pem rewritten without a renewal")
				}
				if !bytes.Equal(got.Certificate[0], cur.Certificate[0]) {
					t.Error("returned certificate is not the current one")
				}
				return
			}

			leaf := got.Leaf
			if leaf.SerialNumber.Cmp(cur.Leaf.SerialNumber) == 0 {
				t.Error("renewed certificate has the old serial")
			}
			if !leaf.NotBefore.Equal(now.Add(-ClockSkew)) || !leaf.NotAfter.Equal(now.Add(ServerTTL)) {
				t.Errorf("validity %s .. %s, want %s .. %s", leaf.NotBefore, leaf.NotAfter, now.Add(-ClockSkew), now.Add(ServerTTL))
			}
			// Same names and key as the certificate Init made.
			if !bytes.Equal(leaf.RawSubject, orig.Leaf.RawSubject) {
				t.Errorf("subject %q, want %q", leaf.Subject, orig.Leaf.Subject)
			}
			if strings.Join(leaf.DNSNames, ",") != "localhost,vigil.example" {
				t.Errorf("DNS names %q", leaf.DNSNames)
			}
			if len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal(orig.Leaf.IPAddresses[0]) ||
				!leaf.IPAddresses[1].Equal(orig.Leaf.IPAddresses[1]) {
				t.Errorf("IP addresses %v, want %v", leaf.IPAddresses, orig.Leaf.IPAddresses)
			}
			if !bytes.Equal(leaf.RawSubjectPublicKeyInfo, orig.Leaf.RawSubjectPublicKeyInfo) {
				t.Error("renewal changed the server key")
			}
			if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature ||
				len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
				t.Error("renewed certificate is not a server leaf like Init's")
			}

			// On disk: the new chain (leaf, issuing), mode 0644, no
			// temporary file left; what the server loads next is the new one.
			certs, err := ReadCerts(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(certs) != 2 || !bytes.Equal(certs[0].Raw, leaf.Raw) || !bytes.Equal(certs[1].Raw, ca.Issuing.Raw) {
				t.Error("server.pem does not hold the renewed chain leaf, issuing")
			}
			if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
				t.Errorf("server.pem mode: %v %v", fi.Mode(), err)
			}
			ents, err := os.ReadDir(ca.dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				if strings.Contains(e.Name(), ".tmp") {
					t.Errorf("temporary file %s left", e.Name())
				}
			}
			loaded, err := ca.ServerCertificate()
			if err != nil || !bytes.Equal(loaded.Certificate[0], leaf.Raw) {
				t.Errorf("ServerCertificate after renewal: %v", err)
			}
			// Existing agents and enrolling ones accept it.
			verifyAsAgent(t, ca, got, now)

			// A second call right after does nothing.
			if _, again, err := ca.RenewServerCertificate(now, tt.before); err != nil || again {
				t.Errorf("second renewal: renewed=%v err=%v", again, err)
			}
		})
	}
}

func TestRenewServerCertificateCappedByIssuingCA(t *testing.T) {
	ca := newTestCA(t)
	// 100 days before the issuing CA's end: a year's certificate would
	// outlive it.
	now := ca.Issuing.NotAfter.Add(-100 * 24 * time.Hour)
	replaceServerCert(t, ca, now.Add(-300*24*time.Hour), now.Add(24*time.Hour))
	got, renewed, err := ca.RenewServerCertificate(now, 0)
	if err != nil || !renewed {
		t.Fatalf("renewed=%v err=%v", renewed, err)
	}
	if !got.Leaf.NotAfter.Equal(ca.Issuing.NotAfter) {
		t.Errorf("NotAfter %s, want the issuing CA's %s", got.Leaf.NotAfter, ca.Issuing.NotAfter)
	}
	verifyAsAgent(t, ca, got, now)
}

func TestRenewServerCertificateIssuingCAExpiring(t *testing.T) {
	const day = 24 * time.Hour
	for _, tt := range []struct {
		name string
		at   time.Duration // relative to the issuing CA's NotAfter
	}{
		{"issuing CA expired", day},
		{"issuing CA expires inside the renewal window", -10 * day},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ca := newTestCA(t)
			now := ca.Issuing.NotAfter.Add(tt.at)
			replaceServerCert(t, ca, now.Add(-300*day), now.Add(2*day))
			path := filepath.Join(ca.dir, ServerCertFile)
			before := readFile(t, path)
			_, renewed, err := ca.RenewServerCertificate(now, 0)
			if !errors.Is(err, ErrIssuingCAExpiring) || renewed {
				t.Fatalf("renewed=%v err=%v, want ErrIssuingCAExpiring", renewed, err)
			}
			if !strings.Contains(err.Error(), "rotate") {
				t.Errorf("error %q does not tell the operator what to do", err)
			}
			if !bytes.Equal(readFile(t, path), before) {
				t.Error("server.pem changed")
			}
		})
	}
}

func TestRenewServerCertificateWriteFails(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	replaceServerCert(t, ca, now.Add(-time.Hour), now.Add(time.Hour))
	path := filepath.Join(ca.dir, ServerCertFile)
	before := readFile(t, path)
	// The write dies half-way (disk full, crash): a partial temporary
	// file, then an error, as writeAtomic would leave it.
	ca.writeFile = func(p string, data []byte, perm os.FileMode) error {
		if err := os.WriteFile(p+".tmp-crash", data[:len(data)/2], perm); err != nil {
			t.Fatal(err)
		}
		return errors.New("no space left on device")
	}
	_, renewed, err := ca.RenewServerCertificate(now, 0)
	if err == nil || renewed || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("renewed=%v err=%v, want the write error", renewed, err)
	}
	if !bytes.Equal(readFile(t, path), before) {
		t.Fatal("a failed write changed server.pem")
	}
	if _, err := ca.ServerCertificate(); err != nil {
		t.Fatalf("server certificate unusable after a failed renewal: %v", err)
	}
	// The next attempt, with a working disk, renews.
	ca.writeFile = nil
	if _, renewed, err := ca.RenewServerCertificate(now, 0); err != nil || !renewed {
		t.Fatalf("retry: renewed=%v err=%v", renewed, err)
	}
}

func TestRenewServerCertificateBadFiles(t *testing.T) {
	other := newTestCA(t)
	otherPEM := readFile(t, filepath.Join(other.dir, ServerCertFile))
	otherKey := readFile(t, filepath.Join(other.dir, ServerKeyFile))
	tests := []struct {
		name    string
		file    string
		data    []byte
		wantErr string
	}{
		{"garbage server.pem", ServerCertFile, []byte("not a certificate\n"), "server.pem: no PEM CERTIFICATE block"},
		{"empty server.pem", ServerCertFile, nil, "server.pem: no PEM CERTIFICATE block"},
		{"wrong PEM type", ServerCertFile, otherKey, `server.pem: PEM block "PRIVATE KEY"`},
		{"corrupt DER", ServerCertFile, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "server.pem: certificate 0"},
		{"certificate of another deployment", ServerCertFile, otherPEM, "server.key does not match server.pem"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := newTestCA(t)
			path := filepath.Join(ca.dir, tt.file)
			if err := os.WriteFile(path, tt.data, 0o644); err != nil {
				t.Fatal(err)
			}
			_, renewed, err := ca.RenewServerCertificate(time.Now(), 0)
			if err == nil || renewed {
				t.Fatalf("renewed=%v err=%v, want an error", renewed, err)
			}
			if !strings.Contains(err.Error(), "renew server certificate") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want it to contain %q", err, tt.wantErr)
			}
			if !bytes.Equal(readFile(t, path), tt.data) {
				t.Error("renewal touched the bad file")
			}
		})
	}
	t.Run("leaf not signed by the issuing CA", func(t *testing.T) {
		ca := newTestCA(t)
		// Another deployment's server certificate, with its key: key and
		// certificate match, the issuer does not.
		for _, f := range []string{ServerCertFile, ServerKeyFile} {
			b := readFile(t, filepath.Join(other.dir, f))
			if err := os.WriteFile(filepath.Join(ca.dir, f), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		_, _, err := ca.RenewServerCertificate(time.Now().Add(360*24*time.Hour), 0)
		if err == nil || !strings.Contains(err.Error(), "not signed by the issuing CA") {
			t.Fatalf("err=%v, want not signed by the issuing CA", err)
		}
	})
}

// TestRenewServerCertificateConcurrent: renewals racing (the start-up call
// and the background loop, two processes) issue one certificate, and every
// caller gets a usable one.
func TestRenewServerCertificateConcurrent(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now().Truncate(time.Second)
	replaceServerCert(t, ca, now.Add(-time.Hour), now.Add(time.Hour))
	var wg sync.WaitGroup
	var mu sync.Mutex
	renewals := 0
	for range 8 {
		wg.Go(func() {
			got, renewed, err := ca.RenewServerCertificate(now, 0)
			if err != nil {
				t.Error(err)
				return
			}
			if !got.Leaf.NotAfter.Equal(now.Add(ServerTTL)) {
				t.Errorf("NotAfter %s", got.Leaf.NotAfter)
			}
			if renewed {
				mu.Lock()
				renewals++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if renewals != 1 {
		t.Errorf("%d renewals, want 1", renewals)
	}
}
