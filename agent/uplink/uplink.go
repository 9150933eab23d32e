// Package uplink is the agent's QUIC client: it connects to the server with
// mutual TLS, keeps a CONTROL stream (Hello, periodic Status, server pushes:
// SlowDown, ModelOffer, Suppressions, RenewResponse) and drains the spool over a FINDINGS
// stream (FindingsBatch -> Ack, a few batches in flight, the spool deleting
// only acknowledged findings). It reconnects with jittered exponential
// backoff and renews the agent certificate at 2/3 of its lifetime, on the
// server's clock (HelloAck.server_time_unix_nano), which is the one that
// expires it. The server's SlowDown is honoured up to a bound.
//
// A finding that the server refuses (it closes the connection with a
// protocol error and acknowledges nothing of the batch) would block the
// spool forever if resent as it is: the uplink then isolates it by sending
// smaller batches, one at a time, and drops it from the spool, counted and
// logged, once the server has refused it alone several times (isolation).
//
// Seqs after a spool reset: the server stores each (agent, seq) once, so a
// spool that numbers from 1 again (its file lost or recreated while
// identity.json stayed) would have its findings ignored as duplicates. The
// server's HelloAck carries the highest seq it holds for the agent; before
// the FINDINGS stream starts, a SeqSyncSpool renumbers its waiting findings
// above it (counted: Stats.SeqRenumbers, logged).
//
// Model status reports are kept, the latest per (detector, digest,
// rollout), until delivered, and sent again after a reconnect when the
// session they were written on ended soon after (modelstatus.go); with a
// StatusFile, across restarts too (statusfile.go).
package uplink

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/vigil-edge/vigil/agent/spool"
	"github.com/vigil-edge/vigil/agent/state"
	"github.com/vigil-edge/vigil/internal/buildinfo"
	"github.com/vigil-edge/vigil/pki"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Spool is what the uplink needs from the findings spool (*spool.Spool).
type Spool interface {
	PeekFrom(from uint64, max, maxBytes int) ([]*wirev1.Finding, error)
	Ack(throughSeq uint64) error
	Stats() *wirev1.SpoolStats
	Notify() <-chan struct{}
}

// Credentials loads and replaces the agent's TLS credentials (state.Dir).
type Credentials interface {
	LoadCredentials() (*state.Credentials, error)
	ReplaceCredentials(key *ecdsa.PrivateKey, chainDER [][]byte) error
}

var _ Credentials = state.Dir("")

// Config configures a Client. Spool, Credentials and Log are required.
type Config struct {
	// Server is HOST:PORT; empty means the server in identity.json.
	Server      string
	Spool       Spool
	Credentials Credentials
	Log         *slog.Logger

	StatusInterval time.Duration // default 10 s; the server's HelloAck may override it
	BatchMax       int           // findings per batch, default 1000
	Inflight       int           // batches awaiting ack, default 4
	BackoffMin     time.Duration // default 200 ms
	BackoffMax     time.Duration // default 30 s
	AckTimeout     time.Duration // no ack for this long with batches in flight, or a write blocked this long: reconnect (default 60 s)
	RenewRetry     time.Duration // wait before retrying a failed renewal (default 1 min)

	// Counters adds the pipeline's counters to Status messages (optional).
	Counters func() map[string]uint64
	// ActiveModels reports the loaded models for Hello and Status (optional).
	ActiveModels func() []*wirev1.ModelRef
	// ShadowRollouts reports the rollouts whose model runs in shadow mode,
	// for Hello (optional): the server offers a shadow rollout again to an
	// agent that reported it running but no longer lists it.
	ShadowRollouts func() []string
	// OnModelOffer receives the server's model offers (optional; logged
	// otherwise). It must not block.
	OnModelOffer func(*wirev1.ModelOffer)
	// OnModelWithdrawal receives the server's withdrawals of halted
	// rollouts (optional; logged otherwise). It must not block.
	OnModelWithdrawal func(*wirev1.ModelWithdrawal)
	// OnSuppressions receives the entity's full set of active suppressions,
	// which the server sends after every HelloAck and whenever the set
	// changes (optional; logged otherwise). Each set replaces the previous
	// one. It runs on the CONTROL reader: it may write a file, but must not
	// wait for the network.
	OnSuppressions func(*wirev1.Suppressions)
	// ModelStatus carries the updater's reports (optional). Run takes them
	// off the channel as they come, connected or not, and keeps the latest
	// per (detector, digest, rollout) until it was delivered (see
	// ReportModelStatus).
	ModelStatus <-chan *wirev1.ModelStatus
	// StatusFile is the file that keeps the model status reports not yet
	// delivered across restarts (optional; the agent's is StatusFile in its
	// state directory). New restores the reports it holds; they are sent
	// on the first session. Empty: they are kept in memory only.
	StatusFile string
	// Interfaces are reported in Hello's host facts.
	Interfaces []string

	// Rand seeds the backoff jitter (tests); nil means random.
	Rand *rand.Rand
	// QUIC overrides the QUIC configuration (tests).
	QUIC *quic.Config
}

// Stats are the client's counters, for metrics.
type Stats struct {
	Connected       bool      `json:"connected"`
	Connects        uint64    `json:"connects"`         // sessions that got a HelloAck
	Reconnects      uint64    `json:"reconnects"`       // connection attempts after a failure
	BatchesSent     uint64    `json:"batches_sent"`     //
	FindingsSent    uint64    `json:"findings_sent"`    // including re-sends after a reconnect
	Acks            uint64    `json:"acks"`             //
	FindingsAcked   uint64    `json:"findings_acked"`   // seqs acknowledged (dropped seqs in between count too)
	FindingsRefused uint64    `json:"findings_refused"` // dropped from the spool: the server refused each alone maxRefusals times (over the spool's life with a RefusalSpool)
	Renewals        uint64    `json:"renewals"`
	RenewFailures   uint64    `json:"renew_failures"`
	CertNotAfter    time.Time `json:"cert_not_after,omitzero"`

	// SeqRenumbers counts the times the spool's seqs were found at or
	// below the server's highest stored seq (a lost or recreated spool) and
	// renumbered above it (over the spool's life with a SeqSyncSpool);
	// FindingsRenumbered the findings that got new seqs then (since start).
	SeqRenumbers       uint64 `json:"seq_renumbers"`
	FindingsRenumbered uint64 `json:"findings_renumbered"`
	// ModelStatusDropped counts model status reports lost unsent because
	// more than maxPendingStatus distinct ones waited; ModelStatusResent
	// those sent again because their session ended soon after the write.
	ModelStatusDropped uint64 `json:"model_status_dropped"`
	ModelStatusResent  uint64 `json:"model_status_resent"`
	// ModelStatusRestored counts the reports restored from the StatusFile
	// at the start (made by the last run, not known delivered);
	// ModelStatusCorruptFiles the damaged status files moved aside (their
	// reports lost), for as long as they are there.
	ModelStatusRestored     uint64 `json:"model_status_restored"`
	ModelStatusCorruptFiles uint64 `json:"model_status_corrupt_files"`
}

