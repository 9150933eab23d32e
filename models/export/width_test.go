package export

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/vigil-edge/vigil/models/ae"
	"github.com/vigil-edge/vigil/models/ae/aetest"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/onnx"
	"github.com/vigil-edge/vigil/models/runtime"
	"github.com/vigil-edge/vigil/models/runtime/runtimetest"
)

// netflowDim is the width of netflow/v1 (Kitsune's 115 features).
const netflowDim = 115

// widthShape is a netflow/v1-shaped model of the width study (docs/models.md, section 6).
type widthShape struct {
	name string
	cfg  ae.Config
}

// widthShapes are single autoencoders of hidden width 32, 48, 64 and 87 (the default ratio 0.75)
// and the KitNET ensemble (hidden ratio 0.75 and 0.5), at D = 115.
func widthShapes() []widthShape {
	var out []widthShape
	for _, h := range []int{32, 48, 64, 87} {
		// HiddenRatio gives ceil(ratio·115) units; a ratio just below h/115 gives exactly h.
		out = append(out, widthShape{fmt.Sprintf("single-h%d", h), ae.Config{Kind: ae.KindSingle, HiddenRatio: (float64(h) - 0.5) / netflowDim}})
	}
	return append(out, widthShape{"kitnet", ae.Config{Kind: ae.KindKitNET}},
		widthShape{"kitnet-r0.5", ae.Config{Kind: ae.KindKitNET, HiddenRatio: 0.5}})
}

// widthLayouts are the export layouts of the width study.
func widthLayouts() []struct {
	name string
	opt  Options
} {
	q := bundle.QuantInt8Static
	return []struct {
		name string
		opt  Options
	}{
		{"float", Options{Quant: bundle.QuantNone}},
		{"qdq-amx", Options{Quant: q, AMXSafe: true}},
		{"qdq-amx-floatdec", Options{Quant: q, AMXSafe: true, FloatDecoder: true}},
		{"qdq-amx-lean", Options{Quant: q, AMXSafe: true, Lean: true}},
	}
}

// exportWidth exports m in layout opt, calibrated on train when it quantizes.
func exportWidth(t testing.TB, m *ae.Model, opt Options, train ae.Matrix) []byte {
	t.Helper()
	if opt.Quant != bundle.QuantNone {
		opt.Calibration = train
	}
	raw, err := Export(m, opt)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func fitWidth(t testing.TB, sh widthShape, epochs int) *ae.Model {
	t.Helper()
	cfg := sh.cfg
	cfg.Train = ae.TrainConfig{Epochs: epochs, Seed: 1}
	m, err := ae.Fit(t.Context(), aetest.Data(1500, netflowDim, 1, false), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if h := sh.cfg.HiddenRatio; sh.cfg.Kind == ae.KindSingle && m.Single.Hidden != int(math.Round(h*netflowDim+0.5)) {
		t.Fatalf("%s: hidden width %d", sh.name, m.Single.Hidden)
	}
	return m
}

// BenchmarkNetflowWidths measures every layout of the width study at batch 256 and 16 (vectors
// per thread-CPU-second, one intra-op thread) and reports the model's size in bytes.
//
//	ONNXRUNTIME_LIB=bin/lib/libonnxruntime.so go test ./models/export -run XXX -bench NetflowWidths -benchtime 2000x
func BenchmarkNetflowWidths(b *testing.B) {
	if err := runtime.Init(runtimetest.Library(b)); err != nil {
		b.Fatal(err)
	}
	train := aetest.Data(1500, netflowDim, 1, false)
	for _, sh := range widthShapes() {
		m := fitWidth(b, sh, 1)
		for _, l := range widthLayouts() {
			raw := exportWidth(b, m, l.opt, train)
			benchRaw(b, sh.name+"/"+l.name, raw, netflowDim, sessionVariant{name: "default"})
			if l.opt.Lean || l.opt.Quant == bundle.QuantNone {
				// ONNX Runtime's CPU arena and memory pattern on (models/runtime turns them off).
				benchRaw(b, sh.name+"/"+l.name, raw, netflowDim, sessionVariant{name: "arena", arena: true})
			}
		}
	}
}

// TestNetflowWidthsRunSize checks that every int8 layout of the width study passes the run-size
// check at 256 rows (runtime.ConsistentRun: no row of a 256-row run scores differently from the
// row alone, so no AMX 32nd-row defect), that ONNX Runtime fuses its int8 layers into QGemm,
// and logs the int8/float size ratio.
func TestNetflowWidthsRunSize(t *testing.T) {
	if err := runtime.Init(runtimetest.Library(t)); err != nil {
		t.Fatal(err)
	}
	train := aetest.Data(1500, netflowDim, 1, false)
	for _, sh := range widthShapes() {
		m := fitWidth(t, sh, 1)
		var floatBytes int
		scores := map[string][]float32{}
		probe := runtime.ProbeRows(1024, netflowDim)
		for _, l := range widthLayouts() {
			opt := l.opt
			raw := exportWidth(t, m, opt, train)
			if opt.Quant == bundle.QuantNone {
				floatBytes = len(raw)
			}
			optPath := filepath.Join(t.TempDir(), "opt.onnx")
			s, err := runtime.OpenWith("", raw, netflowDim, 256, runtime.Options{OptimizedModelPath: optPath})
			if err != nil {
				t.Fatal(err)
			}
			// Tolerance: a thousandth of a typical score; the defect moves scores by whole
			// quantization steps of the hidden layer (≥ 0.01 here).
			run, err := runtime.ConsistentRun(s, nil, 256, 1e-4)
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := s.Score(probe, 1024)
			s.Close()
			if err != nil {
				t.Fatal(err)
			}
			scores[l.name] = append([]float32(nil), got...)
			optRaw, err := os.ReadFile(optPath)
			if err != nil {
				t.Fatal(err)
			}
			og, err := onnx.Unmarshal(optRaw)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("WIDTH %s %s: bytes %d (%.3f of float), consistent run %d, optimised graph %v", sh.name, l.name, len(raw), float64(len(raw))/float64(floatBytes), run, onnx.SortedOps(og.Graph))
			if run != 256 {
				t.Errorf("%s %s: run-size check keeps %d rows, want 256", sh.name, l.name, run)
			}
		}
		// Lean only moves constants into load-time operators: the scores are bit-identical.
		for i, v := range scores["qdq-amx"] {
			if scores["qdq-amx-lean"][i] != v {
				t.Fatalf("%s: row %d scores %g lean, %g not lean", sh.name, i, scores["qdq-amx-lean"][i], v)
			}
		}
	}
}
