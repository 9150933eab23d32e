package endpoint

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"

	"github.com/vigil-edge/vigil/pki"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// peer is what the stream handlers know about the other side of a
// connection: its identity (from the verified certificate only) and
// per-connection state.
type peer struct {
	authed bool         // a verified client certificate with a valid identity
	id     pki.Identity // zero unless authed
	cert   *x509.Certificate
	remote string
	log    *slog.Logger

	mu         sync.Mutex
	hasControl bool
	enrolled   bool // an ENROLL stream was opened (one per connection)
}

// conn is one live QUIC connection.
type conn struct {
	qc   *quic.Conn
	peer *peer
	seq  uint64 // registration order (the oldest of an agent's is closed first)
	once sync.Once
}

func (c *conn) close(code wirev1.ErrorCode, msg string) {
	c.once.Do(func() {
		_ = c.qc.CloseWithError(quic.ApplicationErrorCode(code), msg)
	})
}

// protoErr builds a connection-closing protocol error.
func protoErr(code wirev1.ErrorCode, format string, args ...any) error {
	return &wirev1.ProtocolError{Code: code, Err: fmt.Errorf(format, args...)}
}

func (e *Endpoint) serveConn(ctx context.Context, qc *quic.Conn) {
	c := &conn{qc: qc}
	defer func() {
		if r := recover(); r != nil {
			e.m.panics.Inc()
			e.log.Error("panic in connection handler", "remote", qc.RemoteAddr().String(), "panic", r, "stack", string(debug.Stack()))
			c.close(wirev1.CodeInternal, "internal error")
		}
	}()
	remote := qc.RemoteAddr().String()
	id, cert, authed, err := peerIdentity(qc.ConnectionState().TLS, e.td)
	if err != nil {
		// verifyConnection refused these already; defence in depth.
		e.m.handshakeRefused.WithLabelValues("bad_identity").Inc()
		e.log.Warn("connection without a valid identity", "remote", remote, "err", err)
		c.close(wirev1.CodeUnauthorized, "no valid identity")
		return
	}
	if !authed {
		defer e.anonConns.Add(-1)
		if n := e.anonConns.Add(1); n > int64(e.cfg.MaxEnrollConns) {
			e.m.handshakeRefused.WithLabelValues("enroll_limit").Inc()
			e.log.Debug("connection without a certificate refused: too many open", "remote", remote, "limit", e.cfg.MaxEnrollConns)
			c.close(wirev1.CodeOverloaded, "too many enrolling connections; retry later")
			return
		}
	}
	p := &peer{authed: authed, id: id, cert: cert, remote: remote}
	if authed {
		p.log = e.log.With("remote", remote, "agent", id.AgentID, "entity", id.Entity)
		e.m.connectionsTotal.WithLabelValues("mtls").Inc()
	} else {
		p.log = e.log.With("remote", remote, "agent", "")
		e.m.connectionsTotal.WithLabelValues("enroll").Inc()
	}
	c.peer = p

	c.seq = e.connSeq.Add(1)
	var oldest *conn // closed when the agent has too many connections
	e.connMu.Lock()
	e.conns[c] = struct{}{}
	if authed {
		if e.byAgent[id.AgentID] == nil {
			e.byAgent[id.AgentID] = map[*conn]struct{}{}
		}
		mine := e.byAgent[id.AgentID]
		mine[c] = struct{}{}
		if len(mine) > e.cfg.MaxConnsPerAgent {
			for o := range mine {
				if o != c && (oldest == nil || o.seq < oldest.seq) {
					oldest = o
				}
			}
		}
	}
	e.connMu.Unlock()
	e.m.connections.Inc()
	if oldest != nil {
		oldest.peer.log.Info("closing the agent's oldest connection: too many", "limit", e.cfg.MaxConnsPerAgent)
		oldest.close(wirev1.CodeOverloaded, "too many connections of this agent; the oldest is closed")
	}
	defer func() {
		e.connMu.Lock()
		delete(e.conns, c)
		if authed {
			delete(e.byAgent[id.AgentID], c)
			if len(e.byAgent[id.AgentID]) == 0 {
				delete(e.byAgent, id.AgentID)
			}
		}
		e.connMu.Unlock()
		e.m.connections.Dec()
	}()
	// Revoked between the handshake and the registration above.
	if authed && e.isRevoked(id.AgentID) {
		e.m.revokedDisconnect.Inc()
		c.close(wirev1.CodeRevoked, "agent revoked")
		return
	}
	select {
	case <-e.stop:
		c.close(wirev1.CodeShuttingDown, "server shutting down")
		return
	default:
	}
	p.log.Debug("connection open")

	if !authed {
		// A connection without a certificate may only enroll, briefly.
		t := time.AfterFunc(e.cfg.EnrollTimeout, func() { c.close(wirev1.CodeUnauthorized, "enrollment window over") })
		defer t.Stop()
	} else {
		// A connection lives no longer than its certificate; the agent
		// reconnects with the renewed one.
		t := time.AfterFunc(time.Until(cert.NotAfter), func() { c.close(wirev1.CodeUnauthorized, "certificate expired") })
		defer t.Stop()
	}

	cctx := qc.Context()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		s, err := qc.AcceptStream(cctx)
		if err != nil {
			p.log.Debug("connection closed", "err", err)
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.serveQUICStream(cctx, c, s)
		}()
	}
}

