package netflow

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

const sec = int64(1e9)

var (
	macA = [6]byte{0x02, 0, 0, 0, 0, 0xa}
	macB = [6]byte{0x02, 0, 0, 0, 0, 0xb}
	macC = [6]byte{0x02, 0, 0, 0, 0, 0xc}
	ipA  = netip.MustParseAddr("10.99.0.1")
	ipB  = netip.MustParseAddr("10.99.0.2")
	ipC  = netip.MustParseAddr("fd00::3")
	ipD  = netip.MustParseAddr("fd00::4")
)

func pkt(t int64, smac, dmac [6]byte, src, dst netip.Addr, proto uint8, sport, dport, size uint16) event.Packet {
	p := event.Packet{TimestampNs: t, SrcMAC: smac, DstMAC: dmac, Proto: proto, SrcPort: sport, DstPort: dport, Length: size, TTL: 64}
	p.SetSrc(src)
	p.SetDst(dst)
	if src.Is4() {
		p.Flags = event.FlagIPv4
	} else {
		p.Flags = event.FlagIPv6
	}
	return p
}

// feature returns the value of a named feature.
func feature(t *testing.T, out []float32, name string) float64 {
	t.Helper()
	for i, n := range names {
		if n == name {
			return float64(out[i])
		}
	}
	t.Fatalf("no feature %q", name)
	return 0
}

func near(a, b float64) bool {
	return math.Abs(a-b) <= 1e-5*math.Max(1, math.Abs(b))
}

func TestNames(t *testing.T) {
	n := Names()
	if len(n) != Dim {
		t.Fatalf("len(Names()) = %d, want %d", len(n), Dim)
	}
	seen := map[string]bool{}
	for _, s := range n {
		if seen[s] {
			t.Fatalf("duplicate name %q", s)
		}
		seen[s] = true
	}
	for i, want := range map[int]string{0: "MI_dir_L5_weight", 14: "MI_dir_L0.01_std", 15: "H_L5_weight",
		30: "HH_L5_weight", 33: "HH_L5_magnitude", 34: "HH_L5_radius", 35: "HH_L5_covariance", 36: "HH_L5_pcc",
		65: "HH_jit_L5_weight", 80: "HpHp_L5_weight", 114: "HpHp_L0.01_pcc"} {
		if n[i] != want {
			t.Errorf("Names()[%d] = %q, want %q", i, n[i], want)
		}
	}
}

