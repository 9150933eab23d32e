package runtime_test

import (
	"testing"

	"github.com/vigil-edge/vigil/models/runtime"
)

// bigRunDefect scores row i as the sum of its features, except that in runs
// of more than 1024 rows every row after the 1024th is off by 1: a kernel
// defect that only long runs show.
type bigRunDefect struct {
	dim int
	max int
}

func (f *bigRunDefect) Dim() int { return f.dim }

func (f *bigRunDefect) Score(x []float32, n int) ([]float32, []float32, error) {
	f.max = max(f.max, n)
	sc := make([]float32, n)
	for i := range n {
		for _, v := range x[i*f.dim : (i+1)*f.dim] {
			sc[i] += v
		}
		if i >= 1024 {
			sc[i]++
		}
	}
	return sc, make([]float32, n*f.dim), nil
}

// TestConsistentRunNeverAcceptsUnexercisedSize: the run size ConsistentRun
// returns has been scored in full runs during the check. With a limit above
// the probe's rows (the default probe has at most 1024 rows; a caller's probe
// may be shorter), sizes no probe run ever reached were accepted: a scorer
// wrong only in runs of more than 1024 rows got 4096.
func TestConsistentRunNeverAcceptsUnexercisedSize(t *testing.T) {
	s := &bigRunDefect{dim: 8}
	k, err := runtime.ConsistentRun(s, nil, 4096, 1e-6)
	if err != nil {
		t.Fatal(err)
	}
	if k != 1024 {
		t.Errorf("default probe, limit 4096: run size %d (largest run scored %d), want 1024", k, s.max)
	}

	s = &bigRunDefect{dim: 8}
	probe := runtime.ProbeRows(100, 8)
	k, err = runtime.ConsistentRun(s, probe, 256, 1e-6)
	if err != nil {
		t.Fatal(err)
	}
	if k > s.max {
		t.Errorf("100 probe rows, limit 256: run size %d accepted, but no run of more than %d rows was scored", k, s.max)
	}
}
