package netflow

import (
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	nffeat "github.com/vigil-edge/vigil/models/features/netflow"
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

const t0 = int64(1_700_000_000) * int64(time.Second)

func sec(s float64) int64 { return t0 + int64(math.Round(s*float64(time.Second))) }

func leadPacket(src string, ts int64, length uint16) event.Packet {
	p := event.Packet{TimestampNs: ts, Length: length, Flags: event.FlagIPv4, Proto: event.ProtoTCP,
		TCPFlags: event.TCPAck, SrcPort: 40000, DstPort: 443}
	p.SetSrc(netip.MustParseAddr(src))
	p.SetDst(netip.MustParseAddr("10.99.0.2"))
	return p
}

// TestLeadTable checks the lead-in arithmetic of one source: whole slots,
// the slot of the anomaly up to it, never back into the slot of an earlier
// anomalous packet, out-of-order packets, saturation and times before 1970.
func TestLeadTable(t *testing.T) {
	type pk struct {
		at   float64 // seconds after t0
		len  uint16
		anom bool
	}
	for _, tc := range []struct {
		name       string
		base       int64 // packet times are base + at (default t0)
		pkts       []pk
		at         float64 // the anomaly whose lead-in is asked
		wantFirst  float64
		wantN      uint64
		wantBytes  uint64
		noLeadWant bool
	}{
		{name: "none before", pkts: nil, at: 5, noLeadWant: true},
		{name: "one packet", pkts: []pk{{4.5, 60, false}}, at: 5, wantFirst: 4.5, wantN: 1, wantBytes: 60},
		{name: "within the ten slots before", pkts: []pk{{0.2, 60, false}, {3, 100, false}, {9.9, 40, false}},
			at: 10.5, wantFirst: 0.2, wantN: 3, wantBytes: 200},
		{name: "older than ten slots", pkts: []pk{{0.9, 60, false}, {1.0, 70, false}, {11.5, 80, false}},
			at: 11.7, wantFirst: 1.0, wantN: 2, wantBytes: 150},
		{name: "same slot, before the anomaly", pkts: []pk{{7.1, 60, false}, {7.2, 60, false}},
			at: 7.3, wantFirst: 7.1, wantN: 2, wantBytes: 120},
		{name: "not into an earlier anomaly's slot", pkts: []pk{{1, 60, false}, {3.2, 60, true}, {3.7, 60, false}, {4.1, 60, false}, {8, 60, false}},
			at: 9, wantFirst: 4.1, wantN: 2, wantBytes: 120},
		{name: "an anomaly in the same slot", pkts: []pk{{2, 60, false}, {9.1, 60, true}, {9.2, 60, false}},
			at: 9.5, noLeadWant: true},
		{name: "an anomaly long ago", pkts: []pk{{1, 60, true}, {20, 60, false}, {25, 60, false}},
			at: 26, wantFirst: 20, wantN: 2, wantBytes: 120},
		{name: "a late packet of an old slot", pkts: []pk{{12, 60, false}, {1, 60, false}},
			at: 12.5, wantFirst: 12, wantN: 1, wantBytes: 60},
		{name: "out of order within the lead-in", pkts: []pk{{8, 60, false}, {6, 60, false}, {8.5, 60, false}},
			at: 9, wantFirst: 6, wantN: 3, wantBytes: 180},
		{name: "a packet after the anomaly's time", pkts: []pk{{4, 60, false}, {9.9, 60, false}},
			at: 9.5, wantFirst: 4, wantN: 1, wantBytes: 60},
		{name: "before 1970", base: -1, pkts: []pk{{-3.5, 60, false}, {-1.2, 60, false}},
			at: -0.5, wantFirst: -3.5, wantN: 2, wantBytes: 120},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := sec
			if tc.base == -1 {
				at = func(s float64) int64 { return int64(math.Round(s * 1e9)) }
			}
			lt := newLeadTable(1, DefaultLeadIn)
			for _, q := range tc.pkts {
				p := leadPacket("10.99.0.7", at(q.at), q.len)
				e := lt.entry(&p)
				e.add(lt, p.TimestampNs, uint32(p.Length))
				if q.anom {
					e.markAnomalous(lt, p.TimestampNs)
				}
			}
			p := leadPacket("10.99.0.7", at(tc.at), 60)
			first, n, b := lt.entry(&p).lead(lt, p.TimestampNs)
			if tc.noLeadWant {
				if n != 0 || b != 0 {
					t.Fatalf("lead-in of %d packets (%d bytes) from %d, want none", n, b, first)
				}
				return
			}
			if first != at(tc.wantFirst) || n != tc.wantN || b != tc.wantBytes {
				t.Fatalf("lead-in %d packets, %d bytes from %d; want %d, %d from %d",
					n, b, first, tc.wantN, tc.wantBytes, at(tc.wantFirst))
			}
		})
	}
}

