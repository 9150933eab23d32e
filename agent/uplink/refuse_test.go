package uplink_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/vigil-edge/vigil/agent/uplink"
	"github.com/vigil-edge/vigil/agent/uplink/uplinktest"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// refuseInvalid is the server's validation of a batch (server/endpoint,
// validateFinding) reduced to what these tests break: a finding beyond the
// protocol's limits, or with a score that is not a number, makes the
// server close the connection with CodeProtocol and acknowledge nothing of
// the batch.
func refuseInvalid(b *wirev1.FindingsBatch) (*wirev1.Ack, wirev1.ErrorCode) {
	for _, f := range b.Findings {
		if f.Detector == "" || len(f.Detector) > wirev1.MaxDetectorLen || len(f.Summary) > wirev1.MaxSummaryLen ||
			len(f.Context.GetPath()) > wirev1.MaxPathLen || math.IsNaN(f.Score) || math.IsInf(f.Score, 0) {
			return nil, wirev1.CodeProtocol
		}
	}
	return nil, 0
}

func goodFindings(n int) []*wirev1.Finding {
	fs := make([]*wirev1.Finding, n)
	for i := range fs {
		fs[i] = &wirev1.Finding{Detector: "test", Severity: wirev1.Severity_SEVERITY_MEDIUM, Count: 1, Summary: fmt.Sprintf("f%d", i),
			Context: &wirev1.FindingContext{SrcIp: "10.0.0.1", DstIp: "10.0.0.2", Proto: "tcp"}}
	}
	return fs
}

