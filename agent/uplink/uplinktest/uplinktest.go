// Package uplinktest is a tiny in-process Vigil server peer for the agent's
// unit tests: a QUIC listener on loopback, with certificates from
// pki/pkitest, that speaks wire/v1 (ENROLL, CONTROL, FINDINGS) and records
// what the agent sent. It is not the real server (server/... may not be
// imported by agent code); end-to-end tests use server/servertest.
package uplinktest

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/vigil-edge/vigil/pki"
	"github.com/vigil-edge/vigil/pki/pkitest"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// StreamReceiveWindow is the flow control window of a stream the server
// has not read from yet.
const StreamReceiveWindow = 512 << 10

// Server is the fake server. Set its fields with New's options, or with
// Configure once it runs; its connections read them under its lock.
type Server struct {
	PKI  *pkitest.Deployment
	Addr string // 127.0.0.1:port

	// Token is the one valid enrollment token (entity Entity). Empty: all refused.
	Token  string
	Entity string
	// AgentTTL is the lifetime of issued certificates (default 1 h).
	AgentTTL time.Duration
	// StatusIntervalMs goes into HelloAck.
	StatusIntervalMs uint32
	// OnBatch, if set, decides the reply to a batch: return (ack, closeCode);
	// closeCode != 0 closes the connection with that code instead of acking.
	OnBatch func(b *wirev1.FindingsBatch) (ack *wirev1.Ack, closeCode wirev1.ErrorCode)
	// AfterHello, if set, runs on the control stream after HelloAck
	// (e.g. to push SlowDown or ModelOffer).
	AfterHello func(send func(*wirev1.ServerControl) error)
	// RefuseRenew answers renew requests with an error.
	RefuseRenew bool
	// AckDelay delays each ack by this long after its batch was read, while
	// the next batches are read meanwhile (as the real server pipelines its
	// commits); acks still leave in order.
	AckDelay time.Duration
	// StallFindings, if set and true when a FINDINGS stream starts, makes
	// the server stop reading that stream after its header (the agent's
	// writes then block on flow control) until the connection ends.
	StallFindings func() bool
	// DiscardControl, if set and true when a control message arrives after
	// HelloAck, makes the server read and discard it unrecorded (a server
	// that crashes before it stores what reached it; DropConns then ends
	// the connection).
	DiscardControl func() bool
	// NoHighestSeq leaves HelloAck.highest_seq unset, as an older server
	// does (by default it is the highest seq committed here).
	NoHighestSeq bool
	// Clock, if set, is the server's clock, as on a server whose clock
	// differs from the agent's: HelloAck.server_time_unix_nano, and renewed
	// certificates valid from Clock() less pki.ClockSkew for AgentTTL; client
	// certificates are verified on it.
	Clock func() time.Time

	ln     *quic.Listener
	mu     sync.Mutex
	seqs   map[uint64]*wirev1.Finding // committed findings by seq
	order  []uint64                   // seqs in arrival order (first delivery)
	status []*wirev1.Status
	hellos []*wirev1.Hello
	renews int
	conns  int
	// live connections (DropConns), model statuses recorded and discarded.
	live      map[*quic.Conn]struct{}
	models    []*wirev1.ModelStatus
	discarded int
}

// New starts a fake server for a fresh test deployment (trust domain
// "vigil.test") on 127.0.0.1; it stops when the test ends. The options set
// the Server's fields (Token, StatusIntervalMs, ...) before it serves: its
// connections read them from their own goroutines, and the race detector
// sees no order between a field set after New and those reads (the order
// comes through the network).
func New(t testing.TB, opts ...func(*Server)) *Server {
	t.Helper()
	d := pkitest.New(t, "vigil.test")
	s := &Server{PKI: d, Entity: "acme", AgentTTL: time.Hour, seqs: map[uint64]*wirev1.Finding{}}
	for _, o := range opts {
		o(s)
	}
	cert := d.ServerCert(t)
	tconf := pki.ServerTLSConfig(cert, d.CA.Pool())
	tconf.Time = func() time.Time { // client certificates are checked on Clock
		if c := s.settings().clock; c != nil {
			return c()
		}
		return time.Now()
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", tconf, &quic.Config{
		MaxIdleTimeout: 10 * time.Second,
		// quic-go's default, pinned: with StallFindings the agent's writes
		// block once a stream carries this much unread.
		InitialStreamReceiveWindow: StreamReceiveWindow,
	})
	if err != nil {
		t.Fatalf("uplinktest: %v", err)
	}
	s.ln = ln
	s.Addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns++
			s.mu.Unlock()
			go s.serveConn(ctx, conn)
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = ln.Close()
		<-done
	})
	return s
}