// TestLeadTableLongest: with the longest lead-in the options allow, the
// slot before the whole slots would begin more than sdk.MaxLeadIn before the
// anomaly; it is left out, so the agent never refuses a lead-in.
func TestLeadTableLongest(t *testing.T) {
	d := New(slog.New(slog.DiscardHandler), Options{LeadIn: time.Hour})
	if d.opts.LeadIn != sdk.MaxLeadIn {
		t.Fatalf("LeadIn %s, want it cut to %s", d.opts.LeadIn, sdk.MaxLeadIn)
	}
	lt := d.lead
	// 30 s slots; t0 + 1000 s starts one, so an anomaly at 1020 s has its
	// ten whole slots from 720 s and the partial one from 700 s: the
	// packets at 710 s and 721 s share that slot, which begins 310 s
	// before the anomaly and is left out whole.
	ts := sec(1020)
	for _, at := range []float64{710, 721, 960} {
		p := leadPacket("10.99.0.7", sec(at), 60)
		lt.entry(&p).add(lt, p.TimestampNs, 60)
	}
	p := leadPacket("10.99.0.7", ts, 60)
	first, n, _ := lt.entry(&p).lead(lt, ts)
	g := sdk.Aggregate{FirstNs: ts, LeadFirstNs: first, LeadCount: n, LeadBytes: 60 * n}
	if n != 1 || first != sec(960) || !g.ValidLead() {
		t.Fatalf("lead-in of %d packets from %s before", n, time.Duration(ts-first))
	}
}

// TestLeadTableSaturates: a slot's counters stop at their maximum instead
// of wrapping.
func TestLeadTableSaturates(t *testing.T) {
	lt := newLeadTable(1, DefaultLeadIn)
	p := leadPacket("10.99.0.7", sec(1), 65535)
	e := lt.entry(&p)
	e.slots[uint64(lt.slotOf(p.TimestampNs))%leadRing] = leadSlot{idx: lt.slotOf(p.TimestampNs), first: p.TimestampNs,
		pkts: ^uint32(0) - 1, bytes: ^uint32(0) - 100}
	for range 3 {
		e.add(lt, p.TimestampNs, 65535)
	}
	_, n, b := e.lead(lt, sec(1.5))
	if n != uint64(^uint32(0)) || b != uint64(^uint32(0)) {
		t.Fatalf("saturated slot: %d packets, %d bytes", n, b)
	}
}

