package netflow

import (
	"math"
	"testing"
)

// TestBeaconRetransmitExtremeTimes: a SYN from the source port of the
// pair's last start is a retransmission only when it comes within
// beaconRetransmit of it. The difference of two extreme packet times (a
// crafted capture) overflowed int64, came out negative, and a start
// centuries later was dropped as a retransmission.
func TestBeaconRetransmitExtremeTimes(t *testing.T) {
	tests := []struct {
		name      string
		last, ts  int64
		wantStart bool
	}{
		{"retransmission", 0, beaconRetransmit - 1, false},
		{"new start", 0, beaconRetransmit, true},
		{"same time", math.MinInt64, math.MinInt64, false},
		{"min then max", math.MinInt64, math.MaxInt64, true},
		{"negative then positive", -6e18, 6e18, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bt := newBeaconTable(1, DefaultBeaconIntervals)
			for _, ts := range []int64{tc.last, tc.ts} {
				p := syn("10.99.0.5", "10.99.0.9", 443, 40000, ts)
				bt.observe(&p)
			}
			p := syn("10.99.0.5", "10.99.0.9", 443, 40000, tc.ts)
			e := bt.entry(beaconKey{src: p.SrcIP, dst: p.DstIP, port: 443}, tc.ts)
			if got := e.n == 2; got != tc.wantStart {
				t.Fatalf("starts held %d (total %d), want a new start: %v", e.n, e.total, tc.wantStart)
			}
		})
	}
}
