package runtime_test

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"

	"github.com/vigil-edge/vigil/models/ae"
	"github.com/vigil-edge/vigil/models/ae/aetest"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/runtime"
)

// tileDefect scores row i as the sum of its features, except that in runs
// of at least 32 rows the 32nd row of every 32-row block is off by 1 (the
// ONNX Runtime 1.24.3 int8 defect seen on AVX-512 Xeons), or every call
// fails when fail is set.
type tileDefect struct {
	dim        int
	defect     bool
	fail       bool
	calls, max int
}

func (f *tileDefect) Dim() int { return f.dim }

func (f *tileDefect) Score(x []float32, n int) ([]float32, []float32, error) {
	f.calls++
	f.max = max(f.max, n)
	if f.fail {
		return nil, nil, errors.New("session broken")
	}
	sc := make([]float32, n)
	for i := range n {
		for _, v := range x[i*f.dim : (i+1)*f.dim] {
			sc[i] += v
		}
		if f.defect && n >= 32 && i%32 == 31 {
			sc[i]++
		}
	}
	return sc, make([]float32, n*f.dim), nil
}

func TestConsistentRunFake(t *testing.T) {
	cases := []struct {
		name   string
		s      *tileDefect
		limit  int
		want   int
		errors bool
	}{
		{"no defect: the limit", &tileDefect{dim: 26}, 256, 256, false},
		{"no defect, odd limit", &tileDefect{dim: 26}, 100, 100, false},
		{"32nd-row defect: 16", &tileDefect{dim: 26, defect: true}, 256, 16, false},
		{"defect, limit below 32", &tileDefect{dim: 26, defect: true}, 24, 24, false},
		{"limit 1", &tileDefect{dim: 26, defect: true}, 1, 1, false},
		{"scorer fails", &tileDefect{dim: 26, fail: true}, 256, 0, true},
		{"invalid limit", &tileDefect{dim: 26}, 0, 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, err := runtime.ConsistentRun(c.s, nil, c.limit, 1e-6)
			if c.errors {
				if err == nil {
					t.Fatalf("got run size %d, want an error", k)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k != c.want {
				t.Fatalf("run size %d, want %d", k, c.want)
			}
			if c.s.max > c.limit {
				t.Fatalf("scored a run of %d rows, limit %d", c.s.max, c.limit)
			}
		})
	}
}

func TestProbeRowsDistinct(t *testing.T) {
	const n, d = 256, 26
	p := runtime.ProbeRows(n, d)
	seen := map[string]bool{}
	for i := range n {
		k := string(float32Bytes(p[i*d : (i+1)*d]))
		if seen[k] {
			t.Fatalf("row %d repeats an earlier row", i)
		}
		seen[k] = true
		for _, v := range p[i*d : (i+1)*d] {
			if !(v >= 0 && v < 16) {
				t.Fatalf("probe value %v outside [0, 16)", v)
			}
		}
	}
}

func float32Bytes(v []float32) []byte {
	b := make([]byte, 0, 4*len(v))
	for _, f := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
	}
	return b
}

// TestConsistentRunReal checks the run size that ConsistentRun picks for
// real exported models in ONNX Runtime on this machine: in runs of that
// size, rows the check never saw (other data) score as they do alone.
// On a CPU with the int8 tile defect the static-QDQ models get a smaller
// run than 256; which one is the machine's business, the invariance is not.
func TestConsistentRunReal(t *testing.T) {
	p := models(t)
	other := aetest.Data(600, dim, 9, false)
	for _, key := range []string{ae.KindSingle + "/" + bundle.QuantNone, ae.KindSingle + "/" + bundle.QuantInt8Static,
		ae.KindKitNET + "/" + bundle.QuantInt8Static, ae.KindKitNET + "/" + bundle.QuantInt8Dyn} {
		t.Run(key, func(t *testing.T) {
			s, err := runtime.Open(p[key], dim, 256)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			k, err := runtime.ConsistentRun(s, nil, 256, 1e-5)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: consistent run size %d", key, k)
			if k < 1 || k > 256 {
				t.Fatalf("run size %d outside [1, 256]", k)
			}
			if key == ae.KindSingle+"/"+bundle.QuantNone && k != 256 {
				t.Errorf("float32 model: run size %d, want 256 (float kernels are run-size invariant)", k)
			}
			if key == ae.KindKitNET+"/"+bundle.QuantInt8Dyn {
				return // dynamic quantization scales each run by its own range: not invariant by design
			}
			ref := make([]float32, other.Rows)
			for i := range other.Rows {
				sc, _, err := s.Score(other.Row(i), 1)
				if err != nil {
					t.Fatal(err)
				}
				ref[i] = sc[0]
			}
			for off := 0; off < other.Rows; off += k {
				n := min(k, other.Rows-off)
				sc, _, err := s.Score(other.Data[off*dim:(off+n)*dim], n)
				if err != nil {
					t.Fatal(err)
				}
				for i, v := range sc {
					if d := v - ref[off+i]; d > 1e-5 || d < -1e-5 {
						t.Fatalf("row %d scored %v in a run of %d, %v alone", off+i, v, n, ref[off+i])
					}
				}
			}
		})
	}
}

// TestScoreInto: ScoreInto writes what Score returns, in runs of the run
// size, and refuses short output slices.
func TestScoreInto(t *testing.T) {
	s, err := runtime.Open(models(t)[ae.KindSingle+"/"+bundle.QuantNone], dim, 512)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SetRunSize(64); err != nil {
		t.Fatal(err)
	}
	data := aetest.Data(300, dim, 4, false)
	sc, co, err := s.Score(data.Data, data.Rows)
	if err != nil {
		t.Fatal(err)
	}
	wantS, wantC := append([]float32(nil), sc...), append([]float32(nil), co...)
	gotS, gotC := make([]float32, data.Rows), make([]float32, data.Rows*dim)
	if err := s.ScoreInto(data.Data, data.Rows, gotS, gotC); err != nil {
		t.Fatal(err)
	}
	for i := range wantS {
		if gotS[i] != wantS[i] {
			t.Fatalf("score %d: ScoreInto %v, Score %v", i, gotS[i], wantS[i])
		}
	}
	for i := range wantC {
		if gotC[i] != wantC[i] {
			t.Fatalf("contribution %d: ScoreInto %v, Score %v", i, gotC[i], wantC[i])
		}
	}
	if err := s.ScoreInto(data.Data, data.Rows, gotS[:10], gotC); err == nil {
		t.Error("ScoreInto accepted a short score slice")
	}
	if err := s.ScoreInto(data.Data[:dim], 2, gotS, gotC); err == nil {
		t.Error("ScoreInto accepted 2 vectors with one vector's values")
	}
}
