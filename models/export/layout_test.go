package export

import (
	"fmt"
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

// TestLayoutOptions checks the optional int8 layouts (QuantizeHidden, FloatDecoder, PadHidden):
// the optimised graph runs the fused kernels the option is for, no Identity copy is left, and the
// scores rank like the float model's.
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
			name string
			opt  Options
			want []string // fused operators that must appear in the optimised graph
			gone []string // operators that must not
		}{
			{"qdq", Options{}, []string{"QGemm"}, []string{"Identity"}},
			{"qdq-hidden", Options{QuantizeHidden: true}, []string{"QGemm", "QLinearSigmoid"}, []string{"Identity"}},
			{"qdq-floatdec", Options{FloatDecoder: true}, []string{"QGemm"}, nil},
			{"qdq-pad16", Options{PadHidden: 16}, []string{"QGemm"}, nil},
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
				rho, err := calib.Spearman(floatScores, scores)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("Spearman(float, int8) on benign %.5f; optimised graph %v", rho, onnx.SortedOps(opt.Graph))
				if rho < 0.95 {
					t.Fatalf("Spearman %.4f < 0.95", rho)
				}
			})
		}
	}
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
			} {
				c.opt.Calibration = train
				raw, err := Export(m, c.opt)
				if err != nil {
					b.Fatal(err)
				}
				for _, batch := range []int{256, 16} {
					b.Run(fmt.Sprintf("%s/%s/%s/batch%d", kind, act, c.name, batch), func(b *testing.B) {
						s, err := runtime.OpenWith("", raw, dim, batch, runtime.Options{})
						if err != nil {
							b.Fatal(err)
						}
						defer s.Close()
						data := aetest.Data(batch, dim, 9, false)
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
		}
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