// Client is the uplink. Create with New, then Run.
type Client struct {
	cfg Config
	log *slog.Logger

	connected     atomic.Bool
	connects      atomic.Uint64
	reconnects    atomic.Uint64
	batchesSent   atomic.Uint64
	findingsSent  atomic.Uint64
	acks          atomic.Uint64
	findingsAcked atomic.Uint64
	renewals      atomic.Uint64
	renewFailures atomic.Uint64
	certNotAfter  atomic.Int64
	refused       atomic.Uint64 // findings dropped after refusals
	renumbers     atomic.Uint64 // spool renumberings (SeqSyncSpool)
	renumbered    atomic.Uint64 // findings renumbered

	// statuses are the model status reports not yet known delivered.
	statuses *statusQueue

	// isoMu guards iso, which outlives sessions.
	isoMu sync.Mutex
	iso   isolation
	// unacked is the oldest batch still in flight when the last session's
	// findings stream ended (n == 0: none). Written by findings before it
	// returns, read by session after its goroutines ended.
	unacked inflightBatch

	// renewedAt is when the last renewal succeeded (zero: none since
	// start). Written by a session's controlWriter, read by the next one's.
	renewedAt time.Time

	// SlowDown from the server: applies to the current session.
	minBatchInterval atomic.Int64 // ns
	slowMaxBatch     atomic.Int64
}

// New checks cfg and fills in defaults.
func New(cfg Config) (*Client, error) {
	if cfg.Spool == nil || cfg.Credentials == nil || cfg.Log == nil {
		return nil, errors.New("uplink: Spool, Credentials and Log are required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.StatusInterval, 10*time.Second)
	def(&cfg.BackoffMin, 200*time.Millisecond)
	def(&cfg.BackoffMax, 30*time.Second)
	def(&cfg.AckTimeout, 60*time.Second)
	def(&cfg.RenewRetry, time.Minute)
	// 1000 per batch, 4 in flight: with 500 the one agent's window kept
	// the server's committer idle between round trips (docs/benchmarks.md,
	// Foundation), and each ack costs the spool one fsync.
	if cfg.BatchMax <= 0 {
		cfg.BatchMax = 1000
	}
	if cfg.Inflight <= 0 {
		cfg.Inflight = 4
	}
	c := &Client{cfg: cfg, log: cfg.Log, statuses: newStatusQueue()}
	if cfg.StatusFile != "" {
		// Before anything can report: a restored report is older than
		// every report made since the start.
		c.statuses.open(cfg.StatusFile, cfg.Log)
	}
	if rs, ok := cfg.Spool.(RefusalSpool); ok {
		c.refused.Store(rs.Refused()) // the count goes on across restarts
	}
	if ss, ok := cfg.Spool.(SeqSyncSpool); ok {
		c.renumbers.Store(ss.Renumbers())
	}
	return c, nil
}

// SeqSyncSpool is implemented by spools that can renumber their waiting
// findings above the server's highest stored seq (*spool.Spool): see
// spool.SyncSeqs. Without it, HelloAck.highest_seq is ignored.
type SeqSyncSpool interface {
	SyncSeqs(highest uint64) (spool.Renumbering, bool, error)
	Renumbers() uint64
}

// ReportModelStatus queues a model status report for the server. It never
// waits for the network: the latest report per (detector, digest, rollout)
// is kept until delivered, connected or not (at most maxPendingStatus
// distinct ones; the oldest unsent one beyond that is dropped, counted and
// logged). With a StatusFile it returns once the file holds the report (a
// synced write).
func (c *Client) ReportModelStatus(st *wirev1.ModelStatus) {
	c.queueModelStatus(st)
	c.statuses.save()
}

// queueModelStatus queues st without writing the StatusFile.
func (c *Client) queueModelStatus(st *wirev1.ModelStatus) {
	if st == nil {
		return
	}
	if c.statuses.file != "" && oversized(st) {
		c.log.Warn("model status report too large to keep across a restart: kept in memory only", "bytes", proto.Size(st),
			"limit", maxStoredStatus, "rollout", st.RolloutId, "model", st.GetModel().GetName(), "state", st.State)
	}
	if ev := c.statuses.put(st); ev != nil {
		c.log.Warn("model status report dropped: too many waiting", "limit", maxPendingStatus,
			"rollout", ev.RolloutId, "model", ev.GetModel().GetName(), "version", ev.GetModel().GetVersion(), "state", ev.State)
	}
}

// RefusalSpool is implemented by spools that drop a refused finding and
// keep its count durably (*spool.Spool): uplink_findings_refused then
// counts the findings refused over the spool's life, not since the start.
type RefusalSpool interface {
	DropRefused(seq uint64) (bool, error)
	Refused() uint64
}

// Stats returns a snapshot of the counters.
func (c *Client) Stats() Stats {
	s := Stats{
		Connected:       c.connected.Load(),
		Connects:        c.connects.Load(),
		Reconnects:      c.reconnects.Load(),
		BatchesSent:     c.batchesSent.Load(),
		FindingsSent:    c.findingsSent.Load(),
		Acks:            c.acks.Load(),
		FindingsAcked:   c.findingsAcked.Load(),
		FindingsRefused: c.refused.Load(),
		Renewals:        c.renewals.Load(),
		RenewFailures:   c.renewFailures.Load(),

		SeqRenumbers:       c.renumbers.Load(),
		FindingsRenumbered: c.renumbered.Load(),
	}
	s.ModelStatusDropped, s.ModelStatusResent = c.statuses.counts()
	s.ModelStatusRestored, s.ModelStatusCorruptFiles = c.statuses.fileCounts()
	if n := c.certNotAfter.Load(); n != 0 {
		s.CertNotAfter = time.Unix(n, 0)
	}
	return s
}

// ServerError is a refusal the server sent (an Error message or a
// connection/stream closed with an application error code).
type ServerError struct {
	Code    wirev1.ErrorCode
	Message string
}

func (e *ServerError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("server error %s (0x%x)", e.Code, uint64(e.Code))
	}
	return fmt.Sprintf("server error %s (0x%x): %s", e.Code, uint64(e.Code), e.Message)
}

// AsServerError extracts the server's error code from err, if any.
func AsServerError(err error) (*ServerError, bool) {
	var se *ServerError
	if errors.As(err, &se) {
		return se, true
	}
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote {
		return &ServerError{Code: wirev1.ErrorCode(ae.ErrorCode), Message: ae.ErrorMessage}, true
	}
	var stErr *quic.StreamError
	if errors.As(err, &stErr) && stErr.Remote {
		return &ServerError{Code: wirev1.ErrorCode(stErr.ErrorCode)}, true
	}
	return nil, false
}

// errRenewed ends a session after the certificate was renewed: reconnect now.
var errRenewed = errors.New("certificate renewed")

// Run connects and serves until ctx ends; it returns nil then. Errors of a
// session are logged and followed by a reconnect after a backoff delay;
// only a configuration problem that no retry can fix is returned.
func (c *Client) Run(ctx context.Context) error {
	var statusWG sync.WaitGroup
	// Last, when Run returns: the reports forgotten as delivered since the
	// last write leave the file.
	defer c.statuses.save()
	if ch := c.cfg.ModelStatus; ch != nil {
		// Reports are taken off the channel whether connected or not, so
		// that the updater's sender never finds it full.
		statusWG.Add(1)
		defer statusWG.Wait()
		go func() {
			defer statusWG.Done()
			for {
				select {
				case <-ctx.Done():
					// The reports the updater sent before it stopped (it
					// stops before the uplink) are kept too.
					c.takeModelStatuses(ch)
					return
				case st := <-ch:
					c.queueModelStatus(st)
					c.takeModelStatuses(ch)
				}
			}
		}()
	}
	bo := NewBackoff(c.cfg.BackoffMin, c.cfg.BackoffMax, c.cfg.Rand)
	for {
		start := time.Now()
		progress, err := c.session(ctx)
		c.connected.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case errors.Is(err, errRenewed):
			c.log.Info("reconnecting with the renewed certificate")
			bo.Reset()
			continue
		case errors.Is(err, state.ErrNotEnrolled):
			return fmt.Errorf("uplink: %w", err)
		}
		revoked := isRevoked(err)
		if se, ok := AsServerError(err); ok {
			c.log.Warn("server refused or closed the session", "code", se.Code.String(), "message", se.Message)
		} else if revoked {
			// Refused in the handshake: retrying cannot help until the agent
			// is re-enrolled, so it waits the longest backoff between tries.
			c.log.Error("the server refuses this agent's certificate as revoked: re-enroll it (vigil-agent enroll --force ...)")
		} else {
			c.log.Warn("session ended", "err", err)
		}
		if progress && time.Since(start) >= 5*time.Second {
			bo.Reset()
		}
		d := bo.Next()
		if revoked {
			d = c.cfg.BackoffMax
		}
		c.log.Debug("reconnect backoff", "delay", d, "attempt", bo.Attempts())
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		c.reconnects.Add(1)
	}
}

