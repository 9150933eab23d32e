// Package servertest runs a real Vigil server for tests: a deployment
// created by `vigil-server init` in a temporary directory, the QUIC endpoint
// on 127.0.0.1:0 (UDP) and the HTTPS API on 127.0.0.1:0 (TCP), in process,
// with the real SQLite store. It also has small client helpers (agent TLS
// configurations, a QUIC dialer, enrollment) for tests of either side.
package servertest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/vigil-edge/vigil/pki"
	"github.com/vigil-edge/vigil/server/app"
	"github.com/vigil-edge/vigil/server/endpoint"
	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// ServerName is a name in the test server's certificate (it also has IP SANs
// 127.0.0.1 and ::1).
const ServerName = "localhost"

// Options adjust the test server. The zero value is fine.
type Options struct {
	TrustDomain string       // "" = vigil.test
	Logger      *slog.Logger // nil = discard (set VIGIL_TEST_LOG=1 to log to stderr)
	// Endpoint adjusts the endpoint configuration (e.g. StatusInterval).
	Endpoint func(*endpoint.Config)
}

// Server is a running test server. It stops when the test ends.
type Server struct {
	*app.Server
	Dir         string // data directory
	Addr        string // QUIC UDP address "127.0.0.1:port"
	APIURL      string // "https://127.0.0.1:port"
	AdminToken  string // bearer token of the first admin
	Pin         string // root CA pin "sha256:<hex>"
	TrustDomain string
	Roots       *x509.CertPool // the deployment root, for clients
}

// Start creates a deployment in a temporary directory and starts a server on
// loopback. It is stopped (cleanly, as by SIGTERM) at the end of the test.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.TrustDomain == "" {
		opts.TrustDomain = "vigil.test"
	}
	log := opts.Logger
	if log == nil {
		if os.Getenv("VIGIL_TEST_LOG") != "" {
			log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		} else {
			log = slog.New(slog.DiscardHandler)
		}
	}
	dir := filepath.Join(t.TempDir(), "server")
	ctx := context.Background()
	res, err := app.Init(ctx, app.InitOptions{DataDir: dir, TrustDomain: opts.TrustDomain, DNSNames: []string{ServerName}}, log)
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	tok, err := os.ReadFile(res.AdminTokenFile)
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	s, err := app.Start(ctx, app.Config{
		DataDir:  dir,
		QUICAddr: "127.0.0.1:0",
		APIAddr:  "127.0.0.1:0",
		Logger:   log,
		Endpoint: opts.Endpoint,
	})
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(sctx); err != nil {
			t.Errorf("servertest: shutdown: %v", err)
		}
	})
	return &Server{
		Server:      s,
		Dir:         dir,
		Addr:        s.QUICAddr().String(),
		APIURL:      "https://" + s.APIAddr().String(),
		AdminToken:  strings.TrimSpace(string(tok)),
		Pin:         res.Pin,
		TrustDomain: opts.TrustDomain,
		Roots:       s.CA.Pool(),
	}
}

// EnrollToken creates a one-time enrollment token for entity (valid 1 hour).
func (s *Server) EnrollToken(t testing.TB, entity string) string {
	t.Helper()
	tok, err := s.Store.CreateEnrollToken(context.Background(), entity, time.Hour, "servertest")
	if err != nil {
		t.Fatalf("servertest: create enroll token: %v", err)
	}
	return tok
}

// TLSConfig is an agent's TLS configuration for this server: the deployment
// root as trust anchor, cert as client certificate (nil when enrolling).
func (s *Server) TLSConfig(cert *tls.Certificate) *tls.Config {
	return pki.AgentTLSConfig(cert, s.Roots, ServerName)
}

// ClientQUICConfig is a QUIC configuration for test agents.
func ClientQUICConfig() *quic.Config {
	return &quic.Config{HandshakeIdleTimeout: 5 * time.Second, MaxIdleTimeout: 30 * time.Second, KeepAlivePeriod: 10 * time.Second}
}

// Dial opens a QUIC connection to the server with cert (nil: none, for
// enrollment).
func (s *Server) Dial(ctx context.Context, cert *tls.Certificate) (*quic.Conn, error) {
	c, err := quic.DialAddr(ctx, s.Addr, s.TLSConfig(cert), ClientQUICConfig())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", s.Addr, err)
	}
	return c, nil
}

