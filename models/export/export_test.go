package export

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vigil-edge/vigil/models/ae"
	"github.com/vigil-edge/vigil/models/ae/aetest"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/calib"
	"github.com/vigil-edge/vigil/models/onnx"
	"github.com/vigil-edge/vigil/models/runtime"
	"github.com/vigil-edge/vigil/models/runtime/runtimetest"
)

const dim = 115

var (
	modelsOnce sync.Once
	models     map[string]*ae.Model
)

func trained(t *testing.T) map[string]*ae.Model {
	t.Helper()
	modelsOnce.Do(func() {
		train := aetest.Data(4000, dim, 1, false)
		models = map[string]*ae.Model{}
		for _, kind := range []string{ae.KindKitNET, ae.KindSingle} {
			m, err := ae.Fit(context.Background(), train, ae.Config{Kind: kind, Train: ae.TrainConfig{Epochs: 5, Seed: 3}})
			if err != nil {
				t.Fatal(err)
			}
			models[kind] = m
		}
	})
	if models == nil {
		t.Fatal("training failed")
	}
	return models
}

func TestBuildStructure(t *testing.T) {
	for kind, m := range trained(t) {
		for _, q := range []string{bundle.QuantNone, bundle.QuantInt8Dyn, bundle.QuantInt8Static} {
			mp, err := Build(m, Options{Quant: q})
			if err != nil {
				t.Fatal(err)
			}
			if len(mp.OpsetImport) != 1 || mp.OpsetImport[0].Version != 17 || mp.OpsetImport[0].Domain != "" {
				t.Fatalf("opsets %v", mp.OpsetImport)
			}
			ops := onnx.OpCounts(mp.Graph)
			if ops["DequantizeLinear"] > 0 && ops["QuantizeLinear"] == 0 {
				t.Fatalf("%s/%s: weight-only DequantizeLinear", kind, q)
			}
			if in := mp.Graph.Input[0]; in.Name != InputName || in.Type.GetTensorType().Shape.Dim[0].GetDimParam() != "N" {
				t.Fatalf("input %v", in)
			}
			t.Logf("%s/%s: %v", kind, q, onnx.SortedOps(mp.Graph))
		}
	}
	if _, err := Build(trained(t)[ae.KindSingle], Options{Quant: "int4"}); err == nil {
		t.Fatal("unknown quantization accepted")
	}
}

// scoreRun is the rows per ONNX Runtime run in the tests, as the detector plugin and the trainer
// score (dataset.ScoreChunk): on CPUs with AVX-512 VNNI / AMX, ONNX Runtime's int8 QGemm gets the
// 32nd row of every 32-row block wrong in longer runs (see TestRunSizeInvariance).
const scoreRun = 16

// scoreAll scores every row of data in runs of scoreRun rows.
func scoreAll(t *testing.T, s *runtime.Scorer, data ae.Matrix) []float32 {
	t.Helper()
	out := make([]float32, 0, data.Rows)
	for off := 0; off < data.Rows; off += scoreRun {
		k := min(scoreRun, data.Rows-off)
		sc, _, err := s.Score(data.Data[off*data.Cols:(off+k)*data.Cols], k)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sc...)
	}
	return out
}