// takeModelStatuses queues the reports waiting on ch, then writes the
// StatusFile once for them all.
func (c *Client) takeModelStatuses(ch <-chan *wirev1.ModelStatus) {
	for {
		select {
		case st := <-ch:
			c.queueModelStatus(st)
			continue
		default:
		}
		c.statuses.save()
		return
	}
}

// isRevoked reports the TLS alert certificate_revoked with which the server
// refuses a revoked agent inside the handshake.
func isRevoked(err error) bool {
	var te *quic.TransportError
	return errors.As(err, &te) && uint64(te.ErrorCode) == wirev1.TLSAlertCertificateRevoked
}

// session runs one connection. progress reports whether the server
// accepted the agent (HelloAck), so that backoff may start over.
func (c *Client) session(ctx context.Context) (progress bool, err error) {
	creds, err := c.cfg.Credentials.LoadCredentials()
	if err != nil {
		return false, fmt.Errorf("load credentials: %w", err)
	}
	c.certNotAfter.Store(creds.NotAfter().Unix())
	if time.Now().After(creds.NotAfter()) {
		c.log.Error("agent certificate expired: re-enroll with `vigil-agent enroll --force`", "not_after", creds.NotAfter())
	}
	addr := c.cfg.Server
	if addr == "" {
		addr = creds.Identity.Server
	}
	host, _, err := state.SplitServer(addr)
	if err != nil {
		return false, err
	}
	qconf := c.cfg.QUIC
	if qconf == nil {
		qconf = &quic.Config{KeepAlivePeriod: 15 * time.Second, MaxIdleTimeout: 45 * time.Second}
	}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	conn, err := quic.DialAddr(dctx, addr, pki.AgentTLSConfig(&creds.Cert, creds.Roots, host), qconf)
	cancel()
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", addr, err)
	}
	closeCode, closeMsg := wirev1.CodeNoError, "agent stopping"
	defer func() {
		if err != nil && !errors.Is(err, errRenewed) && ctx.Err() == nil {
			closeCode, closeMsg = wirev1.CodeInternal, "agent session error"
			var pe *wirev1.ProtocolError
			if errors.As(err, &pe) {
				closeCode, closeMsg = pe.Code, pe.Error()
			}
		}
		_ = conn.CloseWithError(quic.ApplicationErrorCode(closeCode), closeMsg)
	}()

	ctrl, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return false, fmt.Errorf("open control stream: %w", err)
	}
	if err := c.hello(ctrl, creds); err != nil {
		return false, err
	}
	r := wirev1.NewReader(ctrl, wirev1.MaxFrameSize)
	_ = ctrl.SetReadDeadline(time.Now().Add(15 * time.Second))
	var first wirev1.ServerControl
	if err := r.Read(&first); err != nil {
		return false, fmt.Errorf("read hello ack: %w", err)
	}
	_ = ctrl.SetReadDeadline(time.Time{})
	received := time.Now()
	ack := first.GetHelloAck()
	if ack == nil {
		if e := first.GetError(); e != nil {
			return false, &ServerError{Code: wirev1.ErrorCode(e.Code), Message: e.Message}
		}
		return false, &wirev1.ProtocolError{Code: wirev1.CodeProtocol, Err: errors.New("first control message is not a HelloAck")}
	}
	c.connected.Store(true)
	c.connects.Add(1)
	c.minBatchInterval.Store(0)
	c.slowMaxBatch.Store(0)
	c.log.Info("connected", "server", addr, "agent_id", ack.AgentId, "entity", ack.Entity)

	if err := c.syncSeqs(ack); err != nil {
		return true, err
	}

	interval := c.cfg.StatusInterval
	if ack.StatusIntervalMs > 0 {
		interval = max(time.Duration(ack.StatusIntervalMs)*time.Millisecond, 100*time.Millisecond)
	}

	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	renewCh := make(chan *wirev1.RenewResponse, 1)
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	run := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- f()
		}()
	}
	run(func() error { return c.controlReader(r, renewCh) })
	// The server's clock ahead of the sensor's by skew: the certificate
	// expires on the server's clock, so it is renewed on it.
	var skew time.Duration
	if ack.ServerTimeUnixNano > 0 {
		skew = time.Unix(0, ack.ServerTimeUnixNano).Sub(received)
	}
	run(func() error { return c.controlWriter(sctx, ctrl, creds, interval, skew, renewCh) })
	c.unacked = inflightBatch{}
	run(func() error { return c.findings(sctx, conn) })

	err = <-errc
	scancel()
	// Unblock the other goroutines: they read from streams of this connection.
	code := quic.ApplicationErrorCode(wirev1.CodeNoError)
	if err != nil && !errors.Is(err, errRenewed) && ctx.Err() == nil {
		code = quic.ApplicationErrorCode(wirev1.CodeInternal)
		var pe *wirev1.ProtocolError
		if errors.As(err, &pe) {
			code = quic.ApplicationErrorCode(pe.Code)
		}
	}
	_ = conn.CloseWithError(code, "session end")
	wg.Wait()
	if n := c.statuses.sessionEnded(time.Now()); n > 0 && ctx.Err() == nil {
		c.log.Info("model status reports written shortly before the session ended: sending them again", "reports", n)
	}
	c.statuses.save()
	if ctx.Err() != nil {
		return true, nil
	}
	c.noteRefusal(err, c.unacked)
	return true, err
}

