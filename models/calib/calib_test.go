package calib

import (
	"math"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestThreshold(t *testing.T) {
	seq := func(n int) []float64 {
		out := make([]float64, n)
		for i := range out {
			out[i] = float64(n - i) // descending input: sorting is part of the test
		}
		return out
	}
	cases := []struct {
		name   string
		scores []float64
		fpr    float64
		want   float64
	}{
		{"1000 at 0.1%: one allowed above", seq(1000), 0.001, 999},
		{"999 at 0.1%: none allowed", seq(999), 0.001, 999},
		{"2000 at 0.1%: two allowed", seq(2000), 0.001, 1998},
		{"10 at 10%", seq(10), 0.1, 9},
		{"10 at 25% floors to 2", seq(10), 0.25, 8},
		{"fpr 0 is the max", seq(10), 0, 10},
		{"ties stay conservative", []float64{1, 2, 2, 2, 2, 2, 2, 2, 2, 3}, 0.1, 2},
		{"single", []float64{5}, 0.5, 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Threshold(tc.scores, tc.fpr)
			if err != nil || got != tc.want {
				t.Fatalf("Threshold = %v, %v; want %v", got, err, tc.want)
			}
			if r := RateAbove(tc.scores, got); r > tc.fpr+1e-12 {
				t.Fatalf("realised FPR %v > %v", r, tc.fpr)
			}
		})
	}
	for _, bad := range []struct {
		s   []float64
		fpr float64
	}{{nil, 0.1}, {[]float64{1}, 1}, {[]float64{1}, -0.1}, {[]float64{math.NaN()}, 0.1}} {
		if _, err := Threshold(bad.s, bad.fpr); err == nil {
			t.Errorf("Threshold(%v, %v) accepted", bad.s, bad.fpr)
		}
	}
	if MinSamples(0.001) != 1000 {
		t.Fatal(MinSamples(0.001))
	}
}

