package endpoint

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/vigil-edge/vigil/pki"
	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Store is what the endpoint needs from the server's durable state
// (*store.DB implements it).
type Store interface {
	ConsumeEnrollToken(ctx context.Context, plaintext string, now time.Time) (entity string, err error)
	RegisterAgent(ctx context.Context, a store.Agent) error
	RecordCert(ctx context.Context, agentID, serialHex string, notAfter time.Time) error
	RevokedAgents(ctx context.Context) (map[string]bool, error)
	TouchAgent(ctx context.Context, agentID string, seen time.Time, st store.AgentState) error
	InsertFindings(ctx context.Context, agentID, entity string, fs []*wirev1.Finding) (inserted int, err error)
}

var _ Store = (*store.DB)(nil)

// Config configures an Endpoint. CA and Store are required.
type Config struct {
	// CA signs agent certificates and provides the trust anchors.
	CA *pki.CA
	// ServerCert is the TLS certificate the endpoint presents (leaf, issuing).
	// Zero means CA.ServerCertificate(). Ignored when ServerCerts is set.
	ServerCert tls.Certificate
	// ServerCerts, when set, supplies the certificate at each handshake, so
	// that a renewed one (ServerCerts.Set) is presented without a restart.
	// Nil means a holder of ServerCert.
	ServerCerts *pki.CertHolder
	// Store is the durable state.
	Store Store
	// BundleDir holds model bundles served by FETCH, named <sha256hex>.vgb.
	// Empty means FETCH answers every digest with CodeNotFound.
	BundleDir string
	// Logger receives the endpoint's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the endpoint's Prometheus metrics; nil means none.
	Registerer prometheus.Registerer

	// CertTTL is the lifetime of agent certificates (enrollment and renewal).
	// Zero means 30 days.
	CertTTL time.Duration
	// StatusInterval is the heartbeat period told to agents in HelloAck.
	// Zero means 30 s.
	StatusInterval time.Duration
	// MaxIdleTimeout closes silent connections. Zero means 90 s. Agents send
	// keep-alives (their StatusInterval is shorter).
	MaxIdleTimeout time.Duration
	// HandshakeTimeout bounds the QUIC+TLS handshake. Zero means 10 s.
	HandshakeTimeout time.Duration
	// RevocationRefresh is how often the revoked set is reloaded from the
	// store (Revoke updates it at once). Zero means 10 s.
	RevocationRefresh time.Duration
	// EnrollTimeout bounds the life of a connection without a client
	// certificate (it may only enroll). Zero means 30 s.
	EnrollTimeout time.Duration
	// SlowDownQueue is the number of findings commits in flight at or above
	// which Acks carry a SlowDown. Zero means 128 (the store commits queued
	// batches together, so a queue of a few dozen is normal under load).
	SlowDownQueue int
	// SlowDownLatency is the commit latency at or above which Acks carry a
	// SlowDown. Zero means 1 s.
	SlowDownLatency time.Duration
	// SlowDown is the advice sent when the store is overloaded. Zero means
	// min_batch_interval_ms=500.
	SlowDown *wirev1.SlowDown
	// MaxQueuedFindings bounds the findings of all connections that are
	// decoded and waiting for their commit (memory: many agents with a
	// backlog, e.g. after an outage, each keep several batches in flight).
	// A FINDINGS stream that would exceed it waits before handing its next
	// batch to the store (QUIC flow control then holds the agent back).
	// Zero means 65536 (about a second of ingest).
	MaxQueuedFindings int

	// MaxEnrollConns bounds the live connections without a client
	// certificate (they may only enroll, for EnrollTimeout): one more is
	// closed at once with CodeOverloaded. Anyone who reaches the port can
	// open them. Zero means 1024.
	MaxEnrollConns int

	// MaxConnsPerAgent bounds one agent's live connections: a new one
	// beyond it closes the agent's oldest with CodeOverloaded. An agent
	// holds its uplink, a connection per bundle fetch (agent/update), and
	// after a network change the uplinks it left, until they time out:
	// those are the oldest. Zero means 8.
	MaxConnsPerAgent int

	// OnHello, if set, is called (in its own goroutine) after an agent's
	// HelloAck was sent: the model registry pushes pending offers then.
	// shadowRollouts is the Hello's list of the rollouts the agent runs
	// in shadow mode (validated: at most maxShadowRollouts short ids).
	OnHello func(ctx context.Context, agentID, entity string, shadowRollouts []string)
	// OnModelStatus, if set, is called after an agent's ModelStatus was
	// recorded (on the CONTROL reader: it must not wait for long): the
	// model registry judges shadow reports then (halt rule).
	OnModelStatus func(ctx context.Context, agentID string, st *wirev1.ModelStatus)

	// now is the clock (tests).
	now func() time.Time
}

