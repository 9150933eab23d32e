package export

import (
	"context"
	"math"
	"os"
	"path/filepath"
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

func scoreAll(t *testing.T, s *runtime.Scorer, data ae.Matrix) []float32 {
	t.Helper()
	sc, _, err := s.Score(data.Data, data.Rows)
	if err != nil {
		t.Fatal(err)
	}
	return append([]float32(nil), sc...)
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
					// The dynamic int8 models are Vigil's default and must rank like float
					// (≥ 0.99). Static QDQ with calibrated ranges ranks benign rows less
					// faithfully (about 0.985 here); it is kept as an option and held to 0.97.
					minRho := 0.99
					if q == bundle.QuantInt8Static {
						minRho = 0.97
					}
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
