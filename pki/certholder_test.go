package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestCertHolder(t *testing.T) {
	var empty CertHolder
	if c, err := empty.Get(&tls.ClientHelloInfo{}); c != nil || err == nil {
		t.Errorf("empty holder: Get = %v, %v; want an error", c, err)
	}
	if !empty.NotAfter().IsZero() || empty.Current() != nil {
		t.Error("empty holder has a certificate")
	}

	ca := newTestCA(t)
	first, err := ca.ServerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	h := NewCertHolder(first)
	got, err := h.Get(&tls.ClientHelloInfo{})
	if err != nil || !bytes.Equal(got.Certificate[0], first.Certificate[0]) {
		t.Fatalf("Get = %v", err)
	}
	if !h.NotAfter().Equal(first.Leaf.NotAfter) {
		t.Errorf("NotAfter %s, want %s", h.NotAfter(), first.Leaf.NotAfter)
	}
	now := time.Now()
	replaceServerCert(t, ca, now.Add(-time.Hour), now.Add(time.Hour))
	second, renewed, err := ca.RenewServerCertificate(now, 0)
	if err != nil || !renewed {
		t.Fatalf("renew: %v %v", renewed, err)
	}
	second.Leaf = nil // NotAfter parses the leaf when it is not set
	h.Set(second)
	if got, _ := h.Get(nil); !bytes.Equal(got.Certificate[0], second.Certificate[0]) {
		t.Error("Get after Set returns the old certificate")
	}
	if want, _ := x509.ParseCertificate(second.Certificate[0]); !h.NotAfter().Equal(want.NotAfter) {
		t.Errorf("NotAfter %s, want %s", h.NotAfter(), want.NotAfter)
	}

	// Handshakes racing with swaps (go test -race).
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for range 200 {
				if i%2 == 0 {
					h.Set(first)
				} else if c, err := h.Get(nil); err != nil || c == nil {
					t.Error("Get failed during swaps")
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestServerTLSConfigFrom: a server configured from a CertHolder presents
// the holder's current certificate on each handshake, and an agent that
// trusts only the deployment root accepts the renewed one, with or without
// SNI (IP addresses send none).
func TestServerTLSConfigFrom(t *testing.T) {
	ca := newTestCA(t)
	first, err := ca.ServerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	h := NewCertHolder(first)
	srv := ServerTLSConfigFrom(h, ca.Pool())
	if len(srv.Certificates) != 0 || srv.GetCertificate == nil || srv.MinVersion != tls.VersionTLS13 ||
		srv.ClientAuth != tls.VerifyClientCertIfGiven {
		t.Fatalf("config: %d static certificates, GetCertificate %v, version %x, client auth %v",
			len(srv.Certificates), srv.GetCertificate != nil, srv.MinVersion, srv.ClientAuth)
	}
	agent := ca.agentCert(t)
	seen := func(serverName string) *x509.Certificate {
		t.Helper()
		var leaf *x509.Certificate
		cli := AgentTLSConfig(&agent, ca.Pool(), serverName)
		cli.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no server certificate")
			}
			leaf = cs.PeerCertificates[0]
			return nil
		}
		res := handshake(t, srv, cli)
		if res.clientErr != nil || res.serverErr != nil {
			t.Fatalf("handshake to %s: client %v, server %v", serverName, res.clientErr, res.serverErr)
		}
		return leaf
	}
	for _, name := range []string{"localhost", "127.0.0.1"} {
		if got := seen(name); !bytes.Equal(got.Raw, first.Certificate[0]) {
			t.Errorf("%s: server presented another certificate than the holder's", name)
		}
	}
	now := time.Now()
	replaceServerCert(t, ca, now.Add(-time.Hour), now.Add(time.Hour))
	second, renewed, err := ca.RenewServerCertificate(now, 0)
	if err != nil || !renewed {
		t.Fatalf("renew: %v %v", renewed, err)
	}
	h.Set(second)
	for _, name := range []string{"localhost", "127.0.0.1"} {
		if got := seen(name); !bytes.Equal(got.Raw, second.Certificate[0]) {
			t.Errorf("%s: server still presents the old certificate after Set", name)
		}
	}
}

// agentCert signs an agent certificate for a test handshake.
func (c *CA) agentCert(t testing.TB) tls.Certificate {
	t.Helper()
	csr, key := newCSR(t)
	chain, err := c.SignAgentCSR(csr, "acme", "a1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
}
