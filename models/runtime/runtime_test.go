package runtime_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/ae"
	"github.com/vigil-edge/vigil/models/ae/aetest"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/export"
	"github.com/vigil-edge/vigil/models/runtime"
	"github.com/vigil-edge/vigil/models/runtime/runtimetest"
)

const dim = 115

var (
	once  sync.Once
	paths map[string]string // "kind/quant" → model file
	dir   string
)

// models trains small models once and exports them in every format. The weights do not matter
// for speed, so training is short.
func models(tb testing.TB) map[string]string {
	tb.Helper()
	lib := runtimetest.Library(tb)
	if err := runtime.Init(lib); err != nil {
		tb.Fatal(err)
	}
	once.Do(func() {
		var err error
		dir, err = os.MkdirTemp("", "vigil-runtime-test")
		if err != nil {
			tb.Fatal(err)
		}
		train := aetest.Data(1500, dim, 1, false)
		paths = map[string]string{}
		for _, kind := range []string{ae.KindKitNET, ae.KindSingle} {
			m, err := ae.Fit(context.Background(), train, ae.Config{Kind: kind, Train: ae.TrainConfig{Epochs: 2, Seed: 1}})
			if err != nil {
				tb.Fatal(err)
			}
			for _, q := range []string{bundle.QuantNone, bundle.QuantInt8Dyn, bundle.QuantInt8Static} {
				raw, err := export.Export(m, export.Options{Quant: q, Calibration: train})
				if err != nil {
					tb.Fatal(err)
				}
				p := filepath.Join(dir, kind+"-"+q+".onnx")
				if err := os.WriteFile(p, raw, 0o644); err != nil {
					tb.Fatal(err)
				}
				paths[kind+"/"+q] = p
			}
		}
	})
	if paths == nil {
		tb.Fatal("model setup failed")
	}
	return paths
}

func TestScoreBatchesAgree(t *testing.T) {
	p := models(t)[ae.KindKitNET+"/"+bundle.QuantNone]
	s, err := runtime.Open(p, dim, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := aetest.Data(300, dim, 5, false)
	all, allC, err := s.Score(data.Data, data.Rows) // 300 > 64: chunked, new slices
	if err != nil {
		t.Fatal(err)
	}
	all = append([]float32(nil), all...)
	allC = append([]float32(nil), allC...)
	if len(all) != 300 || len(allC) != 300*dim {
		t.Fatalf("lengths %d %d", len(all), len(allC))
	}
	for _, n := range []int{1, 7, 64} { // partial and full batches agree with the chunked run
		sc, co, err := s.Score(data.Data, n)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			if math.Abs(float64(sc[i]-all[i])) > 1e-5 {
				t.Fatalf("n=%d row %d: %v vs %v", n, i, sc[i], all[i])
			}
		}
		if math.Abs(float64(co[n*dim-1]-allC[n*dim-1])) > 1e-5 {
			t.Fatalf("contrib differs")
		}
	}
	if _, _, err := s.Score(data.Data[:10], 1); err == nil {
		t.Fatal("short input accepted")
	}
	if sc, _, err := s.Score(nil, 0); err != nil || len(sc) != 0 {
		t.Fatal("empty batch")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Score(data.Data, 1); err == nil {
		t.Fatal("closed scorer scored")
	}
	if err := s.Close(); err != nil {
		t.Fatal("second close:", err)
	}
}

func TestOpenRejects(t *testing.T) {
	p := models(t)[ae.KindSingle+"/"+bundle.QuantNone]
	if _, err := runtime.Open(p, dim+1, 8); err == nil {
		t.Fatal("wrong dimension accepted")
	}
	if _, err := runtime.Open(filepath.Join(t.TempDir(), "missing.onnx"), dim, 8); err == nil {
		t.Fatal("missing model accepted")
	}
	if _, err := runtime.OpenWith("", []byte("not onnx"), dim, 8, runtime.Options{}); err == nil {
		t.Fatal("garbage model accepted")
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s, err := runtime.OpenWith("", raw, dim, 8, runtime.Options{})
	if err != nil {
		t.Fatal("from memory:", err)
	}
	s.Close()
}

// BenchmarkScore256 reports vectors/s at batch 256 on one intra-op thread, for every model kind and
// quantization side by side (D = 115, like netflow/v1).
func BenchmarkScore256(b *testing.B) {
	ps := models(b)
	data := aetest.Data(256, dim, 9, false)
	for _, kind := range []string{ae.KindKitNET, ae.KindSingle} {
		for _, q := range []string{bundle.QuantNone, bundle.QuantInt8Dyn, bundle.QuantInt8Static} {
			b.Run(fmt.Sprintf("%s/%s", kind, q), func(b *testing.B) {
				s, err := runtime.Open(ps[kind+"/"+q], dim, 256)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				// ONNX Runtime runs on the calling thread with one intra-op thread, so the
				// thread's CPU time is the cost per core even on a busy machine.
				goruntime.LockOSThread()
				defer goruntime.UnlockOSThread()
				cpu0 := threadCPU()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, _, err := s.Score(data.Data, 256); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N)*256/b.Elapsed().Seconds(), "vectors/s")
				if cpu := threadCPU() - cpu0; cpu > 0 {
					b.ReportMetric(float64(b.N)*256/cpu.Seconds(), "vectors/cpu-s")
				}
			})
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
