package pluginhost

import (
	"context"
	"testing"

	"github.com/hashicorp/go-plugin"

	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	"github.com/vigil-edge/vigil/plugins/sdk/ring"
)

// TestRetireTailBelowResults: a plugin that moved its ring tail back below
// the end of the results it already sent (its tail is its own to write)
// must not make the host count those scored records a second time, as lost
// in flight: every published record is counted exactly once.
func TestRetireTailBelowResults(t *testing.T) {
	h, err := New(Config{Path: "/bin/true", RingSlots: ring.MinSlots * 8, MaxBatch: 16})
	if err != nil {
		t.Fatal(err)
	}
	const base, pushed, reported, corruptTail = 1000, 100, 80, 1050
	r, err := ring.Create(h.cfg.RingSlots, base)
	if err != nil {
		t.Fatal(err)
	}
	prod, err := ring.NewProducer(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	inst := &instance{
		client: plugin.NewClient(&plugin.ClientConfig{HandshakeConfig: sdk.Handshake, Plugins: sdk.PluginMap(nil, nil)}),
		ring:   r, prod: prod, done: make(chan struct{}), cancel: func() {},
	}
	inst.lastEnd.Store(base)
	h.install(inst)

	if n, err := h.Push(context.Background(), make([]event.Packet, pushed)); err != nil || n != pushed {
		t.Fatalf("Push = %d, %v", n, err)
	}
	// The plugin's results cover [base, base+reported); then it writes a
	// tail below their end into the shared header.
	inst.lastEnd.Store(base + reported)
	h.scored.Add(reported)
	c := ring.NewConsumer(r, nil)
	c.Release(corruptTail - base)

	inst.end(nil)
	h.retire(inst)
	st := h.Stats()
	if got := st.Scored + st.Lost(); got != st.Published {
		t.Errorf("scored %d + lost %d (in flight %d, unreported %d) = %d records, published %d",
			st.Scored, st.Lost(), st.LostInFlight, st.Unreported, got, st.Published)
	}
	if st.LostInFlight != pushed-reported || st.Unreported != 0 {
		t.Errorf("lost in flight %d, unreported %d; want %d, 0", st.LostInFlight, st.Unreported, pushed-reported)
	}
}