// syncSeqs compares the spool's seqs with the highest seq the server holds
// for this agent (an older server sends none) and renumbers the spool's
// waiting findings above it when they would clash. It runs before the
// session's FINDINGS stream starts.
func (c *Client) syncSeqs(ack *wirev1.HelloAck) error {
	if ack.HighestSeq == nil {
		return nil
	}
	ss, ok := c.cfg.Spool.(SeqSyncSpool)
	if !ok {
		return nil
	}
	r, renumbered, err := ss.SyncSeqs(ack.GetHighestSeq())
	if err != nil {
		return fmt.Errorf("sync spool seqs with the server: %w", err)
	}
	if !renumbered {
		return nil
	}
	c.renumbers.Add(1)
	c.renumbered.Add(uint64(r.Findings))
	// Batches of the last session refer to the old seqs.
	c.isoMu.Lock()
	c.iso = isolation{}
	c.isoMu.Unlock()
	c.log.Warn("spool seqs were at or below the server's highest stored seq for this agent (spool file lost or recreated): renumbered the waiting findings above it",
		"server_highest_seq", ack.GetHighestSeq(), "findings", r.Findings, "old_next_seq", r.OldNext, "new_next_seq", r.NewNext)
	return nil
}

func (c *Client) hello(ctrl *quic.Stream, creds *state.Credentials) error {
	if err := wirev1.Write(ctrl, &wirev1.StreamHeader{
		Kind: wirev1.StreamKind_STREAM_KIND_CONTROL, ProtocolVersion: wirev1.ProtocolVersion, AgentVersion: buildinfo.Version,
	}, 0); err != nil {
		return fmt.Errorf("write control header: %w", err)
	}
	hostname, _ := os.Hostname()
	hello := &wirev1.Hello{
		AgentVersion:     buildinfo.Version,
		ProtocolVersion:  wirev1.ProtocolVersion,
		Host:             &wirev1.HostFacts{Hostname: hostname, Os: runtime.GOOS, Arch: runtime.GOARCH, Interfaces: c.cfg.Interfaces, Cpus: uint32(runtime.NumCPU())},
		CertNotAfterUnix: creds.NotAfter().Unix(),
	}
	if c.cfg.ActiveModels != nil {
		hello.ActiveModels = c.cfg.ActiveModels()
	}
	if c.cfg.ShadowRollouts != nil {
		hello.ShadowRollouts = c.cfg.ShadowRollouts()
	}
	if err := wirev1.Write(ctrl, &wirev1.AgentControl{Msg: &wirev1.AgentControl_Hello{Hello: hello}}, 0); err != nil {
		return fmt.Errorf("write hello: %w", err)
	}
	return nil
}