func (c *Config) setDefaults() {
	if c.CertTTL <= 0 {
		c.CertTTL = 30 * 24 * time.Hour
	}
	if c.StatusInterval <= 0 {
		c.StatusInterval = 30 * time.Second
	}
	if c.MaxIdleTimeout <= 0 {
		c.MaxIdleTimeout = 90 * time.Second
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.RevocationRefresh <= 0 {
		c.RevocationRefresh = 10 * time.Second
	}
	if c.EnrollTimeout <= 0 {
		c.EnrollTimeout = 30 * time.Second
	}
	if c.SlowDownQueue <= 0 {
		c.SlowDownQueue = 128
	}
	if c.SlowDownLatency <= 0 {
		c.SlowDownLatency = time.Second
	}
	if c.SlowDown == nil {
		c.SlowDown = &wirev1.SlowDown{MinBatchIntervalMs: 500}
	}
	if c.MaxQueuedFindings <= 0 {
		c.MaxQueuedFindings = 65536
	}
	if c.MaxConnsPerAgent <= 0 {
		c.MaxConnsPerAgent = 8
	}
	if c.MaxEnrollConns <= 0 {
		c.MaxEnrollConns = 1024
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
}

// Limits on what a stream may carry. Frames above them close the connection
// with CodeFrameTooLarge.
const (
	// maxSmallFrame bounds every frame except FindingsBatch.
	maxSmallFrame = 64 << 10
	// maxStreamsPerConn bounds concurrent bidirectional streams per connection.
	maxStreamsPerConn = 16
	// headerTimeout is how long a new stream may take to send its header.
	headerTimeout = 10 * time.Second
	// writeTimeout bounds one frame write (a stuck peer must not pin a
	// goroutine forever).
	writeTimeout = 30 * time.Second
)

// ErrNotConnected is returned by Push when the agent has no live CONTROL stream.
var ErrNotConnected = errors.New("agent not connected")

// Endpoint is the QUIC server. Create it with New, then Listen and Serve;
// stop it with Shutdown.
type Endpoint struct {
	cfg     Config
	log     *slog.Logger
	st      Store
	ca      *pki.CA
	td      string
	tlsConf *tls.Config
	m       *metrics

	revMu   sync.RWMutex
	revoked map[string]bool

	// renewMu guards lastRenew: the time of each agent's last renewal
	// (minRenewInterval), whatever connection it came on.
	renewMu   sync.Mutex
	lastRenew map[string]time.Time

	// conns: live connections by agent id (certified connections only).
	connMu   sync.Mutex
	conns    map[*conn]struct{}
	byAgent  map[string]map[*conn]struct{}
	controls map[string]*controlSession

	// Commit gate: Shutdown waits for in-flight commits (and their acks).
	commitMu  sync.Mutex
	closing   bool
	commitWG  sync.WaitGroup
	inflight  atomic.Int64
	lastNanos atomic.Int64  // latency of the last commit
	anonConns atomic.Int64  // live connections without a client certificate
	connSeq   atomic.Uint64 // numbers connections in the order they registered
	queued    budget        // findings decoded and waiting for their commit
	// agentCommits: each agent's batches committing (HelloAck waits for
	// them before it reads the agent's highest stored seq).
	agentCommits agentCommits

	ln       *quic.Listener
	tr       *quic.Transport // owns the UDP socket's QUIC state
	ownConn  net.PacketConn  // the socket Listen opened (closed at Shutdown)
	connWG   sync.WaitGroup
	stopOnce sync.Once
	stop     chan struct{}
}

// New checks cfg and loads the revoked set from the store.
func New(ctx context.Context, cfg Config) (*Endpoint, error) {
	if cfg.CA == nil || cfg.Store == nil {
		return nil, errors.New("new endpoint: CA and Store are required")
	}
	cfg.setDefaults()
	if cfg.CertTTL > pki.MaxAgentTTL {
		return nil, fmt.Errorf("new endpoint: certificate TTL %s above the maximum %s", cfg.CertTTL, pki.MaxAgentTTL)
	}
	if cfg.ServerCerts == nil {
		if len(cfg.ServerCert.Certificate) == 0 {
			sc, err := cfg.CA.ServerCertificate()
			if err != nil {
				return nil, fmt.Errorf("new endpoint: %w", err)
			}
			cfg.ServerCert = sc
		}
		cfg.ServerCerts = pki.NewCertHolder(cfg.ServerCert)
	}
	if cfg.ServerCerts.Current() == nil {
		return nil, errors.New("new endpoint: no server certificate")
	}
	e := &Endpoint{
		cfg:       cfg,
		log:       cfg.Logger,
		st:        cfg.Store,
		ca:        cfg.CA,
		td:        cfg.CA.TrustDomain,
		conns:     map[*conn]struct{}{},
		byAgent:   map[string]map[*conn]struct{}{},
		controls:  map[string]*controlSession{},
		lastRenew: map[string]time.Time{},
		stop:      make(chan struct{}),
		queued:    budget{max: cfg.MaxQueuedFindings, freed: make(chan struct{})},
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("new endpoint: %w", err)
	}
	e.m = m
	if err := m.registerInFlight(cfg.Registerer, func() float64 { return float64(e.inflight.Load()) }); err != nil {
		return nil, fmt.Errorf("new endpoint: %w", err)
	}
	rev, err := cfg.Store.RevokedAgents(ctx)
	if err != nil {
		return nil, fmt.Errorf("new endpoint: load revoked agents: %w", err)
	}
	e.revoked = map[string]bool{}
	e.addRevoked(rev)
	e.tlsConf = e.buildTLS()
	return e, nil
}

// TLSConfig returns the endpoint's TLS configuration (TLS 1.3, ALPN vigil/1,
// client certificate optional and verified against the deployment root,
// revoked agents refused).
func (e *Endpoint) TLSConfig() *tls.Config { return e.tlsConf }

func (e *Endpoint) buildTLS() *tls.Config {
	c := pki.ServerTLSConfigFrom(e.cfg.ServerCerts, e.ca.Pool())
	c.MinVersion = tls.VersionTLS13
	c.NextProtos = []string{wirev1.ALPN}
	if c.ClientAuth != tls.VerifyClientCertIfGiven && c.ClientAuth != tls.RequireAndVerifyClientCert {
		// Never run with unverified client certificates, whatever pki says.
		c.ClientAuth = tls.VerifyClientCertIfGiven
	}
	c.VerifyConnection = e.verifyConnection
	return c
}

// errRevoked makes crypto/tls (and quic-go) send the TLS alert
// certificate_revoked (44), which the agent sees as QUIC CRYPTO_ERROR 0x12c.
var errRevoked = fmt.Errorf("agent revoked: %w", tls.AlertError(44))

// verifyConnection runs inside the handshake, after crypto/tls verified the
// client chain against the deployment root (VerifyClientCertIfGiven). It
// refuses certificates without a valid identity and revoked agents, so they
// cannot open a single stream.
func (e *Endpoint) verifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil // may only enroll
	}
	if len(cs.VerifiedChains) == 0 {
		e.m.handshakeRefused.WithLabelValues("unverified").Inc()
		return errors.New("client certificate not verified")
	}
	id, err := pki.IdentityFromCert(cs.PeerCertificates[0], e.td)
	if err != nil {
		e.m.handshakeRefused.WithLabelValues("bad_identity").Inc()
		return fmt.Errorf("client certificate: %w", err)
	}
	if e.isRevoked(id.AgentID) {
		e.m.handshakeRefused.WithLabelValues("revoked").Inc()
		return errRevoked
	}
	return nil
}