// TestHandComputed checks values worked out from the definitions (damped
// sums CF1, CF2 and weight w, decay 2^(-λΔt)), independently of the
// Welford form the code uses.
func TestHandComputed(t *testing.T) {
	out := make([]float32, Dim)

	t.Run("1D two packets", func(t *testing.T) {
		e := New(Config{})
		p := pkt(10*sec, macA, macB, ipA, ipB, event.ProtoUDP, 1000, 53, 100)
		e.Extract(&p, out)
		p = pkt(11*sec, macA, macB, ipA, ipB, event.ProtoUDP, 1000, 53, 200)
		e.Extract(&p, out)
		for i, lam := range lambdas {
			f := math.Exp2(-lam * 1)
			w := 1*f + 1
			cf1 := 100*f + 200
			cf2 := 100*100*f + 200*200
			mean := cf1 / w
			std := math.Sqrt(cf2/w - mean*mean)
			l := lambdaLabels[i]
			for _, g := range []string{"MI_dir", "H", "HH", "HpHp"} {
				for stat, want := range map[string]float64{"weight": w, "mean": mean, "std": std} {
					name := g + "_L" + l + "_" + stat
					if got := feature(t, out, name); !near(got, want) {
						t.Errorf("%s = %v, want %v", name, got, want)
					}
				}
			}
		}
		// λ=1 by hand: w = 1.5, mean = 250/1.5, std = sqrt(45000/1.5 - mean²).
		if got := feature(t, out, "MI_dir_L1_mean"); !near(got, 166.66667) {
			t.Errorf("MI_dir_L1_mean = %v, want 166.66667", got)
		}
		if got := feature(t, out, "MI_dir_L1_std"); !near(got, 47.140452) {
			t.Errorf("MI_dir_L1_std = %v, want 47.140452", got)
		}
	})

	t.Run("2D covariance", func(t *testing.T) {
		// Same timestamp: no decay. A->B 100, B->A 300, A->B 200, B->A 500.
		// Residuals: A 0 then 50; B 0 then 100; cf3 = 100·50 = 5000, w3 = 4.
		e := New(Config{})
		seq := []event.Packet{
			pkt(5*sec, macA, macB, ipA, ipB, event.ProtoTCP, 40000, 80, 100),
			pkt(5*sec, macB, macA, ipB, ipA, event.ProtoTCP, 80, 40000, 300),
			pkt(5*sec, macA, macB, ipA, ipB, event.ProtoTCP, 40000, 80, 200),
			pkt(5*sec, macB, macA, ipB, ipA, event.ProtoTCP, 80, 40000, 500),
		}
		for i := range seq {
			e.Extract(&seq[i], out)
		}
		for _, g := range []string{"HH", "HpHp"} {
			for _, l := range lambdaLabels {
				for stat, want := range map[string]float64{"weight": 2, "mean": 400, "std": 100,
					"magnitude": math.Sqrt(400*400 + 150*150), "radius": math.Sqrt(10000*10000 + 2500*2500),
					"covariance": 1250, "pcc": 0.25} {
					name := g + "_L" + l + "_" + stat
					if got := feature(t, out, name); !near(got, want) {
						t.Errorf("%s = %v, want %v", name, got, want)
					}
				}
			}
		}
	})

	t.Run("jitter", func(t *testing.T) {
		// A->B at 0, 1 s, 3 s: inter-arrival values 0, 1, 2.
		e := New(Config{})
		for _, ts := range []int64{0, 1 * sec, 3 * sec} {
			p := pkt(ts, macA, macB, ipA, ipB, event.ProtoICMP, 8, 0, 98)
			e.Extract(&p, out)
		}
		for i, lam := range lambdas {
			f1, f2 := math.Exp2(-lam*1), math.Exp2(-lam*2)
			w := (1*f1+1)*f2 + 1
			cf1 := (0*f1+1)*f2 + 2
			cf2 := (0*f1+1)*f2 + 4
			mean := cf1 / w
			std := math.Sqrt(cf2/w - mean*mean)
			l := lambdaLabels[i]
			for stat, want := range map[string]float64{"weight": w, "mean": mean, "std": std} {
				name := "HH_jit_L" + l + "_" + stat
				if got := feature(t, out, name); !near(got, want) {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
			}
		}
	})
}

// goldenSequence is a small crafted capture: a TCP handshake and exchange,
// DNS over UDP, ICMP echo, IPv6 TCP, ARP, a non-IP frame, a fragment, a
// repeated and an out-of-order timestamp.
func goldenSequence() []event.Packet {
	ms := int64(1e6)
	t0 := int64(1_700_000_000) * sec
	arp := event.Packet{TimestampNs: t0 + 900*ms, SrcMAC: macA, DstMAC: [6]byte{255, 255, 255, 255, 255, 255},
		Length: 42, Flags: event.FlagARP, DstPort: 1}
	arp.SetSrc(ipA)
	arp.SetDst(ipB)
	lldp := event.Packet{TimestampNs: t0 + 950*ms, SrcMAC: macC, DstMAC: [6]byte{1, 0x80, 0xc2, 0, 0, 0xe}, Length: 60}
	frag := pkt(t0+1200*ms, macA, macB, ipA, ipB, event.ProtoUDP, 0, 0, 1514)
	frag.Flags |= event.FlagFragment
	syn := pkt(t0, macA, macB, ipA, ipB, event.ProtoTCP, 40000, 80, 74)
	syn.TCPFlags = event.TCPSyn
	return []event.Packet{
		syn,
		pkt(t0+1*ms, macB, macA, ipB, ipA, event.ProtoTCP, 80, 40000, 74),
		pkt(t0+2*ms, macA, macB, ipA, ipB, event.ProtoTCP, 40000, 80, 66),
		pkt(t0+3*ms, macA, macB, ipA, ipB, event.ProtoTCP, 40000, 80, 140),
		pkt(t0+20*ms, macB, macA, ipB, ipA, event.ProtoTCP, 80, 40000, 1514),
		pkt(t0+20*ms, macB, macA, ipB, ipA, event.ProtoTCP, 80, 40000, 1514),
		pkt(t0+21*ms, macA, macB, ipA, ipB, event.ProtoTCP, 40000, 80, 66),
		pkt(t0+100*ms, macA, macB, ipA, ipB, event.ProtoUDP, 53000, 53, 80),
		pkt(t0+130*ms, macB, macA, ipB, ipA, event.ProtoUDP, 53, 53000, 200),
		pkt(t0+500*ms, macA, macB, ipA, ipB, event.ProtoICMP, 8, 0, 98),
		pkt(t0+501*ms, macB, macA, ipB, ipA, event.ProtoICMP, 0, 0, 98),
		pkt(t0+600*ms, macC, macB, ipC, ipD, event.ProtoTCP, 50000, 443, 94),
		pkt(t0+640*ms, macB, macC, ipD, ipC, event.ProtoTCP, 443, 50000, 90),
		arp,
		lldp,
		frag,
		pkt(t0+1100*ms, macA, macB, ipA, ipB, event.ProtoTCP, 40000, 80, 66), // out of order
		pkt(t0+5000*ms, macA, macB, ipA, ipB, event.ProtoTCP, 40000, 80, 66),
	}
}

func TestGolden(t *testing.T) {
	seq := goldenSequence()
	e := New(Config{})
	out := make([]float32, Dim)
	var b strings.Builder
	for i := range seq {
		e.Extract(&seq[i], out)
		for j, v := range out {
			fmt.Fprintf(&b, "%d %s %s\n", i, names[j], strconv.FormatFloat(float64(v), 'g', 9, 32))
		}
	}
	path := filepath.Join("testdata", "golden.txt")
	if *update {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open golden file (run go test -update to create it): %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	got := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	n := 0
	for sc.Scan() {
		if n >= len(got) {
			t.Fatalf("golden file has more lines than the output (%d)", len(got))
		}
		wf, gf := strings.Fields(sc.Text()), strings.Fields(got[n])
		n++
		if len(wf) != 3 || len(gf) != 3 || wf[0] != gf[0] || wf[1] != gf[1] {
			t.Fatalf("line %d: got %q, want %q", n, got[n-1], sc.Text())
		}
		w, _ := strconv.ParseFloat(wf[2], 64)
		g, _ := strconv.ParseFloat(gf[2], 64)
		if math.Abs(w-g) > 1e-5*math.Max(1, math.Abs(w)) {
			t.Errorf("packet %s %s = %v, want %v", gf[0], gf[1], g, w)
		}
	}
	if n != len(got) {
		t.Fatalf("golden file has %d lines, output %d", n, len(got))
	}
}

func TestDeterministic(t *testing.T) {
	pk := benignWorkload(20000)
	a, b := New(Config{MaxSockets: 256, MaxChannels: 64, MaxHosts: 64}), New(Config{MaxSockets: 256, MaxChannels: 64, MaxHosts: 64})
	oa, ob := make([]float32, Dim), make([]float32, Dim)
	for i := range pk {
		a.Extract(&pk[i], oa)
		b.Extract(&pk[i], ob)
		for j := range oa {
			if math.Float32bits(oa[j]) != math.Float32bits(ob[j]) {
				t.Fatalf("packet %d feature %s: %v != %v", i, names[j], oa[j], ob[j])
			}
		}
	}
}

func TestBoundedState(t *testing.T) {
	e := New(Config{MaxSockets: 1024, MaxChannels: 64, MaxHosts: 64})
	out := make([]float32, Dim)
	for i, p := range portScan(200000) {
		e.Extract(&p, out)
		if i%50000 == 0 {
			for _, v := range out {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("non-finite feature at packet %d", i)
				}
			}
		}
	}
	st := e.Stats()
	hp := st.Tables[3]
	if hp.Entries > hp.Capacity || hp.Capacity != 1024 {
		t.Fatalf("HpHp table: %+v", hp)
	}
	if hp.Evictions == 0 {
		t.Fatalf("a 200k-port scan into 1024 slots evicted nothing: %+v", hp)
	}
	if hp.EntryBytes > 300 {
		t.Errorf("socket-pair state is %d bytes per flow, target <= 300", hp.EntryBytes)
	}
	t.Logf("stats: %+v", st)
}

func TestZeroAllocs(t *testing.T) {
	e := New(Config{})
	out := make([]float32, Dim)
	pk := benignWorkload(4096)
	i := 0
	allocs := testing.AllocsPerRun(10000, func() {
		e.Extract(&pk[i%len(pk)], out)
		i++
	})
	if allocs != 0 {
		t.Fatalf("Extract allocates %v times per packet", allocs)
	}
}

func TestZeroAllocsBatch(t *testing.T) {
	e := New(Config{})
	pk := benignWorkload(4096)
	out := make([]float32, 64*Dim)
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		j := i % (len(pk) / 64) * 64
		e.ExtractBatch(pk[j:j+64], out)
		i++
	})
	if allocs != 0 {
		t.Fatalf("ExtractBatch allocates %v times per call", allocs)
	}
}

