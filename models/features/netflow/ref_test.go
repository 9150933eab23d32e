package netflow

import (
	"context"
	"errors"
	"io"
	"math"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/capture"
	"github.com/vigil-edge/vigil/models/features/netflow/internal/v1ref"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// diffStats compares features with those of the reference extractor.
type diffStats struct {
	n       int     // features compared
	exact   int     // bit-identical ones
	maxRel  float64 // max |a-b| / max(|a|, |b|) over pairs with max(|a|,|b|) >= relFloor
	maxAbs  float64 // max |a-b| over pairs below relFloor
	worst   string
	worstA  string
	relHist [4]int // rel diff > 1e-7, 1e-6, 1e-5, 1e-4
}

// relFloor: below it (float32's smallest normal number), values are
// compared by absolute difference.
const relFloor = 1e-38

func (d *diffStats) add(pkt int, a, b []float32) {
	for j := range a {
		d.n++
		x, y := float64(a[j]), float64(b[j])
		if math.Float32bits(a[j]) == math.Float32bits(b[j]) {
			d.exact++
			continue
		}
		m := math.Max(math.Abs(x), math.Abs(y))
		diff := math.Abs(x - y)
		if m < relFloor {
			if diff > d.maxAbs {
				d.maxAbs = diff
				d.worstA = names[j] + " at packet " + itoa(pkt) + ": " + ftoa(x) + " vs reference " + ftoa(y)
			}
			continue
		}
		r := diff / m
		for i, lim := range []float64{1e-7, 1e-6, 1e-5, 1e-4} {
			if r > lim {
				d.relHist[i]++
			}
		}
		if r > d.maxRel {
			d.maxRel = r
			d.worst = names[j] + " at packet " + itoa(pkt) + ": " + ftoa(x) + " vs reference " + ftoa(y)
		}
	}
}

func itoa(i int) string     { return strconv.Itoa(i) }
func ftoa(x float64) string { return strconv.FormatFloat(x, 'g', 9, 64) }

// compareRef runs both extractors over pkts (batch or per packet) and
// returns the differences.
func compareRef(pkts []event.Packet, first int, batch bool, d *diffStats, e *Extractor, r *v1ref.Extractor) {
	got := make([]float32, len(pkts)*Dim)
	if batch {
		e.ExtractBatch(pkts, got)
	} else {
		for i := range pkts {
			e.Extract(&pkts[i], got[i*Dim:(i+1)*Dim])
		}
	}
	want := make([]float32, Dim)
	for i := range pkts {
		r.Extract(&pkts[i], want)
		d.add(first+i, got[i*Dim:(i+1)*Dim], want)
	}
}

func refConfig(c Config) v1ref.Config {
	return v1ref.Config{MaxSockets: c.MaxSockets, MaxChannels: c.MaxChannels, MaxHosts: c.MaxHosts, HashSeed: c.HashSeed}
}

// TestMatchesReference checks the optimised extractor against a frozen
// copy of the straightforward one (internal/v1ref): same features within
// float32 rounding, per packet and in batches, with full and with tiny
// (evicting) tables.
func TestMatchesReference(t *testing.T) {
	// One connection per host pair, both directions (benignWorkload sends
	// each client's packets one way only): the channel and the socket
	// statistics are twins (computed once, see update).
	oneFlow := benignWorkload(30000)
	for i := range oneFlow {
		p := &oneFlow[i]
		p.Proto = event.ProtoTCP
		if p.SrcPort > p.DstPort {
			p.SrcPort = 40000
		} else {
			p.DstPort = 40000
		}
		if (i/3)%2 == 1 {
			p.SrcMAC, p.DstMAC, p.SrcIP, p.DstIP, p.SrcPort, p.DstPort = p.DstMAC, p.SrcMAC, p.DstIP, p.SrcIP, p.DstPort, p.SrcPort
		}
	}
	work := map[string][]event.Packet{
		"golden":  goldenSequence(),
		"benign":  benignWorkload(30000),
		"scan":    portScan(30000),
		"oneflow": oneFlow,
	}
	for name, pk := range work {
		for _, cfg := range []Config{{}, {MaxSockets: 64, MaxChannels: 16, MaxHosts: 16, HashSeed: 7}} {
			for _, batch := range []bool{false, true} {
				var d diffStats
				compareRef(pk, 0, batch, &d, New(cfg), v1ref.New(refConfig(cfg)))
				t.Logf("%s %+v batch=%v: %d features, %.4f%% bit-identical, max rel diff %.3g (%s), max abs diff below %g: %.3g",
					name, cfg, batch, d.n, 100*float64(d.exact)/float64(d.n), d.maxRel, d.worst, relFloor, d.maxAbs)
				if d.maxRel > 1e-6 || d.maxAbs > 1e-6 {
					t.Errorf("%s %+v batch=%v: features differ from the reference: max rel %.3g (%s), max abs %.3g",
						name, cfg, batch, d.maxRel, d.worst, d.maxAbs)
				}
			}
		}
	}
}

// TestMatchesReferencePcap is TestMatchesReference on a capture file
// (VIGIL_NETFLOW_REF_PCAP, e.g. the 1M-packet reference capture of the
// e2e benchmarks).
func TestMatchesReferencePcap(t *testing.T) {
	path := os.Getenv("VIGIL_NETFLOW_REF_PCAP")
	if path == "" {
		t.Skip("set VIGIL_NETFLOW_REF_PCAP to a capture")
	}
	src, err := capture.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	e, r := New(Config{}), v1ref.New(v1ref.Config{})
	var d diffStats
	buf := make([]event.Packet, 1024)
	total := 0
	for {
		k, err := src.Next(context.Background(), buf)
		compareRef(buf[:k], total, true, &d, e, r)
		total += k
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			break
		}
	}
	t.Logf("%d packets, %d features, %.4f%% bit-identical, max rel diff %.3g (%s); rel diff > 1e-7/1e-6/1e-5/1e-4: %v; max abs diff below %g: %.3g (%s)",
		total, d.n, 100*float64(d.exact)/float64(d.n), d.maxRel, d.worst, d.relHist, relFloor, d.maxAbs, d.worstA)
	if d.maxRel > 1e-6 {
		t.Errorf("max relative difference %.3g > 1e-6", d.maxRel)
	}
}

