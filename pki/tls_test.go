package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

type handshakeResult struct {
	server    tls.ConnectionState // valid when serverErr == nil
	serverErr error
	clientErr error // handshake or the first read after it
}

// handshake runs one TLS connection over loopback TCP. The server, once its
// handshake succeeds, writes "ok"; the client reads it, so a refusal by the
// server after the client's TLS 1.3 handshake finished shows as clientErr.
func handshake(t *testing.T, srvCfg, cliCfg *tls.Config) handshakeResult {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type srvOut struct {
		st  tls.ConnectionState
		err error
	}
	done := make(chan srvOut, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- srvOut{err: err}
			return
		}
		defer c.Close()
		// A guard against a hung test, not a timing assumption.
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		s := tls.Server(c, srvCfg)
		if err := s.HandshakeContext(t.Context()); err != nil {
			done <- srvOut{err: err}
			return
		}
		_, err = s.Write([]byte("ok"))
		done <- srvOut{st: s.ConnectionState(), err: err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	cl := tls.Client(c, cliCfg)
	var res handshakeResult
	res.clientErr = cl.HandshakeContext(t.Context())
	if res.clientErr == nil {
		buf := make([]byte, 2)
		if _, err := io.ReadFull(cl, buf); err != nil {
			res.clientErr = err
		} else if cl.ConnectionState().NegotiatedProtocol != wirev1.ALPN {
			res.clientErr = errors.New("ALPN not negotiated")
		}
	}
	_ = cl.Close()
	out := <-done
	res.server, res.serverErr = out.st, out.err
	return res
}

func TestTLS(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	srvCert, err := ca.ServerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	otherSrv, err := other.ServerCertificate()
	if err != nil {
		t.Fatal(err)
	}

	agent := func(c *CA, entity, id string, notBefore, notAfter time.Time) *tls.Certificate {
		csr, key := newCSR(t)
		chain, err := c.signAgent(csr, entity, id, notBefore, notAfter)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(chain[0])
		return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
	}
	now := time.Now()
	good := agent(ca, "acme", "a1", now.Add(-time.Hour), now.Add(time.Hour))
	expired := agent(ca, "acme", "a1", now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	notYet := agent(ca, "acme", "a1", now.Add(24*time.Hour), now.Add(48*time.Hour))
	foreign := agent(other, "acme", "a1", now.Add(-time.Hour), now.Add(time.Hour))

	// A server that presents leaf and issuing only: the root pin cannot match.
	noRoot := srvCert
	noRoot.Certificate = srvCert.Certificate[:2]
	// An agent certificate (client auth only) used as the server's.
	agentAsServer := *good
	agentAsServer.Certificate = append(append([][]byte{}, good.Certificate...), ca.Root.Raw)

	pin := ca.Pin()
	srv := func(c tls.Certificate) *tls.Config { return ServerTLSConfig(c, ca.Pool()) }
	tls12 := func(cfg *tls.Config) *tls.Config {
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		return cfg
	}

	tests := []struct {
		name     string
		server   *tls.Config
		client   *tls.Config
		ok       bool
		identity string // expected client identity URI on the server, if ok
	}{
		{"mTLS", srv(srvCert), AgentTLSConfig(good, ca.Pool(), "localhost"), true, AgentURI(testTD, "acme", "a1")},
		{"mTLS by IP", srv(srvCert), AgentTLSConfig(good, ca.Pool(), "127.0.0.1"), true, AgentURI(testTD, "acme", "a1")},
		{"no client cert", srv(srvCert), AgentTLSConfig(nil, ca.Pool(), "localhost"), true, ""},
		{"pinned enroll", srv(srvCert), PinnedTLSConfig(pin, "localhost"), true, ""},
		{"pinned enroll by IP", srv(srvCert), PinnedTLSConfig(pin, "::1"), true, ""},
		{"pinned with client cert", srv(srvCert), PinnedTLSConfig(pin, "localhost"), true, ""},

		{"client cert of another CA", srv(srvCert), AgentTLSConfig(foreign, ca.Pool(), "localhost"), false, ""},
		{"expired client cert", srv(srvCert), AgentTLSConfig(expired, ca.Pool(), "localhost"), false, ""},
		{"client cert not yet valid", srv(srvCert), AgentTLSConfig(notYet, ca.Pool(), "localhost"), false, ""},
		{"nil client roots", ServerTLSConfig(srvCert, nil), AgentTLSConfig(good, ca.Pool(), "localhost"), false, ""},
		{"server of another CA", srv(otherSrv), AgentTLSConfig(good, ca.Pool(), "localhost"), false, ""},
		{"wrong server name", srv(srvCert), AgentTLSConfig(good, ca.Pool(), "evil.example"), false, ""},
		{"nil roots", srv(srvCert), AgentTLSConfig(good, nil, "localhost"), false, ""},
		{"TLS 1.2 client", srv(srvCert), tls12(AgentTLSConfig(good, ca.Pool(), "localhost")), false, ""},
		{"TLS 1.2 pinned client", srv(srvCert), tls12(PinnedTLSConfig(pin, "localhost")), false, ""},
		{"wrong ALPN", srv(srvCert), func() *tls.Config {
			c := AgentTLSConfig(good, ca.Pool(), "localhost")
			c.NextProtos = []string{"h2"}
			return c
		}(), false, ""},

		{"pin mismatch", srv(srvCert), PinnedTLSConfig(other.Pin(), "localhost"), false, ""},
		{"pin of the issuing CA's twin", srv(otherSrv), PinnedTLSConfig(pin, "localhost"), false, ""},
		{"pin of the leaf", srv(srvCert), PinnedTLSConfig(SPKIPin(srvCert.Leaf), "localhost"), false, ""},
		{"invalid pin", srv(srvCert), PinnedTLSConfig("sha256:xyz", "localhost"), false, ""},
		{"empty pin", srv(srvCert), PinnedTLSConfig("", "localhost"), false, ""},
		{"pinned wrong server name", srv(srvCert), PinnedTLSConfig(pin, "evil.example"), false, ""},
		{"pinned empty server name", srv(srvCert), PinnedTLSConfig(pin, ""), false, ""},
		{"pinned server sends no root", srv(noRoot), PinnedTLSConfig(pin, "localhost"), false, ""},
		{"pinned agent cert as server", srv(agentAsServer), PinnedTLSConfig(pin, "localhost"), false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "pinned with client cert" {
				tt.client.Certificates = []tls.Certificate{*good}
				tt.identity = AgentURI(testTD, "acme", "a1")
			}
			res := handshake(t, tt.server, tt.client)
			if !tt.ok {
				t.Logf("server: %v; client: %v", res.serverErr, res.clientErr)
				if res.serverErr == nil && res.clientErr == nil {
					t.Fatal("connection accepted")
				}
				return
			}
			if res.serverErr != nil || res.clientErr != nil {
				t.Fatalf("server: %v; client: %v", res.serverErr, res.clientErr)
			}
			st := res.server
			if st.Version != tls.VersionTLS13 || st.NegotiatedProtocol != wirev1.ALPN {
				t.Fatalf("version %x ALPN %q", st.Version, st.NegotiatedProtocol)
			}
			if tt.identity == "" {
				if len(st.PeerCertificates) != 0 {
					t.Fatal("unexpected client certificate")
				}
				return
			}
			if len(st.VerifiedChains) == 0 {
				t.Fatal("client certificate not verified")
			}
			id, err := IdentityFromCert(st.PeerCertificates[0], testTD)
			if err != nil {
				t.Fatal(err)
			}
			if id.String() != tt.identity {
				t.Fatalf("identity %s, want %s", id, tt.identity)
			}
		})
	}
}

func TestVerifyPinnedChain(t *testing.T) {
	ca := newTestCA(t)
	srv, err := ca.ServerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	chain := []*x509.Certificate{srv.Leaf, ca.Issuing, ca.Root}
	want, _ := ParsePin(ca.Pin())
	anchor, err := VerifyPinnedChain(chain, want, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	if !anchor.Equal(ca.Root) {
		t.Fatal("anchor is not the root")
	}
	wrong := make([]byte, 32)
	tests := []struct {
		name  string
		chain []*x509.Certificate
		want  []byte
		sn    string
		isPin bool
	}{
		{"empty chain", nil, want, "localhost", false},
		{"leaf only", chain[:1], want, "localhost", true},
		{"wrong pin", chain, wrong, "localhost", true},
		{"short pin", chain, want[:31], "localhost", false},
		{"wrong name", chain, want, "x.example", false},
		{"no name", chain, want, "", false},
		{"issuing missing", []*x509.Certificate{srv.Leaf, ca.Root}, want, "localhost", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := VerifyPinnedChain(tt.chain, tt.want, tt.sn)
			if err == nil {
				t.Fatal("verified")
			}
			if tt.isPin != errors.Is(err, ErrPinMismatch) {
				t.Fatalf("error %v: ErrPinMismatch %v, want %v", err, !tt.isPin, tt.isPin)
			}
		})
	}
}

func TestTLSConfigs(t *testing.T) {
	ca := newTestCA(t)
	srvCert, _ := ca.ServerCertificate()
	for name, cfg := range map[string]*tls.Config{
		"server": ServerTLSConfig(srvCert, ca.Pool()),
		"agent":  AgentTLSConfig(nil, ca.Pool(), "localhost"),
		"pinned": PinnedTLSConfig(ca.Pin(), "localhost"),
	} {
		if cfg.MinVersion != tls.VersionTLS13 {
			t.Errorf("%s: MinVersion %x", name, cfg.MinVersion)
		}
		if strings.Join(cfg.NextProtos, ",") != wirev1.ALPN {
			t.Errorf("%s: NextProtos %v", name, cfg.NextProtos)
		}
	}
	if c := ServerTLSConfig(srvCert, ca.Pool()); c.ClientAuth != tls.VerifyClientCertIfGiven {
		t.Errorf("ClientAuth %v", c.ClientAuth)
	}
}
