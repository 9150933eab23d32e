package pkitest

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/pki"
)

func TestDeployment(t *testing.T) {
	d := New(t, "vigil.test")
	if d.CA.TrustDomain != "vigil.test" || d.Dir == "" {
		t.Fatalf("deployment %+v", d)
	}
	inter := x509.NewCertPool()
	inter.AddCert(d.CA.Issuing)
	verify := func(c *x509.Certificate, roots *x509.CertPool) error {
		_, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		return err
	}

	c := d.AgentCert(t, "acme", "a-1", time.Hour)
	if len(c.Certificate) != 2 || c.Leaf == nil || c.PrivateKey == nil {
		t.Fatalf("agent certificate %+v", c)
	}
	id, err := pki.IdentityFromCert(c.Leaf, "vigil.test")
	if err != nil || id.Entity != "acme" || id.AgentID != "a-1" {
		t.Fatalf("identity %+v, %v", id, err)
	}
	if err := verify(c.Leaf, d.CA.Pool()); err != nil {
		t.Fatal(err)
	}
	if err := verify(c.Leaf, d.OtherCA(t).CA.Pool()); err == nil {
		t.Fatal("agent certificate verifies against another CA")
	}

	expired := d.AgentCertValidity(t, "acme", "a-1", "", time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
	if err := verify(expired.Leaf, d.CA.Pool()); err == nil {
		t.Fatal("expired certificate verifies")
	}
	// The issuing CA's name constraints refuse another trust domain.
	foreign := d.AgentCertValidity(t, "acme", "a-1", pki.AgentURI("other.test", "acme", "a-1"),
		time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err := verify(foreign.Leaf, d.CA.Pool()); err == nil {
		t.Fatal("certificate of another trust domain verifies")
	}

	s := d.ServerCert(t)
	if len(s.Certificate) != 3 {
		t.Fatalf("server chain of %d", len(s.Certificate))
	}
}