// Pin is the deployment's CA pin.
func (s *Server) Pin() string { return s.PKI.CA.Pin() }

// Configure sets the server's fields (hooks, Token, ...) while it runs: f
// runs under the lock under which connections read them.
func (s *Server) Configure(f func(*Server)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// settings are the fields connections read, as Configure last set them.
type settings struct {
	token, entity    string
	ttl              time.Duration
	statusIntervalMs uint32
	onBatch          func(b *wirev1.FindingsBatch) (*wirev1.Ack, wirev1.ErrorCode)
	afterHello       func(send func(*wirev1.ServerControl) error)
	refuseRenew      bool
	ackDelay         time.Duration
	stallFindings    func() bool
	discardControl   func() bool
	noHighestSeq     bool
	clock            func() time.Time
}

func (s *Server) settings() settings {
	s.mu.Lock()
	defer s.mu.Unlock()
	return settings{token: s.Token, entity: s.Entity, ttl: s.AgentTTL, statusIntervalMs: s.StatusIntervalMs,
		onBatch: s.OnBatch, afterHello: s.AfterHello, refuseRenew: s.RefuseRenew, ackDelay: s.AckDelay,
		stallFindings: s.StallFindings, discardControl: s.DiscardControl, noHighestSeq: s.NoHighestSeq,
		clock: s.Clock}
}

// Findings returns the committed findings' seqs in order of first arrival.
func (s *Server) Findings() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint64(nil), s.order...)
}

// Finding returns a committed finding.
func (s *Server) Finding(seq uint64) *wirev1.Finding {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seqs[seq]
}

// Statuses returns the Status messages received.
func (s *Server) Statuses() []*wirev1.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*wirev1.Status(nil), s.status...)
}

// Hellos returns the Hello messages received.
func (s *Server) Hellos() []*wirev1.Hello {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*wirev1.Hello(nil), s.hellos...)
}

// ModelStatuses returns the ModelStatus messages recorded (not discarded).
func (s *Server) ModelStatuses() []*wirev1.ModelStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*wirev1.ModelStatus(nil), s.models...)
}

// Discarded is the number of control messages discarded (DiscardControl).
func (s *Server) Discarded() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.discarded
}

// DropConns closes every live connection with CodeInternal, as a server
// that crashed and restarted would lose them.
func (s *Server) DropConns() {
	s.mu.Lock()
	cs := make([]*quic.Conn, 0, len(s.live))
	for c := range s.live {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		_ = c.CloseWithError(quic.ApplicationErrorCode(wirev1.CodeInternal), "uplinktest: connection dropped")
	}
}

// Renewals is the number of certificates issued by renewal.
func (s *Server) Renewals() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.renews
}

// Conns is the number of accepted connections.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

func (s *Server) serveConn(ctx context.Context, conn *quic.Conn) {
	var agentID string
	if pcs := conn.ConnectionState().TLS.PeerCertificates; len(pcs) > 0 {
		id, err := pki.IdentityFromCert(pcs[0], s.PKI.CA.TrustDomain)
		if err != nil {
			_ = conn.CloseWithError(quic.ApplicationErrorCode(wirev1.CodeUnauthorized), "bad identity")
			return
		}
		agentID = id.AgentID
	}
	s.mu.Lock()
	if s.live == nil {
		s.live = map[*quic.Conn]struct{}{}
	}
	s.live[conn] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.live, conn)
		s.mu.Unlock()
	}()
	for {
		st, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		go func() {
			if err := s.serveStream(conn, st, agentID); err != nil {
				code := wirev1.CodeProtocol
				var pe *wirev1.ProtocolError
				if errors.As(err, &pe) {
					code = pe.Code
				}
				_ = conn.CloseWithError(quic.ApplicationErrorCode(code), err.Error())
			}
		}()
	}
}

type closeErr struct{ code wirev1.ErrorCode }

func (e closeErr) Error() string { return e.code.String() }

