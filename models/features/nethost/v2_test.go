package nethost

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// featByName returns the feature called name from out, a vector of any
// nethost version (each version's names begin with the previous one's).
func featByName(t *testing.T, out []float32, name string) float64 {
	t.Helper()
	for i, n := range NamesV7()[:len(out)] {
		if n == name {
			return float64(out[i])
		}
	}
	t.Fatalf("no feature %q", name)
	return 0
}

// TestFeaturesV2: Raw.Features computes every nethost/v2 feature as
// Raw.Feature does, on values no extractor produces too.
func TestFeaturesV2(t *testing.T) {
	vals := []float64{0, math.Copysign(0, -1), -1, 5e-324, 1e-20, 0.5, 1, 3.5, 182, 1e30, math.MaxFloat64,
		math.Inf(1), math.Inf(-1), math.NaN()}
	out := make([]float32, DimV2)
	for _, x := range vals {
		var r Raw
		for j := range r {
			r[j] = x
		}
		r.Features(out)
		for j := range out {
			if want := r.Feature(j); math.Float32bits(out[j]) != math.Float32bits(want) {
				t.Errorf("Features(%v)[%s] = %v, Feature %v", x, NamesV2()[j], out[j], want)
			}
		}
	}
}

func TestNamesV2(t *testing.T) {
	n := NamesV2()
	if len(n) != DimV2 || n[Dim-1] != "host_short_conn_rate" || n[Dim] != "host_L0.1_icmp_size" || n[DimV2-1] != "sensor_new_src_rate" {
		t.Fatalf("NamesV2() = %v", n)
	}
	if e := New(Config{V2: true}); e.Dim() != DimV2 || e.Name() != NameV2 {
		t.Fatalf("v2 extractor: Dim %d Name %s", e.Dim(), e.Name())
	}
	if e := New(Config{}); e.Dim() != Dim || e.Name() != Name {
		t.Fatalf("v1 extractor: Dim %d Name %s", e.Dim(), e.Name())
	}
	for j, want := range []bool{false, true, true} {
		if IsLog(Dim+j) != want {
			t.Errorf("IsLog(%s) = %v", n[Dim+j], !want)
		}
	}
}

// TestV2Prefix: nethost/v2's first Dim features (and raw values) are
// nethost/v1's bit for bit, on random traffic and on the mixed sequence;
// a v1 extractor leaves the v2 raw values zero.
func TestV2Prefix(t *testing.T) {
	for _, c := range []struct {
		name string
		pk   []event.Packet
		cfg  Config
	}{
		{"random", randomPackets(100_000, 3), Config{HashSeed: 5}},
		{"random, 16 hosts, 8 pairs", randomPackets(50_000, 4), Config{MaxHosts: 16, MaxPairs: 8, HashSeed: 6}},
		{"rawTestPackets", rawTestPackets(), Config{HashSeed: 7}},
	} {
		v1c, v2c := c.cfg, c.cfg
		v2c.V2 = true
		samePrefix(t, c.name, c.pk, New(v1c), New(v2c), false)
	}
}