// TestORT runs the exported graphs in ONNX Runtime: float scores match the Go reference, int8
// scores rank like float scores, and the optimised graphs contain the fused int8 kernels.
func TestORT(t *testing.T) {
	lib := runtimetest.Library(t)
	if err := runtime.Init(lib); err != nil {
		t.Fatal(err)
	}
	val := aetest.Data(2000, dim, 2, false)
	att := aetest.Data(500, dim, 3, true)
	both := ae.Matrix{Data: append(append([]float32{}, val.Data...), att.Data...), Rows: val.Rows + att.Rows, Cols: dim}
	dir := t.TempDir()
	for kind, m := range trained(t) {
		var floatScores []float32
		for _, q := range []string{bundle.QuantNone, bundle.QuantInt8Dyn, bundle.QuantInt8Static} {
			t.Run(kind+"/"+q, func(t *testing.T) {
				raw, err := Export(m, Options{Quant: q, Calibration: val})
				if err != nil {
					t.Fatal(err)
				}
				path := filepath.Join(dir, kind+"-"+q+".onnx")
				if err := os.WriteFile(path, raw, 0o644); err != nil {
					t.Fatal(err)
				}
				optPath := filepath.Join(dir, kind+"-"+q+".opt.onnx")
				s, err := runtime.OpenWith(path, nil, dim, 256, runtime.Options{OptimizedModelPath: optPath})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				scores := scoreAll(t, s, both)
				optRaw, err := os.ReadFile(optPath)
				if err != nil {
					t.Fatal(err)
				}
				opt, err := onnx.Unmarshal(optRaw)
				if err != nil {
					t.Fatal(err)
				}
				ops := onnx.OpCounts(opt.Graph)
				t.Logf("size %d bytes (weights %d); optimised graph: %v", len(raw), onnx.WeightBytes(opt.Graph), onnx.SortedOps(opt.Graph))
				switch q {
				case bundle.QuantNone:
					floatScores = scores
					contrib := make([]float64, dim)
					for r := 0; r < both.Rows; r += 97 {
						want := m.Score(both.Row(r), contrib)
						if got := float64(scores[r]); math.Abs(got-want) > 1e-4+1e-3*math.Abs(want) {
							t.Fatalf("row %d: ORT score %v, Go reference %v", r, got, want)
						}
					}
					_, co, err := s.Score(both.Row(5), 1)
					if err != nil {
						t.Fatal(err)
					}
					m.Score(both.Row(5), contrib)
					for i := range contrib {
						if math.Abs(float64(co[i])-contrib[i]) > 1e-4+1e-3*contrib[i] {
							t.Fatalf("contrib[%d] = %v, want %v", i, co[i], contrib[i])
						}
					}
				default:
					fused := 0
					for k, n := range ops {
						for _, f := range []string{"DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QGemm", "QLinearMatMul"} {
							if strings.HasSuffix(k, ":"+f) || k == f {
								fused += n
							}
						}
					}
					if fused < 2 {
						t.Fatalf("no fused int8 kernels in the optimised graph: %v", onnx.SortedOps(opt.Graph))
					}
					if ops["MatMulInteger"] > 0 || (ops["DequantizeLinear"] > 0 && ops["QuantizeLinear"] == 0) {
						t.Fatalf("unfused int8 pattern left: %v", onnx.SortedOps(opt.Graph))
					}
					if floatScores == nil {
						t.Skip("float run failed")
					}
					rho, err := calib.Spearman(floatScores, scores)
					if err != nil {
						t.Fatal(err)
					}
					aucF, _ := calib.ROCAUC(floatScores[:val.Rows], floatScores[val.Rows:])
					aucQ, _ := calib.ROCAUC(scores[:val.Rows], scores[val.Rows:])
					rhoB, _ := calib.Spearman(floatScores[:val.Rows], scores[:val.Rows])
					rhoA, _ := calib.Spearman(floatScores[val.Rows:], scores[val.Rows:])
					t.Logf("Spearman(float, int8) = %.5f (benign only %.5f, attack only %.5f); ROC AUC float %.4f int8 %.4f", rho, rhoB, rhoA, aucF, aucQ)
					// Both int8 variants must rank like float (≥ 0.99) when scored in runs of
					// scoreRun rows (about 0.9994 here). Scored in one run of 2,000 rows, static
					// QDQ fell to 0.96-0.98 through ORT's wrong 32nd rows (TestRunSizeInvariance).
					minRho := 0.99
					if rho < minRho {
						t.Fatalf("Spearman %.4f < %.2f", rho, minRho)
					}
					if math.Abs(aucF-aucQ) > 0.01 {
						t.Fatalf("ROC AUC moved by %.4f", aucF-aucQ)
					}
				}
			})
		}
	}
}