func (s *Server) serveStream(conn *quic.Conn, st *quic.Stream, agentID string) error {
	r := wirev1.NewReader(st, 0)
	var h wirev1.StreamHeader
	if err := r.Read(&h); err != nil {
		return err
	}
	switch h.Kind {
	case wirev1.StreamKind_STREAM_KIND_ENROLL:
		return s.enroll(st, r)
	case wirev1.StreamKind_STREAM_KIND_CONTROL:
		if agentID == "" {
			return &wirev1.ProtocolError{Code: wirev1.CodeUnauthorized, Err: errors.New("no client certificate")}
		}
		return s.control(st, r, agentID)
	case wirev1.StreamKind_STREAM_KIND_FINDINGS:
		if agentID == "" {
			return &wirev1.ProtocolError{Code: wirev1.CodeUnauthorized, Err: errors.New("no client certificate")}
		}
		if stall := s.settings().stallFindings; stall != nil && stall() {
			<-conn.Context().Done()
			return nil
		}
		err := s.findings(st, r)
		var ce closeErr
		if errors.As(err, &ce) {
			_ = conn.CloseWithError(quic.ApplicationErrorCode(ce.code), "test close")
			return nil
		}
		return err
	default:
		return &wirev1.ProtocolError{Code: wirev1.CodeUnknownKind, Err: fmt.Errorf("kind %v", h.Kind)}
	}
}

func (s *Server) enroll(st *quic.Stream, r *wirev1.Reader) error {
	var req wirev1.EnrollRequest
	if err := r.Read(&req); err != nil {
		return err
	}
	refuse := func(code wirev1.ErrorCode, msg string) error {
		_ = wirev1.Write(st, &wirev1.EnrollResponse{Error: &wirev1.Error{Code: uint32(code), Message: msg}}, 0)
		return st.Close()
	}
	cf := s.settings()
	if cf.token == "" || subtle.ConstantTimeCompare([]byte(req.Token), []byte(cf.token)) != 1 {
		return refuse(wirev1.CodeTokenInvalid, "enrollment token is unknown, used or expired")
	}
	s.mu.Lock()
	id := fmt.Sprintf("a-%012x", s.conns)
	s.mu.Unlock()
	chain, err := s.PKI.CA.SignAgentCSR(req.CsrDer, cf.entity, id, cf.ttl)
	if err != nil {
		return refuse(wirev1.CodeBadCSR, "bad CSR")
	}
	if err := wirev1.Write(st, &wirev1.EnrollResponse{CertChainDer: chain, RootCaDer: s.PKI.CA.Root.Raw, AgentId: id, Entity: cf.entity}, 0); err != nil {
		return err
	}
	return st.Close()
}

func (s *Server) control(st *quic.Stream, r *wirev1.Reader, agentID string) error {
	var m wirev1.AgentControl
	if err := r.Read(&m); err != nil {
		return err
	}
	if m.GetHello() == nil {
		return &wirev1.ProtocolError{Code: wirev1.CodeRefused, Err: errors.New("first control message is not Hello")}
	}
	s.mu.Lock()
	s.hellos = append(s.hellos, m.GetHello())
	s.mu.Unlock()
	cf := s.settings()
	var wmu sync.Mutex
	send := func(m *wirev1.ServerControl) error {
		wmu.Lock()
		defer wmu.Unlock()
		return wirev1.Write(st, m, 0)
	}
	now := time.Now
	if cf.clock != nil {
		now = cf.clock
	}
	ack := &wirev1.HelloAck{AgentId: agentID, Entity: cf.entity, ServerTimeUnixNano: now().UnixNano(), StatusIntervalMs: cf.statusIntervalMs}
	if !cf.noHighestSeq {
		var highest uint64
		s.mu.Lock()
		for seq := range s.seqs {
			highest = max(highest, seq)
		}
		s.mu.Unlock()
		ack.HighestSeq = &highest
	}
	if err := send(&wirev1.ServerControl{Msg: &wirev1.ServerControl_HelloAck{HelloAck: ack}}); err != nil {
		return err
	}
	if cf.afterHello != nil {
		cf.afterHello(send)
	}
	for {
		var m wirev1.AgentControl
		if err := r.Read(&m); err != nil {
			return nil
		}
		if discard := s.settings().discardControl; discard != nil && discard() {
			s.mu.Lock()
			s.discarded++
			s.mu.Unlock()
			continue
		}
		switch msg := m.Msg.(type) {
		case *wirev1.AgentControl_ModelStatus:
			s.mu.Lock()
			s.models = append(s.models, msg.ModelStatus)
			s.mu.Unlock()
		case *wirev1.AgentControl_Status:
			s.mu.Lock()
			s.status = append(s.status, msg.Status)
			s.mu.Unlock()
		case *wirev1.AgentControl_Renew:
			resp := &wirev1.RenewResponse{}
			cf := s.settings()
			if cf.refuseRenew {
				resp.Error = &wirev1.Error{Code: uint32(wirev1.CodeInternal), Message: "renewal disabled"}
			} else {
				chain, err := s.signRenewal(msg.Renew.CsrDer, cf, agentID)
				if err != nil {
					resp.Error = &wirev1.Error{Code: uint32(wirev1.CodeBadCSR), Message: err.Error()}
				} else {
					resp.CertChainDer = chain
					s.mu.Lock()
					s.renews++
					s.mu.Unlock()
				}
			}
			if err := send(&wirev1.ServerControl{Msg: &wirev1.ServerControl_Renew{Renew: resp}}); err != nil {
				return err
			}
		}
	}
}