// capturePackets reads VIGIL_NETFLOW_REF_PCAP into memory, at most
// VIGIL_NETFLOW_REF_MAX packets if that is set.
func capturePackets(tb testing.TB) []event.Packet {
	limit, _ := strconv.Atoi(os.Getenv("VIGIL_NETFLOW_REF_MAX"))
	path := os.Getenv("VIGIL_NETFLOW_REF_PCAP")
	if path == "" {
		tb.Skip("set VIGIL_NETFLOW_REF_PCAP to a capture")
	}
	src, err := capture.OpenFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer src.Close()
	var all []event.Packet
	buf := make([]event.Packet, 1024)
	for {
		k, err := src.Next(context.Background(), buf)
		all = append(all, buf[:k]...)
		if limit > 0 && len(all) >= limit {
			return all[:limit]
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				tb.Fatal(err)
			}
			return all
		}
	}
}

// BenchmarkCapture compares, on a capture in memory, the reference
// extractor, Extract and ExtractBatch, interleaved run by run so that a
// shared machine's load affects them alike (cpu-ns per packet; features
// only, no reading or decoding). VIGIL_NETFLOW_BENCH_ONLY=ref, extract or
// batch runs only that one (for instruction counts under callgrind).
func BenchmarkCapture(b *testing.B) {
	pk := capturePackets(b)
	out := make([]float32, 1024*Dim)
	var cpu [3]time.Duration
	runs := 0
	only := map[string]int{"ref": 0, "extract": 1, "batch": 2}
	o, one := only[os.Getenv("VIGIL_NETFLOW_BENCH_ONLY")] // for instruction counts
	b.ResetTimer()
	for b.Loop() {
		for v := range 3 {
			if one && v != o {
				continue
			}
			c0 := cpuTime()
			switch v {
			case 0:
				r := v1ref.New(v1ref.Config{})
				for i := range pk {
					r.Extract(&pk[i], out[:Dim])
				}
			case 1:
				e := New(Config{})
				for i := range pk {
					e.Extract(&pk[i], out[:Dim])
				}
			case 2:
				e := New(Config{})
				for i := 0; i < len(pk); i += 1024 {
					n := min(1024, len(pk)-i)
					e.ExtractBatch(pk[i:i+n], out[:n*Dim])
				}
			}
			cpu[v] += cpuTime() - c0
		}
		runs++
	}
	n := float64(runs * len(pk))
	b.ReportMetric(float64(cpu[0].Nanoseconds())/n, "ref-cpu-ns/pkt")
	b.ReportMetric(float64(cpu[1].Nanoseconds())/n, "extract-cpu-ns/pkt")
	b.ReportMetric(float64(cpu[2].Nanoseconds())/n, "batch-cpu-ns/pkt")
}

