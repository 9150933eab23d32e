package netflow

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/vigil-edge/vigil/agent/capture"
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	"github.com/vigil-edge/vigil/test/trafficgen"
)

// ortLib returns the ONNX Runtime library for tests, or skips.
func ortLib(t testing.TB) string {
	p := os.Getenv("ONNXRUNTIME_LIB")
	if p == "" {
		p = "../../.cache/onnxruntime-1.24.3/libonnxruntime.so"
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no ONNX Runtime library (set ONNXRUNTIME_LIB): %v", err)
	}
	return p
}

func baselineBundles(t testing.TB) []string {
	b, _ := filepath.Glob("../../models/baseline/nethost-*.vgb")
	x, _ := filepath.Glob("../../models/baseline/experimental/netflow-*.vgb")
	b = append(b, x...)
	if len(b) == 0 {
		t.Skip("no baseline bundles in models/baseline")
	}
	return b
}

// nethostBundle returns the absolute path of the shipped nethost bundle, or
// skips.
func nethostBundle(t testing.TB) string {
	b, _ := filepath.Glob("../../models/baseline/nethost-*.vgb")
	if len(b) == 0 {
		t.Skip("no nethost bundle in models/baseline")
	}
	abs, err := filepath.Abs(b[len(b)-1])
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// scanPackets returns the packets of a trafficgen capture with a SYN scan.
func scanPackets(t testing.TB) []event.Packet {
	return genPackets(t, trafficgen.Config{Seed: 1, Scan: true})
}

// benignGenPackets is trafficgen's benign traffic (seed 1) as decoded.
func benignGenPackets(t testing.TB) []event.Packet { return genPackets(t, trafficgen.Config{Seed: 1}) }

// genPackets writes trafficgen's capture for cfg and decodes it.
func genPackets(t testing.TB, cfg trafficgen.Config) []event.Packet {
	p := filepath.Join(t.TempDir(), "gen.pcap")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trafficgen.Write(f, cfg); err != nil {
		t.Fatal(err)
	}
	f.Close()
	src, err := capture.OpenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var out []event.Packet
	buf := make([]event.Packet, 512)
	for {
		n, err := src.Next(context.Background(), buf)
		out = append(out, buf[:n]...)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func newLoaded(t testing.TB, opts Options) *Detector {
	return newLoadedFrom(t, opts, baselineBundles(t))
}

// newLoadedFrom returns a detector with the given bundles loaded.
func newLoadedFrom(t testing.TB, opts Options, bundles []string) *Detector {
	opts.ORTLib = ortLib(t)
	d := New(slog.New(slog.DiscardHandler), opts)
	for _, b := range bundles {
		if _, err := d.LoadModel(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func scoreAll(t testing.TB, d *Detector, pkts []event.Packet, sizes []int) []sdk.Anomaly {
	var out []sdk.Anomaly
	for off, i := 0, 0; off < len(pkts); i++ {
		n := min(sizes[i%len(sizes)], len(pkts)-off)
		res, err := d.ScorePackets(context.Background(), pkts[off:off+n])
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range res.Anomalies {
			a.Index += uint64(off)
			out = append(out, a)
		}
		off += n
	}
	return out
}

// TestBatchingInvariant: a packet's anomaly does not depend on how the ring
// cut the stream into batches (static int8 quantization, per-row scoring).
func TestBatchingInvariant(t *testing.T) {
	pkts := scanPackets(t)
	a := scoreAll(t, newLoaded(t, Options{HashSeed: 3, NoAggregate: true}), pkts, []int{4096})
	b := scoreAll(t, newLoaded(t, Options{HashSeed: 3, NoAggregate: true}), pkts, []int{1, 7, 300, 64, 2048, 13})
	c := scoreAll(t, newLoaded(t, Options{HashSeed: 9, NoAggregate: true}), pkts, []int{4096})
	t.Logf("seed 3: %d, seed 3 odd batches: %d, seed 9: %d", len(a), len(b), len(c))
	if len(a) != len(b) {
		t.Fatalf("%d anomalies in batches of 4096, %d in odd batches", len(a), len(b))
	}
	for i := range a {
		if a[i].Index != b[i].Index || math.Abs(float64(a[i].Score-b[i].Score)) > 1e-5*math.Abs(float64(a[i].Score)) {
			t.Fatalf("anomaly %d differs: %+v vs %+v", i, a[i], b[i])
		}
	}
	if len(a) == 0 {
		t.Fatal("no anomaly in a capture with a SYN scan")
	}
}

// TestShippedRunSize: the shipped bundles are exported so that ONNX
// Runtime scores them the same in runs of any length (models/train.Export:
// float decoder, AMX-safe int8 widths), so the load-time check
// (runtime.ConsistentRun) keeps the full default run of 256 rows. A layout
// that brings back a run-length-dependent kernel path on this CPU fails
// here instead of silently costing the plugin 16-row runs.
func TestShippedRunSize(t *testing.T) {
	d := newLoaded(t, Options{})
	for s := range nslots {
		m := d.models[s].Load()
		if m == nil {
			continue
		}
		if k := m.scorer.RunSize(); k != DefaultScoreChunk {
			t.Errorf("%s: run size %d after the load-time check, want %d", m.info.FeatureSet, k, DefaultScoreChunk)
		}
	}
}
