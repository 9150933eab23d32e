package train

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/ae"
	"github.com/vigil-edge/vigil/models/ae/aetest"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/onnx"
)

func rows(m ae.Matrix) [][]float32 {
	out := make([][]float32, m.Rows)
	for i := range out {
		out[i] = m.Row(i)
	}
	return out
}

func TestCollectReservoir(t *testing.T) {
	data := aetest.Data(1000, 4, 1, false)
	m, seen, err := Collect(context.Background(), &SliceSource{Vectors: rows(data)}, 4, 100, 7)
	if err != nil || seen != 1000 || m.Rows != 100 || len(m.Data) != 400 {
		t.Fatalf("rows %d seen %d err %v", m.Rows, seen, err)
	}
	m2, _, _ := Collect(context.Background(), &SliceSource{Vectors: rows(data)}, 4, 100, 7)
	for i := range m.Data {
		if m.Data[i] != m2.Data[i] {
			t.Fatal("reservoir not deterministic")
		}
	}
	if _, _, err := Collect(context.Background(), &SliceSource{Vectors: [][]float32{{1, 2}}}, 4, 0, 1); err == nil {
		t.Fatal("wrong dimension accepted")
	}
}

func TestPipeline(t *testing.T) {
	const d = 30
	train := aetest.Data(3000, d, 1, false)
	var progress []ae.Progress
	res, err := Train(context.Background(), &SliceSource{Vectors: rows(train)}, Config{Dim: d, Model: ae.Config{
		Train: ae.TrainConfig{Epochs: 4, Seed: 1}, Progress: func(p ae.Progress) { progress = append(progress, p) },
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows != 3000 || res.PeakHeap == 0 || res.Duration <= 0 || len(progress) != 8 {
		t.Fatalf("result %+v, %d progress reports", res, len(progress))
	}
	t.Logf("trained %d rows in %v, peak heap %.1f MiB, final loss %.5f", res.Rows, res.Duration, float64(res.PeakHeap)/(1<<20), res.FinalLoss)
	raw, err := Export(res.Model, bundle.QuantInt8Dyn, ae.Matrix{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := onnx.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	met, err := Calibrate(ReferenceScorer{res.Model}, aetest.Data(2000, d, 2, false), aetest.Data(200, d, 3, true), 0)
	if err != nil {
		t.Fatal(err)
	}
	if met.FPR > 0.001 || met.ROCAUC < 0.9 || met.BenignN != 2000 {
		t.Fatalf("metrics %+v", met)
	}
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	path, err := Build(dir, raw, bundle.Manifest{Name: "test", Detector: "netflow", Version: 1, FeatureSet: "synthetic/v1",
		Dim: d, Created: created, Expires: created.AddDate(1, 0, 0), Quantization: bundle.QuantInt8Dyn}, met)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.Read(path, bundle.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if b.Manifest.Threshold != met.Threshold || b.Manifest.Metrics["roc_auc"] != met.ROCAUC {
		t.Fatalf("manifest %+v", b.Manifest)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}

// TestExportLayout: the lean int8 layout quantizes both layers (no float MatMul left for a
// decoder), stays within a third of the float model's size at netflow/v1's shape (D = 115,
// single autoencoder, 64 hidden units), and the default layout is Export's.
func TestExportLayout(t *testing.T) {
	const d = 115
	data := aetest.Data(800, d, 1, false)
	m, err := ae.Fit(context.Background(), data, ae.Config{Kind: ae.KindSingle, HiddenRatio: 63.5 / d, Train: ae.TrainConfig{Epochs: 1, Seed: 1}})
	if err != nil {
		t.Fatal(err)
	}
	fl, err := ExportLayout(m, bundle.QuantNone, ae.Matrix{}, LayoutInt8Lean)
	if err != nil {
		t.Fatal(err)
	}
	def, err := Export(m, bundle.QuantInt8Static, data)
	if err != nil {
		t.Fatal(err)
	}
	same, err := ExportLayout(m, bundle.QuantInt8Static, data, LayoutFloatDecoder)
	if err != nil || string(same) != string(def) {
		t.Fatalf("LayoutFloatDecoder differs from Export (err %v)", err)
	}
	lean, err := ExportLayout(m, bundle.QuantInt8Static, data, LayoutInt8Lean)
	if err != nil {
		t.Fatal(err)
	}
	if r := float64(len(lean)) / float64(len(fl)); r > 1.0/3 {
		t.Fatalf("lean int8 model is %.3f of the float model's size", r)
	}
	g, err := onnx.Unmarshal(lean)
	if err != nil {
		t.Fatal(err)
	}
	ops := onnx.OpCounts(g.Graph)
	if ops["MatMul"] != 0 || ops["Gemm"] != 2 || ops["QuantizeLinear"] != 2 {
		t.Fatalf("lean graph: %v", onnx.SortedOps(g.Graph))
	}
	if _, err := ExportLayout(m, bundle.QuantInt8Static, data, Layout(9)); err == nil {
		t.Fatal("unknown layout accepted")
	}
	t.Logf("sizes: float %d, FloatDecoder %d, lean %d bytes", len(fl), len(def), len(lean))
}

// TestParseLayout checks that every layout's name parses back to it, "" is the default layout,
// and an unknown name is refused with the list of names.
func TestParseLayout(t *testing.T) {
	for l := LayoutFloatDecoder; l <= LayoutSplitWeights; l++ {
		got, err := ParseLayout(l.String())
		if err != nil || got != l {
			t.Errorf("ParseLayout(%q) = %v, %v; want %v", l.String(), got, err, l)
		}
	}
	if l, err := ParseLayout(""); err != nil || l != LayoutFloatDecoder {
		t.Errorf(`ParseLayout("") = %v, %v`, l, err)
	}
	if _, err := ParseLayout("int4"); err == nil || !strings.Contains(err.Error(), "input-gain") {
		t.Errorf("ParseLayout(int4): %v", err)
	}
}