// TestActRange checks the activation range methods on exponentially distributed values (a long
// thin tail, max ≈ 10.6): min/max keeps the tail, the percentile range is the quantile, the MSE
// range clips part of the tail and quantizes with a smaller error than min/max.
func TestActRange(t *testing.T) {
	const n = 20000
	vs := func() []float64 {
		out := make([]float64, n)
		for i := range out {
			out[i] = -math.Log(1 - (float64(i)+0.5)/n)
		}
		return out
	}
	max := vs()[n-1]
	for _, c := range []struct {
		opt    Options
		lo, hi float64 // the range's upper end must be in [lo, hi]
	}{
		{Options{}, max, max},
		{Options{ActRange: RangePercentile, ActPercentile: 99.9}, 6.8, 7.0},
		{Options{ActRange: RangeMSE}, 3, max * 0.99},
		{Options{ActRange: RangeMSE, ActType: ActInt8Sym}, 3, max * 0.99},
	} {
		e := &exporter{opt: c.opt}
		r := e.actRange(vs())
		if r[0] < 0 || r[0] > 0.01 || r[1] < c.lo || r[1] > c.hi {
			t.Errorf("%s/%s: range %v, want [≈0, %g..%g]", c.opt.ActRange, c.opt.ActType, r, c.lo, c.hi)
		}
	}
	qerr := func(hi float64) float64 {
		s, zp := qparams(0, hi)
		var sum float64
		for _, v := range vs() {
			q := math.Max(0, math.Min(255, math.Round(v/s)+float64(zp)))
			sum += math.Pow((q-float64(zp))*s-v, 2)
		}
		return sum
	}
	if r := mseRange(vs(), ActUint8); qerr(r[1]) >= qerr(max) {
		t.Errorf("MSE range %v: error %g, min/max %g", r, qerr(r[1]), qerr(max))
	}
	if s, _ := qparams(0, 0); s <= 0 {
		t.Fatalf("scale %v for an empty range", s)
	}
	if _, err := Build(trained(t)[ae.KindSingle], Options{Quant: bundle.QuantInt8Static, ActRange: "bogus", Calibration: aetest.Data(10, dim, 1, false)}); err == nil {
		t.Fatal("unknown range method accepted")
	}
}

// TestFitRoundingObjective checks fitRounding on a random layer, linear and sigmoid: the integer
// weights stay in range, structural zeros stay zero, the squared pre-activation error on the
// calibration rows (as the int8 layer sees them; for the sigmoid layer weighted by its squared
// slope at each row) is no larger in any column than with rounding to nearest and clearly
// smaller in all, and the bias correction leaves no (weighted) mean error.
func TestFitRoundingObjective(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const in, out, n = 12, 7, 3000
	w := make([]float64, in*out)
	for i := range w {
		if i%5 == 3 {
			continue // a structural zero
		}
		w[i] = rng.NormFloat64()
	}
	x := make([]float64, n*in)
	for r := range n {
		base := rng.Float64()
		for i := range in {
			x[r*in+i] = min(1, max(0, base+0.2*rng.NormFloat64())) // correlated inputs in [0, 1]
		}
	}
	s0, zp := qparams(0, 1)
	seen := func(v float64) float64 {
		return s0 * (min(max(math.RoundToEven(v/s0)+float64(zp), 0), 255) - float64(zp))
	}
	for _, act := range []string{ae.ActLinear, ae.ActSigmoid} {
		l := &layer{In: in, Out: out, W: w, B: make([]float64, out), Act: act}
		for j := range l.B {
			l.B[j] = -1 + 0.3*float64(j)
		}
		// err returns the (weighted) mean squared and mean pre-activation differences per column.
		err := func(q []int8, s []float32, bias []float64) (m, mean []float64) {
			m, mean = make([]float64, out), make([]float64, out)
			for j := range out {
				var wsum float64
				for r := range n {
					var zf, zq float64
					for i := range in {
						zf += x[r*in+i] * l.W[i*out+j]
						zq += seen(x[r*in+i]) * float64(s[j]) * float64(q[i*out+j])
					}
					wt := 1.0
					if act == ae.ActSigmoid {
						sg := 1 / (1 + math.Exp(-(zf + l.B[j])))
						wt = sg * (1 - sg) * sg * (1 - sg)
					}
					d := (zf + l.B[j]) - (zq + bias[j])
					m[j] += wt * d * d
					mean[j] += wt * d
					wsum += wt
				}
				m[j] /= wsum
				mean[j] /= wsum
			}
			return m, mean
		}
		q0, s := quantizeWeights(l, 8)
		before, _ := err(q0, s, l.B)
		q := append([]int8(nil), q0...)
		bias := fitRounding(l, q, s, x, seen, 8)
		after, mean := err(q, s, bias)
		for j := range out {
			if after[j] > before[j] {
				t.Errorf("%s column %d: error %.3g after fitting, %.3g rounded to nearest", act, j, after[j], before[j])
			}
			if math.Abs(mean[j]) > 1e-9 {
				t.Errorf("%s column %d: mean error %.3g after the bias correction", act, j, mean[j])
			}
		}
		for i, v := range q {
			if v < -127 || (l.W[i] == 0 && v != 0) {
				t.Fatalf("%s weight %d: %d (float %g)", act, i, v, l.W[i])
			}
		}
		var b, a float64
		for j := range out {
			b, a = b+before[j], a+after[j]
		}
		t.Logf("%s: pre-activation error %.3g rounded to nearest, %.3g fitted", act, b, a)
		if !(a < 0.8*b) {
			t.Errorf("%s: fitting lowered the error only from %.3g to %.3g", act, b, a)
		}
	}
}