func (e *Endpoint) isRevoked(agentID string) bool {
	e.revMu.RLock()
	defer e.revMu.RUnlock()
	return e.revoked[agentID]
}

// Revoke marks agentID revoked at once (the store must already say so, or
// a restart forgets it) and disconnects its live connections with
// CodeRevoked. The API calls it after store.RevokeAgent.
func (e *Endpoint) Revoke(agentID string) {
	e.revMu.Lock()
	e.revoked[agentID] = true
	e.revMu.Unlock()
	e.disconnect(agentID, wirev1.CodeRevoked, "agent revoked")
}

// RefreshRevoked adds the store's revoked set to the in-memory one and
// disconnects every connected agent in it. The snapshot is merged, not
// swapped in: a Revoke that lands while the store is read is not in the
// snapshot and must not be forgotten. There is no un-revoke, so the set only
// grows.
func (e *Endpoint) RefreshRevoked(ctx context.Context) error {
	rev, err := e.st.RevokedAgents(ctx)
	if err != nil {
		return fmt.Errorf("refresh revoked agents: %w", err)
	}
	e.addRevoked(rev)
	e.connMu.Lock()
	var ids []string
	for id := range e.byAgent {
		ids = append(ids, id)
	}
	e.connMu.Unlock()
	ids = slices.DeleteFunc(ids, func(id string) bool { return !e.isRevoked(id) })
	for _, id := range ids {
		e.disconnect(id, wirev1.CodeRevoked, "agent revoked")
	}
	return nil
}