// samePrefix runs pk through a and b, whose version extends a's, and fails
// unless b's first a.Dim() raw values and features equal a's bit for bit,
// a leaves its raw values up to b.Dim() zero, and every feature of b is
// finite (and not negative, if nonneg). It returns the packets for which b
// has a nonzero raw value beyond a's.
func samePrefix(t *testing.T, name string, pk []event.Packet, a, b *Extractor, nonneg bool) (extra int) {
	t.Helper()
	da, db := a.Dim(), b.Dim()
	va, vb := make([]float32, da), make([]float32, db)
	var ra, rb Raw
	for j := range ra {
		ra[j] = 42 // must be cleared
	}
	for i := range pk {
		p := pk[i]
		a.ExtractRaw(&p, &ra)
		b.ExtractRaw(&p, &rb)
		for j := range da {
			if math.Float64bits(ra[j]) != math.Float64bits(rb[j]) {
				t.Fatalf("%s: packet %d raw %s: %s %v, %s %v", name, i, NamesV7()[j], a.Name(), ra[j], b.Name(), rb[j])
			}
		}
		for j := da; j < db; j++ {
			if ra[j] != 0 {
				t.Fatalf("%s: %s raw[%d] = %v, want 0", name, a.Name(), j, ra[j])
			}
			if rb[j] != 0 {
				extra++
				break
			}
		}
		ra.Features(va)
		rb.Features(vb)
		for j := range da {
			if math.Float32bits(va[j]) != math.Float32bits(vb[j]) {
				t.Fatalf("%s: packet %d feature %s: %s %v, %s %v", name, i, NamesV7()[j], a.Name(), va[j], b.Name(), vb[j])
			}
		}
		for j, x := range vb {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) || (nonneg && x < 0) {
				t.Fatalf("%s: packet %d feature %d = %v", name, i, j, x)
			}
		}
	}
	return extra
}

// syn is a TCP SYN from src port sport to dst:443.
func syn(ts int64, src, dst netip.Addr, sport uint16) event.Packet {
	return pkt(ts, src, dst, event.ProtoTCP, sport, 443, 74, event.TCPSyn)
}

func TestBeacon(t *testing.T) {
	ipC := netip.MustParseAddr("10.99.0.3")
	type start struct {
		at  float64 // seconds
		dst netip.Addr
	}
	// every: n starts, intervals uniform in period ± jitter (fixed seed)
	every := func(n int, period, jitter float64) []start {
		rng := rand.New(rand.NewPCG(uint64(n), uint64(period*1000)))
		var s []start
		at := 10.0
		for range n {
			s = append(s, start{at: at, dst: ipB})
			at += period + jitter*(2*rng.Float64()-1)
		}
		return s
	}
	for _, c := range []struct {
		name     string
		starts   []start
		min, max float64 // bounds of host_beacon's run (expm1 of the feature) after the last start
	}{
		// n starts make n-1 intervals; the first sets the mean, so the run
		// is n-2
		{"every 2 s", every(30, 2, 0), 28, 28},
		{"every 10 s ± 0.5 s", every(20, 10, 0.5), 18, 18},
		{"every 2-3 s", every(30, 2.5, 0.5), 28, 28},
		{"every 1-5 s", every(30, 3, 2), 0, 3},
		{"one start", every(1, 2, 0), 0, 0},
		{"growing gaps", []start{{10, ipB}, {11, ipB}, {13, ipB}, {17, ipB}, {25, ipB}, {41, ipB}, {73, ipB}}, 0, 0},
		// parallel connections (under 0.5 s apart) neither count nor break
		{"bursts every 5 s", func() []start {
			var s []start
			for i := range 10 {
				s = append(s, start{10 + 5*float64(i), ipB}, start{10.1 + 5*float64(i), ipB}, start{10.2 + 5*float64(i), ipB})
			}
			return s
		}(), 8, 8},
		// a busy client connecting every 0.25-0.75 s for a minute: bursts
		// only, never a run (a scripted download loop)
		{"every 0.25-0.75 s", every(120, 0.5, 0.25), 0, 0},
		// a pause ends the run; the new period builds a new one
		// (a 32 s gap ends the run of 8 at once: the source's value, 8
		// at 28 s, has decayed over 41 s below the new run's 2)
		{"pause, then every 3 s", append(every(10, 2, 0), start{60, ipB}, start{63, ipB}, start{66, ipB}, start{69, ipB}), 2, 2},
		// one late start halves the run; the beacon goes on
		{"every 2 s, one late", append(every(10, 2, 0), start{31, ipB}, start{33, ipB}, start{35, ipB}), 6, 6}, // 8 → 4, then 5, 6
		// alternating destinations: each pair is regular on its own
		{"two servers", func() []start {
			var s []start
			for i := range 20 {
				s = append(s, start{10 + 4*float64(i), ipB}, start{12 + 4*float64(i), ipC})
			}
			return s
		}(), 18, 18},
	} {
		e := New(Config{V2: true})
		out := make([]float32, DimV2)
		for i, s := range c.starts {
			p := syn(int64(s.at*1e9), ipA, s.dst, uint16(40000+i))
			e.Extract(&p, out)
		}
		got := math.Expm1(featByName(t, out, "host_beacon"))
		if got < c.min-1e-4 || got > c.max+1e-4 {
			t.Errorf("%s: beacon run %v, want [%v, %v]", c.name, got, c.min, c.max)
		}
	}

	// The run decays (λ = 0.1) on the source's later packets, and a
	// responder's packets carry none.
	e := New(Config{V2: true})
	out := make([]float32, DimV2)
	for i, s := range every(11, 2, 0) {
		p := syn(int64(s.at*1e9), ipA, ipB, uint16(40000+i))
		e.Extract(&p, out)
	}
	p := pkt(int64(30e9), ipB, ipA, event.ProtoTCP, 443, 40010, 60, event.TCPSyn|event.TCPAck)
	e.Extract(&p, out)
	if b := featByName(t, out, "host_beacon"); b != 0 {
		t.Errorf("server's beacon = %v, want 0", b)
	}
	p = pkt(int64(40e9), ipA, ipB, event.ProtoTCP, 40010, 443, 60, event.TCPAck)
	e.Extract(&p, out)
	if got, want := math.Expm1(featByName(t, out, "host_beacon")), 9*0.5; math.Abs(got-want) > 1e-3 {
		t.Errorf("beacon 10 s after a run of 9 = %v, want %v", got, want)
	}
}

