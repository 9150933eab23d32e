package endpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// ModelStatusRecorder is an optional Store extension: when the store
// implements it, ModelStatus reports from agents are recorded.
type ModelStatusRecorder interface {
	RecordModelStatus(ctx context.Context, agentID string, st *wirev1.ModelStatus) error
}

// Limits on CONTROL messages.
const (
	maxCounters     = 256
	maxActiveModels = 64
	// maxShadowRollouts and maxRolloutID bound Hello.shadow_rollouts (an
	// agent runs one shadow model at a time; the ids are the registry's).
	maxShadowRollouts = 16
	maxRolloutID      = 128
	// minTouchInterval: a Status report less than this after the last stored
	// one is not stored (the next one is: its counters are cumulative).
	minTouchInterval = time.Second
	// An agent reports a model status per step of an install and a shadow
	// model's counts once a minute: modelStatusBurst reports at once, then
	// one per modelStatusEvery. Beyond that, reports are dropped (counted,
	// logged once per burst of drops), so that one agent cannot flood the
	// store's single writer or the log.
	modelStatusBurst = 64
	modelStatusEvery = time.Second
)

// statusLimiter is a token bucket for one CONTROL session's ModelStatus
// reports.
type statusLimiter struct {
	tokens  float64
	last    time.Time
	dropped uint64 // since the last report that got through
}

// allow reports whether a report at now may be recorded.
func (l *statusLimiter) allow(now time.Time) bool {
	if l.last.IsZero() {
		l.tokens = modelStatusBurst
	} else {
		l.tokens = min(modelStatusBurst, l.tokens+float64(now.Sub(l.last))/float64(modelStatusEvery))
	}
	l.last = now
	if l.tokens < 1 {
		l.dropped++
		return false
	}
	l.tokens--
	return true
}

// controlSession is a live CONTROL stream: the handler and Push write to it.
type controlSession struct {
	agentID, entity string

	mu sync.Mutex
	w  io.Writer
	// broken is the error of a write that failed (a deadline passed with
	// the agent not reading, a reset): the stream may hold part of a frame,
	// so nothing more is written to it. The read loop is woken and ends the
	// connection (handleControl), and the agent reconnects and is offered
	// what it lacks at its Hello; until then every push fails at once
	// instead of waiting for another write deadline.
	broken error
	// The generation of the last Suppressions sent (supSent: one was).
	supSent bool
	supGen  uint64
}

func (cs *controlSession) send(m *wirev1.ServerControl) error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.writeLocked(m)
}

// writeLocked writes one frame, unless an earlier write failed; a failed
// write breaks the session (see broken). Called with mu held.
func (cs *controlSession) writeLocked(m *wirev1.ServerControl) error {
	if cs.broken != nil {
		return fmt.Errorf("control stream broken by an earlier write: %w", cs.broken)
	}
	if err := writeFrame(cs.w, m); err != nil {
		cs.broken = err
		setReadDeadline(cs.w, time.Nanosecond) // wakes the read loop
		return err
	}
	return nil
}

// brokenErr is the error that broke the session, nil if none.
func (cs *controlSession) brokenErr() error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.broken
}

