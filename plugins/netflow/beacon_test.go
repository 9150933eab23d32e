package netflow

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// syn is a connection start from src to dst:port at ts from srcPort.
func syn(src, dst string, port, srcPort uint16, ts int64) event.Packet {
	p := event.Packet{TimestampNs: ts, Length: 60, Flags: event.FlagIPv4, Proto: event.ProtoTCP,
		TCPFlags: event.TCPSyn, SrcPort: srcPort, DstPort: port}
	p.SetSrc(netip.MustParseAddr(src))
	p.SetDst(netip.MustParseAddr(dst))
	return p
}

// startsAt plays connection starts at the given offsets (seconds) into a
// fresh table and returns the index of the first flagged start (-1: none)
// and how many were flagged.
func startsAt(offsets []float64) (first, flagged int, last Beacon) {
	bt := newBeaconTable(1, DefaultBeaconIntervals)
	first = -1
	for i, s := range offsets {
		p := syn("10.99.0.5", "10.99.0.9", 443, uint16(30000+i), sec(s))
		if b, ok := bt.observe(&p); ok {
			if first < 0 {
				first = i
			}
			flagged++
			last = b
		}
	}
	return first, flagged, last
}

func periodic(n int, period, jitter float64, seed uint64) []float64 {
	r := rand.New(rand.NewPCG(seed, 0))
	out := make([]float64, n)
	at := 0.0
	for i := range out {
		out[i] = at
		at += period * (1 + jitter*(2*r.Float64()-1))
	}
	return out
}

// TestBeaconRule: which recurrences the rule flags, and from which start.
func TestBeaconRule(t *testing.T) {
	tests := []struct {
		name      string
		offsets   []float64
		wantFirst int  // -1: never flagged
		every     bool // every start after the first is flagged too
	}{
		// 20 intervals of 2.2 s span 44 s: the 60 s span is reached at
		// the 28th interval.
		{"exact 2.2 s beacon", periodic(40, 2.2, 0, 1), 28, true},
		{"30 s beacon", periodic(25, 30, 0, 1), 20, true},
		{"10% jitter", periodic(60, 5, 0.1, 2), 20, true},
		{"20% jitter, at the rule's edge", periodic(60, 5, 0.2, 3), 20, false},
		{"60% jitter", periodic(60, 5, 0.6, 4), -1, false},
		{"sub-second loop", periodic(200, 0.6, 0, 1), -1, false},
		{"too few starts", periodic(20, 10, 0, 1), -1, false},
		{"too short a span", periodic(31, 1.5, 0, 1), -1, false},
		{"flood", periodic(5000, 0.0001, 0, 1), -1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			first, flagged, b := startsAt(tc.offsets)
			if first != tc.wantFirst {
				t.Fatalf("first flagged start %d, want %d", first, tc.wantFirst)
			}
			if first < 0 {
				return
			}
			if want := len(tc.offsets) - first; tc.every && flagged != want {
				t.Errorf("%d starts flagged after the first, want every one (%d)", flagged, want)
			}
			if tc.every && (b.Connections != uint32(len(tc.offsets)) || b.PeriodNs <= 0 || b.SpanNs < beaconMinSpan) {
				t.Errorf("last beacon %+v, want %d connections, a period and a span ≥ 60 s", b, len(tc.offsets))
			}
		})
	}
	_, _, b := startsAt(periodic(40, 2.2, 0, 1))
	if got := time.Duration(b.PeriodNs); got < 2199*time.Millisecond || got > 2201*time.Millisecond {
		t.Errorf("period %v, want 2.2s", got)
	}
}

