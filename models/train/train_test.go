package train

import (
	"context"
	"os"
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
