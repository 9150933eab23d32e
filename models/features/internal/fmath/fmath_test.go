package fmath

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestMatchesMath: Exp2, Exp2Pair and Log1p return the math package's bits
// on special values and 100,000 random arguments each.
func TestMatchesMath(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	xs := []float64{-1e-9, -1e-10, -0.1, -0.5, -1, -1.5, -2, -700, -1019.9, -1020, -1020.1, -1074, -1080, -5e-324,
		0, math.Copysign(0, -1), 1, math.Inf(-1), math.NaN()}
	for range 100_000 {
		xs = append(xs, -rng.Float64()*math.Pow(10, float64(rng.IntN(14)-9)))
	}
	for i, x := range xs {
		if got, want := Exp2(x), math.Exp2(x); math.Float64bits(got) != math.Float64bits(want) && !(got != got && want != want) {
			t.Fatalf("Exp2(%v) = %v, math.Exp2 %v", x, got, want)
		}
		y := xs[(i*7+3)%len(xs)]
		a, b := Exp2Pair(x, y)
		if wa, wb := math.Exp2(x), math.Exp2(y); math.Float64bits(a) != math.Float64bits(wa) && !(a != a && wa != wa) ||
			math.Float64bits(b) != math.Float64bits(wb) && !(b != b && wb != wb) {
			t.Fatalf("Exp2Pair(%v, %v) = %v, %v; math.Exp2 %v, %v", x, y, a, b, wa, wb)
		}
	}
	ls := []float64{5e-324, 1e-300, 1.0 / (1 << 54), 1.0 / (1 << 53), 1.0 / (1 << 29), 1.0/(1<<29) + 1e-20, 0.29, 0.2928932188134524,
		0.4142135623730950, 0.41421356237309515, 1, 2, 1e10, 1 << 53, 1<<53 + 2, 1e300, math.MaxFloat64}
	for range 100_000 {
		ls = append(ls, rng.Float64()*math.Pow(10, float64(rng.IntN(30)-15)))
	}
	for _, x := range ls {
		if got, want := Log1p(x), math.Log1p(x); math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("Log1p(%v) = %v, math.Log1p %v", x, got, want)
		}
	}
}

// TestExp2DecaySteps: Exp2 of the decay exponents netflow/v1 uses (-0.01·dt,
// dt from 1 ns to about 3 hours), 2M of them, and of special values.
func TestExp2DecaySteps(t *testing.T) {
	var x uint64 = 88172645463325252
	check := func(v float64) {
		if got, want := Exp2(v), math.Exp2(v); math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("exp2(%v) = %v, math.Exp2 = %v", v, got, want)
		}
	}
	for _, v := range []float64{0, -0.0, -1e-300, -1e-12, -0.5, -1, -1019.9, -1020, -1020.5, -1022, -1074, -1075, -2000,
		math.Inf(-1), math.Inf(1), math.NaN(), 1, 1023, 1e9} {
		check(v)
	}
	for range 2_000_000 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		// -0.01·dt for dt from 1 ns to about 3 hours, log-uniform.
		dt := math.Exp2(float64(x>>11)/(1<<53)*44) * 1e-9
		check(-0.01 * dt)
	}
}

// TestExp2Poly: Exp2Poly is within 3 ulp of math.Exp2 (itself within 1 ulp
// of 2^x) on 2M arguments over its whole range and on the decay exponents
// of steps from 1 ns to 3 hours, exact where 2^x is a power of two, and 0 below Exp2PolyMin.
func TestExp2Poly(t *testing.T) {
	ulps := func(got, want float64) float64 {
		return math.Abs(got-want) / (math.Nextafter(want, math.Inf(1)) - want)
	}
	var x uint64 = 88172645463325252
	worst := 0.0
	for i := range 2_000_000 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		u := float64(x>>11) / (1 << 53)
		v := -u * -Exp2PolyMin
		if i%2 == 1 { // -λ·Δt of steps from 1 ns to 3 hours, log-uniform
			v = -5e-9 * math.Exp2(u*44)
		}
		got, want := Exp2Poly(v), math.Exp2(v)
		if v < Exp2PolyMin {
			if got != 0 {
				t.Fatalf("Exp2Poly(%v) = %v, want 0", v, got)
			}
			continue
		}
		if d := ulps(got, want); d > 3 || !(got > 0) {
			t.Fatalf("Exp2Poly(%v) = %v, math.Exp2 %v: %.1f ulp", v, got, want, d)
		} else {
			worst = max(worst, d)
		}
	}
	t.Logf("largest difference to math.Exp2: %.2f ulp", worst)
	for n := 0; n <= -Exp2PolyMin; n++ {
		if got, want := Exp2Poly(-float64(n)), math.Ldexp(1, -n); got != want {
			t.Fatalf("Exp2Poly(%d) = %v, want %v", -n, got, want)
		}
	}
	for _, v := range []float64{math.Copysign(0, -1), 0} {
		if got := Exp2Poly(v); got != 1 {
			t.Fatalf("Exp2Poly(%v) = %v, want 1", v, got)
		}
	}
	for _, v := range []float64{Exp2PolyMin - 1e-9, -1e300, math.Inf(-1), math.NaN()} {
		if got := Exp2Poly(v); got != 0 {
			t.Fatalf("Exp2Poly(%v) = %v, want 0", v, got)
		}
	}
}