// controlReader handles the server's pushes on the CONTROL stream.
func (c *Client) controlReader(r *wirev1.Reader, renewCh chan<- *wirev1.RenewResponse) error {
	for {
		var m wirev1.ServerControl
		if err := r.Read(&m); err != nil {
			return fmt.Errorf("read control: %w", err)
		}
		switch msg := m.Msg.(type) {
		case *wirev1.ServerControl_HelloAck:
			// A repeated HelloAck carries nothing new.
		case *wirev1.ServerControl_SlowDown:
			c.applySlowDown(msg.SlowDown)
		case *wirev1.ServerControl_ModelOffer:
			o := msg.ModelOffer
			if c.cfg.OnModelOffer != nil {
				c.cfg.OnModelOffer(o)
			} else {
				c.log.Info("model offer received (no updater yet)", "rollout", o.RolloutId,
					"model", o.GetModel().GetName(), "version", o.GetModel().GetVersion(), "shadow", o.Shadow)
			}
		case *wirev1.ServerControl_ModelWithdrawal:
			if c.cfg.OnModelWithdrawal != nil {
				c.cfg.OnModelWithdrawal(msg.ModelWithdrawal)
			} else {
				c.log.Info("model withdrawal received (no updater)", "rollout", msg.ModelWithdrawal.GetRolloutId())
			}
		case *wirev1.ServerControl_Suppressions:
			sups := msg.Suppressions
			if sups == nil {
				sups = &wirev1.Suppressions{}
			}
			if c.cfg.OnSuppressions != nil {
				c.cfg.OnSuppressions(sups)
			} else {
				c.log.Info("suppressions received (not applied)", "rules", len(sups.Items), "generation", sups.Generation)
			}
		case *wirev1.ServerControl_Renew:
			select {
			case renewCh <- msg.Renew:
			default:
				c.log.Warn("unexpected renew response dropped")
			}
		case *wirev1.ServerControl_Error:
			return &ServerError{Code: wirev1.ErrorCode(msg.Error.Code), Message: msg.Error.Message}
		default:
			c.log.Debug("unknown control message ignored")
		}
	}
}

// maxSlowDownInterval bounds SlowDown.min_batch_interval_ms: a server may
// slow the agent down, not stop it (the field holds up to 49 days).
const maxSlowDownInterval = 10 * time.Second

func (c *Client) applySlowDown(s *wirev1.SlowDown) {
	if s == nil {
		return
	}
	iv := min(time.Duration(s.MinBatchIntervalMs)*time.Millisecond, maxSlowDownInterval)
	c.minBatchInterval.Store(int64(iv))
	c.slowMaxBatch.Store(int64(s.MaxBatch))
	c.log.Info("server asks to slow down", "min_batch_interval_ms", s.MinBatchIntervalMs, "max_batch", s.MaxBatch, "interval", iv)
}

// controlWriter sends Status periodically and renews the certificate when
// it is due on the server's clock (skew: how far the server's is ahead),
// but not sooner than RenewRetry after the last renewal: a certificate that
// is due as soon as issued (a sensor clock far off, an issuing CA about to
// expire) would otherwise be renewed on every reconnect, back to back.
func (c *Client) controlWriter(ctx context.Context, ctrl *quic.Stream, creds *state.Credentials, interval, skew time.Duration, renewCh <-chan *wirev1.RenewResponse) error {
	status := time.NewTicker(interval)
	defer status.Stop()
	renewIn := time.Until(creds.RenewAt()) - skew
	if !c.renewedAt.IsZero() {
		renewIn = max(renewIn, c.cfg.RenewRetry-time.Since(c.renewedAt))
	}
	renewTimer := time.NewTimer(max(renewIn, 0))
	defer renewTimer.Stop()
	var pending *ecdsa.PrivateKey
	send := func(m *wirev1.AgentControl) error {
		if err := wirev1.Write(ctrl, m, 0); err != nil {
			return fmt.Errorf("write control: %w", err)
		}
		return nil
	}
	// sendStatuses writes every model status report waiting, oldest first.
	sendStatuses := func() error {
		for {
			ms, gen := c.statuses.next()
			if ms == nil {
				return nil
			}
			if err := send(&wirev1.AgentControl{Msg: &wirev1.AgentControl_ModelStatus{ModelStatus: ms}}); err != nil {
				return err // still waiting: sent on the next session
			}
			c.statuses.sent(ms, gen, time.Now())
		}
	}
	if err := send(&wirev1.AgentControl{Msg: &wirev1.AgentControl_Status{Status: c.status(creds)}}); err != nil {
		return err
	}
	if err := sendStatuses(); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-status.C:
			if err := send(&wirev1.AgentControl{Msg: &wirev1.AgentControl_Status{Status: c.status(creds)}}); err != nil {
				return err
			}
			c.statuses.prune(time.Now())
			c.statuses.save()
		case <-c.statuses.wake:
			if err := sendStatuses(); err != nil {
				return err
			}
		case <-renewTimer.C:
			if pending != nil {
				c.renewFailures.Add(1)
				c.log.Warn("no renew response from the server; retrying")
			}
			key, err := pki.NewKey()
			if err != nil {
				return fmt.Errorf("renew: %w", err)
			}
			csr, err := pki.NewCSR(key, creds.Identity.AgentID)
			if err != nil {
				return fmt.Errorf("renew: %w", err)
			}
			c.log.Info("renewing certificate", "not_after", creds.NotAfter())
			if err := send(&wirev1.AgentControl{Msg: &wirev1.AgentControl_Renew{Renew: &wirev1.RenewRequest{CsrDer: csr}}}); err != nil {
				return err
			}
			pending = key
			renewTimer.Reset(c.cfg.RenewRetry)
		case resp := <-renewCh:
			if pending == nil {
				continue
			}
			key := pending
			pending = nil
			if e := resp.GetError(); e != nil {
				c.renewFailures.Add(1)
				c.log.Warn("renewal refused", "code", wirev1.ErrorCode(e.Code).String(), "message", e.Message)
				renewTimer.Reset(c.cfg.RenewRetry)
				continue
			}
			if err := checkRenewed(resp.CertChainDer, key, creds); err != nil {
				c.renewFailures.Add(1)
				c.log.Warn("renewed certificate rejected", "err", err)
				renewTimer.Reset(c.cfg.RenewRetry)
				continue
			}
			if err := c.cfg.Credentials.ReplaceCredentials(key, resp.CertChainDer); err != nil {
				c.renewFailures.Add(1)
				c.log.Error("storing renewed certificate failed", "err", err)
				renewTimer.Reset(c.cfg.RenewRetry)
				continue
			}
			c.renewals.Add(1)
			c.renewedAt = time.Now()
			return errRenewed
		}
	}
}

