package train

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/ae"
)

// spinScorer burns at least perRow of CPU time per row (by the thread clock), or else work
// arithmetic steps per row, and counts the rows it scored; it fails from failAt rows on, if
// failAt > 0.
type spinScorer struct {
	perRow time.Duration
	work   int
	rows   int
	failAt int
	sink   uint64
}

func (s *spinScorer) Score(features []float32, n int) ([]float32, []float32, error) {
	if s.failAt > 0 && s.rows+n > s.failAt {
		return nil, nil, errors.New("scorer broke")
	}
	if s.perRow > 0 {
		t0 := ThreadCPU()
		for ThreadCPU()-t0 < time.Duration(n)*s.perRow {
		}
	}
	// Fixed work, not a clock: the thread clock may tick coarsely, which would make two
	// time-based spinners of different cost look alike.
	x := s.sink | 1
	for range n * s.work {
		x = x*6364136223846793005 + 1442695040888963407
	}
	s.sink = x
	s.rows += n
	return make([]float32, n), nil, nil
}

func TestSpeed(t *testing.T) {
	data := ae.Matrix{Rows: 600, Cols: 2, Data: make([]float32, 1200)}
	sc := &spinScorer{perRow: 20 * time.Microsecond}
	v, err := Speed(sc, data, 256, 2, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	// 20 µs of CPU per row: at most 50,000 rows per CPU-second (the clock's granularity and the
	// loop's own cost only lower it), and whole runs of 256 rows only (600 rows: 2 runs a pass).
	if v <= 0 || v > 50_000*1.05 || sc.rows%256 != 0 || sc.rows < 2*256 {
		t.Errorf("speed %.0f rows/CPU-s after %d rows scored", v, sc.rows)
	}
	if _, err := Speed(sc, ae.Matrix{Rows: 100, Cols: 2, Data: make([]float32, 200)}, 256, 1, 0); err == nil || !strings.Contains(err.Error(), "fewer than one run") {
		t.Errorf("100 rows at batch 256: %v", err)
	}
	if _, err := Speed(&spinScorer{failAt: 300}, data, 256, 1, time.Millisecond); err == nil || !strings.Contains(err.Error(), "scorer broke") {
		t.Errorf("failing scorer: %v", err)
	}
	// Side by side: a scorer with 5 times the work per row is slower whatever the machine's load.
	sp, err := SideBySide(&spinScorer{work: 400}, &spinScorer{work: 2000}, data)
	if err != nil || !(sp.Int8 > 2*sp.Float) {
		t.Errorf("side by side: %+v, %v", sp, err)
	} else {
		t.Logf("side by side: %.0f vs %.0f rows per CPU-s", sp.Int8, sp.Float)
	}
	if _, err := SideBySide(&spinScorer{}, &spinScorer{failAt: 1}, data); err == nil || !strings.Contains(err.Error(), "float model") {
		t.Errorf("failing float scorer: %v", err)
	}
}
