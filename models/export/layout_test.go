package export

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/ae"
	"github.com/vigil-edge/vigil/models/ae/aetest"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/calib"
	"github.com/vigil-edge/vigil/models/onnx"
	"github.com/vigil-edge/vigil/models/runtime"
	"github.com/vigil-edge/vigil/models/runtime/runtimetest"
)

// TestLayoutOptions checks the optional int8 layouts (QuantizeHidden, FloatDecoder, PadHidden,
// activation ranges and types): the optimised graph runs the fused kernels the option is for, no
// Identity copy is left, and the scores (in runs of scoreRun rows) rank like the float model's.
func TestLayoutOptions(t *testing.T) {
	lib := runtimetest.Library(t)
	if err := runtime.Init(lib); err != nil {
		t.Fatal(err)
	}
	val := aetest.Data(2000, dim, 2, false)
	dir := t.TempDir()
	for kind, m := range trained(t) {
		fraw, err := Export(m, Options{Quant: bundle.QuantNone})
		if err != nil {
			t.Fatal(err)
		}
		fs, err := runtime.OpenWith("", fraw, dim, 256, runtime.Options{})
		if err != nil {
			t.Fatal(err)
		}
		floatScores := scoreAll(t, fs, val)
		fs.Close()
		for _, c := range []struct {
			name  string
			opt   Options
			want  []string // fused operators that must appear in the optimised graph
			gone  []string // operators that must not
			qgemm int      // if > 0, the number of QGemm nodes the optimised graph must have
		}{
			{"qdq", Options{}, []string{"QGemm"}, []string{"Identity"}, 0},
			{"qdq-hidden", Options{QuantizeHidden: true}, []string{"QGemm", "QLinearSigmoid"}, []string{"Identity"}, 0},
			{"qdq-floatdec", Options{FloatDecoder: true}, []string{"QGemm"}, nil, 0},
			{"qdq-pad16", Options{PadHidden: 16}, []string{"QGemm"}, nil, 0},
			{"qdq-percentile", Options{ActRange: RangePercentile, ActPercentile: 99.9}, []string{"QGemm"}, []string{"Identity"}, 0},
			{"qdq-mse", Options{ActRange: RangeMSE}, []string{"QGemm"}, []string{"Identity"}, 0},
			{"qdq-int8act", Options{ActType: ActInt8}, []string{"QGemm"}, []string{"Identity"}, 0},
			// Symmetric int8 wastes half its grid on the [0, 1] sigmoid outputs (and ORT keeps a Clip).
			{"qdq-int8sym", Options{ActType: ActInt8Sym}, []string{"QGemm"}, []string{"Identity"}, 0},
			{"qdq-hidden-int8act", Options{QuantizeHidden: true, ActType: ActInt8}, []string{"QGemm", "QLinearSigmoid"}, []string{"Identity"}, 0},
			// AMXSafe: the widened GEMMs stay fused QGemms (followed by a Slice).
			{"qdq-amx", Options{AMXSafe: true}, []string{"QGemm", "Slice"}, []string{"Identity"}, 0},
			{"qdq-amx-floatdec", Options{AMXSafe: true, FloatDecoder: true}, []string{"QGemm"}, nil, 0},
			{"qdq-amx-hidden", Options{AMXSafe: true, QuantizeHidden: true}, []string{"QGemm", "QLinearSigmoid"}, []string{"Identity"}, 0},
			// Lean: the constants it leaves to ONNX Runtime (Expand, Mul, Pad) are folded before the
			// QDQ fusion.
			{"qdq-amx-lean", Options{AMXSafe: true, Lean: true}, []string{"QGemm", "Slice"}, []string{"Identity", "Expand", "Pad"}, 0},
			{"qdq-amx-floatdec-lean", Options{AMXSafe: true, FloatDecoder: true, Lean: true}, []string{"QGemm"}, []string{"Expand", "Pad"}, 1},
			// SplitInput: the residual pass is a second fused QGemm on the same weights; no float
			// Gemm is left but the float decoder's.
			{"qdq-amx-floatdec-split", Options{AMXSafe: true, FloatDecoder: true, SplitInput: true}, []string{"QGemm"}, []string{"Identity"}, 2},
			{"qdq-amx-floatdec-lean-split", Options{AMXSafe: true, FloatDecoder: true, Lean: true, SplitInput: true}, []string{"QGemm"}, []string{"Expand", "Pad"}, 2},
			{"qdq-split", Options{SplitInput: true}, []string{"QGemm"}, []string{"Identity"}, 3},
			{"qdq-amx-lean-split", Options{AMXSafe: true, Lean: true, SplitInput: true}, []string{"QGemm", "Slice"}, []string{"Identity", "Expand", "Pad"}, 3},
			// FitRounding changes weights and biases only: the same fused graph.
			{"qdq-amx-floatdec-fit", Options{AMXSafe: true, FloatDecoder: true, FitRounding: true}, []string{"QGemm"}, []string{"Identity"}, 1},
			{"qdq-amx-lean-fit", Options{AMXSafe: true, Lean: true, FitRounding: true}, []string{"QGemm", "Slice"}, []string{"Identity", "Expand", "Pad"}, 2},
			// InputGain: a per-axis QuantizeLinear feeds the same fused QGemm, and the Clip it
			// makes redundant is not written.
			{"qdq-amx-floatdec-gain", Options{AMXSafe: true, FloatDecoder: true, InputGain: 1}, []string{"QGemm"}, []string{"Identity"}, 1},
			{"qdq-amx-floatdec-gain-fit", Options{AMXSafe: true, FloatDecoder: true, InputGain: 0.5, FitRounding: true}, []string{"QGemm"}, []string{"Identity"}, 1},
			{"qdq-amx-lean-gain", Options{AMXSafe: true, Lean: true, InputGain: 1}, []string{"QGemm", "Slice"}, []string{"Identity", "Expand", "Pad"}, 2},
			// SplitWeights: the residual weights' pass is a second fused QGemm on the same
			// quantized input.
			{"qdq-amx-floatdec-splitw", Options{AMXSafe: true, FloatDecoder: true, SplitWeights: true}, []string{"QGemm"}, []string{"Identity"}, 2},
			{"qdq-splitw", Options{SplitWeights: true}, []string{"QGemm"}, []string{"Identity"}, 3},
		} {
			t.Run(kind+"/"+c.name, func(t *testing.T) {
				c.opt.Quant, c.opt.Calibration = bundle.QuantInt8Static, val
				raw, err := Export(m, c.opt)
				if err != nil {
					t.Fatal(err)
				}
				optPath := filepath.Join(dir, kind+"-"+c.name+".opt.onnx")
				s, err := runtime.OpenWith("", raw, dim, 256, runtime.Options{OptimizedModelPath: optPath})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				scores := scoreAll(t, s, val)
				optRaw, err := os.ReadFile(optPath)
				if err != nil {
					t.Fatal(err)
				}
				opt, err := onnx.Unmarshal(optRaw)
				if err != nil {
					t.Fatal(err)
				}
				ops := onnx.OpCounts(opt.Graph)
				has := func(op string) bool {
					for k := range ops {
						if k == op || strings.HasSuffix(k, ":"+op) {
							return true
						}
					}
					return false
				}
				for _, op := range c.want {
					if !has(op) {
						t.Fatalf("no %s in the optimised graph: %v", op, onnx.SortedOps(opt.Graph))
					}
				}
				for _, op := range c.gone {
					if has(op) {
						t.Fatalf("%s left in the optimised graph: %v", op, onnx.SortedOps(opt.Graph))
					}
				}
				if n := qgemms(ops); c.qgemm > 0 && n != c.qgemm {
					t.Fatalf("%d QGemm nodes in the optimised graph, want %d: %v", n, c.qgemm, onnx.SortedOps(opt.Graph))
				}
				rho, err := calib.Spearman(floatScores, scores)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("Spearman(float, int8) on benign %.5f; optimised graph %v", rho, onnx.SortedOps(opt.Graph))
				if rho < 0.99 {
					t.Fatalf("Spearman %.4f < 0.99", rho)
				}
			})
		}
	}
}