// TestLeadTableBounded: the table never grows; sources beyond a set's ways
// replace the least recently seen, and only the replacement of a source
// seen within the lead-in counts as an eviction.
func TestLeadTableBounded(t *testing.T) {
	lt := newLeadTable(1, DefaultLeadIn)
	n0 := len(lt.tags)
	for i := range 200_000 {
		a := netip.AddrFrom4([4]byte{10, 99, byte(i >> 8), byte(i)})
		p := leadPacket(a.String(), sec(float64(i)/100_000), 60) // two seconds
		lt.entry(&p).add(lt, p.TimestampNs, 60)
	}
	if len(lt.tags) != n0 || len(lt.entries) != n0 {
		t.Fatalf("table grew from %d to %d/%d entries", n0, len(lt.tags), len(lt.entries))
	}
	// 65,536 distinct sources (the address wraps) into 4,096 entries.
	if lt.evicted < 60_000 {
		t.Fatalf("%d evictions counted for 65,536 recent sources in %d entries", lt.evicted, n0)
	}
	// Sources last seen long ago are replaced first, and without counting:
	// every insertion below replaces one entry, and exactly those that
	// replace a recent one count.
	stale := func() (n int) {
		for i := range lt.tags {
			if lt.tags[i].lastNs < sec(1000) {
				n++
			}
		}
		return n
	}
	before, staleBefore := lt.evicted, stale()
	for i := range 4 * n0 {
		a := netip.AddrFrom4([4]byte{10, 98, byte(i >> 8), byte(i)})
		p := leadPacket(a.String(), sec(1000+float64(i)/1e6), 60)
		lt.entry(&p).add(lt, p.TimestampNs, 60)
	}
	replacedStale := staleBefore - stale()
	if got := lt.evicted - before; got != uint64(4*n0-replacedStale) || replacedStale < n0/2 {
		t.Fatalf("%d evictions counted for %d insertions of which %d replaced stale entries", got, 4*n0, replacedStale)
	}
}

// aggregateScores runs d.aggregate over pkts in chunks of the given sizes
// (repeated), with the given per-packet score/threshold ratios of one
// netflow model (threshold 1), and returns every anomaly.
func aggregateScores(d *Detector, pkts []event.Packet, ratios []float32, sizes []int) []sdk.Anomaly {
	const s = slotNetflow
	m := &model{thr: 1, names: nffeat.Names(), ctxVer: "1",
		info: sdk.ModelInfo{Name: "netflow", Version: 1, Digest: "sha256:ab", FeatureSet: nffeat.Name}}
	loaded := [nslots]*model{s: m}
	d.dims[s] = nffeat.Dim
	d.con[s] = make([]float32, d.opts.MaxBatch*nffeat.Dim)
	var res sdk.Result
	for off, k := 0, 0; off < len(pkts); k++ {
		n := min(sizes[k%len(sizes)], len(pkts)-off, d.opts.MaxBatch)
		for i := range n {
			d.rsc[s*d.opts.MaxBatch+i] = ratios[off+i]
			d.ratio[i], d.which[i] = ratios[off+i], s
			d.con[s][i*nffeat.Dim] = ratios[off+i]
		}
		clear(d.claim[:n])
		d.aggregate(pkts[off:off+n], off, &loaded, &res)
		off += n
	}
	return res.Anomalies
}