// delivered checks that the server holds exactly the seqs 1..total except
// skipped, in order.
func delivered(t *testing.T, got []uint64, total uint64, skipped ...uint64) {
	t.Helper()
	var want []uint64
	for s := uint64(1); s <= total; s++ {
		if !slices.Contains(skipped, s) {
			want = append(want, s)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("server has %d findings %v..., want %d (1..%d without %v)", len(got), got[:min(len(got), 10)], len(want), total, skipped)
	}
}

// TestRefusedFindingDropped: a finding that the server refuses (no detector:
// nothing can repair it; wirev1.TrimFinding repairs long strings and scores
// that are not finite) between good ones, and another one
// last in the spool. The uplink isolates each by sending smaller batches,
// drops it once refused alone, counts and logs the drop, and every good
// finding is delivered, in order.
func TestRefusedFindingDropped(t *testing.T) {
	f := newFixture(t)
	f.srv.Configure(func(s *uplinktest.Server) {
		s.OnBatch = refuseInvalid
	})
	fs := goodFindings(250)
	fs[150].Detector = "" // seq 151
	fs[249].Detector = "" // seq 250, the last
	if err := f.spool.Append(context.Background(), fs); err != nil {
		t.Fatal(err)
	}
	c := f.start(t, f.config())
	eventually(t, "the spool drained", func() bool { return f.spool.Stats().Depth == 0 })
	delivered(t, f.srv.Findings(), 250, 151, 250)
	// The uplink counts a drop just after the spool's: poll, do not read once.
	eventually(t, "2 refused findings counted", func() bool { return c.Stats().FindingsRefused == 2 })
	if n := c.Stats().FindingsRefused; n != 2 {
		t.Fatalf("%d refused findings counted, want 2", n)
	}
	logs := f.logs.String()
	for _, want := range []string{"dropped a finding that the server refuses", "seq=151", "seq=250", "code=protocol_error"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	eventually(t, "a Status reporting the drops", func() bool {
		for _, s := range f.srv.Statuses() {
			if s.Counters["uplink_findings_refused"] == 2 {
				return true
			}
		}
		return false
	})
	// Later findings go in full batches again, without a refusal.
	before := c.Stats().Reconnects
	f.append(t, 300, wirev1.Severity_SEVERITY_LOW)
	eventually(t, "later findings acked", func() bool { return f.spool.Stats().Depth == 0 })
	if n := len(f.srv.Findings()); n != 248+300 {
		t.Fatalf("server has %d findings, want %d", n, 248+300)
	}
	if after := c.Stats().Reconnects; after != before {
		t.Fatalf("%d reconnects after the isolation ended", after-before)
	}
}

// TestTooLongFindingDelivered: a finding over the server's limits (a summary
// and a path too long, as an aggregator builds for a very long file name)
// between good ones. In a spool that stores it as it is (memSpool), the
// uplink drops it after the server refused it alone; the agent's spool cuts
// it to the limits when it stores it, so that it is delivered, cut.
func TestTooLongFindingDelivered(t *testing.T) {
	long := "/srv/share/" + strings.Repeat("très-long/", 500)
	tooLong := func() []*wirev1.Finding {
		fs := goodFindings(40)
		fs[17].Summary = "Anomalous file " + long + " (renamed from " + long + ")"
		fs[17].Context.Path = long
		return fs
	}
	t.Run("refused and dropped", func(t *testing.T) {
		f := newFixture(t)
		f.srv.Configure(func(s *uplinktest.Server) {
			s.OnBatch = refuseInvalid
		})
		sp := newMemSpool(tooLong())
		cfg := f.config()
		cfg.Spool = sp
		c := f.start(t, cfg)
		eventually(t, "the spool drained", func() bool { return sp.Stats().Depth == 0 })
		delivered(t, f.srv.Findings(), 40, 18)
		if n := c.Stats().FindingsRefused; n != 1 {
			t.Fatalf("%d refused findings counted, want 1", n)
		}
	})
	t.Run("cut by the spool and delivered", func(t *testing.T) {
		f := newFixture(t)
		f.srv.Configure(func(s *uplinktest.Server) {
			s.OnBatch = refuseInvalid
		})
		if err := f.spool.Append(context.Background(), tooLong()); err != nil {
			t.Fatal(err)
		}
		c := f.start(t, f.config())
		eventually(t, "the spool drained", func() bool { return f.spool.Stats().Depth == 0 })
		delivered(t, f.srv.Findings(), 40)
		got := f.srv.Finding(18)
		if !strings.HasPrefix(got.Summary, "Anomalous file /srv/share/très-long/") || !strings.HasSuffix(got.Summary, wirev1.Ellipsis) ||
			len(got.Summary) > wirev1.MaxSummaryLen || !utf8.ValidString(got.Summary) || len(got.Context.GetPath()) > wirev1.MaxPathLen {
			t.Fatalf("finding 18 delivered with a summary of %d bytes and a path of %d", len(got.Summary), len(got.Context.GetPath()))
		}
		if st := c.Stats(); st.FindingsRefused != 0 || st.Reconnects != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// TestWriteBlockedByFlowControl: a server that stops reading the FINDINGS
// stream lets the agent's write block on flow control; the write deadline
// ends the session after AckTimeout and the findings go on the next one.
func TestWriteBlockedByFlowControl(t *testing.T) {
	f := newFixture(t)
	var streams atomic.Int64
	f.srv.Configure(func(s *uplinktest.Server) {
		s.StallFindings = func() bool { return streams.Add(1) == 1 }
	})
	// 400 KB per batch: the second one exceeds the stream's flow control
	// window while the server does not read.
	fs := goodFindings(600)
	if size := 100 * 4000; 2*size <= uplinktest.StreamReceiveWindow {
		t.Fatalf("two batches of %d bytes fit in the window of %d", size, uplinktest.StreamReceiveWindow)
	}
	for _, x := range fs {
		x.Summary = strings.Repeat("s", 4000)
	}
	if err := f.spool.Append(context.Background(), fs); err != nil {
		t.Fatal(err)
	}
	cfg := f.config()
	cfg.AckTimeout = 2 * time.Second
	c := f.start(t, cfg)
	eventually(t, "the spool drained", func() bool { return f.spool.Stats().Depth == 0 })
	delivered(t, f.srv.Findings(), 600)
	if c.Stats().Reconnects == 0 || !strings.Contains(f.logs.String(), "write batch") {
		t.Fatalf("no session ended by the write deadline; stats %+v", c.Stats())
	}
}

// TestAckTimeoutCountsFromLastAck: under SlowDown (a batch every 5 ms) a
// server that pipelines its commits acknowledges each batch 50 ms after it
// arrived, so the window is never empty nor full. Acks keep coming: the
// agent must never time out (AckTimeout is 20 times the ack latency). Each
// round streams for longer than AckTimeout, then drains (where the stale
// timer of old showed, at a select it won half the time).
func TestAckTimeoutCountsFromLastAck(t *testing.T) {
	f := newFixture(t)
	f.srv.Configure(func(s *uplinktest.Server) {
		s.AckDelay = 50 * time.Millisecond
		s.AfterHello = func(send func(*wirev1.ServerControl) error) {
			_ = send(&wirev1.ServerControl{Msg: &wirev1.ServerControl_SlowDown{SlowDown: &wirev1.SlowDown{MinBatchIntervalMs: 5, MaxBatch: 1}}})
		}
	})
	cfg := f.config()
	cfg.BatchMax = 1
	cfg.Inflight = 64
	cfg.AckTimeout = time.Second
	c := f.start(t, cfg)
	const rounds, perRound = 5, 250 // at least 1.25 s each
	for range rounds {
		f.append(t, perRound, wirev1.Severity_SEVERITY_LOW)
		eventually(t, "all findings acked", func() bool { return f.spool.Stats().Depth == 0 })
	}
	checkInOrder(t, f.srv.Findings(), rounds*perRound)
	if st := c.Stats(); st.Reconnects != 0 || st.Connects != 1 || strings.Contains(f.logs.String(), "no ack") {
		t.Fatalf("the agent reconnected while acks kept coming: stats %+v", st)
	}
}

// memSpool is an in-memory uplink.Spool that stores findings as they are
// (the agent's spool fits them into the protocol's limits).
type memSpool struct {
	mu     sync.Mutex
	fs     []*wirev1.Finding // waiting, seq order
	next   uint64
	acked  uint64
	notify chan struct{}
}

var _ uplink.Spool = (*memSpool)(nil)

func newMemSpool(fs []*wirev1.Finding) *memSpool {
	s := &memSpool{next: 1, notify: make(chan struct{}, 1)}
	for _, f := range fs {
		f.Seq = s.next
		s.next++
		s.fs = append(s.fs, f)
	}
	return s
}

func (s *memSpool) PeekFrom(from uint64, max, maxBytes int) ([]*wirev1.Finding, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*wirev1.Finding
	size := 0
	for _, f := range s.fs {
		if f.Seq < from {
			continue
		}
		n := proto.Size(f)
		if len(out) == max || (len(out) > 0 && maxBytes > 0 && size+n > maxBytes) {
			break
		}
		out = append(out, proto.Clone(f).(*wirev1.Finding))
		size += n
	}
	return out, nil
}

func (s *memSpool) Ack(through uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if through >= s.next {
		return fmt.Errorf("ack through %d: only seqs below %d were assigned", through, s.next)
	}
	for len(s.fs) > 0 && s.fs[0].Seq <= through {
		s.fs = s.fs[1:]
	}
	s.acked = max(s.acked, through)
	return nil
}

func (s *memSpool) Stats() *wirev1.SpoolStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &wirev1.SpoolStats{Depth: uint64(len(s.fs)), NextSeq: s.next, AckedSeq: s.acked}
}

func (s *memSpool) Notify() <-chan struct{} { return s.notify }