// TestCalibrationRows checks what FitRounding and InputGain are fitted on: the calibration rows
// as the encoder sees them (normalised, clipped, in row order), and the decoder's rows of hidden
// activations; sorting them, as the activation ranges need, must not reach these rows.
func TestCalibrationRows(t *testing.T) {
	m := trained(t)[ae.KindSingle]
	cal := aetest.Data(300, dim, 7, false)
	for _, gain := range []float64{0, 1} {
		e := &exporter{opt: Options{Quant: bundle.QuantInt8Static, Calibration: cal, FitRounding: true, InputGain: gain}, ranges: map[*layer][2]float64{}, zrange: map[*layer][2]float64{}, calX: map[*layer]calRows{}}
		enc, dec := encoder(m.Single), decoder(m.Single)
		w0 := slices.Clone(enc.W)
		if err := e.calibrate(m, &enc, &dec); err != nil {
			t.Fatal(err)
		}
		cx, ch := e.calX[&enc], e.calX[&dec]
		if cx.in != dim || len(cx.x) != cal.Rows*dim || ch.in != enc.Out || len(ch.x) != cal.Rows*enc.Out {
			t.Fatalf("gain %g: calibration rows %d×%d and %d×%d, want %d×%d and %d×%d", gain, len(cx.x)/max(cx.in, 1), cx.in, len(ch.x)/max(ch.in, 1), ch.in, cal.Rows, dim, cal.Rows, enc.Out)
		}
		xn := make([]float64, dim)
		for r := range cal.Rows {
			m.Norm.Apply(cal.Row(r), xn)
			for i, v := range xn {
				v = min(max(v, m.Norm.Lo), m.Norm.Hi)
				xn[i] = v
				g := 1.0
				if enc.Gain != nil {
					g = enc.Gain[i]
				}
				if got := cx.x[r*dim+i]; math.Abs(got-v*g) > 1e-12 {
					t.Fatalf("gain %g: row %d feature %d: calibration value %g, want %g (×%g)", gain, r, i, got, v*g, g)
				}
				for j := range enc.Out {
					// The gained layer computes the same pre-activation.
					if d := math.Abs(enc.W[i*enc.Out+j]*g - w0[i*enc.Out+j]); d > 1e-12 {
						t.Fatalf("gain %g: weight (%d, %d) is %g×%g, was %g", gain, i, j, enc.W[i*enc.Out+j], g, w0[i*enc.Out+j])
					}
				}
			}
			for j := range enc.Out {
				z := enc.B[j]
				for i, v := range xn {
					z += v * w0[i*enc.Out+j]
				}
				if got, want := ch.x[r*enc.Out+j], 1/(1+math.Exp(-z)); math.Abs(got-want) > 1e-12 {
					t.Fatalf("gain %g: row %d hidden unit %d: calibration value %g, want %g", gain, r, j, got, want)
				}
			}
		}
		if gain > 0 && enc.Gain == nil {
			t.Fatalf("gain %g: no gains set", gain)
		}
	}
}