// addRevoked merges rev into the revoked set.
func (e *Endpoint) addRevoked(rev map[string]bool) {
	e.revMu.Lock()
	defer e.revMu.Unlock()
	for id, r := range rev {
		if r {
			e.revoked[id] = true
		}
	}
}

func (e *Endpoint) disconnect(agentID string, code wirev1.ErrorCode, msg string) {
	e.connMu.Lock()
	var cs []*conn
	for c := range e.byAgent[agentID] {
		cs = append(cs, c)
	}
	e.connMu.Unlock()
	for _, c := range cs {
		if code == wirev1.CodeRevoked {
			e.m.revokedDisconnect.Inc()
			c.peer.log.Info("disconnecting revoked agent")
		}
		c.close(code, msg)
	}
}

// Push sends msg on the agent's CONTROL stream (the most recent one when it
// has several connections). It returns ErrNotConnected when the agent has
// none.
func (e *Endpoint) Push(agentID string, msg *wirev1.ServerControl) error {
	e.connMu.Lock()
	cs := e.controls[agentID]
	e.connMu.Unlock()
	if cs == nil {
		return fmt.Errorf("push to %s: %w", agentID, ErrNotConnected)
	}
	if err := cs.send(msg); err != nil {
		return fmt.Errorf("push to %s: %w", agentID, err)
	}
	e.m.pushes.Inc()
	return nil
}

// Connected reports the agent ids with at least one live connection.
func (e *Endpoint) Connected() []string {
	e.connMu.Lock()
	defer e.connMu.Unlock()
	ids := make([]string, 0, len(e.byAgent))
	for id := range e.byAgent {
		ids = append(ids, id)
	}
	return ids
}

// QUICConfig is the QUIC configuration the endpoint listens with.
func (e *Endpoint) QUICConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:  e.cfg.HandshakeTimeout,
		MaxIdleTimeout:        e.cfg.MaxIdleTimeout,
		MaxIncomingStreams:    maxStreamsPerConn,
		MaxIncomingUniStreams: -1,
		// Bound per-connection buffering: a findings batch is at most
		// MaxFrameSize; streams flow-control at 1 MiB, connections at 8 MiB.
		MaxStreamReceiveWindow:     1 << 20,
		MaxConnectionReceiveWindow: 8 << 20,
	}
}

// Listen binds the UDP address (e.g. ":4433", "127.0.0.1:0").
func (e *Endpoint) Listen(addr string) error {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return fmt.Errorf("listen quic %s: %w", addr, err)
	}
	pc, err := net.ListenUDP("udp", ua)
	if err != nil {
		return fmt.Errorf("listen quic %s: %w", addr, err)
	}
	if err := e.ListenPacket(pc); err != nil {
		pc.Close()
		return err
	}
	e.ownConn = pc
	return nil
}

// ListenPacket serves on an existing packet connection.
//
// The transport's stateless reset key is derived from the server's private
// key, so it survives a restart: after a crash, the restarted server answers
// packets of connections it no longer knows with a stateless reset, and
// agents reconnect at once instead of waiting for their idle timeout.
func (e *Endpoint) ListenPacket(pc net.PacketConn) error {
	key, err := e.statelessResetKey()
	if err != nil {
		return fmt.Errorf("listen quic %s: %w", pc.LocalAddr(), err)
	}
	tr := &quic.Transport{Conn: pc, StatelessResetKey: &key}
	ln, err := tr.Listen(e.tlsConf, e.QUICConfig())
	if err != nil {
		return fmt.Errorf("listen quic %s: %w", pc.LocalAddr(), err)
	}
	e.tr = tr
	e.ln = ln
	return nil
}

// statelessResetKey is SHA-256 over a label and the server key's PKCS#8
// encoding: stable across restarts, secret, and unique per deployment
// (server certificate renewals keep the key, so they keep it too).
func (e *Endpoint) statelessResetKey() (quic.StatelessResetKey, error) {
	var key quic.StatelessResetKey
	cur := e.cfg.ServerCerts.Current()
	if cur == nil {
		return key, errors.New("no server certificate for the stateless reset key")
	}
	der, err := x509.MarshalPKCS8PrivateKey(cur.PrivateKey)
	if err != nil {
		return key, fmt.Errorf("derive stateless reset key: %w", err)
	}
	h := sha256.New()
	h.Write([]byte("vigil quic stateless reset key v1\x00"))
	h.Write(der)
	copy(key[:], h.Sum(nil))
	return key, nil
}

