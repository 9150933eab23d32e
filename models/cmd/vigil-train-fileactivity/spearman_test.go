package main

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// TestCompareScoresDegenerate: compareScores returned NaN for a subset
// with constant scores (or fewer than two events), and encoding the report
// then failed ("json: unsupported value: NaN") after the bundle had been
// written. Every coefficient is now a number or null ("n/a" in Markdown),
// so the report always encodes.
func TestCompareScoresDegenerate(t *testing.T) {
	ramp := func(n int, f func(i int) float32) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = f(i)
		}
		return s
	}
	nan := float32(math.NaN())
	for _, tc := range []struct {
		name         string
		int8s, float []float32
		thr          float64
		nulls        []string // JSON keys whose value must be null
	}{
		{"agreeing", ramp(100, func(i int) float32 { return float32(i) }), ramp(100, func(i int) float32 { return float32(2 * i) }), 10, nil},
		{"constant int8", ramp(100, func(int) float32 { return 1 }), ramp(100, func(i int) float32 { return float32(i) }), 10,
			[]string{"all", "float_at_least_tenth_of_threshold", "top_5_percent"}},
		{"constant top 5%", ramp(100, func(i int) float32 { return float32(i) }), ramp(100, func(i int) float32 { return float32(min(i, 90)) }), 10,
			[]string{"top_5_percent"}},
		{"nothing near the threshold", ramp(100, func(i int) float32 { return float32(i) }), ramp(100, func(i int) float32 { return float32(i) }), 1e9,
			[]string{"float_at_least_tenth_of_threshold"}},
		{"one event", []float32{1}, []float32{2}, 1, []string{"all", "float_at_least_tenth_of_threshold", "top_5_percent"}},
		{"no events", nil, nil, 1, []string{"all", "float_at_least_tenth_of_threshold", "top_5_percent"}},
		{"NaN score", append(ramp(99, func(i int) float32 { return float32(i) }), nan), ramp(100, func(i int) float32 { return float32(i) }), 10,
			[]string{"all", "float_at_least_tenth_of_threshold", "top_5_percent"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := compareScores(tc.int8s, tc.float, tc.thr)
			js, err := json.Marshal(&Report{Spearman: q, SpearmanInt8Float: q.All})
			if err != nil {
				t.Fatalf("encode report: %v", err)
			}
			var got struct{ Spearman map[string]*float64 }
			if err := json.Unmarshal(js, &got); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"all", "float_at_least_tenth_of_threshold", "top_5_percent"} {
				isNull := got.Spearman[k] == nil
				wantNull := strings.Contains(strings.Join(tc.nulls, ","), k)
				if isNull != wantNull {
					t.Errorf("%s: null %v, want %v (%s)", k, isNull, wantNull, js)
				}
				if !isNull && (*got.Spearman[k] < -1 || *got.Spearman[k] > 1) {
					t.Errorf("%s = %g", k, *got.Spearman[k])
				}
			}
			var md bytes.Buffer
			if err := (&Report{Spearman: q, SpearmanInt8Float: q.All}).write(&md); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(md.String(), "NaN") {
				t.Errorf("Markdown report shows NaN")
			}
		})
	}
}
