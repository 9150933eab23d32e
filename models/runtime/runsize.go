package runtime

import (
	"errors"
	"fmt"
	"math"
)

// BatchScorer is what the run-size check needs of a scorer (Scorer, or a
// test double that reproduces a kernel defect).
type BatchScorer interface {
	Score(features []float32, n int) (scores, contrib []float32, err error)
	Dim() int
}

// ProbeRows returns n deterministic, pairwise different feature rows of
// dimension dim for the run-size check: values spread over [0, 16) in
// three magnitudes (ratios, small counts, log-scaled counts), with some
// zero features, so that the rows stay distinct after a model's input
// normalisation and 8-bit quantization.
func ProbeRows(n, dim int) []float32 {
	out := make([]float32, n*dim)
	x := uint64(0x9e3779b97f4a7c15)
	scales := [...]float32{1, 4, 16}
	for i := range n {
		for j := range dim {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			u := float32(x>>40) / (1 << 24)
			if (i+j)%7 == 3 {
				u = 0
			}
			out[i*dim+j] = u * scales[(i+j)%len(scales)]
		}
	}
	return out
}

// ConsistentRun returns the largest run size k ≤ limit (limit itself, then
// halving down to 1) at which s scores every probe row, in runs of k rows,
// the same as when the row is scored alone: within tol absolute on the
// score. Runs of one row are the reference.
//
// Why it exists: ONNX Runtime's int8 GEMM kernels can compute some rows of
// a larger run wrongly on some CPUs. With ORT 1.24.3 on an AVX-512 VNNI /
// AMX Xeon, the 32nd row of every 32-row block of a static-QDQ model is off
// by several thresholds (docs/models.md, section 4; likely
// microsoft/onnxruntime#26324). A packet's score must not depend on how the
// stream was cut into batches, so a detector runs each model at the largest
// run size that this check accepts on the machine it runs on, instead of a
// size fixed for the worst case. probe holds rows·Dim values (ProbeRows if
// nil: limit rows, at least 64, at most 1024). A run size is accepted only
// once full runs of it have been scored: with fewer probe rows than limit,
// the check starts at the largest halving of limit that the probe fills.
func ConsistentRun(s BatchScorer, probe []float32, limit int, tol float64) (int, error) {
	dim := s.Dim()
	if limit < 1 || dim < 1 {
		return 0, fmt.Errorf("run-size check: invalid limit %d or dim %d", limit, dim)
	}
	if !(tol >= 0) {
		return 0, errors.New("run-size check: tolerance must be ≥ 0")
	}
	if probe == nil {
		probe = ProbeRows(min(1024, max(limit, 64)), dim)
	}
	rows := len(probe) / dim
	if rows == 0 {
		return 0, errors.New("run-size check: no probe rows")
	}
	ref := make([]float32, rows)
	for i := range rows {
		sc, _, err := s.Score(probe[i*dim:(i+1)*dim], 1)
		if err != nil {
			return 0, fmt.Errorf("run-size check: %w", err)
		}
		if len(sc) != 1 {
			return 0, fmt.Errorf("run-size check: %d scores for one row", len(sc))
		}
		ref[i] = sc[0]
	}
	for k := limit; k > 1; k /= 2 {
		if k > rows {
			continue // no run of k rows to compare
		}
		ok, err := runsAgree(s, probe, rows, dim, k, ref, tol)
		if err != nil {
			return 0, err
		}
		if ok {
			return k, nil
		}
	}
	return 1, nil
}

// runsAgree scores the probe rows in runs of k and compares with ref.
func runsAgree(s BatchScorer, probe []float32, rows, dim, k int, ref []float32, tol float64) (bool, error) {
	for off := 0; off < rows; off += k {
		n := min(k, rows-off)
		sc, _, err := s.Score(probe[off*dim:(off+n)*dim], n)
		if err != nil {
			return false, fmt.Errorf("run-size check: runs of %d: %w", k, err)
		}
		if len(sc) != n {
			return false, fmt.Errorf("run-size check: %d scores for %d rows", len(sc), n)
		}
		for i, v := range sc {
			r := ref[off+i]
			if v == r || (r != r && v != v) {
				continue
			}
			if !(math.Abs(float64(v)-float64(r)) <= tol) {
				return false, nil
			}
		}
	}
	return true, nil
}