// TestFiniteOnOddInput feeds extreme records: all features must stay finite.
func TestFiniteOnOddInput(t *testing.T) {
	e := New(Config{MaxSockets: 64, MaxChannels: 16, MaxHosts: 16})
	out := make([]float32, Dim)
	times := []int64{0, math.MaxInt64, math.MinInt64, 1, -5, math.MaxInt64 - 1, 0}
	for i, ts := range times {
		for _, size := range []uint16{0, 65535} {
			p := pkt(ts, macA, macB, ipA, ipB, uint8(i), uint16(i), 80, size)
			e.Extract(&p, out)
			for j, v := range out {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("time %d size %d: %s = %v", ts, size, names[j], v)
				}
			}
		}
	}
}

func FuzzExtract(f *testing.F) {
	var b [event.PacketRecordSize * 2]byte
	seq := goldenSequence()
	seq[0].Marshal(b[:])
	seq[1].Marshal(b[event.PacketRecordSize:])
	f.Add(b[:])
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := Config{MaxSockets: 16, MaxChannels: 8, MaxHosts: 8}
		e := New(cfg)
		out := make([]float32, Dim)
		var pk []event.Packet
		var want []float32
		for len(data) >= event.PacketRecordSize {
			var p event.Packet
			if err := p.Unmarshal(data); err != nil {
				t.Fatal(err)
			}
			data = data[event.PacketRecordSize:]
			e.Extract(&p, out)
			for j, v := range out {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("%s = %v", names[j], v)
				}
			}
			pk = append(pk, p)
			want = append(want, out...)
		}
		// ExtractBatch computes the same features, bit for bit.
		got := make([]float32, len(pk)*Dim)
		New(cfg).ExtractBatch(pk, got)
		for j := range got {
			if math.Float32bits(got[j]) != math.Float32bits(want[j]) {
				t.Fatalf("packet %d %s: ExtractBatch %v, Extract %v", j/Dim, names[j%Dim], got[j], want[j])
			}
		}
	})
}

