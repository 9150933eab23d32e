package calib

import (
	"math"
	"testing"
)

// TestSpearmanNaN: NaN has no rank. Sorting with < leaves it wherever the
// sort happens to put it, so the ranks of the other scores came out wrong
// and Spearman returned a plausible rho (0.9 below) with no error, unlike
// every other function of this package, which rejects NaN.
func TestSpearmanNaN(t *testing.T) {
	nan := math.NaN()
	cases := []struct {
		name string
		a, b []float64
	}{
		{"NaN in a", []float64{3, 1, nan, 2, 5}, []float64{1, 2, 3, 4, 5}},
		{"NaN in b", []float64{1, 2, 3, 4, 5}, []float64{1, nan, 3, 2, 5}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if rho, err := Spearman(c.a, c.b); err == nil {
				t.Fatalf("Spearman = %v, nil; want an error", rho)
			}
			if rho := SubsetSpearman(c.a, c.b, []int{0, 1, 2, 3, 4}); rho != 0 {
				t.Fatalf("SubsetSpearman = %v, want 0 (cannot compute)", rho)
			}
		})
	}
	a32 := []float32{1, 2, float32(nan)}
	if rho, err := Spearman(a32, []float32{1, 2, 3}); err == nil {
		t.Fatalf("Spearman(float32 with NaN) = %v, nil; want an error", rho)
	}
}

// TestQuantileEqualInfinite: between two equal order statistics the type-7
// quantile is that value; when both are +Inf (NaN scores counted as +Inf,
// plugins/sdk/selfcal) or both -Inf, interpolating gave Inf − Inf = NaN.
func TestQuantileEqualInfinite(t *testing.T) {
	inf := math.Inf(1)
	cases := []struct {
		name string
		xs   []float64
		q    float64
		want float64
	}{
		// sorted 1 2 3 +Inf +Inf: h = 0.9·4 = 3.6, between s[3] = s[4] = +Inf.
		{"between two +Inf", []float64{3, inf, 1, inf, 2}, 0.9, inf},
		// sorted -Inf -Inf 3: h = 0.25·2 = 0.5, between s[0] = s[1] = -Inf.
		{"between two -Inf", []float64{3, -inf, -inf}, 0.25, -inf},
		// finite ties are unchanged: sorted 1 2 2 4, h = 0.5·3 = 1.5.
		{"between equal finite", []float64{4, 2, 1, 2}, 0.5, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got, err := Quantile(c.xs, c.q); err != nil || got != c.want {
				t.Fatalf("Quantile(%v) = %v, %v; want %v", c.q, got, err, c.want)
			}
		})
	}
}
