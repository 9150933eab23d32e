package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"
)

// pemSeeds are a P-256 key in both encodings, a P-384 key, and a
// self-signed certificate, as PEM.
func pemSeeds(f *testing.F) (pkcs8, sec1, p384, cert []byte) {
	f.Helper()
	key, err := NewKey()
	if err != nil {
		f.Fatal(err)
	}
	if pkcs8, err = encodeKey(key); err != nil {
		f.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		f.Fatal(err)
	}
	sec1 = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	k384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	if der, err = x509.MarshalECPrivateKey(k384); err != nil {
		f.Fatal(err)
	}
	p384 = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fuzz"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<31, 0)}
	if der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key); err != nil {
		f.Fatal(err)
	}
	cert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return pkcs8, sec1, p384, cert
}

// FuzzParseKeyPEM: the private key reader (ReadKey: agent and CA key
// files) never panics, and a key it accepts is a P-256 key that encodes
// and reads back as the same key.
func FuzzParseKeyPEM(f *testing.F) {
	pkcs8, sec1, p384, cert := pemSeeds(f)
	for _, s := range [][]byte{pkcs8, sec1, p384, cert, append(append([]byte("junk\n"), sec1...), pkcs8...),
		[]byte("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"),
		[]byte("-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END EC PRIVATE KEY-----\n"),
		nil} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := parseKeyPEM(data)
		if err != nil {
			if key != nil {
				t.Fatalf("error %v with a key", err)
			}
			return
		}
		if key.Curve != elliptic.P256() || key.D == nil || key.D.Sign() <= 0 {
			t.Fatalf("accepted a key on %v", key.Curve)
		}
		enc, err := encodeKey(key)
		if err != nil {
			t.Fatalf("accepted key does not encode: %v", err)
		}
		again, err := parseKeyPEM(enc)
		if err != nil || !again.Equal(key) {
			t.Fatalf("accepted key reads back as %v, %v", again, err)
		}
	})
}

// FuzzParseCertsPEM: the certificate reader (ReadCerts: CA, server and
// agent certificate files) never panics, and what it accepts is at least
// one certificate that encodes and reads back the same.
func FuzzParseCertsPEM(f *testing.F) {
	pkcs8, _, _, cert := pemSeeds(f)
	for _, s := range [][]byte{cert, append(append([]byte(nil), cert...), cert...), append(append([]byte(nil), cert...), pkcs8...),
		[]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), []byte("text only\n"), nil} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := parseCertsPEM(data)
		if err != nil {
			if certs != nil {
				t.Fatalf("error %v with certificates", err)
			}
			return
		}
		if len(certs) == 0 {
			t.Fatal("accepted no certificate")
		}
		der := make([][]byte, len(certs))
		for i, c := range certs {
			if c == nil {
				t.Fatalf("certificate %d is nil", i)
			}
			der[i] = c.Raw
		}
		enc, err := encodeCerts(der)
		if err != nil {
			t.Fatalf("accepted certificates do not encode: %v", err)
		}
		again, err := parseCertsPEM(enc)
		if err != nil || len(again) != len(certs) {
			t.Fatalf("accepted certificates read back as %d, %v", len(again), err)
		}
		for i := range again {
			if !again[i].Equal(certs[i]) {
				t.Fatalf("certificate %d reads back differently", i)
			}
		}
	})
}
