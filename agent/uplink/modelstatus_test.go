package uplink_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/vigil-edge/vigil/agent/uplink"
	"github.com/vigil-edge/vigil/agent/uplink/uplinktest"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestModelStatusSurvivesLostLink: a model status is written on the
// CONTROL stream while the link is already gone (the server never stores
// it: it reads and discards everything, then the connection is dropped, as
// when a server crashes or a NAT forgets the flow). The status must reach
// the server after the agent reconnects. It was taken off the channel,
// written into the dead connection and lost: the server repeats only
// pending offers at Hello, so the rollout never learned the outcome.
func TestModelStatusSurvivesLostLink(t *testing.T) {
	f := newFixture(t)
	var discard atomic.Bool
	f.srv.Configure(func(s *uplinktest.Server) { s.DiscardControl = discard.Load })
	statuses := make(chan *wirev1.ModelStatus, 8)
	cfg := f.config()
	cfg.ModelStatus = statuses
	c := f.start(t, cfg)
	eventually(t, "connected", func() bool { return c.Stats().Connected })

	discard.Store(true)
	want := &wirev1.ModelStatus{RolloutId: "r1", State: "active", TimeUnixNano: 42,
		Model: &wirev1.ModelRef{Name: "netflow", Version: 7, Digest: "sha256:ab", Detector: "netflow"}}
	statuses <- want
	// A heartbeat discarded after the status shows that the status was
	// written (one stream, in order) and discarded too.
	d0 := f.srv.Discarded()
	eventually(t, "status written and discarded", func() bool { return len(statuses) == 0 && f.srv.Discarded() >= d0+2 })
	discard.Store(false)
	connects := c.Stats().Connects
	f.srv.DropConns()
	eventually(t, "reconnected", func() bool { return c.Stats().Connects > connects })

	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, got := range f.srv.ModelStatuses() {
			if proto.Equal(got, want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("model status lost: the server recorded %d statuses after the reconnect, none is %v", len(f.srv.ModelStatuses()), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestModelStatusReportedOffline: reports made before the agent connects,
// more than the updater's channel holds, reach the server once it does:
// the latest of each (detector, digest, rollout), none lost.
func TestModelStatusReportedOffline(t *testing.T) {
	f := newFixture(t)
	c, err := uplink.New(f.config())
	if err != nil {
		t.Fatal(err)
	}
	states := []string{"offered", "fetched", "verified", "active"}
	for i := range 300 {
		for _, d := range []string{"netflow", "fileactivity"} {
			c.ReportModelStatus(&wirev1.ModelStatus{RolloutId: "r-" + d, State: states[min(i, len(states)-1)], TimeUnixNano: int64(i),
				Model: &wirev1.ModelRef{Name: d, Version: 2, Digest: "sha256:" + d, Detector: d}})
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, "both latest reports recorded", func() bool {
		n := 0
		for _, st := range f.srv.ModelStatuses() {
			if st.State == "active" && st.TimeUnixNano == 299 {
				n++
			}
		}
		return n == 2
	})
	if st := c.Stats(); st.ModelStatusDropped != 0 {
		t.Fatalf("model_status_dropped %d", st.ModelStatusDropped)
	}
}