func TestQuantile(t *testing.T) {
	xs := []float32{4, 1, 3, 2} // sorted 1 2 3 4
	cases := []struct{ q, want float64 }{{0, 1}, {1, 4}, {0.5, 2.5}, {0.25, 1.75}, {0.9, 3.7}}
	for _, c := range cases {
		got, err := Quantile(xs, c.q)
		if err != nil || !near(got, c.want) {
			t.Errorf("Quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	// On a sample point next to +Inf (a NaN score counted as +Inf, plugins/sdk/selfcal): the
	// sample itself, not 0·Inf = NaN; between a sample and +Inf: +Inf.
	inf := float32(math.Inf(1))
	withInf := []float32{3, inf, 1, 2, 4} // sorted 1 2 3 4 +Inf
	for _, c := range []struct{ q, want float64 }{{0.75, 4}, {0.5, 3}, {0.9, math.Inf(1)}, {1, math.Inf(1)}} {
		if got, err := Quantile(withInf, c.q); err != nil || got != c.want {
			t.Errorf("Quantile(%v) with +Inf = %v, %v; want %v", c.q, got, err, c.want)
		}
	}
}

func TestROCAUC(t *testing.T) {
	cases := []struct {
		name           string
		benign, attack []float64
		want           float64
	}{
		{"perfect", []float64{1, 2, 3}, []float64{4, 5}, 1},
		{"inverted", []float64{4, 5}, []float64{1, 2, 3}, 0},
		{"all tied", []float64{1, 1}, []float64{1, 1}, 0.5},
		// pairs (a,b): 0.35>0.1 ✓, >0.4 ✗, 0.8>0.1 ✓, >0.4 ✓ → 3/4 (sklearn's classic example).
		{"sklearn example", []float64{0.1, 0.4}, []float64{0.35, 0.8}, 0.75},
		// a=2 vs b{1,2,3}: 1 + 0.5 = 1.5; a=3: 2 + 0.5 = 2.5 → 4/6.
		{"ties half", []float64{1, 2, 3}, []float64{2, 3}, 4.0 / 6},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ROCAUC(tc.benign, tc.attack)
			if err != nil || !near(got, tc.want) {
				t.Fatalf("ROCAUC = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	if _, err := ROCAUC([]float64{}, []float64{1}); err == nil {
		t.Fatal("empty accepted")
	}
}

func TestAveragePrecision(t *testing.T) {
	cases := []struct {
		name           string
		benign, attack []float64
		want           float64
	}{
		{"perfect", []float64{1, 2}, []float64{3, 4}, 1},
		// sklearn docs: y=[0,0,1,1], s=[0.1,0.4,0.35,0.8] → 0.8333…
		// descending: 0.8(+) P=1 R=.5; 0.4(−); 0.35(+) P=2/3 R=1 → .5·1 + .5·2/3 = 0.8333.
		{"sklearn example", []float64{0.1, 0.4}, []float64{0.35, 0.8}, 0.5 + 0.5*2.0/3},
		// all tied: one threshold, P = 2/4, R = 1.
		{"all tied", []float64{1, 1}, []float64{1, 1}, 0.5},
		{"worst", []float64{3, 4}, []float64{1}, 1.0 / 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AveragePrecision(tc.benign, tc.attack)
			if err != nil || !near(got, tc.want) {
				t.Fatalf("AP = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestSpearman(t *testing.T) {
	cases := []struct {
		name string
		a, b []float64
		want float64
	}{
		{"monotone nonlinear", []float64{1, 2, 3, 4, 5}, []float64{1, 4, 9, 16, 1000}, 1},
		{"reversed", []float64{1, 2, 3}, []float64{3, 2, 1}, -1},
		// ranks a: 1 2 3 4 5; b: 2 1 4 3 5 → d² = 1+1+1+1+0 = 4 → 1 − 6·4/(5·24) = 0.8.
		{"two swaps", []float64{1, 2, 3, 4, 5}, []float64{2, 1, 4, 3, 5}, 0.8},
		// ties: b ranks 1.5 1.5 3 4 → pearson(1 2 3 4; 1.5 1.5 3 4) = 0.9486832980505138.
		{"ties", []float64{1, 2, 3, 4}, []float64{7, 7, 8, 9}, 0.9486832980505138},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Spearman(tc.a, tc.b)
			if err != nil || !near(got, tc.want) {
				t.Fatalf("Spearman = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	if _, err := Spearman([]float64{1, 1}, []float64{1, 2}); err == nil {
		t.Fatal("constant accepted")
	}
}

func TestEvaluate(t *testing.T) {
	benign := make([]float32, 1000)
	for i := range benign {
		benign[i] = float32(i) / 1000
	}
	attack := []float32{0.5, 2, 3}
	m, err := Evaluate(benign, attack, DefaultFPR)
	if err != nil {
		t.Fatal(err)
	}
	if !near(m.Threshold, float64(float32(0.998))) || !near(m.FPR, 0.001) || !near(m.TPR, 2.0/3) || m.Undercounted {
		t.Fatalf("metrics %+v", m)
	}
	if mp := m.Map(); mp["roc_auc"] == 0 || mp["tpr"] == 0 {
		t.Fatalf("map %v", mp)
	}
}

func TestSubsetSpearman(t *testing.T) {
	a := []float64{1, 2, 3, 4, 9}
	b := []float64{1, 2, 3, 4, -9} // the last row disagrees
	if got := SubsetSpearman(a, b, []int{0, 1, 2, 3}); got != 1 {
		t.Errorf("rho over agreeing rows = %v, want 1", got)
	}
	if got := SubsetSpearman(a, b, []int{0, 1, 2, 3, 4}); got >= 1 {
		t.Errorf("rho with the disagreeing row = %v, want < 1", got)
	}
	if got := SubsetSpearman(a, b, []int{2}); got != 0 {
		t.Errorf("rho over one row = %v, want 0", got)
	}
}