// TestBeaconOnlyNewConnections: SYN-ACKs, plain ACKs, UDP, ARP, out-of-order
// starts and retransmitted SYNs (same source port) are not starts; another
// destination port or address is another pair.
func TestBeaconOnlyNewConnections(t *testing.T) {
	bt := newBeaconTable(1, DefaultBeaconIntervals)
	var flagged int
	play := func(p event.Packet) {
		if _, ok := bt.observe(&p); ok {
			flagged++
		}
	}
	for i := range 40 {
		ts := sec(float64(i) * 5)
		p := syn("10.99.0.5", "10.99.0.9", 443, 40000, ts) // one source port: each a retransmission
		play(p)
		sa := syn("10.99.0.9", "10.99.0.5", 40000+uint16(i), 443, ts)
		sa.TCPFlags = event.TCPSyn | event.TCPAck
		play(sa)
		u := syn("10.99.0.5", "10.99.0.9", 53, uint16(50000+i), ts)
		u.Proto, u.TCPFlags = event.ProtoUDP, 0
		play(u)
		// alternating ports and addresses: each pair sees half the starts
		// at twice the period, not enough within 40 starts of 5 s
		play(syn("10.99.0.6", "10.99.0.9", 443+uint16(i%2), uint16(30000+i), ts+int64(time.Second)))
		play(syn("10.99.0.7", "10.99.0."+string(rune('1'+i%2)), 443, uint16(30000+i), ts+int64(time.Second)))
	}
	if flagged != 0 {
		t.Fatalf("%d starts flagged, want none", flagged)
	}
	// out of order: a start before the last one is not taken
	bt = newBeaconTable(1, DefaultBeaconIntervals)
	for i := range 30 {
		p := syn("10.99.0.5", "10.99.0.9", 443, uint16(30000+i), sec(float64(i)*5))
		play(p)
	}
	before := flagged
	late := syn("10.99.0.5", "10.99.0.9", 443, 29999, sec(3))
	if _, ok := bt.observe(&late); ok {
		t.Fatal("an out-of-order start was flagged")
	}
	if e := bt.entry(beaconKey{src: late.SrcIP, dst: late.DstIP, port: 443}, late.TimestampNs); e.total != 30 {
		t.Fatalf("out-of-order start counted: total %d", e.total)
	}
	if before == 0 {
		t.Fatal("a 5 s beacon of 30 starts was not flagged")
	}
}

// TestBeaconTableBounded: many pairs share the table's fixed ways; a pair
// seen again after being replaced starts over, and nothing grows.
func TestBeaconTableBounded(t *testing.T) {
	bt := newBeaconTable(1, DefaultBeaconIntervals)
	n := len(bt.entries)
	for i := range 3 * n {
		p := syn(netip.AddrFrom4([4]byte{10, 99, byte(i >> 8), byte(i)}).String(), "10.99.255.1", 443, 40000, sec(float64(i)))
		bt.observe(&p)
	}
	if len(bt.entries) != n || len(bt.tags) != n {
		t.Fatalf("table grew: %d entries, %d tags, want %d", len(bt.entries), len(bt.tags), n)
	}
	used := 0
	for _, g := range bt.tags {
		if g.used {
			used++
		}
	}
	if used < n*9/10 {
		t.Fatalf("%d of %d ways used after %d pairs: the hash spreads badly", used, n, 3*n)
	}
}

// TestBeaconIntervalsOption: 0 turns the rule off; the count is capped by
// what the ring holds.
func TestBeaconIntervalsOption(t *testing.T) {
	for _, tc := range []struct {
		intervals int
		want      bool
	}{{0, false}, {-1, false}, {10, true}, {1000, true}} {
		bt := newBeaconTable(1, tc.intervals)
		got := false
		for i := range 40 {
			p := syn("10.99.0.5", "10.99.0.9", 443, uint16(30000+i), sec(float64(i)*5))
			if _, ok := bt.observe(&p); ok {
				got = true
			}
		}
		if got != tc.want {
			t.Errorf("intervals %d: flagged %v, want %v", tc.intervals, got, tc.want)
		}
	}
}

// BenchmarkBeaconObserve: the rule's worst case, every packet a
// connection start of a pair with a full ring (64 sources, each starting a
// connection to one server every 16 s).
func BenchmarkBeaconObserve(b *testing.B) {
	bt := newBeaconTable(1, DefaultBeaconIntervals)
	srcs := make([]string, 64)
	for i := range srcs {
		srcs[i] = netip.AddrFrom4([4]byte{10, 99, 1, byte(i)}).String()
	}
	pkts := make([]event.Packet, 64)
	for i := range pkts {
		pkts[i] = syn(srcs[i], "10.99.255.1", 443, 1000, 0)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p := &pkts[i%len(pkts)]
		p.TimestampNs = sec(float64(i) * 0.25)
		p.SrcPort++
		bt.observe(p)
	}
}