func (e *Endpoint) serveQUICStream(ctx context.Context, c *conn, s *quic.Stream) {
	defer func() {
		if r := recover(); r != nil {
			e.m.panics.Inc()
			c.peer.log.Error("panic in stream handler", "panic", r, "stack", string(debug.Stack()))
			c.close(wirev1.CodeInternal, "internal error")
		}
	}()
	err := e.serveStream(ctx, c.peer, s)
	if err == nil {
		_ = s.Close()
		return
	}
	var pe *wirev1.ProtocolError
	if errors.As(err, &pe) {
		if pe.Code != wirev1.CodeShuttingDown {
			e.m.framesRejected.WithLabelValues(pe.Code.String()).Inc()
			c.peer.log.Warn("closing connection: protocol violation", "code", pe.Code.String(), "err", pe.Err)
		}
		c.close(pe.Code, truncate(pe.Error(), 200))
		return
	}
	if ctx.Err() != nil {
		return // connection gone
	}
	c.peer.log.Debug("stream ended", "err", err)
	s.CancelRead(quic.StreamErrorCode(wirev1.CodeInternal))
	s.CancelWrite(quic.StreamErrorCode(wirev1.CodeInternal))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Stream deadlines, when the stream supports them (QUIC streams do; the
// in-memory pipes of the fuzz tests need not).
type readDeadliner interface{ SetReadDeadline(time.Time) error }
type writeDeadliner interface{ SetWriteDeadline(time.Time) error }

func setReadDeadline(r any, d time.Duration) {
	if rd, ok := r.(readDeadliner); ok {
		if d == 0 {
			_ = rd.SetReadDeadline(time.Time{})
		} else {
			_ = rd.SetReadDeadline(time.Now().Add(d))
		}
	}
}

// writeFrame writes one frame with a write deadline.
func writeFrame(w io.Writer, m proto.Message) error {
	if wd, ok := w.(writeDeadliner); ok {
		_ = wd.SetWriteDeadline(time.Now().Add(writeTimeout))
		defer func() { _ = wd.SetWriteDeadline(time.Time{}) }()
	}
	return wirev1.Write(w, m, wirev1.MaxFrameSize)
}

// byteAtATime hands out one byte per Read, so a wirev1.Reader built on it
// never reads past the frame it decodes: the stream header is read with a
// small limit, then the stream's own reader (with the limit of its kind)
// takes over the rest of the stream.
type byteAtATime struct{ r io.Reader }

func (b byteAtATime) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return b.r.Read(p)
}

// maxHeaderFrame bounds the StreamHeader frame.
const maxHeaderFrame = 1 << 10

// serveStream reads the StreamHeader and runs the handler of its kind. A
// returned *wirev1.ProtocolError closes the connection with its code; any
// other error ends the stream only.
func (e *Endpoint) serveStream(ctx context.Context, p *peer, rw io.ReadWriter) error {
	setReadDeadline(rw, headerTimeout)
	var hdr wirev1.StreamHeader
	if err := wirev1.NewReader(byteAtATime{rw}, maxHeaderFrame).Read(&hdr); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	setReadDeadline(rw, 0)
	e.m.streams.WithLabelValues(kindLabel(hdr.Kind)).Inc()
	if hdr.ProtocolVersion != wirev1.ProtocolVersion {
		return protoErr(wirev1.CodeBadVersion, "protocol version %d, server speaks %d", hdr.ProtocolVersion, wirev1.ProtocolVersion)
	}
	switch hdr.Kind {
	case wirev1.StreamKind_STREAM_KIND_ENROLL:
		if p.authed {
			return protoErr(wirev1.CodeProtocol, "ENROLL on a connection with a client certificate")
		}
		p.mu.Lock()
		again := p.enrolled
		p.enrolled = true
		p.mu.Unlock()
		if again {
			return protoErr(wirev1.CodeProtocol, "second ENROLL stream on one connection")
		}
		return e.handleEnroll(ctx, p, wirev1.NewReader(rw, maxSmallFrame), rw)
	case wirev1.StreamKind_STREAM_KIND_CONTROL, wirev1.StreamKind_STREAM_KIND_FINDINGS, wirev1.StreamKind_STREAM_KIND_FETCH:
		if !p.authed {
			return protoErr(wirev1.CodeUnauthorized, "%s stream needs a client certificate", kindLabel(hdr.Kind))
		}
	default:
		return protoErr(wirev1.CodeUnknownKind, "unknown stream kind %d", int32(hdr.Kind))
	}
	switch hdr.Kind {
	case wirev1.StreamKind_STREAM_KIND_CONTROL:
		return refused(e.handleControl(ctx, p, wirev1.NewReader(rw, maxSmallFrame), rw))
	case wirev1.StreamKind_STREAM_KIND_FINDINGS:
		return e.handleFindings(ctx, p.id, wirev1.NewReader(rw, wirev1.MaxFrameSize), rw)
	default:
		return refused(e.handleFetch(ctx, wirev1.NewReader(rw, maxSmallFrame), rw))
	}
}

// refused gives a CONTROL or FETCH stream's refusal (CodeProtocol,
// CodeFrameTooLarge) the code CodeRefused: the agent counts those two codes
// against the findings it has in flight, when it isolates a finding the
// server refuses, and a refused control message is not a finding's doing.
func refused(err error) error {
	var pe *wirev1.ProtocolError
	if errors.As(err, &pe) && (pe.Code == wirev1.CodeProtocol || pe.Code == wirev1.CodeFrameTooLarge) {
		return &wirev1.ProtocolError{Code: wirev1.CodeRefused, Err: pe.Err}
	}
	return err
}

func kindLabel(k wirev1.StreamKind) string {
	switch k {
	case wirev1.StreamKind_STREAM_KIND_ENROLL:
		return "enroll"
	case wirev1.StreamKind_STREAM_KIND_CONTROL:
		return "control"
	case wirev1.StreamKind_STREAM_KIND_FINDINGS:
		return "findings"
	case wirev1.StreamKind_STREAM_KIND_FETCH:
		return "fetch"
	default:
		return "unknown"
	}
}
