package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
)

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "agent.key")
	// An existing, too open file is replaced by a 0600 one.
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteKey(path, key); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %#o, want 0600", fi.Mode().Perm())
	}
	got, err := ReadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(key) {
		t.Fatal("read key differs")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("%d files in dir, want 1", len(entries))
	}

	sec1, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384DER, _ := x509.MarshalPKCS8PrivateKey(p384)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaDER, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	pemOf := func(typ string, b []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}) }

	tests := []struct {
		name string
		data []byte
		mode os.FileMode
		ok   bool
	}{
		{"SEC1", pemOf("EC PRIVATE KEY", sec1), 0o600, true},
		{"SEC1 0400", pemOf("EC PRIVATE KEY", sec1), 0o400, true},
		{"group readable", pemOf("EC PRIVATE KEY", sec1), 0o640, false},
		{"world readable", pemOf("EC PRIVATE KEY", sec1), 0o604, false},
		{"P-384", pemOf("PRIVATE KEY", p384DER), 0o600, false},
		{"RSA", pemOf("PRIVATE KEY", rsaDER), 0o600, false},
		{"wrong block type", pemOf("CERTIFICATE", sec1), 0o600, false},
		{"bad DER", pemOf("EC PRIVATE KEY", []byte{1, 2, 3}), 0o600, false},
		{"bad PKCS8", pemOf("PRIVATE KEY", []byte{1, 2, 3}), 0o600, false},
		{"not PEM", []byte("garbage"), 0o600, false},
		{"empty", nil, 0o600, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "k")
			if err := os.WriteFile(p, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tt.mode); err != nil {
				t.Fatal(err)
			}
			k, err := ReadKey(p)
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				if !k.Equal(key) {
					t.Fatal("key differs")
				}
				return
			}
			if err == nil {
				t.Fatal("ReadKey succeeded")
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		if _, err := ReadKey(filepath.Join(dir, "nope")); err == nil {
			t.Fatal("ReadKey succeeded")
		}
	})
	t.Run("directory", func(t *testing.T) {
		d := filepath.Join(t.TempDir(), "d")
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadKey(d); err == nil {
			t.Fatal("ReadKey succeeded")
		}
	})
	t.Run("write bad keys", func(t *testing.T) {
		if err := WriteKey(filepath.Join(dir, "x"), nil); err == nil {
			t.Fatal("WriteKey(nil) succeeded")
		}
		if err := WriteKey(filepath.Join(dir, "x"), p384); err == nil {
			t.Fatal("WriteKey(P-384) succeeded")
		}
		if err := WriteKey(filepath.Join(dir, "missing", "x"), key); err == nil {
			t.Fatal("WriteKey into a missing directory succeeded")
		}
	})
}

func TestCertFiles(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "chain.pem")
	if err := WriteCerts(path, [][]byte{ca.Issuing.Raw, ca.Root.Raw}); err != nil {
		t.Fatal(err)
	}
	certs, err := ReadCerts(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 || !certs[0].Equal(ca.Issuing) || !certs[1].Equal(ca.Root) {
		t.Fatal("read certificates differ")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode %#o", fi.Mode().Perm())
	}

	key, _ := NewKey()
	keyPEM, _ := encodeKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Root.Raw})
	tests := []struct {
		name string
		data []byte
		ok   bool
	}{
		{"one", certPEM, true},
		{"leading text", append([]byte("comment\n"), certPEM...), true},
		{"empty", nil, false},
		{"garbage", []byte("garbage"), false},
		{"key block", keyPEM, false},
		{"cert then key", append(append([]byte{}, certPEM...), keyPEM...), false},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 1, 2}}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c.pem")
			if err := os.WriteFile(p, tt.data, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := ReadCerts(p)
			if (err == nil) != tt.ok {
				t.Fatalf("ReadCerts error %v, want ok=%v", err, tt.ok)
			}
		})
	}
	if err := WriteCerts(path, nil); err == nil {
		t.Fatal("WriteCerts(nil) succeeded")
	}
	if err := WriteCerts(path, [][]byte{{1, 2, 3}}); err == nil {
		t.Fatal("WriteCerts(garbage) succeeded")
	}
	if _, err := ReadCerts(filepath.Join(dir, "nope")); err == nil {
		t.Fatal("ReadCerts(missing) succeeded")
	}
}

func TestNewCSR(t *testing.T) {
	if _, err := NewCSR(nil, "x"); err == nil {
		t.Fatal("NewCSR(nil) succeeded")
	}
	csr, key := newCSR(t)
	pub, err := CheckCSR(csr)
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(&key.PublicKey) {
		t.Fatal("CSR key differs")
	}
}