// TestAggregateLeadIn: the anomaly that opens a source's window carries the
// source's packets of the lead-in before it (and no other anomaly does),
// whatever the batches; the agent's finding and its summary carry it; a
// second window's lead-in does not reach back into the first's anomalies;
// other sources' packets do not count; LeadIn < 0 turns it off.
func TestAggregateLeadIn(t *testing.T) {
	var pkts []event.Packet
	var ratios []float32
	add := func(src string, at float64, r float32) {
		pkts = append(pkts, leadPacket(src, sec(at), 100))
		ratios = append(ratios, r)
	}
	// 10.99.0.7: benign packets every half second from 0 s; anomalies at
	// 15.0-15.2 s (window 1, lead-in from 5 s: 20 packets); benign again
	// until 50 s; anomalies at 50.25 s and 79 s (window 2, from 50.25 s:
	// lead-in from 40 s, 21 packets); anomalies at 81 s (window 3: its
	// lead-in stops at the slot of 79 s: the packets at 80 and 80.5 s).
	// 10.99.0.8 sends benign packets all along (not in anyone's lead-in).
	for i := range 30 {
		add("10.99.0.7", float64(i)*0.5, 0.2)
		add("10.99.0.8", float64(i)*0.5+0.1, 0.2)
	}
	for _, at := range []float64{15, 15.1, 15.2} {
		add("10.99.0.7", at, 5)
	}
	for i := range 70 {
		add("10.99.0.7", 15.5+float64(i)*0.5, 0.3)
	}
	add("10.99.0.7", 50.25, 4)
	for i := range 57 {
		add("10.99.0.7", 50.5+float64(i)*0.5, 0.3)
	}
	add("10.99.0.7", 79, 4)
	add("10.99.0.7", 79.2, 0.3)
	add("10.99.0.7", 80, 0.3)
	add("10.99.0.7", 80.5, 0.3)
	add("10.99.0.7", 81, 6)
	type want struct {
		first     float64
		pkts      uint64
		leadFirst float64
		leadPkts  uint64
	}
	wants := []want{{15, 3, 5, 20}, {50.25, 2, 40, 21}, {81, 1, 80, 2}}
	for _, sizes := range [][]int{{4096}, {1}, {7, 3, 50}} {
		d := New(slog.New(slog.DiscardHandler), Options{MaxBatch: 64})
		as := aggregateScores(d, pkts, ratios, sizes)
		var leads []sdk.Anomaly
		for _, a := range as {
			if g := a.Aggregate; g.LeadCount > 0 || g.LeadFirstNs != 0 || g.LeadBytes != 0 {
				leads = append(leads, a)
			}
		}
		if len(leads) != len(wants) {
			t.Fatalf("batches %v: %d anomalies with a lead-in, want %d", sizes, len(leads), len(wants))
		}
		for i, w := range wants {
			g := leads[i].Aggregate
			if g.FirstNs != sec(w.first) || g.LeadFirstNs != sec(w.leadFirst) || g.LeadCount != w.leadPkts ||
				g.LeadBytes != 100*w.leadPkts || !g.ValidLead() {
				t.Fatalf("batches %v: window %d: first %+.2f s, lead-in %d packets (%d bytes) from %+.2f s; want %+.2f s, %d from %+.2f s",
					sizes, i+1, float64(g.FirstNs-t0)/1e9, g.LeadCount, g.LeadBytes, float64(g.LeadFirstNs-t0)/1e9,
					w.first, w.leadPkts, w.leadFirst)
			}
		}

		// The agent's findings carry them.
		fs, _ := findings(as, 30*time.Second)
		if len(fs) != len(wants) {
			t.Fatalf("batches %v: %d findings, want %d", sizes, len(fs), len(wants))
		}
		for i, w := range wants {
			f := fs[i]
			if f.LeadInUnixNano != sec(w.leadFirst) || f.LeadInPackets != w.leadPkts || f.Packets != w.pkts ||
				f.FirstSeenUnixNano != sec(w.first) || !wirev1.ValidLeadIn(f) {
				t.Fatalf("batches %v: finding %d: %v", sizes, i+1, f)
			}
			if !strings.Contains(f.Summary, "; active since ") || !strings.HasSuffix(f.Summary, fmt.Sprintf(" before (%d earlier packets)", w.leadPkts)) {
				t.Fatalf("batches %v: summary %q", sizes, f.Summary)
			}
		}
	}

	d := New(slog.New(slog.DiscardHandler), Options{MaxBatch: 64, LeadIn: -1})
	if d.lead != nil {
		t.Fatal("LeadIn < 0: a lead table")
	}
	for _, a := range aggregateScores(d, pkts, ratios, []int{64}) {
		if a.Aggregate.LeadCount != 0 {
			t.Fatalf("LeadIn < 0: an anomaly with a lead-in: %+v", a.Aggregate)
		}
	}
	if h := New(slog.New(slog.DiscardHandler), Options{}).Health(t.Context()); h.Stats["lead_evictions"] != 0 {
		t.Fatalf("a new detector reports %d lead evictions", h.Stats["lead_evictions"])
	}
}