func TestNewSourceRate(t *testing.T) {
	// A SYN flood from 100 spoofed sources in 20 ms, against the same
	// SYNs from one source.
	spoofed, single := New(Config{V2: true}), New(Config{V2: true})
	o1, o2 := make([]float32, DimV2), make([]float32, DimV2)
	for i := range 100 {
		ts := 5*sec + int64(i)*200_000
		src := netip.AddrFrom4([4]byte{10, 99, byte(i >> 8), byte(10 + i)})
		p := syn(ts, src, ipB, 2000)
		spoofed.Extract(&p, o1)
		q := syn(ts, ipA, ipB, uint16(2000+i))
		single.Extract(&q, o2)
	}
	// 100 opens from new sources, decayed over 20 ms at λ = 1, as a rate,
	// less the one per second of normal churn
	got, want := featByName(t, o1, "sensor_new_src_rate"), math.Log1p(100*math.Ln2-1)
	if math.Abs(got-want) > 0.05 {
		t.Errorf("spoofed flood: sensor_new_src_rate %v, want about %v", got, want)
	}
	// one new source: 0.69 per second, below the floor
	if got := featByName(t, o2, "sensor_new_src_rate"); got != 0 {
		t.Errorf("one source: sensor_new_src_rate %v, want 0", got)
	}
	// The rate decays: 10 s later, a known source's packet sees none, and
	// the count is dropped once below the flush level (about 27 s).
	p := pkt(15*sec, ipA, ipB, event.ProtoTCP, 2000, 443, 60, event.TCPAck)
	spoofed.Extract(&p, o1)
	if got := featByName(t, o1, "sensor_new_src_rate"); got != 0 {
		t.Errorf("10 s after the flood: %v", got)
	}
	if spoofed.v2.newSrc == 0 {
		t.Errorf("count dropped after 10 s")
	}
	p.TimestampNs = 40 * sec
	spoofed.Extract(&p, o1)
	if spoofed.v2.newSrc != 0 {
		t.Errorf("count %v not dropped after 35 s", spoofed.v2.newSrc)
	}
	// Two new sources 100 ms apart: 1.3 per second, 0.3 above the floor.
	two := New(Config{V2: true})
	for i, ts := range []int64{sec, sec + sec/10} {
		p := syn(ts, netip.AddrFrom4([4]byte{10, 99, 3, byte(i)}), ipB, 2000)
		two.Extract(&p, o1)
	}
	if got, want := featByName(t, o1, "sensor_new_src_rate"), math.Log1p((1+math.Exp2(-0.1))*math.Ln2-1); math.Abs(got-want) > 1e-6 {
		t.Errorf("two new sources: %v, want %v", got, want)
	}
	// A new source whose first packet is not an open does not count.
	e := New(Config{V2: true})
	for i := range 50 {
		src := netip.AddrFrom4([4]byte{10, 99, 1, byte(i)})
		p := pkt(sec+int64(i)*1000, src, ipB, event.ProtoTCP, 443, 40000, 60, event.TCPSyn|event.TCPAck)
		e.Extract(&p, o1)
	}
	if got := featByName(t, o1, "sensor_new_src_rate"); got != 0 {
		t.Errorf("new responders: sensor_new_src_rate %v, want 0", got)
	}
}

