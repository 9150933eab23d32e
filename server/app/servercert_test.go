package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/vigil-edge/vigil/pki"
)

// newDeployment runs Init in a temporary directory (server certificate for
// localhost, 127.0.0.1 and ::1) and loads its CA.
func newDeployment(t *testing.T) (string, *pki.CA) {
	t.Helper()
	dir := t.TempDir()
	if _, err := Init(context.Background(), InitOptions{DataDir: dir, DNSNames: []string{"localhost"}}, nil); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, ca
}

// shortServerCert replaces server.pem with a certificate for the same key
// and names, signed by the issuing key, that expires at notAfter: a
// deployment nearly a year old.
func shortServerCert(t *testing.T, dir string, ca *pki.CA, notAfter time.Time) *x509.Certificate {
	t.Helper()
	cur, err := ca.ServerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	issKey, err := pki.ReadKey(filepath.Join(dir, pki.IssuingKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               cur.Leaf.Subject,
		NotBefore:             notAfter.Add(-365 * 24 * time.Hour),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              cur.Leaf.DNSNames,
		IPAddresses:           cur.Leaf.IPAddresses,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Issuing, cur.Leaf.PublicKey, issKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCerts(filepath.Join(dir, pki.ServerCertFile), [][]byte{der, ca.Issuing.Raw}); err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// agentCert is an enrolled agent's certificate (chain leaf, issuing).
func agentCert(t *testing.T, ca *pki.CA) tls.Certificate {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "a1")
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.SignAgentCSR(csr, "acme", "a1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: chain, PrivateKey: key}
}

// quicLeaf connects to the QUIC endpoint as an agent does (its
// certificate, the deployment root as the only trust anchor, ServerName
// localhost) and returns the server certificate it accepted.
func quicLeaf(t *testing.T, s *Server, ca *pki.CA, agent *tls.Certificate) *x509.Certificate {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, s.QUICAddr().String(), pki.AgentTLSConfig(agent, ca.Pool(), "localhost"),
		&quic.Config{HandshakeIdleTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("agent QUIC handshake: %v", err)
	}
	defer conn.CloseWithError(0, "")
	return conn.ConnectionState().TLS.PeerCertificates[0]
}

// apiLeaf connects to the HTTPS API trusting only the deployment root, by
// IP address (no SNI), and returns the server certificate it accepted.
func apiLeaf(t *testing.T, s *Server, ca *pki.CA) *x509.Certificate {
	t.Helper()
	c, err := tls.Dial("tcp", s.APIAddr().String(), &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: ca.Pool()})
	if err != nil {
		t.Fatalf("API TLS handshake: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// TestStartRenewsExpiringServerCertificate: the server certificate was
// issued once at init and never renewed, so a year later every agent
// handshake and the API failed at once. Start now renews a certificate
// inside the renewal window before it serves, and existing agents, which
// trust only the deployment root, accept the new one.
func TestStartRenewsExpiringServerCertificate(t *testing.T) {
	dir, ca := newDeployment(t)
	agent := agentCert(t, ca) // enrolled before the renewal
	old := shortServerCert(t, dir, ca, time.Now().Add(2*24*time.Hour))

	ctx := context.Background()
	s, err := Start(ctx, Config{DataDir: dir, QUICAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(ctx)

	onDisk, err := ca.ServerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	farOff := time.Now().Add(300 * 24 * time.Hour)
	for name, leaf := range map[string]*x509.Certificate{
		"QUIC": quicLeaf(t, s, ca, &agent),
		"API":  apiLeaf(t, s, ca),
	} {
		if leaf.SerialNumber.Cmp(old.SerialNumber) == 0 || !leaf.NotAfter.After(farOff) {
			t.Errorf("%s: server presented the certificate expiring %s, want a renewed one", name, leaf.NotAfter)
		}
		if !bytes.Equal(leaf.Raw, onDisk.Leaf.Raw) {
			t.Errorf("%s: presented certificate is not the renewed server.pem", name)
		}
		if !bytes.Equal(leaf.RawSubjectPublicKeyInfo, old.RawSubjectPublicKeyInfo) {
			t.Errorf("%s: renewal changed the server key", name)
		}
	}
}

// TestServerCertificateRenewedWhileRunning: the renewal loop renews a
// certificate that entered the window while the server runs and swaps it in
// without a restart; the next handshakes (QUIC and API) present it.
func TestServerCertificateRenewedWhileRunning(t *testing.T) {
	dir, ca := newDeployment(t)
	agent := agentCert(t, ca)
	ctx := context.Background()
	s, err := Start(ctx, Config{DataDir: dir, QUICAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0",
		CertCheckInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(ctx)
	first := quicLeaf(t, s, ca, &agent)
	checkNotAfterGauge(t, s, first.NotAfter)

	// The deployment ages: server.pem now expires within the window (as
	// Start would have found it had the server run for a year).
	old := shortServerCert(t, dir, ca, time.Now().Add(time.Hour))
	deadline := time.Now().Add(10 * time.Second)
	for {
		q := quicLeaf(t, s, ca, &agent)
		a := apiLeaf(t, s, ca)
		renewed := func(l *x509.Certificate) bool {
			return l.SerialNumber.Cmp(first.SerialNumber) != 0 && l.SerialNumber.Cmp(old.SerialNumber) != 0
		}
		if renewed(q) && renewed(a) {
			if !bytes.Equal(q.Raw, a.Raw) {
				t.Fatal("QUIC and API present different certificates")
			}
			if !q.NotAfter.After(time.Now().Add(300 * 24 * time.Hour)) {
				t.Fatalf("renewed certificate expires %s", q.NotAfter)
			}
			onDisk, err := ca.ServerCertificate()
			if err != nil || !bytes.Equal(onDisk.Leaf.Raw, q.Raw) {
				t.Fatalf("presented certificate is not server.pem: %v", err)
			}
			checkNotAfterGauge(t, s, q.NotAfter)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no renewed certificate presented within 10s (QUIC expires %s, API %s)", q.NotAfter, a.NotAfter)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func checkNotAfterGauge(t *testing.T, s *Server, want time.Time) {
	t.Helper()
	mfs, err := s.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "vigil_server_certificate_not_after_seconds" {
			if got := mf.GetMetric()[0].GetGauge().GetValue(); got != float64(want.Unix()) {
				t.Errorf("vigil_server_certificate_not_after_seconds = %v, want %d", got, want.Unix())
			}
			return
		}
	}
	t.Error("no vigil_server_certificate_not_after_seconds metric")
}

// TestCertRenewerFailures: a renewal that cannot happen (the issuing CA ends
// inside the window) keeps the served certificate, counts the failure and
// logs it, as an error once the certificate has less than a week left; a
// server whose certificate has expired and cannot be renewed does not start.
func TestCertRenewerFailures(t *testing.T) {
	const day = 24 * time.Hour
	ctx := context.Background()
	dir, ca := newDeployment(t)
	var logs bytes.Buffer
	r := newCertRenewer(ca, slog.New(slog.NewTextHandler(&logs, nil)))

	// Years later: 10 days before the issuing CA's end, server.pem expires
	// in 5 days.
	now := ca.Issuing.NotAfter.Add(-10 * day)
	cur := shortServerCert(t, dir, ca, now.Add(5*day))
	if err := r.start(ctx, now); err != nil {
		t.Fatalf("start with a valid certificate whose renewal fails: %v", err)
	}
	if served := r.certs.Current(); served == nil || !bytes.Equal(served.Certificate[0], cur.Raw) {
		t.Fatal("the current certificate is not served after a failed renewal")
	}
	if got := renewalCount(t, r, "failed"); got != 1 {
		t.Errorf("failed renewals = %v, want 1", got)
	}
	if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "server certificate renewal failed") ||
		!strings.Contains(l, "vigil-server ca rotate-issuing") {
		t.Errorf("log %q", l)
	}

	// Further out, with more than a week left: a warning.
	logs.Reset()
	if err := r.check(ctx, cur.NotAfter.Add(-8*day)); !errors.Is(err, pki.ErrIssuingCAExpiring) {
		t.Fatalf("check: %v", err)
	}
	if l := logs.String(); !strings.Contains(l, "level=WARN") {
		t.Errorf("log %q, want a warning", l)
	}

	// Expired and not renewable: Start refuses, saying why.
	r = newCertRenewer(ca, slog.New(slog.DiscardHandler))
	err := r.start(ctx, cur.NotAfter.Add(day))
	if !errors.Is(err, pki.ErrIssuingCAExpiring) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("start with an expired certificate: %v", err)
	}
}

// TestCertRenewerLogs: a renewal is logged with what an operator needs
// (serial, NotAfter, names) and never key material.
func TestCertRenewerLogs(t *testing.T) {
	dir, ca := newDeployment(t)
	shortServerCert(t, dir, ca, time.Now().Add(time.Hour))
	var logs bytes.Buffer
	r := newCertRenewer(ca, slog.New(slog.NewTextHandler(&logs, nil)))
	if err := r.start(context.Background(), time.Now()); err != nil {
		t.Fatal(err)
	}
	l := logs.String()
	if !strings.Contains(l, "server certificate renewed") || !strings.Contains(l, "not_after=") || !strings.Contains(l, "localhost") {
		t.Errorf("log %q", l)
	}
	if strings.Contains(l, "PRIVATE") || strings.Contains(l, "BEGIN") {
		t.Errorf("log holds PEM material: %q", l)
	}
	if got := renewalCount(t, r, "renewed"); got != 1 {
		t.Errorf("renewals = %v, want 1", got)
	}
}

// renewalCount reads vigil_server_certificate_renewals_total{result}.
func renewalCount(t *testing.T, r *certRenewer, result string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := r.register(reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "vigil_server_certificate_renewals_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "result" && lp.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
