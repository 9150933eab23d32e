package endpoint_test

// Integration tests: a real server (servertest: QUIC on loopback, SQLite
// store in a temporary directory) and clients speaking wire/v1 over QUIC.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/vigil-edge/vigil/pki"
	"github.com/vigil-edge/vigil/pki/pkitest"
	"github.com/vigil-edge/vigil/server/endpoint"
	"github.com/vigil-edge/vigil/server/servertest"
	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dial(t *testing.T, s *servertest.Server, a *servertest.Agent) *quic.Conn {
	t.Helper()
	c, err := s.Dial(ctxT(t), &a.Cert)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseWithError(0, "") })
	return c
}

// controlStream opens CONTROL and exchanges Hello/HelloAck.
func controlStream(t *testing.T, c *quic.Conn) (*quic.Stream, *wirev1.Reader, *wirev1.HelloAck, error) {
	t.Helper()
	st, err := servertest.OpenStream(ctxT(t), c, wirev1.StreamKind_STREAM_KIND_CONTROL)
	if err != nil {
		return nil, nil, nil, err
	}
	hello := &wirev1.AgentControl{Msg: &wirev1.AgentControl_Hello{Hello: &wirev1.Hello{
		AgentVersion: "test", ProtocolVersion: wirev1.ProtocolVersion, Host: &wirev1.HostFacts{Hostname: "sensor-1"}}}}
	if err := wirev1.Write(st, hello, 0); err != nil {
		return nil, nil, nil, err
	}
	r := wirev1.NewReader(st, 0)
	var m wirev1.ServerControl
	if err := r.Read(&m); err != nil {
		return nil, nil, nil, err
	}
	if m.GetHelloAck() == nil {
		t.Fatalf("first control message %v, want HelloAck", &m)
	}
	// The entity's suppressions follow the ack at once (the real store
	// keeps them).
	var sups wirev1.ServerControl
	if err := r.Read(&sups); err != nil {
		return nil, nil, nil, err
	}
	if sups.GetSuppressions() == nil {
		t.Fatalf("second control message %v, want Suppressions", &sups)
	}
	return st, r, m.GetHelloAck(), nil
}

func findings(from, to uint64) *wirev1.FindingsBatch {
	b := &wirev1.FindingsBatch{FirstSeq: from}
	for s := from; s <= to; s++ {
		b.Findings = append(b.Findings, &wirev1.Finding{
			Seq: s, Detector: "netflow", TimeUnixNano: time.Now().UnixNano(), Count: 1,
			Severity: wirev1.Severity_SEVERITY_HIGH, Score: 2.5, Threshold: 1.0,
			Model:       &wirev1.ModelRef{Name: "netflow-ae", Version: 1, Digest: "sha256:00"},
			Context:     &wirev1.FindingContext{SrcIp: "10.0.0.1", DstIp: "10.0.0.2", DstPort: 22, Proto: "tcp"},
			TopFeatures: []*wirev1.FeatureContribution{{Name: "distinct_dst_ports", Contribution: 0.8}},
			Summary:     "port scan",
		})
	}
	return b
}

// findingsStream opens a FINDINGS stream.
func findingsStream(t *testing.T, c *quic.Conn) (*quic.Stream, *wirev1.Reader) {
	t.Helper()
	st, err := servertest.OpenStream(ctxT(t), c, wirev1.StreamKind_STREAM_KIND_FINDINGS)
	if err != nil {
		t.Fatal(err)
	}
	return st, wirev1.NewReader(st, 0)
}

func sendBatch(t *testing.T, st *quic.Stream, r *wirev1.Reader, b *wirev1.FindingsBatch) *wirev1.Ack {
	t.Helper()
	if err := wirev1.Write(st, b, 0); err != nil {
		t.Fatal(err)
	}
	var a wirev1.Ack
	if err := r.Read(&a); err != nil {
		t.Fatalf("read ack: %v", err)
	}
	if a.Error != nil {
		t.Fatalf("ack error: %v", a.Error)
	}
	return &a
}

