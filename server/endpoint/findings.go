package endpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/vigil-edge/vigil/pki"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Limits on a FindingsBatch (the protocol's, shared with the agent). A
// batch outside them closes the connection (CodeProtocol, or
// CodeSequenceBroken for sequence numbers).
const (
	MaxBatchFindings = wirev1.MaxBatchFindings
	maxDetector      = wirev1.MaxDetectorLen
	maxSummary       = wirev1.MaxSummaryLen
	maxShortString   = wirev1.MaxShortStringLen // model name/digest, IPs, proto, MAC, feature names
	maxPath          = wirev1.MaxPathLen
	maxTopFeatures   = wirev1.MaxTopFeatures
	commitTimeout    = 60 * time.Second
)

// maxPipelined bounds the batches of one FINDINGS stream that are read and
// handed to the store before the oldest of them is acknowledged.
const maxPipelined = 8

// submitter is implemented by stores that queue a batch and let the caller
// wait for its commit later (store.DB): batches of one stream submitted
// back to back are committed in order and may share a transaction.
type submitter interface {
	SubmitFindings(ctx context.Context, agentID, entity string, fs []*wirev1.Finding) (wait func(context.Context) (int, error), err error)
}

// pendingCommit is a batch handed to the store, waiting for its ack.
type pendingCommit struct {
	// n and lastSeq describe the batch; the decoded batch itself is not
	// kept (a store that submits has already encoded what it stores), so
	// that batches waiting for their commit hold less memory.
	n       int
	lastSeq uint64
	ctx     context.Context
	cancel  context.CancelFunc
	wait    func(context.Context) (int, error)
	start   time.Time
	queued  int64
}

// handleFindings serves a FINDINGS stream: each FindingsBatch is validated,
// committed under id (the identity of the connection's certificate, never a
// field of the message), then acknowledged with Ack{through_seq = the
// batch's last seq}. Re-sent batches are stored once (the store ignores a
// known (agent, seq)) and acknowledged again.
//
// Reading and acknowledging are pipelined: up to maxPipelined batches are
// submitted to the store while the oldest commits, and acks go out strictly
// in order, each only after its batch is committed. An agent with several
// batches in flight thus has them committed together instead of paying one
// fsync per round trip. When a commit fails, nothing after it is
// acknowledged (acks are cumulative) and the stream ends.
func (e *Endpoint) handleFindings(ctx context.Context, id pki.Identity, r *wirev1.Reader, w io.Writer) error {
	pending := make(chan *pendingCommit, maxPipelined)
	ackDone := make(chan error, 1)
	go func() { ackDone <- e.ackLoop(id, pending, w) }()
	rerr := e.readBatches(ctx, id, r, pending)
	close(pending)
	if aerr := <-ackDone; aerr != nil {
		return aerr
	}
	return rerr
}

func (e *Endpoint) readBatches(ctx context.Context, id pki.Identity, r *wirev1.Reader, pending chan<- *pendingCommit) error {
	for {
		b := &wirev1.FindingsBatch{}
		if err := r.Read(b); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := validateBatch(b); err != nil {
			return err
		}
		e.m.findingsReceived.Add(float64(len(b.Findings)))
		n := len(b.Findings)
		if err := e.queued.acquire(ctx, n); err != nil {
			return fmt.Errorf("wait for the commit queue: %w", err)
		}
		if !e.beginCommit() {
			e.queued.release(n)
			return protoErr(wirev1.CodeShuttingDown, "server shutting down")
		}
		e.agentCommits.begin(id.AgentID) // ended by ackLoop, which takes every batch handed on
		// The commit outlives a dropped connection: a half-done ingest
		// would only be re-sent, but finishing it is cheaper and drains
		// cleanly.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
		pc := &pendingCommit{n: n, lastSeq: b.Findings[len(b.Findings)-1].Seq, ctx: cctx, cancel: cancel,
			start: time.Now(), queued: e.inflight.Add(1)}
		if sub, ok := e.st.(submitter); ok {
			wait, err := sub.SubmitFindings(cctx, id.AgentID, id.Entity, b.Findings)
			if err != nil {
				wait = func(context.Context) (int, error) { return 0, err }
			}
			pc.wait = wait
		} else {
			st := e.st
			pc.wait = func(c context.Context) (int, error) { return st.InsertFindings(c, id.AgentID, id.Entity, b.Findings) }
		}
		pending <- pc
	}
}