// checkRenewed verifies a renewed chain: it carries the new key, chains to
// the deployment root for client auth and names the same agent.
func checkRenewed(chainDER [][]byte, key *ecdsa.PrivateKey, creds *state.Credentials) error {
	if len(chainDER) == 0 {
		return errors.New("empty chain")
	}
	certs := make([]*x509.Certificate, len(chainDER))
	for i, der := range chainDER {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("parse certificate %d: %w", i, err)
		}
		certs[i] = cert
	}
	if !state.KeyMatches(key, certs[0]) {
		return errors.New("certificate does not carry the new key")
	}
	inter := x509.NewCertPool()
	for _, cert := range certs[1:] {
		inter.AddCert(cert)
	}
	// At the later of now and the certificate's NotBefore: the server
	// backdates by pki.ClockSkew only, and a sensor clock further behind
	// would refuse every renewal until the certificate expired (on the
	// server's clock) and locked the agent out. Expired certificates and
	// other CAs are still refused.
	at := time.Now()
	if nb := certs[0].NotBefore; nb.After(at) {
		at = nb
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: creds.Roots, Intermediates: inter, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	id, err := pki.IdentityFromCert(certs[0], creds.Identity.TrustDomain)
	if err != nil {
		return err
	}
	if id.AgentID != creds.Identity.AgentID || id.Entity != creds.Identity.Entity {
		return fmt.Errorf("renewed certificate names %s", id)
	}
	return nil
}

func (c *Client) status(creds *state.Credentials) *wirev1.Status {
	counters := map[string]uint64{}
	if c.cfg.Counters != nil {
		for k, v := range c.cfg.Counters() {
			counters[k] = v
		}
	}
	st := c.Stats()
	counters["uplink_reconnects"] = st.Reconnects
	counters["uplink_findings_sent"] = st.FindingsSent
	counters["uplink_acks"] = st.Acks
	counters["uplink_renewals"] = st.Renewals
	counters["uplink_findings_refused"] = st.FindingsRefused
	counters["uplink_seq_renumbers"] = st.SeqRenumbers
	counters["uplink_findings_renumbered"] = st.FindingsRenumbered
	counters["uplink_model_status_dropped"] = st.ModelStatusDropped
	counters["uplink_model_status_resent"] = st.ModelStatusResent
	counters["uplink_model_status_restored"] = st.ModelStatusRestored
	counters["uplink_model_status_corrupt_files"] = st.ModelStatusCorruptFiles
	s := &wirev1.Status{
		TimeUnixNano:     time.Now().UnixNano(),
		Spool:            c.cfg.Spool.Stats(),
		Counters:         counters,
		CertNotAfterUnix: creds.NotAfter().Unix(),
	}
	if c.cfg.ActiveModels != nil {
		s.ActiveModels = c.cfg.ActiveModels()
	}
	return s
}

// maxBatchBytes keeps a batch's frame well below wirev1.MaxFrameSize
// (each finding adds a tag and a length prefix to its encoded size).
const maxBatchBytes = wirev1.MaxFrameSize / 2

// inflightBatch is a batch sent and not yet acknowledged.
type inflightBatch struct {
	first, last uint64 // seqs
	n           int    // findings
}

// findings drains the spool over a FINDINGS stream with up to Inflight
// batches awaiting their (cumulative) ack.
func (c *Client) findings(ctx context.Context, conn *quic.Conn) error {
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return fmt.Errorf("open findings stream: %w", err)
	}
	if err := wirev1.Write(st, &wirev1.StreamHeader{
		Kind: wirev1.StreamKind_STREAM_KIND_FINDINGS, ProtocolVersion: wirev1.ProtocolVersion, AgentVersion: buildinfo.Version,
	}, 0); err != nil {
		return fmt.Errorf("write findings header: %w", err)
	}

	var (
		mu       sync.Mutex
		window   []inflightBatch // batches in flight, oldest first
		lastSent uint64
		// progress is when the window last advanced (an ack) or, if it was
		// empty, filled: the ack timeout counts from there.
		progress time.Time
		acked    = make(chan struct{}, 1)
		readErr  = make(chan error, 1)
	)
	defer func() {
		mu.Lock()
		if len(window) > 0 {
			c.unacked = window[0]
		}
		mu.Unlock()
	}()
	go func() {
		r := wirev1.NewReader(st, wirev1.MaxFrameSize)
		for {
			var a wirev1.Ack
			if err := r.Read(&a); err != nil {
				readErr <- fmt.Errorf("read ack: %w", err)
				return
			}
			if e := a.GetError(); e != nil {
				readErr <- &ServerError{Code: wirev1.ErrorCode(e.Code), Message: e.Message}
				return
			}
			if a.SlowDown != nil {
				c.applySlowDown(a.SlowDown)
			}
			mu.Lock()
			if a.ThroughSeq > lastSent {
				mu.Unlock()
				readErr <- &wirev1.ProtocolError{Code: wirev1.CodeProtocol, Err: fmt.Errorf("ack through %d beyond last sent seq %d", a.ThroughSeq, lastSent)}
				return
			}
			n := 0
			for n < len(window) && window[n].last <= a.ThroughSeq {
				n++
			}
			window = window[n:]
			if n > 0 {
				progress = time.Now()
			}
			mu.Unlock()
			before := c.cfg.Spool.Stats().AckedSeq
			if a.ThroughSeq > before {
				if err := c.cfg.Spool.Ack(a.ThroughSeq); err != nil {
					readErr <- fmt.Errorf("ack spool: %w", err)
					return
				}
				c.findingsAcked.Add(a.ThroughSeq - before)
			}
			c.acks.Add(1)
			c.isolationAcked(a.ThroughSeq)
			select {
			case acked <- struct{}{}:
			default:
			}
		}
	}()

	// The ack timer fires at the latest AckTimeout after the last progress;
	// ackOverdue then decides (acks move progress without touching the
	// timer), and re-arms it otherwise.
	ackTimer := time.NewTimer(c.cfg.AckTimeout)
	defer ackTimer.Stop()
	ackOverdue := func() error {
		mu.Lock()
		inflight, idle := len(window), time.Since(progress)
		mu.Unlock()
		if inflight == 0 {
			ackTimer.Reset(c.cfg.AckTimeout)
			return nil
		}
		if idle >= c.cfg.AckTimeout {
			return fmt.Errorf("no ack for %s with %d batches in flight", c.cfg.AckTimeout, inflight)
		}
		ackTimer.Reset(c.cfg.AckTimeout - idle)
		return nil
	}

	var next uint64 // first seq to send; 0: the oldest waiting
	var lastBatch time.Time
	var frame []byte // the batch being written (reused)
	for {
		// Wait for room in the window.
		for {
			mu.Lock()
			inflight := len(window)
			mu.Unlock()
			if _, maxInflight := c.batchLimits(); inflight < maxInflight {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case err := <-readErr:
				return err
			case <-acked:
			case <-ackTimer.C:
				if err := ackOverdue(); err != nil {
					return err
				}
			}
		}
		// Honour SlowDown's minimum interval between batches.
		if iv := time.Duration(c.minBatchInterval.Load()); iv > 0 && !lastBatch.IsZero() {
			if wait := time.Until(lastBatch.Add(iv)); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				case err := <-readErr:
					t.Stop()
					return err
				case <-t.C:
				}
			}
		}
		limit, _ := c.batchLimits()
		if m := int(c.slowMaxBatch.Load()); m > 0 && m < limit {
			limit = m
		}
		var b inflightBatch
		frame, b, err = c.nextBatch(next, limit, frame[:0])
		if err != nil {
			return err
		}
		if b.n == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case err := <-readErr:
				return err
			case <-c.cfg.Spool.Notify():
			case <-acked:
			case <-ackTimer.C:
				if err := ackOverdue(); err != nil {
					return err
				}
			}
			continue
		}
		mu.Lock()
		if len(window) == 0 {
			progress = time.Now()
		}
		window = append(window, b)
		lastSent = b.last
		mu.Unlock()
		if err := c.writeBatch(st, frame); err != nil {
			return err
		}
		lastBatch = time.Now()
		next = b.last + 1
		c.batchesSent.Add(1)
		c.findingsSent.Add(uint64(b.n))
	}
}