// handleControl serves the CONTROL stream: Hello first (answered with
// HelloAck carrying the identity from the certificate), then Status
// heartbeats, RenewRequests and ModelStatus reports until the stream ends.
// While it runs, Push reaches the agent through it.
func (e *Endpoint) handleControl(ctx context.Context, p *peer, r *wirev1.Reader, w io.Writer) error {
	p.mu.Lock()
	again := p.hasControl
	p.hasControl = true
	p.mu.Unlock()
	if again {
		return protoErr(wirev1.CodeProtocol, "second CONTROL stream on one connection")
	}
	setReadDeadline(w, headerTimeout)
	var first wirev1.AgentControl
	if err := r.Read(&first); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	setReadDeadline(w, 0)
	hello := first.GetHello()
	if hello == nil {
		return protoErr(wirev1.CodeProtocol, "CONTROL stream must start with Hello")
	}
	base, err := helloState(hello)
	if err != nil {
		return err
	}
	e.touch(ctx, p, base)
	// Read before the session is registered: it may wait for the agent's
	// batches still committing from an earlier connection.
	highest, err := e.highestSeq(ctx, p)
	if err != nil {
		p.log.Warn("session refused: the highest stored seq is unknown", "err", err)
		return protoErr(wirev1.CodeInternal, "highest stored seq unknown: %v", err)
	}
	// The Hello's touch does not count towards minTouchInterval: it stores no
	// spool stats or counters (it resets them), and the agent's first Status
	// follows it at once; throttled, that Status would leave them zero for a
	// whole status interval after every reconnect.
	var lastTouch time.Time
	// Register before HelloAck leaves, so that Push works as soon as the
	// agent sees the ack; the session lock keeps pushes behind the ack.
	cs := &controlSession{agentID: p.id.AgentID, entity: p.id.Entity, w: w}
	cs.mu.Lock()
	e.connMu.Lock()
	e.controls[p.id.AgentID] = cs
	e.connMu.Unlock()
	defer func() {
		e.connMu.Lock()
		if e.controls[p.id.AgentID] == cs {
			delete(e.controls, p.id.AgentID)
		}
		e.connMu.Unlock()
	}()
	// The entity's suppressions follow the ack at once. They are read after
	// the session is registered: a change committed after this read is
	// pushed to the session too (after the ack), and the generation check
	// keeps whichever set is newer.
	sups, err := e.suppressionsMsg(ctx, p.id.Entity)
	if err != nil {
		p.log.Warn("agent gets no suppressions now", "err", err)
	}
	err = cs.writeLocked(&wirev1.ServerControl{Msg: &wirev1.ServerControl_HelloAck{HelloAck: &wirev1.HelloAck{
		AgentId:            p.id.AgentID,
		Entity:             p.id.Entity,
		ServerTimeUnixNano: e.cfg.now().UnixNano(),
		StatusIntervalMs:   uint32(e.cfg.StatusInterval / time.Millisecond),
		HighestSeq:         highest,
	}}})
	if err != nil {
		cs.mu.Unlock()
		return fmt.Errorf("write hello ack: %w", err)
	}
	if sups != nil {
		_, err = cs.sendSuppressionsLocked(sups)
	}
	cs.mu.Unlock()
	if err != nil {
		return fmt.Errorf("write suppressions: %w", err)
	}
	p.log.Info("agent connected", "version", hello.AgentVersion, "hostname", base.Hostname)
	if e.cfg.OnHello != nil {
		go e.cfg.OnHello(ctx, p.id.AgentID, p.id.Entity, hello.ShadowRollouts)
	}

	var limiter statusLimiter
	for {
		var m wirev1.AgentControl
		if err := r.Read(&m); err != nil {
			if werr := cs.brokenErr(); werr != nil {
				// A push or an answer could not be written: close the
				// connection, so that the agent reconnects.
				return protoErr(wirev1.CodeInternal, "control stream write failed: %v", werr)
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch msg := m.Msg.(type) {
		case *wirev1.AgentControl_Status:
			st, err := statusState(base, msg.Status)
			if err != nil {
				return err
			}
			if time.Since(lastTouch) >= minTouchInterval {
				e.touch(ctx, p, st)
				lastTouch = time.Now()
			}
		case *wirev1.AgentControl_Renew:
			resp := e.renew(ctx, p, msg.Renew)
			if err := cs.send(&wirev1.ServerControl{Msg: &wirev1.ServerControl_Renew{Renew: resp}}); err != nil {
				return fmt.Errorf("write renew response: %w", err)
			}
		case *wirev1.AgentControl_ModelStatus:
			if msg.ModelStatus == nil {
				continue
			}
			if !limiter.allow(time.Now()) {
				if limiter.dropped == 1 {
					p.log.Warn("model status reports dropped: more than the agent sends", "burst", modelStatusBurst, "every", modelStatusEvery)
				}
				e.m.modelStatusDropped.Inc()
				continue
			}
			if limiter.dropped > 0 {
				p.log.Warn("model status reports dropped", "count", limiter.dropped)
				limiter.dropped = 0
			}
			p.log.Info("model status", "rollout", msg.ModelStatus.RolloutId, "model", msg.ModelStatus.GetModel().GetName(),
				"version", msg.ModelStatus.GetModel().GetVersion(), "state", msg.ModelStatus.State, "reason", msg.ModelStatus.Reason)
			if rec, ok := e.st.(ModelStatusRecorder); ok {
				if err := rec.RecordModelStatus(ctx, p.id.AgentID, msg.ModelStatus); err != nil {
					p.log.Warn("record model status", "err", err)
				} else if e.cfg.OnModelStatus != nil {
					e.cfg.OnModelStatus(ctx, p.id.AgentID, msg.ModelStatus)
				}
			}
		case *wirev1.AgentControl_Hello:
			return protoErr(wirev1.CodeProtocol, "second Hello on the CONTROL stream")
		default:
			// An empty message or a kind added by a newer agent: ignore.
		}
	}
}

func (e *Endpoint) touch(ctx context.Context, p *peer, st store.AgentState) {
	if err := e.st.TouchAgent(ctx, p.id.AgentID, e.cfg.now(), st); err != nil {
		p.log.Warn("touch agent", "err", err)
	}
}

func modelRefs(ms []*wirev1.ModelRef) ([]store.ModelRef, error) {
	if len(ms) > maxActiveModels {
		return nil, protoErr(wirev1.CodeProtocol, "%d active models, limit %d", len(ms), maxActiveModels)
	}
	out := make([]store.ModelRef, 0, len(ms))
	for _, m := range ms {
		if m == nil {
			continue
		}
		if len(m.Name) > maxShortString || len(m.Digest) > maxShortString || len(m.Detector) > maxDetector {
			return nil, protoErr(wirev1.CodeProtocol, "model reference fields too long")
		}
		out = append(out, store.ModelRef{Name: m.Name, Version: m.Version, Digest: m.Digest})
	}
	return out, nil
}

// helloState is the agent state reported by Hello.
func helloState(h *wirev1.Hello) (store.AgentState, error) {
	if len(h.AgentVersion) > maxShortString || len(h.GetHost().GetHostname()) > maxHostnameLen {
		return store.AgentState{}, protoErr(wirev1.CodeProtocol, "Hello fields too long")
	}
	if len(h.ShadowRollouts) > maxShadowRollouts {
		return store.AgentState{}, protoErr(wirev1.CodeProtocol, "%d shadow rollouts in Hello, limit %d", len(h.ShadowRollouts), maxShadowRollouts)
	}
	for _, id := range h.ShadowRollouts {
		if id == "" || len(id) > maxRolloutID {
			return store.AgentState{}, protoErr(wirev1.CodeProtocol, "shadow rollout id of %d bytes in Hello (1-%d)", len(id), maxRolloutID)
		}
	}
	models, err := modelRefs(h.ActiveModels)
	if err != nil {
		return store.AgentState{}, err
	}
	st := store.AgentState{
		Version:      h.AgentVersion,
		Hostname:     h.GetHost().GetHostname(),
		ActiveModels: models,
	}
	if h.CertNotAfterUnix > 0 {
		st.CertNotAfter = time.Unix(h.CertNotAfterUnix, 0).UTC()
	}
	return st, nil
}

// statusState merges a Status report into the state from Hello.
func statusState(base store.AgentState, s *wirev1.Status) (store.AgentState, error) {
	if len(s.Counters) > maxCounters {
		return store.AgentState{}, protoErr(wirev1.CodeProtocol, "%d counters, limit %d", len(s.Counters), maxCounters)
	}
	for k := range s.Counters {
		if len(k) > maxShortString {
			return store.AgentState{}, protoErr(wirev1.CodeProtocol, "counter name of %d bytes", len(k))
		}
	}
	if len(s.ModelStatus) > maxActiveModels {
		return store.AgentState{}, protoErr(wirev1.CodeProtocol, "%d model statuses, limit %d", len(s.ModelStatus), maxActiveModels)
	}
	st := base
	if len(s.ActiveModels) > 0 {
		models, err := modelRefs(s.ActiveModels)
		if err != nil {
			return store.AgentState{}, err
		}
		st.ActiveModels = models
	}
	if sp := s.Spool; sp != nil {
		st.Spool = store.SpoolStats{Depth: sp.Depth, Bytes: sp.Bytes, Dropped: sp.Dropped, NextSeq: sp.NextSeq,
			AckedSeq: sp.AckedSeq, CapacityBytes: sp.CapacityBytes}
	}
	st.Counters = s.Counters
	if s.CertNotAfterUnix > 0 {
		st.CertNotAfter = time.Unix(s.CertNotAfterUnix, 0).UTC()
	}
	if b, err := protojson.Marshal(s); err == nil && len(b) <= maxSmallFrame {
		st.StatusJSON = string(b)
	}
	return st, nil
}