// closeError waits for c to be closed and returns the cause.
func closeError(t *testing.T, c *quic.Conn) error {
	t.Helper()
	select {
	case <-c.Context().Done():
		return context.Cause(c.Context())
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed")
		return nil
	}
}

// appCode is the application error code the server closed c with.
func appCode(t *testing.T, c *quic.Conn) wirev1.ErrorCode {
	t.Helper()
	err := closeError(t, c)
	var ae *quic.ApplicationError
	if !errors.As(err, &ae) || !ae.Remote {
		t.Fatalf("connection closed by %v, want a remote application error", err)
	}
	return wirev1.ErrorCode(ae.ErrorCode)
}

func TestEnrollOK(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	a := s.Enroll(t, "cert-lab")
	if !regexp.MustCompile(`^a-[0-9a-f]{12}$`).MatchString(a.ID) || a.Entity != "cert-lab" {
		t.Fatalf("agent %q entity %q", a.ID, a.Entity)
	}
	id, err := pki.IdentityFromCert(a.Cert.Leaf, s.TrustDomain)
	if err != nil || id.AgentID != a.ID || id.Entity != "cert-lab" {
		t.Fatalf("certificate identity %+v, %v", id, err)
	}
	ag, err := s.Store.GetAgent(context.Background(), a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ag.Entity != "cert-lab" || ag.Hostname != "test-host" || ag.CertSerial == "" {
		t.Fatalf("stored agent %+v", ag)
	}
	// The new certificate works for mTLS at once.
	c := dial(t, s, a)
	if _, _, ack, err := controlStream(t, c); err != nil || ack.AgentId != a.ID || ack.Entity != "cert-lab" {
		t.Fatalf("hello ack %v, %v", ack, err)
	}
}

func TestEnrollRefused(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	ctx := ctxT(t)
	used := s.EnrollToken(t, "e1")
	if _, err := s.EnrollWith(ctx, used, "h"); err != nil {
		t.Fatal(err)
	}
	expired, err := s.Store.CreateEnrollToken(ctx, "e1", time.Millisecond, "test")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	good := s.EnrollToken(t, "e1")
	id, _, ok := strings.Cut(good, ".")
	if !ok {
		t.Fatalf("token %q has no secret part", good)
	}
	wrongSecret := id + "." + strings.Repeat("A", len(good)-len(id)-1)
	for _, tc := range []struct{ name, token string }{
		{"reused", used},
		{"expired", expired},
		{"wrong secret", wrongSecret},
		{"malformed", "not-a-token"},
		{"empty", ""},
		{"huge", strings.Repeat("x", 10000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.EnrollWith(ctx, tc.token, "h")
			var ee *servertest.EnrollError
			if !errors.As(err, &ee) || ee.Code != wirev1.CodeTokenInvalid {
				t.Fatalf("got %v, want CodeTokenInvalid", err)
			}
		})
	}
	// The good token still works: failed attempts did not touch it.
	if _, err := s.EnrollWith(ctx, good, "h"); err != nil {
		t.Fatal(err)
	}
}

func TestEnrollBadCSR(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	ctx := ctxT(t)
	tok := s.EnrollToken(t, "e1")
	for _, csr := range [][]byte{nil, []byte("garbage"), bytes.Repeat([]byte{0x30}, 100)} {
		resp, err := s.EnrollRaw(ctx, &wirev1.EnrollRequest{Token: tok, CsrDer: csr})
		if err != nil {
			t.Fatal(err)
		}
		if wirev1.ErrorCode(resp.GetError().GetCode()) != wirev1.CodeBadCSR || len(resp.CertChainDer) != 0 {
			t.Fatalf("response %v, want CodeBadCSR", resp)
		}
	}
	// A refused CSR does not spend the token.
	if _, err := s.EnrollWith(ctx, tok, "h"); err != nil {
		t.Fatal(err)
	}
}

// handshakeRefused checks that a connection with cert is refused in the
// handshake (TLS alert as QUIC CRYPTO_ERROR): the dial fails, or the
// connection dies before a stream gets an answer.
func handshakeRefused(t *testing.T, s *servertest.Server, cert *tls.Certificate) *quic.TransportError {
	t.Helper()
	ctx := ctxT(t)
	c, err := s.Dial(ctx, cert)
	if err == nil {
		defer c.CloseWithError(0, "")
		if _, _, _, err2 := controlStream(t, c); err2 == nil {
			t.Fatal("refused agent got a HelloAck")
		}
		err = closeError(t, c)
	}
	var te *quic.TransportError
	if !errors.As(err, &te) || !te.ErrorCode.IsCryptoError() {
		t.Fatalf("connection failed with %v, want a TLS alert (CRYPTO_ERROR)", err)
	}
	return te
}

func TestOtherCARefused(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	other := pkitest.New(t, s.TrustDomain)
	cert := other.AgentCert(t, "e1", "a-0123456789ab", 0)
	handshakeRefused(t, s, &cert)
}

func TestForgedIdentityRefused(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	d := &pkitest.Deployment{Dir: s.Dir, CA: s.CA}
	// Signed by the right CA but with an identity of another trust domain.
	cert := d.AgentCertValidity(t, "e1", "a-1", "spiffe://evil.example/entity/e1/agent/a-1", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	handshakeRefused(t, s, &cert)
	// Expired certificate.
	cert = d.AgentCertValidity(t, "e1", "a-1", "", time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
	handshakeRefused(t, s, &cert)
}

func TestRevokedRefusedAtHandshake(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	a := s.Enroll(t, "e1")
	s.Revoke(t, a.ID)
	te := handshakeRefused(t, s, &a.Cert)
	// TLS alert certificate_revoked (44).
	if te.ErrorCode != 0x100+44 {
		t.Fatalf("error code %#x, want 0x12c (certificate_revoked)", uint64(te.ErrorCode))
	}
}

func TestRevokedFromStoreRefresh(t *testing.T) {
	s := servertest.Start(t, servertest.Options{Endpoint: func(c *endpoint.Config) { c.RevocationRefresh = 50 * time.Millisecond }})
	a := s.Enroll(t, "e1")
	c := dial(t, s, a)
	if _, _, _, err := controlStream(t, c); err != nil {
		t.Fatal(err)
	}
	// Revoked in the store only (as by another server process): the
	// refresh disconnects the agent.
	if err := s.Store.RevokeAgent(context.Background(), a.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if code := appCode(t, c); code != wirev1.CodeRevoked {
		t.Fatalf("closed with %s, want revoked", code)
	}
}

func TestRevokeDisconnects(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	a := s.Enroll(t, "e1")
	b := s.Enroll(t, "e1")
	ca, cb := dial(t, s, a), dial(t, s, b)
	for _, c := range []*quic.Conn{ca, cb} {
		if _, _, _, err := controlStream(t, c); err != nil {
			t.Fatal(err)
		}
	}
	s.Revoke(t, a.ID)
	if code := appCode(t, ca); code != wirev1.CodeRevoked {
		t.Fatalf("closed with %s, want revoked", code)
	}
	// The other agent is untouched.
	st, r := findingsStream(t, cb)
	if ack := sendBatch(t, st, r, findings(1, 3)); ack.ThroughSeq != 3 {
		t.Fatalf("ack %d", ack.ThroughSeq)
	}
}

func TestFindingsCommittedAckedOnce(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	a := s.Enroll(t, "e1")
	c := dial(t, s, a)
	st, r := findingsStream(t, c)
	if ack := sendBatch(t, st, r, findings(1, 100)); ack.ThroughSeq != 100 {
		t.Fatalf("ack through %d, want 100", ack.ThroughSeq)
	}
	if n := s.CountFindings(t, a.ID); n != 100 {
		t.Fatalf("%d findings stored after the ack, want 100", n)
	}
	// Re-sent (the agent lost the ack): acked again, stored once.
	if ack := sendBatch(t, st, r, findings(1, 100)); ack.ThroughSeq != 100 {
		t.Fatalf("ack through %d, want 100", ack.ThroughSeq)
	}
	// Overlapping, on a new connection and stream.
	c2 := dial(t, s, a)
	st2, r2 := findingsStream(t, c2)
	if ack := sendBatch(t, st2, r2, findings(51, 150)); ack.ThroughSeq != 150 {
		t.Fatalf("ack through %d, want 150", ack.ThroughSeq)
	}
	if n := s.CountFindings(t, a.ID); n != 150 {
		t.Fatalf("%d findings stored, want 150", n)
	}
	fs := s.ListFindings(t, store.FindingFilter{AgentID: a.ID, Limit: 1000})
	seen := map[uint64]bool{}
	for _, f := range fs {
		if seen[f.Seq] {
			t.Fatalf("seq %d stored twice", f.Seq)
		}
		seen[f.Seq] = true
		if f.AgentID != a.ID || f.Entity != "e1" || f.Detector != "netflow" || f.Summary != "port scan" {
			t.Fatalf("stored finding %+v", f)
		}
	}
}

func TestIdentityFromCertOnly(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	a := s.Enroll(t, "entity-a")
	b := s.Enroll(t, "entity-b")
	// Agent b sends findings; it has no way to name another agent or
	// entity: the server files them under b's certificate.
	cb := dial(t, s, b)
	st, r := findingsStream(t, cb)
	sendBatch(t, st, r, findings(1, 10))
	if n := s.CountFindings(t, a.ID); n != 0 {
		t.Fatalf("agent a has %d findings, want 0", n)
	}
	for _, f := range s.ListFindings(t, store.FindingFilter{Limit: 1000}) {
		if f.AgentID != b.ID || f.Entity != "entity-b" {
			t.Fatalf("finding filed under %s/%s, want %s/entity-b", f.AgentID, f.Entity, b.ID)
		}
	}
	if fs := s.ListFindings(t, store.FindingFilter{Entity: "entity-a", Limit: 1000}); len(fs) != 0 {
		t.Fatalf("entity-a has %d findings", len(fs))
	}
	// A certificate claiming a's identity but not signed by this CA is
	// refused at the handshake (TestOtherCARefused); a's own certificate
	// on a connection yields a's identity only.
	ca := dial(t, s, a)
	if _, _, ack, err := controlStream(t, ca); err != nil || ack.AgentId != a.ID {
		t.Fatalf("hello ack %v %v", ack, err)
	}
}

// rawFrameStream opens a FINDINGS stream and writes raw bytes after the
// header.
func rawAfterHeader(t *testing.T, c *quic.Conn, kind wirev1.StreamKind, raw []byte) {
	t.Helper()
	st, err := servertest.OpenStream(ctxT(t), c, kind)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write(raw); err != nil {
		t.Fatal(err)
	}
}

func TestMisbehavingConnectionClosed(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	a := s.Enroll(t, "e1")
	good := dial(t, s, a)
	gst, gr := findingsStream(t, good)
	sendBatch(t, gst, gr, findings(1, 5))

	oversized := []byte{0x81, 0x80, 0x80, 0x02} // varint 4 MiB + 1
	for _, tc := range []struct {
		name string
		do   func(c *quic.Conn)
		code wirev1.ErrorCode
	}{
		{"oversized frame", func(c *quic.Conn) { rawAfterHeader(t, c, wirev1.StreamKind_STREAM_KIND_FINDINGS, oversized) }, wirev1.CodeFrameTooLarge},
		{"garbage frame", func(c *quic.Conn) {
			rawAfterHeader(t, c, wirev1.StreamKind_STREAM_KIND_FINDINGS, []byte{6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		}, wirev1.CodeProtocol},
		{"garbage header", func(c *quic.Conn) {
			st, err := c.OpenStreamSync(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			st.Write([]byte{4, 0xff, 0xff, 0xff, 0xff})
		}, wirev1.CodeProtocol},
		{"unknown kind", func(c *quic.Conn) {
			if _, err := servertest.OpenStream(ctxT(t), c, 77); err != nil {
				t.Fatal(err)
			}
		}, wirev1.CodeUnknownKind},
		{"broken sequence", func(c *quic.Conn) {
			st, _ := findingsStream(t, c)
			b := findings(1, 3)
			b.Findings[2].Seq = 2
			wirev1.Write(st, b, 0)
		}, wirev1.CodeSequenceBroken},
		{"second control stream", func(c *quic.Conn) {
			if _, _, _, err := controlStream(t, c); err != nil {
				t.Fatal(err)
			}
			st, _ := servertest.OpenStream(ctxT(t), c, wirev1.StreamKind_STREAM_KIND_CONTROL)
			wirev1.Write(st, &wirev1.AgentControl{Msg: &wirev1.AgentControl_Hello{Hello: &wirev1.Hello{}}}, 0)
		}, wirev1.CodeRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, s, a)
			tc.do(c)
			if code := appCode(t, c); code != tc.code {
				t.Fatalf("closed with %s, want %s", code, tc.code)
			}
		})
	}
	// The well-behaved connection of the same agent kept working.
	if ack := sendBatch(t, gst, gr, findings(6, 9)); ack.ThroughSeq != 9 {
		t.Fatalf("ack %d", ack.ThroughSeq)
	}
	if n := s.CountFindings(t, a.ID); n != 9 {
		t.Fatalf("%d findings", n)
	}
}

func TestUnauthenticatedMayOnlyEnroll(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	for _, kind := range []wirev1.StreamKind{wirev1.StreamKind_STREAM_KIND_CONTROL, wirev1.StreamKind_STREAM_KIND_FINDINGS, wirev1.StreamKind_STREAM_KIND_FETCH} {
		c, err := quic.DialAddr(ctxT(t), s.Addr, pki.PinnedTLSConfig(s.Pin, servertest.ServerName), servertest.ClientQUICConfig())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := servertest.OpenStream(ctxT(t), c, kind); err != nil {
			t.Fatal(err)
		}
		if code := appCode(t, c); code != wirev1.CodeUnauthorized {
			t.Fatalf("%s without certificate: closed with %s, want unauthorized", kind, code)
		}
	}
}

func TestEnrollWindowCloses(t *testing.T) {
	s := servertest.Start(t, servertest.Options{Endpoint: func(c *endpoint.Config) { c.EnrollTimeout = 100 * time.Millisecond }})
	c, err := quic.DialAddr(ctxT(t), s.Addr, pki.PinnedTLSConfig(s.Pin, servertest.ServerName), servertest.ClientQUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	if code := appCode(t, c); code != wirev1.CodeUnauthorized {
		t.Fatalf("idle unauthenticated connection closed with %s", code)
	}
}

func TestControlPushStatusRenew(t *testing.T) {
	s := servertest.Start(t, servertest.Options{Endpoint: func(c *endpoint.Config) { c.StatusInterval = 5 * time.Second }})
	a := s.Enroll(t, "e1")
	c := dial(t, s, a)
	st, r, ack, err := controlStream(t, c)
	if err != nil {
		t.Fatal(err)
	}
	if ack.StatusIntervalMs != 5000 || ack.ServerTimeUnixNano == 0 {
		t.Fatalf("hello ack %v", ack)
	}
	// Push reaches the agent.
	offer := &wirev1.ServerControl{Msg: &wirev1.ServerControl_ModelOffer{ModelOffer: &wirev1.ModelOffer{
		RolloutId: "r1", Model: &wirev1.ModelRef{Name: "m", Version: 2, Digest: "sha256:ab"}}}}
	if err := s.Endpoint.Push(a.ID, offer); err != nil {
		t.Fatal(err)
	}
	var m wirev1.ServerControl
	if err := r.Read(&m); err != nil || m.GetModelOffer().GetRolloutId() != "r1" {
		t.Fatalf("pushed message %v, %v", &m, err)
	}
	if err := s.Endpoint.Push("a-000000000000", offer); !errors.Is(err, endpoint.ErrNotConnected) {
		t.Fatalf("push to absent agent: %v", err)
	}
	// Status updates the store (Hello already touched it).
	before, err := s.Store.GetAgent(context.Background(), a.ID)
	if err != nil || before.LastSeen.IsZero() || before.Version != "test" {
		t.Fatalf("agent after hello %+v %v", before, err)
	}
	// Renewal: a new chain for the same identity.
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "x")
	if err != nil {
		t.Fatal(err)
	}
	if err := wirev1.Write(st, &wirev1.AgentControl{Msg: &wirev1.AgentControl_Renew{Renew: &wirev1.RenewRequest{CsrDer: csr}}}, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.Read(&m); err != nil || m.GetRenew() == nil || m.GetRenew().Error != nil {
		t.Fatalf("renew response %v %v", &m, err)
	}
	chain := m.GetRenew().CertChainDer
	leaf, err := pkiParse(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.IdentityFromCert(leaf, s.TrustDomain)
	if err != nil || id.AgentID != a.ID || id.Entity != "e1" {
		t.Fatalf("renewed identity %+v %v", id, err)
	}
	after, err := s.Store.GetAgent(context.Background(), a.ID)
	if err != nil || after.CertSerial != leaf.SerialNumber.Text(16) {
		t.Fatalf("stored serial %q, want %s (%v)", after.CertSerial, leaf.SerialNumber.Text(16), err)
	}
	// The renewed certificate connects.
	renewed := &servertest.Agent{ID: a.ID, Entity: a.Entity, Cert: tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}}
	c2 := dial(t, s, renewed)
	if _, _, ack, err := controlStream(t, c2); err != nil || ack.AgentId != a.ID {
		t.Fatalf("hello with renewed cert %v %v", ack, err)
	}
}

func TestFetch(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	a := s.Enroll(t, "e1")
	data := bytes.Repeat([]byte("vigil bundle "), 70000) // ~900 KB: 4 chunks
	sum := sha256.Sum256(data)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	if err := os.WriteFile(filepath.Join(s.Dir, "bundles", hex.EncodeToString(sum[:])+".vgb"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	c := dial(t, s, a)
	st, err := servertest.OpenStream(ctxT(t), c, wirev1.StreamKind_STREAM_KIND_FETCH)
	if err != nil {
		t.Fatal(err)
	}
	r := wirev1.NewReader(st, 0)
	fetch := func(req *wirev1.FetchRequest) ([]byte, *wirev1.Error) {
		t.Helper()
		if err := wirev1.Write(st, req, 0); err != nil {
			t.Fatal(err)
		}
		var got []byte
		off := req.Offset
		for {
			var ch wirev1.FetchChunk
			if err := r.Read(&ch); err != nil {
				t.Fatal(err)
			}
			if ch.Error != nil {
				return nil, ch.Error
			}
			if ch.Offset != off || len(ch.Data) > wirev1.MaxFetchChunk || ch.Total != uint64(len(data)) {
				t.Fatalf("chunk offset %d (want %d) len %d total %d", ch.Offset, off, len(ch.Data), ch.Total)
			}
			got = append(got, ch.Data...)
			off += uint64(len(ch.Data))
			if ch.Eof {
				return got, nil
			}
		}
	}
	for _, off := range []uint64{0, 1, wirev1.MaxFetchChunk, uint64(len(data)) - 1, uint64(len(data))} {
		got, e := fetch(&wirev1.FetchRequest{Digest: digest, Offset: off})
		if e != nil || !bytes.Equal(got, data[off:]) {
			t.Fatalf("fetch from %d: %d bytes, error %v", off, len(got), e)
		}
	}
	if _, e := fetch(&wirev1.FetchRequest{Digest: "sha256:" + strings.Repeat("0", 64)}); wirev1.ErrorCode(e.GetCode()) != wirev1.CodeNotFound {
		t.Fatalf("unknown digest: %v", e)
	}
	if _, e := fetch(&wirev1.FetchRequest{Digest: digest, Offset: uint64(len(data)) + 1}); wirev1.ErrorCode(e.GetCode()) != wirev1.CodeProtocol {
		t.Fatalf("offset beyond end: %v", e)
	}
}

func TestShutdownClosesWithCode(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	a := s.Enroll(t, "e1")
	c := dial(t, s, a)
	st, r := findingsStream(t, c)
	sendBatch(t, st, r, findings(1, 10))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.Endpoint.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	}()
	if code := appCode(t, c); code != wirev1.CodeShuttingDown {
		t.Fatalf("closed with %s, want shutting_down", code)
	}
	wg.Wait()
}

func pkiParse(der []byte) (*x509.Certificate, error) { return x509.ParseCertificate(der) }