// benignWorkload is a synthetic mix: 200 client hosts talking to 20
// servers over short TCP and UDP flows, 100 µs apart on average.
func benignWorkload(n int) []event.Packet {
	pk := make([]event.Packet, n)
	var x uint64 = 88172645463325252
	rnd := func() uint64 { x ^= x << 13; x ^= x >> 7; x ^= x << 17; return x }
	t := int64(1_700_000_000) * sec
	for i := range pk {
		r := rnd()
		cli := uint32(r % 200)
		srv := uint32(r>>8) % 20
		flow := uint16(r>>16) % 8
		var c4, s4 [4]byte
		binary.BigEndian.PutUint32(c4[:], 0x0a630000|cli)
		binary.BigEndian.PutUint32(s4[:], 0x0a63ff00|srv)
		cmac := [6]byte{2, 0, 0, 0, byte(cli >> 8), byte(cli)}
		smac := [6]byte{2, 1, 0, 0, 0, byte(srv)}
		proto, dport := event.ProtoTCP, uint16(443)
		if srv%4 == 0 {
			proto, dport = event.ProtoUDP, 53
		}
		size := uint16(60 + r>>32%1400)
		t += int64(r>>48%200) * 1000
		if r&1 == 0 {
			pk[i] = pkt(t, cmac, smac, netip.AddrFrom4(c4), netip.AddrFrom4(s4), proto, 40000+flow, dport, size)
		} else {
			pk[i] = pkt(t, smac, cmac, netip.AddrFrom4(s4), netip.AddrFrom4(c4), proto, dport, 40000+flow, size)
		}
	}
	return pk
}

// portScan is one source sending SYNs to every port of one host, over and
// over, 10 µs apart.
func portScan(n int) []event.Packet {
	pk := make([]event.Packet, n)
	t := int64(1_700_000_000) * sec
	for i := range pk {
		t += 10_000
		pk[i] = pkt(t, macA, macB, ipA, ipB, event.ProtoTCP, 61000, uint16(i%65536), 58)
		pk[i].TCPFlags = event.TCPSyn
	}
	return pk
}

func benchmarkExtract(b *testing.B, pk []event.Packet) {
	e := New(Config{})
	out := make([]float32, Dim)
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.Extract(&pk[i%len(pk)], out)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	st := e.Stats()
	b.ReportMetric(float64(st.Tables[3].EntryBytes), "B/flow")
}

func BenchmarkExtractBenign(b *testing.B)   { benchmarkExtract(b, benignWorkload(1<<16)) }
func BenchmarkExtractPortScan(b *testing.B) { benchmarkExtract(b, portScan(1<<17)) }

// benchmarkExtractBatch is benchmarkExtract with ExtractBatch over runs of
// 256 packets (ns/op is per packet).
func benchmarkExtractBatch(b *testing.B, pk []event.Packet) {
	const run = 256
	e := New(Config{})
	out := make([]float32, run*Dim)
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i += run {
		j := i % len(pk)
		e.ExtractBatch(pk[j:j+min(run, b.N-i, len(pk)-j)], out)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

func BenchmarkExtractBatchBenign(b *testing.B)   { benchmarkExtractBatch(b, benignWorkload(1<<16)) }
func BenchmarkExtractBatchPortScan(b *testing.B) { benchmarkExtractBatch(b, portScan(1<<17)) }

// cpuTime is the process's user+system CPU time: on a shared, loaded
// machine it tells more than the wall clock that ns/op measures.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