// writeChunk is the most of a batch's frame written under one deadline.
const writeChunk = 256 << 10

// writeBatch writes a batch's frame in chunks of writeChunk, each with
// AckTimeout to leave: a server that stops reading (its flow control then
// blocks the write) ends the session as one that stops acknowledging does,
// while a slow link that keeps moving does not.
func (c *Client) writeBatch(st *quic.Stream, frame []byte) error {
	defer func() { _ = st.SetWriteDeadline(time.Time{}) }()
	for len(frame) > 0 {
		n := min(len(frame), writeChunk)
		if err := st.SetWriteDeadline(time.Now().Add(c.cfg.AckTimeout)); err != nil {
			return fmt.Errorf("write batch: %w", err)
		}
		if _, err := st.Write(frame[:n]); err != nil {
			return fmt.Errorf("write batch: %w", err)
		}
		frame = frame[n:]
	}
	return nil
}

// maxRefusals is how many times in a row the server must refuse a finding
// sent alone before the uplink drops it.
const maxRefusals = 3

// isolation is the search for a finding that the server refuses. The
// server validates every batch and, for one finding it cannot take (a
// string above its limits, a score that is not a number), closes the
// connection with CodeProtocol (CodeSequenceBroken, CodeFrameTooLarge for
// the batch itself) and acknowledges nothing of that batch. After such a
// refusal of a batch of n findings the uplink sends batches of at most n/2
// findings, one at a time, so that the good findings in front of the bad
// one are acknowledged and the refused batch shrinks, down to the single
// bad finding. Refused alone maxRefusals times in a row, it is dropped
// from the spool, counted (Stats.FindingsRefused, the Status counter
// uplink_findings_refused) and logged. A refusal with no batch in flight
// cannot be a finding's doing: it counts for nothing.
//
// Isolation ends when acks pass the last refused batch, or with the drop.
// Like every session error, each refusal waits a backoff delay.
type isolation struct {
	from    uint64 // first seq of the last refused batch
	until   uint64 // last seq of the refused batches: isolation ends when acked
	limit   int    // findings per batch; 0: not isolating
	strikes int    // refusals in a row of the single finding from
}

// isRefusal reports whether err is the server refusing what it read: a
// protocol error, not an overload, shutdown or internal failure.
func isRefusal(err error) (*ServerError, bool) {
	se, ok := AsServerError(err)
	if !ok {
		return nil, false
	}
	switch se.Code {
	case wirev1.CodeProtocol, wirev1.CodeSequenceBroken, wirev1.CodeFrameTooLarge:
		return se, true
	}
	return nil, false
}

// batchLimits returns the findings per batch and the batches in flight
// allowed now: the configured ones, or those of an isolation.
func (c *Client) batchLimits() (limit, inflight int) {
	c.isoMu.Lock()
	defer c.isoMu.Unlock()
	if c.iso.limit > 0 {
		return min(c.iso.limit, c.cfg.BatchMax), 1
	}
	return c.cfg.BatchMax, c.cfg.Inflight
}

// isolationAcked ends an isolation whose refused batches are all
// acknowledged now.
func (c *Client) isolationAcked(through uint64) {
	c.isoMu.Lock()
	defer c.isoMu.Unlock()
	iso := &c.iso
	if iso.limit == 0 {
		return
	}
	if through >= iso.until {
		c.log.Info("findings delivered past the refused batch; back to full batches", "through_seq", through)
		*iso = isolation{}
		return
	}
	if through >= iso.from {
		iso.strikes = 0 // the finding at from got through
	}
}

