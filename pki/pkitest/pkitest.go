// Package pkitest gives tests a throwaway Vigil deployment PKI: a temporary
// directory initialised by pki.Init, its loaded CA, and helpers that mint
// agent and server certificates.
package pkitest

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/pki"
)

// ServerName is the DNS name in the server certificate of a test
// deployment; it also has IP SANs 127.0.0.1 and ::1.
const ServerName = "localhost"

// Deployment is a test deployment's PKI.
type Deployment struct {
	Dir string  // deployment directory (files as written by pki.Init)
	CA  *pki.CA // loaded CA
}

// New initialises a deployment for trustDomain in a temporary directory of t
// (server certificate for "localhost", 127.0.0.1 and ::1) and loads its CA.
func New(t testing.TB, trustDomain string) *Deployment {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := pki.Init(dir, trustDomain, []string{ServerName}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}); err != nil {
		t.Fatalf("pkitest: %v", err)
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatalf("pkitest: %v", err)
	}
	return &Deployment{Dir: dir, CA: ca}
}

// OtherCA returns an unrelated deployment with the same trust domain, for
// negative tests (its certificates must be refused by this one).
func (d *Deployment) OtherCA(t testing.TB) *Deployment {
	t.Helper()
	return New(t, d.CA.TrustDomain)
}

// ServerCert returns the deployment's server certificate (chain leaf,
// issuing, root).
func (d *Deployment) ServerCert(t testing.TB) tls.Certificate {
	t.Helper()
	c, err := d.CA.ServerCertificate()
	if err != nil {
		t.Fatalf("pkitest: %v", err)
	}
	return c
}

// AgentCert makes a key and CSR and has the CA sign it for entity and id
// (ttl <= 0: the default TTL). The result has chain leaf, issuing and Leaf set.
func (d *Deployment) AgentCert(t testing.TB, entity, id string, ttl time.Duration) tls.Certificate {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatalf("pkitest: %v", err)
	}
	csr, err := pki.NewCSR(key, id)
	if err != nil {
		t.Fatalf("pkitest: %v", err)
	}
	chain, err := d.CA.SignAgentCSR(csr, entity, id, ttl)
	if err != nil {
		t.Fatalf("pkitest: %v", err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatalf("pkitest: %v", err)
	}
	return tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
}

// AgentCertValidity is AgentCert with an explicit validity period, e.g. an
// expired certificate. It signs with the issuing key read from Dir and does
// not validate entity and id, so that tests can make malformed identities;
// uri overrides the URI SAN when not empty.
func (d *Deployment) AgentCertValidity(t testing.TB, entity, id, uri string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	issKey, err := pki.ReadKey(filepath.Join(d.Dir, pki.IssuingKeyFile))
	if err != nil {
		t.Fatalf("pkitest: %v", err)
	}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatalf("pkitest: %v", err)
	}
	if uri == "" {
		uri = pki.AgentURI(d.CA.TrustDomain, entity, id)
	}
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatalf("pkitest: %v", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("pkitest: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               pkix.Name{Organization: []string{entity}, CommonName: id},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, d.CA.Issuing, &key.PublicKey, issKey)
	if err != nil {
		t.Fatalf("pkitest: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("pkitest: %v", err)
	}
	return tls.Certificate{Certificate: [][]byte{der, d.CA.Issuing.Raw}, PrivateKey: key, Leaf: leaf}
}