// BenchmarkBeaconObserveNoStart: what every other packet costs.
func BenchmarkBeaconObserveNoStart(b *testing.B) {
	bt := newBeaconTable(1, DefaultBeaconIntervals)
	p := syn("10.99.0.5", "10.99.0.9", 443, 40000, sec(0))
	p.TCPFlags = event.TCPAck
	for i := 0; i < b.N; i++ {
		bt.observe(&p)
	}
}

// beaconSessions is a host calling a server back every 5 s for 200 s: each
// call a SYN, the server's SYN-ACK, a request and an answer.
func beaconSessions() []event.Packet {
	var pkts []event.Packet
	for i := range 40 {
		ts := sec(float64(i) * 5)
		sport := uint16(30000 + i)
		c := syn("10.99.0.5", "10.99.0.9", 443, sport, ts)
		sa := syn("10.99.0.9", "10.99.0.5", sport, 443, ts+int64(time.Millisecond))
		sa.TCPFlags = event.TCPSyn | event.TCPAck
		req := syn("10.99.0.5", "10.99.0.9", 443, sport, ts+2*int64(time.Millisecond))
		req.TCPFlags, req.Length = event.TCPAck|event.TCPPsh, 300
		resp := syn("10.99.0.9", "10.99.0.5", sport, 443, ts+20*int64(time.Millisecond))
		resp.TCPFlags, resp.Length = event.TCPAck|event.TCPPsh, 1200
		pkts = append(pkts, c, sa, req, resp)
	}
	return pkts
}

// TestBeaconAnomalies: with a model loaded, the plugin flags the beacon's
// starts once the rule holds, led by "beacon" with the rule's evidence;
// merged per source, the agent gets the findings it gets from one anomaly
// per packet. Off (BeaconIntervals < 0) and during a calibration grace
// period it flags none.
func TestBeaconAnomalies(t *testing.T) {
	pkts := beaconSessions()
	led := func(as []sdk.Anomaly) (n int, evidence map[string]string) {
		for _, a := range as {
			if len(a.TopFeatures) > 0 && a.TopFeatures[0].Name == BeaconFeature {
				n++
				evidence = a.Context
			}
		}
		return n, evidence
	}
	per := scoreAll(t, newLoaded(t, Options{HashSeed: 3, NoAggregate: true}), pkts, []int{4096})
	n, ev := led(per)
	// The 20th interval ends at the 21st start (100 s): starts 21-40.
	if n != 20 {
		t.Fatalf("%d beacon-led anomalies, want 20", n)
	}
	if ev[ContextBeaconPeriodNs] != "5000000000" || ev[ContextBeaconConnections] != "40" || ev[ContextBeaconDst] != "10.99.0.9:443" {
		t.Fatalf("evidence of the last: %v", ev)
	}
	want, _ := findings(per, 30*time.Second)
	for _, sizes := range [][]int{{4096}, {1, 7, 30, 64, 13}} {
		merged := scoreAll(t, newLoaded(t, Options{HashSeed: 3}), pkts, sizes)
		got, _ := findings(merged, 30*time.Second)
		sameFindings(t, "merged beacon anomalies", want, withoutLead(got))
	}
	var beaconFindings int
	for _, f := range want {
		if strings.HasPrefix(f.Summary, "Periodic connections (C2-like beacon)") {
			beaconFindings++
			if f.Severity != wirev1.Severity_SEVERITY_MEDIUM || !strings.Contains(f.Summary, "a new connection to 10.99.0.9:443 every 5s") {
				t.Errorf("beacon finding: %v %q", f.Severity, f.Summary)
			}
		}
	}
	if beaconFindings == 0 {
		t.Fatalf("no beacon finding among %d", len(want))
	}
	if n, _ := led(scoreAll(t, newLoaded(t, Options{HashSeed: 3, NoAggregate: true, BeaconIntervals: -1}), pkts, []int{4096})); n != 0 {
		t.Errorf("beacon rule off: %d beacon-led anomalies", n)
	}
	cal := newLoaded(t, Options{HashSeed: 3, NoAggregate: true, Calibrate: 10 * time.Minute})
	if n, _ := led(scoreAll(t, cal, pkts, []int{4096})); n != 0 {
		t.Errorf("during the calibration grace period: %d beacon-led anomalies", n)
	}
}
