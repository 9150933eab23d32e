package uplink_test

import (
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/uplink/uplinktest"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestSlowDownBounded: a server (buggy or hostile) asks in an ack for the
// longest pause the field holds, 2^32-1 ms (49 days) between batches. The
// agent slows down, but by at most uplink's bound (10 s): the findings
// after the first batch are still delivered.
func TestSlowDownBounded(t *testing.T) {
	f := newFixture(t)
	var sent atomic.Bool
	f.srv.Configure(func(s *uplinktest.Server) {
		s.OnBatch = func(b *wirev1.FindingsBatch) (*wirev1.Ack, wirev1.ErrorCode) {
			a := &wirev1.Ack{ThroughSeq: b.Findings[len(b.Findings)-1].Seq}
			if sent.CompareAndSwap(false, true) {
				a.SlowDown = &wirev1.SlowDown{MinBatchIntervalMs: math.MaxUint32}
			}
			return a, 0
		}
	})
	f.append(t, 100, wirev1.Severity_SEVERITY_LOW)
	cfg := f.config()
	cfg.Inflight = 1
	f.start(t, cfg)
	eventually(t, "first batch acked", func() bool { return f.spool.Stats().Depth == 0 })
	f.append(t, 10, wirev1.Severity_SEVERITY_HIGH)
	if !waitFor(15*time.Second, func() bool { return f.spool.Stats().Depth == 0 }) {
		t.Fatalf("findings after SlowDown{min_batch_interval_ms: %d} not delivered within 15 s: %d waiting", uint32(math.MaxUint32), f.spool.Stats().Depth)
	}
	if got := len(f.srv.Findings()); got != 110 {
		t.Fatalf("server has %d findings, want 110", got)
	}
}