// Agent is an enrolled test agent.
type Agent struct {
	ID     string
	Entity string
	Cert   tls.Certificate // chain leaf, issuing; private key; Leaf set
}

// Enroll enrolls a new agent of entity over QUIC (pinned TLS, as the real
// agent does) with a fresh token, and returns its identity and certificate.
func (s *Server) Enroll(t testing.TB, entity string) *Agent {
	t.Helper()
	a, err := s.EnrollWith(context.Background(), s.EnrollToken(t, entity), "test-host")
	if err != nil {
		t.Fatalf("servertest: enroll: %v", err)
	}
	return a
}

// EnrollError is a refusal from the server.
type EnrollError struct {
	Code    wirev1.ErrorCode
	Message string
}

func (e *EnrollError) Error() string {
	return fmt.Sprintf("enrollment refused: %s: %s", e.Code, e.Message)
}

// EnrollWith enrolls with token over a pinned TLS connection. A refusal is
// an *EnrollError.
func (s *Server) EnrollWith(ctx context.Context, token, hostname string) (*Agent, error) {
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.NewCSR(key, hostname)
	if err != nil {
		return nil, err
	}
	resp, err := s.EnrollRaw(ctx, &wirev1.EnrollRequest{Token: token, CsrDer: csr, Hostname: hostname})
	if err != nil {
		return nil, err
	}
	if resp.Error != nil {
		return nil, &EnrollError{Code: wirev1.ErrorCode(resp.Error.Code), Message: resp.Error.Message}
	}
	if len(resp.CertChainDer) == 0 {
		return nil, errors.New("enroll: empty chain")
	}
	leaf, err := x509.ParseCertificate(resp.CertChainDer[0])
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	return &Agent{ID: resp.AgentId, Entity: resp.Entity,
		Cert: tls.Certificate{Certificate: resp.CertChainDer, PrivateKey: key, Leaf: leaf}}, nil
}

// EnrollRaw sends one EnrollRequest on a fresh pinned connection and
// returns the server's EnrollResponse.
func (s *Server) EnrollRaw(ctx context.Context, req *wirev1.EnrollRequest) (*wirev1.EnrollResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := quic.DialAddr(ctx, s.Addr, pki.PinnedTLSConfig(s.Pin, ServerName), ClientQUICConfig())
	if err != nil {
		return nil, fmt.Errorf("enroll: dial: %w", err)
	}
	defer c.CloseWithError(0, "")
	st, err := OpenStream(ctx, c, wirev1.StreamKind_STREAM_KIND_ENROLL)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if err := wirev1.Write(st, req, 0); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	var resp wirev1.EnrollResponse
	if err := wirev1.NewReader(st, 0).Read(&resp); err != nil {
		return nil, fmt.Errorf("enroll: read response: %w", err)
	}
	return &resp, nil
}

// OpenStream opens a stream and writes its StreamHeader.
func OpenStream(ctx context.Context, c *quic.Conn, kind wirev1.StreamKind) (*quic.Stream, error) {
	st, err := c.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	if err := wirev1.Write(st, &wirev1.StreamHeader{Kind: kind, ProtocolVersion: wirev1.ProtocolVersion, AgentVersion: "servertest"}, 0); err != nil {
		return nil, fmt.Errorf("write stream header: %w", err)
	}
	return st, nil
}

// CountFindings is the number of findings stored for agentID.
func (s *Server) CountFindings(t testing.TB, agentID string) int {
	t.Helper()
	n, err := s.Store.CountFindings(context.Background(), agentID)
	if err != nil {
		t.Fatalf("servertest: count findings: %v", err)
	}
	return n
}

// Revoke revokes agentID in the store and at the endpoint, as the API does.
func (s *Server) Revoke(t testing.TB, agentID string) {
	t.Helper()
	if err := s.Store.RevokeAgent(context.Background(), agentID, "servertest"); err != nil {
		t.Fatalf("servertest: revoke: %v", err)
	}
	s.Endpoint.Revoke(agentID)
}

// ListFindings lists stored findings (filter as store.FindingFilter).
func (s *Server) ListFindings(t testing.TB, f store.FindingFilter) []store.Finding {
	t.Helper()
	fs, err := s.Store.ListFindings(context.Background(), f)
	if err != nil {
		t.Fatalf("servertest: list findings: %v", err)
	}
	return fs
}