// exportScores exports m with opt and scores data with it in ONNX Runtime (runs of 256).
func exportScores(t *testing.T, m *ae.Model, opt Options, data ae.Matrix) []float32 {
	t.Helper()
	raw, err := Export(m, opt)
	if err != nil {
		t.Fatal(err)
	}
	s, err := runtime.OpenWith("", raw, data.Cols, 256, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	return scoreAll(t, s, data)
}

// meanAbsDiff is the mean |a[i] − b[i]|.
func meanAbsDiff(a, b []float32) float64 {
	var e float64
	for i := range b {
		e += math.Abs(float64(a[i] - b[i]))
	}
	return e / float64(len(b))
}

// qgemms counts the QGemm nodes in an optimised graph's operator counts.
func qgemms(ops map[string]int) int {
	n := 0
	for k, c := range ops {
		if k == "QGemm" || strings.HasSuffix(k, ":QGemm") {
			n += c
		}
	}
	return n
}

// BenchmarkLayouts scores batches of 256 (and the detector plugin's runs of 16) with every graph
// layout side by side, on one intra-op thread: float, static QDQ, and QDQ with the optional
// layouts, for both model kinds and both decoder output activations. D = 115, like netflow/v1.
// The thread's CPU time is reported as vectors/cpu-s (robust against other load on the machine).
func BenchmarkLayouts(b *testing.B) {
	lib := runtimetest.Library(b)
	if err := runtime.Init(lib); err != nil {
		b.Fatal(err)
	}
	train := aetest.Data(1500, dim, 1, false)
	for _, kind := range []string{ae.KindSingle, ae.KindKitNET} {
		for _, act := range []string{ae.ActSigmoid, ae.ActLinear} {
			m, err := ae.Fit(b.Context(), train, ae.Config{Kind: kind, OutAct: act, Train: ae.TrainConfig{Epochs: 1, Seed: 1}})
			if err != nil {
				b.Fatal(err)
			}
			for _, c := range []struct {
				name string
				opt  Options
			}{
				{"float", Options{Quant: bundle.QuantNone}},
				{"qdq", Options{Quant: bundle.QuantInt8Static}},
				{"qdq-hidden", Options{Quant: bundle.QuantInt8Static, QuantizeHidden: true}},
				{"qdq-pad16", Options{Quant: bundle.QuantInt8Static, PadHidden: 16}},
				{"qdq-floatdec-amx", Options{Quant: bundle.QuantInt8Static, FloatDecoder: true, AMXSafe: true}},
				{"qdq-floatdec-amx-split", Options{Quant: bundle.QuantInt8Static, FloatDecoder: true, AMXSafe: true, SplitInput: true}},
			} {
				c.opt.Calibration = train
				raw, err := Export(m, c.opt)
				if err != nil {
					b.Fatal(err)
				}
				benchScore(b, fmt.Sprintf("%s/%s/%s", kind, act, c.name), raw, dim)
			}
		}
	}
}

// BenchmarkLayoutsNethost is BenchmarkLayouts at the shipped nethost/v6 model's shape (single
// autoencoder, D = 34, hidden 16, sigmoid output): float, static QDQ and the int8 variants
// compared by `vigil-train-baseline -sweep-quant` (FloatDecoder, percentile ranges, int8
// activations, SplitInput; "shipped" is the layout train.Export writes).
func BenchmarkLayoutsNethost(b *testing.B) {
	const d = 34
	train := aetest.Data(1500, d, 1, false)
	m := benchModel(b, train, ae.Config{Kind: ae.KindSingle, HiddenRatio: 0.47, Train: ae.TrainConfig{Epochs: 1, Seed: 1}})
	q := bundle.QuantInt8Static
	benchLayoutCases(b, "single/", m, train, []layoutCase{
		{"float", Options{Quant: bundle.QuantNone}},
		{"qdq", Options{Quant: q}},
		{"qdq-floatdec", Options{Quant: q, FloatDecoder: true}},
		{"qdq-percentile", Options{Quant: q, ActRange: RangePercentile, ActPercentile: 99.99}},
		{"qdq-int8act", Options{Quant: q, ActType: ActInt8}},
		{"qdq-floatdec-amx", Options{Quant: q, FloatDecoder: true, AMXSafe: true}},
		{"qdq-floatdec-amx-split", Options{Quant: q, FloatDecoder: true, AMXSafe: true, SplitInput: true}},
		{"qdq-floatdec-amx-gain", Options{Quant: q, FloatDecoder: true, AMXSafe: true, InputGain: 0.75}},
	})
}

// BenchmarkLayoutsFileactivity is BenchmarkLayouts at the shipped fileactivity/v1 model's shape
// (KitNET over D = 71, at most 16 features per autoencoder, hidden ratio 0.75, minmax with a
// spread floor of 0.2): float, the shipped layout and the two layouts that reach Spearman 0.99
// on its held-out events (SplitInput with FitRounding, SplitWeights; docs/models.md, section 20).
func BenchmarkLayoutsFileactivity(b *testing.B) {
	const d = 71
	train := aetest.Data(3000, d, 1, false)
	m := benchModel(b, train, ae.Config{Kind: ae.KindKitNET, MaxGroup: 16, HiddenRatio: 0.75, MinRange: 0.2, Train: ae.TrainConfig{Epochs: 1, Seed: 1}})
	q := bundle.QuantInt8Static
	benchLayoutCases(b, "kitnet/", m, train, []layoutCase{
		{"float", Options{Quant: bundle.QuantNone}},
		{"shipped", Options{Quant: q, FloatDecoder: true, AMXSafe: true}},
		{"split-input", Options{Quant: q, FloatDecoder: true, AMXSafe: true, SplitInput: true, FitRounding: true}},
		{"split-weights", Options{Quant: q, FloatDecoder: true, AMXSafe: true, SplitWeights: true}},
	})
}

// benchModel loads ONNX Runtime and fits a model of cfg on train for a layout benchmark.
func benchModel(b *testing.B, train ae.Matrix, cfg ae.Config) *ae.Model {
	b.Helper()
	if err := runtime.Init(runtimetest.Library(b)); err != nil {
		b.Fatal(err)
	}
	m, err := ae.Fit(b.Context(), train, cfg)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// layoutCase is one export layout of a layout benchmark.
type layoutCase struct {
	name string
	opt  Options
}

// benchLayoutCases exports m in every layout (calibrated on train) and benchmarks its scoring
// (benchScore) under prefix + the layout's name.
func benchLayoutCases(b *testing.B, prefix string, m *ae.Model, train ae.Matrix, cases []layoutCase) {
	for _, c := range cases {
		c.opt.Calibration = train
		raw, err := Export(m, c.opt)
		if err != nil {
			b.Fatal(err)
		}
		benchScore(b, prefix+c.name, raw, train.Cols)
	}
}

// benchScore runs sub-benchmarks scoring batches of 256 and 16 rows of dimension d with the ONNX
// model raw on the locked calling thread, reporting vectors/s and vectors per thread CPU-second.
func benchScore(b *testing.B, name string, raw []byte, d int) {
	for _, batch := range []int{256, 16} {
		b.Run(fmt.Sprintf("%s/batch%d", name, batch), func(b *testing.B) {
			s, err := runtime.OpenWith("", raw, d, batch, runtime.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			data := aetest.Data(batch, d, 9, false)
			goruntime.LockOSThread()
			defer goruntime.UnlockOSThread()
			cpu0 := threadCPU()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, _, err := s.Score(data.Data, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "vectors/s")
			if cpu := threadCPU() - cpu0; cpu > 0 {
				b.ReportMetric(float64(b.N*batch)/cpu.Seconds(), "vectors/cpu-s")
			}
			b.ReportMetric(float64(len(raw)), "bytes")
		})
	}
}

// threadCPU is the calling OS thread's user+system CPU time (Linux RUSAGE_THREAD).
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestRunSizeInvariance scores the same rows in runs of 1, 16, 32, 64 and 256 rows through the
// runtime package (the plugin's scorer) and asserts that the recommended int8 layouts give
// every row the score of its single-row run, at the shipped nethost/v1 shape (single AE, D = 26,
// hidden 13) and at netflow/v1's D = 115 (single AE with hidden 87, KitNET).
//
// On CPUs with AMX (the development VM: Xeon with AVX-512 VNNI and AMX, ONNX Runtime 1.24.3)
// the int8 GEMM computes the 32nd row of every full 32-row block wrongly whenever its output
// width N has N mod 32 in 17..31 (TestQGemmShapeSweep with VIGIL_LAYOUT_SWEEP=1 maps it):
// the default static QDQ layout (decoder N = D = 26 or 115) is hit, and so is FloatDecoder at
// hidden 87. Options.AMXSafe widens such GEMMs; with it the scores are run-size invariant and
// bit-identical to the default layout's single-row scores. The unprotected layouts are only
// logged (they are correct on CPUs without AMX).
func TestRunSizeInvariance(t *testing.T) {
	if err := runtime.Init(runtimetest.Library(t)); err != nil {
		t.Fatal(err)
	}
	q := bundle.QuantInt8Static
	for _, sh := range []struct {
		name string
		d    int
		cfg  ae.Config
	}{
		{"nethost", 26, ae.Config{Kind: ae.KindSingle, HiddenRatio: 0.5}},
		{"netflow-single", 115, ae.Config{Kind: ae.KindSingle}},
		{"netflow-kitnet", 115, ae.Config{Kind: ae.KindKitNET}},
	} {
		d := sh.d
		train := aetest.Data(3000, d, 1, false)
		val := aetest.Data(1024, d, 2, false)
		cfg := sh.cfg
		cfg.Train = ae.TrainConfig{Epochs: 2, Seed: 3}
		m, err := ae.Fit(t.Context(), train, cfg)
		if err != nil {
			t.Fatal(err)
		}
		runs := func(s *runtime.Scorer, chunk int) []float32 {
			var out []float32
			for off := 0; off < val.Rows; off += chunk {
				k := min(chunk, val.Rows-off)
				sc, _, err := s.Score(val.Data[off*d:(off+k)*d], k)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, sc...)
			}
			return out
		}
		single := map[string][]float32{}
		for _, c := range []struct {
			name string
			opt  Options
			must bool   // run-size invariance asserted
			base string // layout whose single-row scores these must equal exactly
		}{
			{"float", Options{Quant: bundle.QuantNone}, true, ""},
			{"qdq", Options{Quant: q}, false, ""},
			{"qdq-floatdec", Options{Quant: q, FloatDecoder: true}, false, ""},
			{"qdq-amx", Options{Quant: q, AMXSafe: true}, true, "qdq"},
			{"qdq-floatdec-amx", Options{Quant: q, FloatDecoder: true, AMXSafe: true}, true, "qdq-floatdec"},
		} {
			c.opt.Calibration = val
			raw, err := Export(m, c.opt)
			if err != nil {
				t.Fatal(err)
			}
			s, err := runtime.OpenWith("", raw, d, 256, runtime.Options{})
			if err != nil {
				t.Fatal(err)
			}
			ref := runs(s, 1)
			single[c.name] = ref
			if base := single[c.base]; base != nil {
				for i := range ref {
					if ref[i] != base[i] {
						t.Fatalf("%s/%s: row %d scores %g single, %s %g", sh.name, c.name, i, ref[i], c.base, base[i])
					}
				}
			}
			for _, chunk := range []int{16, 32, 64, 256} {
				got := runs(s, chunk)
				var n int
				var worst float64
				for i := range got {
					// Float operators after the int8 GEMMs may round differently with the
					// run length; the defect moves a score by whole quantization steps.
					if diff := math.Abs(float64(got[i] - ref[i])); diff > 1e-5*math.Abs(float64(ref[i]))+1e-7 {
						n++
						worst = math.Max(worst, diff)
					}
				}
				t.Logf("%s/%s (%d bytes), runs of %d rows: %d of %d scores differ from single-row runs (largest difference %.3g)",
					sh.name, c.name, len(raw), chunk, n, len(got), worst)
				if n > 0 && (c.must || chunk <= 16) {
					t.Errorf("%s/%s: runs of %d rows change %d scores (largest difference %.3g)", sh.name, c.name, chunk, n, worst)
				}
			}
			s.Close()
		}
	}
}

// TestAMXSafeWidths checks the graph AMXSafe writes: no int8 GEMM output width with N mod 32
// in 17..31 (Gemm and MatMulInteger weights), and the shipped nethost layout (FloatDecoder,
// hidden 13) unchanged byte for byte, since none of its int8 GEMMs has such a width.
func TestAMXSafeWidths(t *testing.T) {
	for _, c := range []struct {
		d     int
		ratio float64
		kind  string
	}{{26, 0.5, ae.KindSingle}, {26, 0.9, ae.KindSingle}, {115, 0.75, ae.KindSingle}, {115, 0.75, ae.KindKitNET}} {
		train := aetest.Data(600, c.d, 1, false)
		m, err := ae.Fit(t.Context(), train, ae.Config{Kind: c.kind, HiddenRatio: c.ratio, Train: ae.TrainConfig{Epochs: 1, Seed: 1}})
		if err != nil {
			t.Fatal(err)
		}
		for _, opt := range []Options{
			{Quant: bundle.QuantInt8Static},
			{Quant: bundle.QuantInt8Static, FloatDecoder: true},
			{Quant: bundle.QuantInt8Static, QuantizeHidden: true},
			{Quant: bundle.QuantInt8Static, QuantizeOutput: true},
			{Quant: bundle.QuantInt8Dyn},
		} {
			opt.Calibration = train
			opt.AMXSafe = true
			mp, err := Build(m, opt)
			if err != nil {
				t.Fatal(err)
			}
			for _, init := range mp.Graph.Initializer {
				if init.DataType != int32(onnx.Int8) || len(init.Dims) != 2 {
					continue
				}
				if n := init.Dims[1]; n%32 > 16 {
					t.Errorf("D=%d %s %+v: int8 weight %s is %v, output width %d mod 32 = %d", c.d, c.kind, opt.Quant, init.Name, init.Dims, n, n%32)
				}
			}
		}
	}
	train := aetest.Data(600, 26, 1, false)
	m, err := ae.Fit(t.Context(), train, ae.Config{Kind: ae.KindSingle, HiddenRatio: 0.5, Train: ae.TrainConfig{Epochs: 1, Seed: 1}})
	if err != nil {
		t.Fatal(err)
	}
	a, err := Export(m, Options{Quant: bundle.QuantInt8Static, FloatDecoder: true, Calibration: train})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Export(m, Options{Quant: bundle.QuantInt8Static, FloatDecoder: true, AMXSafe: true, Calibration: train})
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) {
		t.Fatal("AMXSafe changed the nethost FloatDecoder graph (hidden 13 needs no widening)")
	}
}

// TestSplitWeights checks what Options.SplitWeights is for: with the encoder's weights in two
// int8 parts, the int8 scores are closer to the float model's than with the weights rounded once
// (for both model kinds), the residual weights reconstruct the float weights to within half a
// residual step, and the option is refused where it does not apply.
func TestSplitWeights(t *testing.T) {
	lib := runtimetest.Library(t)
	if err := runtime.Init(lib); err != nil {
		t.Fatal(err)
	}
	val := aetest.Data(2000, dim, 2, false)
	for kind, m := range trained(t) {
		q := Options{Quant: bundle.QuantInt8Static, Calibration: val, FloatDecoder: true, AMXSafe: true}
		qw := q
		qw.SplitWeights = true
		fl := exportScores(t, m, Options{Quant: bundle.QuantNone}, val)
		e1, e2 := meanAbsDiff(exportScores(t, m, q, val), fl), meanAbsDiff(exportScores(t, m, qw, val), fl)
		t.Logf("%s: mean |int8 - float| %.3g with the weights rounded once, %.3g split", kind, e1, e2)
		if !(e2 < e1) {
			t.Errorf("%s: split weights do not bring the int8 scores closer to float: %.3g vs %.3g", kind, e2, e1)
		}
	}
	// The two parts give back the float weights.
	l := &layer{In: 5, Out: 3, W: []float64{0.9, -0.013, 0, 0.37, 0.001, 0, -1.7, 0.25, 0, 0.0049, -0.6, 0, 1e-4, 0.33, 0}}
	wq, ws := quantizeWeights(l, 8)
	rq, rs := residualWeights(l, wq, ws)
	for j := 0; j < l.Out; j++ {
		for i := 0; i < l.In; i++ {
			w := l.W[i*l.Out+j]
			got := float64(ws[j])*float64(wq[i*l.Out+j]) + float64(rs[j])*float64(rq[i*l.Out+j])
			if d := math.Abs(got - w); d > float64(rs[j])/2*1.0001 {
				t.Errorf("weight (%d, %d) %g: two parts give %g (residual step %g)", i, j, w, got, rs[j])
			}
		}
	}
	if rs[2] != 1 || rq[2] != 0 {
		t.Errorf("an all-zero column: residual scale %g, weights %v", rs[2], rq)
	}
	m := trained(t)[ae.KindSingle]
	for _, opt := range []Options{{Quant: bundle.QuantInt8Dyn, SplitWeights: true}, {Quant: bundle.QuantInt8Static, Lean: true, SplitWeights: true, Calibration: val}} {
		if _, err := Export(m, opt); err == nil || !strings.Contains(err.Error(), "SplitWeights") {
			t.Errorf("%+v: %v", opt, err)
		}
	}
}

// TestSplitInput checks what Options.SplitInput is for: with the encoder's input quantized in two
// passes, the int8 scores are closer to the float model's than with one 8-bit pass, for both
// model kinds (on this synthetic data the mean difference falls by a third to a half; the rest
// is the int8 weights'), and rows outside the clip range still score as the clipped input does
// (the residual saturates at half a first-pass step). With FitRounding as well the weights'
// rounding error shrinks too.
func TestSplitInput(t *testing.T) {
	lib := runtimetest.Library(t)
	if err := runtime.Init(lib); err != nil {
		t.Fatal(err)
	}
	val := aetest.Data(2000, dim, 2, false)
	// Rows far outside the training range: every feature of these is clipped.
	far := aetest.Data(64, dim, 5, false)
	for i := range far.Data {
		far.Data[i] = far.Data[i]*40 - 20
	}
	for kind, m := range trained(t) {
		score := func(opt Options, data ae.Matrix) []float32 { t.Helper(); return exportScores(t, m, opt, data) }
		q := Options{Quant: bundle.QuantInt8Static, Calibration: val, FloatDecoder: true, AMXSafe: true}
		qs := q
		qs.SplitInput = true
		fl := score(Options{Quant: bundle.QuantNone}, val)
		e1, e2 := meanAbsDiff(score(q, val), fl), meanAbsDiff(score(qs, val), fl)
		qf := qs
		qf.FitRounding = true
		e3 := meanAbsDiff(score(qf, val), fl)
		t.Logf("%s: mean |int8 − float| one pass %.3g, split %.3g, split with fitted rounding %.3g", kind, e1, e2, e3)
		if !(e2 < 0.75*e1) {
			t.Errorf("%s: split input does not bring the int8 scores closer to float: mean |Δ| %.3g vs %.3g with one pass", kind, e2, e1)
		}
		// FitRounding (fitted on these rows) removes most of what the weights' rounding leaves.
		if !(e3 < 0.75*e2) {
			t.Errorf("%s: fitted rounding does not bring the split model's scores closer to float: mean |Δ| %.3g vs %.3g", kind, e3, e2)
		}
		ffar, sfar := score(Options{Quant: bundle.QuantNone}, far), score(qs, far)
		for i := range ffar {
			if d := math.Abs(float64(sfar[i]-ffar[i])) / float64(ffar[i]); d > 0.05 {
				t.Errorf("%s: clipped row %d scores %.4g with split input, %.4g in float (%.1f%% apart)", kind, i, sfar[i], ffar[i], 100*d)
				break
			}
		}
	}
}

// sparseData returns rows like nethost's: about 40% all zero, the rest a few features with small,
// heavy-tailed values (exponential, on scales 100 times apart), with the odd large value.
func sparseData(rows, d int, seed uint64) ae.Matrix {
	rng := rand.New(rand.NewPCG(seed, 5))
	m := ae.Matrix{Data: make([]float32, rows*d), Rows: rows, Cols: d}
	for r := range rows {
		if rng.Float64() < 0.4 {
			continue
		}
		row := m.Row(r)
		base := rng.ExpFloat64()
		for i := range row {
			if rng.Float64() < 0.5 {
				continue
			}
			scale := math.Pow(10, float64(i%3)) // three scales a hundredfold apart
			v := base * scale * (0.5 + rng.Float64())
			if rng.Float64() < 0.002 {
				v *= 100 // the tail that sets min-max normalisation's range
			}
			row[i] = float32(v)
		}
	}
	return m
}

// TestInputGain checks Options.InputGain: it is refused where it cannot work, and on sparse,
// heavy-tailed rows (where one 8-bit input grid rounds the typical values away) it brings the int8
// scores closer to the float model's, and ranks them like it, with one Mul more and the same
// fused QGemm.
func TestInputGain(t *testing.T) {
	lib := runtimetest.Library(t)
	if err := runtime.Init(lib); err != nil {
		t.Fatal(err)
	}
	const d = 24
	train, val := sparseData(6000, d, 1), sparseData(3000, d, 2)
	m, err := ae.Fit(t.Context(), train, ae.Config{Kind: ae.KindSingle, HiddenRatio: 0.5, Train: ae.TrainConfig{Epochs: 5, Seed: 1}})
	if err != nil {
		t.Fatal(err)
	}
	q := bundle.QuantInt8Static
	for _, bad := range []Options{
		{Quant: q, InputGain: 1}, // no calibration rows
		{Quant: q, InputGain: 1, Calibration: train, SplitInput: true},
		{Quant: q, InputGain: 1, Calibration: train, ActType: ActInt8},
		{Quant: bundle.QuantInt8Dyn, InputGain: 1, Calibration: train},
	} {
		if _, err := Export(m, bad); err == nil {
			t.Errorf("InputGain accepted with %+v", bad)
		}
	}
	score := func(opt Options) []float32 { t.Helper(); return exportScores(t, m, opt, val) }
	fl := score(Options{Quant: bundle.QuantNone})
	base := Options{Quant: q, Calibration: train, FloatDecoder: true, AMXSafe: true}
	gained := base
	gained.InputGain = 1
	one, two := score(base), score(gained)
	e1, e2 := meanAbsDiff(one, fl), meanAbsDiff(two, fl)
	r1, _ := calib.Spearman(fl, one)
	r2, _ := calib.Spearman(fl, two)
	t.Logf("mean |int8 − float| %.3g without gains, %.3g with; Spearman %.4f and %.4f", e1, e2, r1, r2)
	if !(e2 < 0.75*e1) || !(r2 > r1) {
		t.Errorf("InputGain does not bring the int8 scores closer to float: mean |Δ| %.3g vs %.3g, Spearman %.4f vs %.4f", e2, e1, r2, r1)
	}
}