// noteRefusal advances the isolation after a session ended with err, b
// being the oldest batch then in flight (b.n == 0: none).
func (c *Client) noteRefusal(err error, b inflightBatch) {
	se, ok := isRefusal(err)
	if !ok {
		return
	}
	c.isoMu.Lock()
	defer c.isoMu.Unlock()
	iso := &c.iso
	switch {
	case b.n == 0:
		iso.strikes = 0
		return
	case iso.limit == 0:
		*iso = isolation{until: b.last}
	default:
		iso.until = max(iso.until, b.last)
	}
	switch {
	case b.n > 1:
		iso.strikes = 0
	case iso.limit == 1 && iso.from == b.first:
		iso.strikes++
	default:
		iso.strikes = 1
	}
	iso.from, iso.limit = b.first, max(b.n/2, 1)
	if iso.strikes < maxRefusals {
		c.log.Warn("server refused a batch: isolating the finding it refuses",
			"first_seq", b.first, "findings", b.n, "next_batch", iso.limit, "code", se.Code.String())
		return
	}
	c.dropRefused(b.first, se)
	*iso = isolation{}
}

// dropRefused drops the finding seq, which the server refused alone
// maxRefusals times, from the spool: it is the oldest waiting one, so
// acknowledging it deletes it alone.
func (c *Client) dropRefused(seq uint64, se *ServerError) {
	fs, err := c.cfg.Spool.PeekFrom(0, 1, 0)
	if err != nil {
		c.log.Error("cannot drop the finding the server refuses", "seq", seq, "err", err)
		return
	}
	if len(fs) == 0 || fs[0].Seq != seq {
		return // acknowledged or dropped meanwhile
	}
	if rs, ok := c.cfg.Spool.(RefusalSpool); ok {
		dropped, err := rs.DropRefused(seq)
		if err != nil {
			c.log.Error("cannot drop the finding the server refuses", "seq", seq, "err", err)
			return
		}
		if !dropped {
			return // acknowledged or dropped meanwhile
		}
	} else if err := c.cfg.Spool.Ack(seq); err != nil {
		c.log.Error("cannot drop the finding the server refuses", "seq", seq, "err", err)
		return
	}
	c.refused.Add(1)
	// Only what identifies the finding: its content may be sensitive.
	c.log.Error("dropped a finding that the server refuses", "seq", seq, "detector", fs[0].Detector,
		"bytes", proto.Size(fs[0]), "refusals", maxRefusals, "code", se.Code.String(), "message", se.Message)
}

// RawSpool is implemented by spools that hand out findings still encoded
// (*spool.Spool): the uplink then frames them as they are instead of
// decoding and re-encoding every finding.
type RawSpool interface {
	PeekRawFrom(from uint64, max, maxBytes int) (seqs []uint64, data [][]byte, err error)
}

// nextBatch reads up to limit findings from seq from on and appends their
// FindingsBatch frame (length-prefixed, as wirev1.Write frames) to frame.
// b describes the batch (b.n == 0: no finding waiting).
func (c *Client) nextBatch(from uint64, limit int, frame []byte) (_ []byte, b inflightBatch, err error) {
	if rs, ok := c.cfg.Spool.(RawSpool); ok {
		seqs, data, err := rs.PeekRawFrom(from, limit, maxBatchBytes)
		if err != nil {
			return frame, b, fmt.Errorf("peek spool: %w", err)
		}
		if len(seqs) == 0 {
			return frame, b, nil
		}
		frame, err = appendRawBatch(frame, seqs, data)
		if err != nil {
			return frame, b, fmt.Errorf("write batch: %w", err)
		}
		return frame, inflightBatch{first: seqs[0], last: seqs[len(seqs)-1], n: len(seqs)}, nil
	}
	batch, err := c.cfg.Spool.PeekFrom(from, limit, maxBatchBytes)
	if err != nil {
		return frame, b, fmt.Errorf("peek spool: %w", err)
	}
	if len(batch) == 0 {
		return frame, b, nil
	}
	m := &wirev1.FindingsBatch{FirstSeq: batch[0].Seq, Findings: batch}
	size := proto.Size(m)
	if size > wirev1.MaxFrameSize {
		return frame, b, &wirev1.ProtocolError{Code: wirev1.CodeFrameTooLarge,
			Err: fmt.Errorf("write batch: %d bytes above limit %d", size, wirev1.MaxFrameSize)}
	}
	frame = protowire.AppendVarint(frame, uint64(size))
	frame, err = proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(frame, m)
	if err != nil {
		return frame, b, fmt.Errorf("write batch: %w", err)
	}
	return frame, inflightBatch{first: batch[0].Seq, last: batch[len(batch)-1].Seq, n: len(batch)}, nil
}

// Field numbers of FindingsBatch and Finding (wire/v1/vigil.proto).
const (
	fieldBatchFirstSeq = 1
	fieldBatchFindings = 2
	fieldFindingSeq    = 1
)

// appendRawBatch appends the frame of FindingsBatch{first_seq: seqs[0],
// findings: data} to b. Each finding gets its seq appended as a last field
// (protobuf keeps the last value of a repeated scalar field), so the key
// the spool stored it under is the seq the server sees.
func appendRawBatch(b []byte, seqs []uint64, data [][]byte) ([]byte, error) {
	size := protowire.SizeTag(fieldBatchFirstSeq) + protowire.SizeVarint(seqs[0])
	for i, d := range data {
		n := len(d) + protowire.SizeTag(fieldFindingSeq) + protowire.SizeVarint(seqs[i])
		size += protowire.SizeTag(fieldBatchFindings) + protowire.SizeBytes(n)
	}
	if size > wirev1.MaxFrameSize {
		return b, &wirev1.ProtocolError{Code: wirev1.CodeFrameTooLarge,
			Err: fmt.Errorf("%d bytes above limit %d", size, wirev1.MaxFrameSize)}
	}
	b = protowire.AppendVarint(b, uint64(size))
	b = protowire.AppendTag(b, fieldBatchFirstSeq, protowire.VarintType)
	b = protowire.AppendVarint(b, seqs[0])
	for i, d := range data {
		n := len(d) + protowire.SizeTag(fieldFindingSeq) + protowire.SizeVarint(seqs[i])
		b = protowire.AppendTag(b, fieldBatchFindings, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(n))
		b = append(b, d...)
		b = protowire.AppendTag(b, fieldFindingSeq, protowire.VarintType)
		b = protowire.AppendVarint(b, seqs[i])
	}
	return b, nil
}