// signRenewal signs a renewal CSR for AgentTTL, on the server's Clock when
// one is set.
func (s *Server) signRenewal(csrDER []byte, cf settings, agentID string) ([][]byte, error) {
	if cf.clock == nil {
		return s.PKI.CA.SignAgentCSR(csrDER, cf.entity, agentID, cf.ttl)
	}
	pub, err := pki.CheckCSR(csrDER)
	if err != nil {
		return nil, err
	}
	issKey, err := pki.ReadKey(filepath.Join(s.PKI.Dir, pki.IssuingKeyFile))
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(pki.AgentURI(s.PKI.CA.TrustDomain, cf.entity, agentID))
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := cf.clock()
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               pkix.Name{Organization: []string{cf.entity}, CommonName: agentID},
		NotBefore:             now.Add(-pki.ClockSkew),
		NotAfter:              now.Add(cf.ttl),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.PKI.CA.Issuing, pub, issKey)
	if err != nil {
		return nil, err
	}
	return [][]byte{der, s.PKI.CA.Issuing.Raw}, nil
}

func (s *Server) findings(st *quic.Stream, r *wirev1.Reader) error {
	cf := s.settings()
	send := func(a *wirev1.Ack) error { return wirev1.Write(st, a, 0) }
	if cf.ackDelay > 0 {
		type delayed struct {
			ack *wirev1.Ack
			due time.Time
		}
		acks := make(chan delayed, 1024)
		done := make(chan struct{})
		go func() {
			defer close(done)
			failed := false
			for d := range acks {
				if failed {
					continue // drain
				}
				time.Sleep(time.Until(d.due))
				failed = wirev1.Write(st, d.ack, 0) != nil
			}
		}()
		defer func() {
			close(acks)
			<-done
		}()
		send = func(a *wirev1.Ack) error {
			acks <- delayed{a, time.Now().Add(cf.ackDelay)}
			return nil
		}
	}
	for {
		var b wirev1.FindingsBatch
		if err := r.Read(&b); err != nil {
			return nil
		}
		if len(b.Findings) == 0 || b.Findings[0].Seq != b.FirstSeq {
			return &wirev1.ProtocolError{Code: wirev1.CodeSequenceBroken, Err: errors.New("first_seq mismatch")}
		}
		for i := 1; i < len(b.Findings); i++ {
			if b.Findings[i].Seq <= b.Findings[i-1].Seq {
				return &wirev1.ProtocolError{Code: wirev1.CodeSequenceBroken, Err: errors.New("seqs not increasing")}
			}
		}
		ack := &wirev1.Ack{ThroughSeq: b.Findings[len(b.Findings)-1].Seq}
		if onBatch := s.settings().onBatch; onBatch != nil {
			a, code := onBatch(&b)
			if code != 0 {
				return closeErr{code}
			}
			if a != nil {
				ack = a
			}
		}
		// "Commit" the batch (dedup by seq), then ack.
		s.mu.Lock()
		for _, f := range b.Findings {
			if _, dup := s.seqs[f.Seq]; !dup {
				s.seqs[f.Seq] = f
				s.order = append(s.order, f.Seq)
			}
		}
		s.mu.Unlock()
		if err := send(ack); err != nil {
			return nil
		}
	}
}