func TestICMPSize(t *testing.T) {
	e := New(Config{V2: true})
	out := make([]float32, DimV2)
	p := pkt(sec, ipA, ipB, event.ProtoUDP, 40000, 53, 80, 0)
	e.Extract(&p, out)
	if got := featByName(t, out, "host_L0.1_icmp_size"); got != 0 {
		t.Errorf("no ICMP: icmp_size %v", got)
	}
	for i := range 4 {
		p := pkt(2*sec+int64(i)*sec, ipA, ipB, event.ProtoICMP, 8, 0, 182, 0)
		e.Extract(&p, out)
	}
	if got := featByName(t, out, "host_L0.1_icmp_size"); math.Abs(got-182) > 1e-3 {
		t.Errorf("echo requests of 182 bytes: icmp_size %v", got)
	}
	// replies are the responder's, not counted for it
	r := pkt(7*sec, ipB, ipA, event.ProtoICMP, 0, 0, 1000, 0)
	e.Extract(&r, out)
	if got := featByName(t, out, "host_L0.1_icmp_size"); got != 0 {
		t.Errorf("echo replier: icmp_size %v", got)
	}
}

func TestV2BoundedAndAllocs(t *testing.T) {
	e := New(Config{V2: true, MaxHosts: 64, MaxPairs: 64})
	out := make([]float32, DimV2)
	for i := range 10000 {
		dst := netip.AddrFrom4([4]byte{10, 99, byte(i >> 8), byte(i)})
		p := syn(int64(i)*sec/10, ipA, dst, uint16(i))
		e.Extract(&p, out)
	}
	if st := e.PairStats(); st.Entries > 64 || st.Evictions == 0 || st.Capacity != 64 {
		t.Fatalf("pair stats %+v", st)
	}
	if st := New(Config{}).PairStats(); st != (Stats{}) {
		t.Fatalf("v1 pair stats %+v", st)
	}
	p := syn(0, ipA, ipB, 1)
	if a := testing.AllocsPerRun(1000, func() { p.TimestampNs += sec; p.DstIP[15]++; e.Extract(&p, out) }); a != 0 {
		t.Fatalf("Extract allocates %v times", a)
	}
}

func FuzzExtractV2(f *testing.F) {
	var b [2 * event.PacketRecordSize]byte
	p := syn(sec, ipA, ipB, 1)
	p.Marshal(b[:])
	p.TimestampNs += 2 * sec
	p.Marshal(b[event.PacketRecordSize:])
	f.Add(b[:])
	f.Fuzz(func(t *testing.T, data []byte) {
		extractRecords(t, Config{V2: true, MaxHosts: 8, MaxPairs: 4}, data, func(v float32) bool { return v >= 0 })
	})
}