// ackLoop waits for each submitted batch in order and acknowledges it. After
// a failure it only drains (finishing the commits already submitted) and
// wakes the reader, so that the stream ends.
func (e *Endpoint) ackLoop(id pki.Identity, pending <-chan *pendingCommit, w io.Writer) error {
	var failed error
	fail := func(err error) {
		failed = err
		setReadDeadline(w, time.Nanosecond) // unblock readBatches
	}
	for pc := range pending {
		inserted, err := pc.wait(pc.ctx)
		e.agentCommits.end(id.AgentID)
		lat := time.Since(pc.start)
		e.inflight.Add(-1)
		e.queued.release(pc.n)
		pc.cancel()
		e.endCommit()
		e.m.commitSeconds.Observe(lat.Seconds())
		if failed != nil {
			continue
		}
		if err != nil {
			e.m.commitErrors.Inc()
			e.log.Error("commit findings", "agent", id.AgentID, "findings", pc.n, "err", err)
			_ = writeFrame(w, &wirev1.Ack{Error: &wirev1.Error{Code: uint32(wirev1.CodeInternal), Message: "commit failed; retry"}})
			fail(fmt.Errorf("commit findings: %w", err))
			continue
		}
		e.m.findingsCommitted.Add(float64(inserted))
		if d := pc.n - inserted; d > 0 {
			e.m.findingsDuplicate.Add(float64(d))
		}
		ack := &wirev1.Ack{ThroughSeq: pc.lastSeq}
		if int(pc.queued) >= e.cfg.SlowDownQueue || lat >= e.cfg.SlowDownLatency {
			ack.SlowDown = e.cfg.SlowDown
			e.m.slowDowns.Inc()
		}
		if err := writeFrame(w, ack); err != nil {
			fail(fmt.Errorf("write ack: %w", err))
			continue
		}
		e.m.acks.Inc()
	}
	return failed
}

// validateBatch checks a batch from the network: 1..MaxBatchFindings
// findings, seqs strictly increasing from first_seq (gaps allowed), bounded
// strings, known severities and finite numbers (the API encodes them as JSON).
func validateBatch(b *wirev1.FindingsBatch) error {
	n := len(b.Findings)
	if n == 0 {
		return protoErr(wirev1.CodeProtocol, "empty findings batch")
	}
	if n > MaxBatchFindings {
		return protoErr(wirev1.CodeProtocol, "%d findings in one batch, limit %d", n, MaxBatchFindings)
	}
	prev := b.FirstSeq
	for i, f := range b.Findings {
		if f == nil {
			return protoErr(wirev1.CodeProtocol, "finding %d is empty", i)
		}
		if f.Seq > math.MaxInt64 || f.Seq < b.FirstSeq || (i > 0 && f.Seq <= prev) {
			return protoErr(wirev1.CodeSequenceBroken, "finding %d: seq %d after %d (first_seq %d)", i, f.Seq, prev, b.FirstSeq)
		}
		prev = f.Seq
		if err := validateFinding(f); err != nil {
			return protoErr(wirev1.CodeProtocol, "finding seq %d: %w", f.Seq, err)
		}
	}
	return nil
}

func validateFinding(f *wirev1.Finding) error {
	if f.Detector == "" || len(f.Detector) > maxDetector {
		return fmt.Errorf("detector name of %d bytes", len(f.Detector))
	}
	if len(f.Summary) > maxSummary {
		return fmt.Errorf("summary of %d bytes", len(f.Summary))
	}
	if f.Severity < wirev1.Severity_SEVERITY_UNSPECIFIED || f.Severity > wirev1.Severity_SEVERITY_CRITICAL {
		return fmt.Errorf("unknown severity %d", int32(f.Severity))
	}
	if !finite(f.Score) || !finite(f.Threshold) {
		return errors.New("score or threshold not finite")
	}
	if !wirev1.ValidLeadIn(f) {
		return fmt.Errorf("lead-in (%d packets from %d) not within %d s before first_seen %d",
			f.LeadInPackets, f.LeadInUnixNano, wirev1.MaxLeadIn/1_000_000_000, f.FirstSeenUnixNano)
	}
	if m := f.Model; m != nil {
		if len(m.Name) > maxShortString || len(m.Digest) > maxShortString || len(m.Detector) > maxDetector {
			return errors.New("model reference fields too long")
		}
	}
	if c := f.Context; c != nil {
		if len(c.SrcIp) > maxShortString || len(c.DstIp) > maxShortString || len(c.Proto) > maxShortString ||
			len(c.SrcMac) > maxShortString || len(c.Path) > maxPath {
			return errors.New("context fields too long")
		}
		if c.SrcPort > math.MaxUint16 || c.DstPort > math.MaxUint16 {
			return errors.New("port above 65535")
		}
	}
	if len(f.TopFeatures) > maxTopFeatures {
		return fmt.Errorf("%d top features, limit %d", len(f.TopFeatures), maxTopFeatures)
	}
	for _, tf := range f.TopFeatures {
		if tf == nil {
			continue
		}
		if len(tf.Name) > maxShortString || !finite(tf.Contribution) {
			return errors.New("top feature name too long or contribution not finite")
		}
	}
	return nil
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