// Addr is the bound UDP address (after Listen).
func (e *Endpoint) Addr() net.Addr {
	if e.ln == nil {
		return nil
	}
	return e.ln.Addr()
}

// Serve accepts connections until ctx ends or Shutdown is called. It
// returns nil after a shutdown.
func (e *Endpoint) Serve(ctx context.Context) error {
	if e.ln == nil {
		return errors.New("serve: Listen first")
	}
	go e.refreshLoop(ctx)
	for {
		qc, err := e.ln.Accept(ctx)
		if err != nil {
			select {
			case <-e.stop:
				return nil
			default:
			}
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		e.connWG.Add(1)
		go func() {
			defer e.connWG.Done()
			e.serveConn(ctx, qc)
		}()
	}
}

func (e *Endpoint) refreshLoop(ctx context.Context) {
	t := time.NewTicker(e.cfg.RevocationRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.stop:
			return
		case <-t.C:
			if err := e.RefreshRevoked(ctx); err != nil {
				e.log.Warn("refresh revoked agents", "err", err)
			}
		}
	}
}

// Shutdown stops accepting connections, lets in-flight findings commits
// finish and send their acks (until ctx ends), then closes every connection
// with CodeShuttingDown and waits for the connection goroutines.
func (e *Endpoint) Shutdown(ctx context.Context) error {
	var err error
	e.stopOnce.Do(func() {
		close(e.stop)
		if e.ln != nil {
			err = e.ln.Close()
		}
		e.commitMu.Lock()
		e.closing = true
		e.commitMu.Unlock()
		done := make(chan struct{})
		go func() { e.commitWG.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			e.log.Warn("shutdown: gave up waiting for in-flight commits", "err", ctx.Err())
		}
		e.connMu.Lock()
		var cs []*conn
		for c := range e.conns {
			cs = append(cs, c)
		}
		e.connMu.Unlock()
		for _, c := range cs {
			c.close(wirev1.CodeShuttingDown, "server shutting down")
		}
		wg := make(chan struct{})
		go func() { e.connWG.Wait(); close(wg) }()
		select {
		case <-wg:
		case <-ctx.Done():
		}
		if e.tr != nil {
			if cerr := e.tr.Close(); cerr != nil && err == nil && !errors.Is(cerr, net.ErrClosed) {
				err = cerr
			}
		}
		if e.ownConn != nil {
			_ = e.ownConn.Close()
		}
	})
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// beginCommit registers an in-flight commit; false once Shutdown started.
func (e *Endpoint) beginCommit() bool {
	e.commitMu.Lock()
	defer e.commitMu.Unlock()
	if e.closing {
		return false
	}
	e.commitWG.Add(1)
	return true
}

func (e *Endpoint) endCommit() { e.commitWG.Done() }

// budget is a counting limit that waiters can give up on (ctx).
type budget struct {
	mu    sync.Mutex
	used  int
	max   int
	freed chan struct{} // closed (and replaced) by every release
}

// acquire takes n units, waiting while that would exceed max (unless
// nothing is taken: a request larger than max still proceeds alone).
func (b *budget) acquire(ctx context.Context, n int) error {
	for {
		b.mu.Lock()
		if b.used == 0 || b.used+n <= b.max {
			b.used += n
			b.mu.Unlock()
			return nil
		}
		ch := b.freed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (b *budget) release(n int) {
	b.mu.Lock()
	b.used -= n
	close(b.freed)
	b.freed = make(chan struct{})
	b.mu.Unlock()
}

// peerIdentity returns the identity of a verified client certificate, or
// ok=false when the peer presented none.
func peerIdentity(cs tls.ConnectionState, td string) (id pki.Identity, cert *x509.Certificate, ok bool, err error) {
	if len(cs.PeerCertificates) == 0 {
		return pki.Identity{}, nil, false, nil
	}
	if len(cs.VerifiedChains) == 0 {
		return pki.Identity{}, nil, false, errors.New("client certificate not verified")
	}
	cert = cs.PeerCertificates[0]
	id, err = pki.IdentityFromCert(cert, td)
	if err != nil {
		return pki.Identity{}, nil, false, err
	}
	return id, cert, true, nil
}