// BenchmarkCaptureDecode is the e2e benchmark's read + decode + netflow/v1
// (test/e2e BenchmarkNetflowDecodeNetflow) for the reference extractor
// and for ExtractBatch, interleaved run by run: before/after figures in
// packets per CPU-second taken under the same load.
func BenchmarkCaptureDecode(b *testing.B) {
	path := os.Getenv("VIGIL_NETFLOW_REF_PCAP")
	if path == "" {
		b.Skip("set VIGIL_NETFLOW_REF_PCAP to a capture")
	}
	var cpu [2]time.Duration
	var pkts [2]int
	buf := make([]event.Packet, 1024)
	out := make([]float32, len(buf)*Dim)
	for b.Loop() {
		for v := range 2 {
			r, e := v1ref.New(v1ref.Config{}), New(Config{})
			n, c := capturePass(b, path, buf, func(p []event.Packet) {
				if v == 0 {
					for i := range p {
						r.Extract(&p[i], out[:Dim])
					}
				} else {
					e.ExtractBatch(p, out[:len(p)*Dim])
				}
			})
			pkts[v] += n
			cpu[v] += c
		}
	}
	b.ReportMetric(float64(pkts[0])/cpu[0].Seconds(), "ref-pkts/CPU-s")
	b.ReportMetric(float64(pkts[1])/cpu[1].Seconds(), "batch-pkts/CPU-s")
}

// capturePass reads the capture at path in batches of len(buf) packets,
// calls f on each batch, and returns the packets read and the thread's CPU
// time for the pass (open, read, decode and f).
func capturePass(b *testing.B, path string, buf []event.Packet, f func([]event.Packet)) (int, time.Duration) {
	c0 := cpuTime()
	src, err := capture.OpenFile(path)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	n := 0
	for {
		k, err := src.Next(context.Background(), buf)
		f(buf[:k])
		n += k
		if err != nil {
			if !errors.Is(err, io.EOF) {
				b.Fatal(err)
			}
			return n, cpuTime() - c0
		}
	}
}

// TestCaptureOnly runs one extractor (VIGIL_NETFLOW_BENCH_ONLY=ref,
// extract or batch; none only reads the capture) over
// VIGIL_NETFLOW_REF_PCAP and checks that every feature is finite. Run
// under callgrind it gives instructions per packet, which a shared machine
// does not disturb:
//
//	go test -c -o nf.test ./models/features/netflow
//	VIGIL_NETFLOW_BENCH_ONLY=batch VIGIL_NETFLOW_REF_MAX=100000 VIGIL_NETFLOW_REF_PCAP=FILE \
//	  GOGC=off GOMAXPROCS=1 GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind nf.test -test.run TestCaptureOnly
//
// minus the same with VIGIL_NETFLOW_BENCH_ONLY=none (reading and the
// check), divided by the packets.
func TestCaptureOnly(t *testing.T) {
	only := os.Getenv("VIGIL_NETFLOW_BENCH_ONLY")
	if only == "" {
		t.Skip("set VIGIL_NETFLOW_BENCH_ONLY and VIGIL_NETFLOW_REF_PCAP")
	}
	pk := capturePackets(t)
	out := make([]float32, 1024*Dim)
	for i := 0; i < len(pk); i += 1024 {
		run := pk[i:min(i+1024, len(pk))]
		o := out[:len(run)*Dim]
		switch only {
		case "ref":
			extractRef(run, o)
		case "extract":
			extractEach(run, o)
		case "batch":
			extractBatch(run, o)
		}
		for j, v := range o {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("packet %d: %s = %v", i+j/Dim, names[j%Dim], v)
			}
		}
	}
}

var (
	capRef *v1ref.Extractor
	capNew *Extractor
)

//go:noinline
func extractRef(pk []event.Packet, out []float32) {
	if capRef == nil {
		capRef = v1ref.New(v1ref.Config{})
	}
	for i := range pk {
		capRef.Extract(&pk[i], out[i*Dim:(i+1)*Dim])
	}
}

//go:noinline
func extractEach(pk []event.Packet, out []float32) {
	if capNew == nil {
		capNew = New(Config{})
	}
	for i := range pk {
		capNew.Extract(&pk[i], out[i*Dim:(i+1)*Dim])
	}
}

//go:noinline
func extractBatch(pk []event.Packet, out []float32) {
	if capNew == nil {
		capNew = New(Config{})
	}
	capNew.ExtractBatch(pk, out)
}
