package fmath

import "math"

// Coefficients of 2^r = Σ (ln 2)^n/n! · r^n, n = 0..13, correctly rounded
// (computed with 60-digit decimals). For |r| ≤ 1/2 the first omitted term
// is below 5e-18 of the result.
const (
	ec0  = 1.0
	ec1  = 0.6931471805599453
	ec2  = 0.24022650695910072
	ec3  = 0.05550410866482158
	ec4  = 0.009618129107628477
	ec5  = 0.0013333558146428443
	ec6  = 0.0001540353039338161
	ec7  = 1.5252733804059841e-05
	ec8  = 1.321548679014431e-06
	ec9  = 1.01780860092397e-07
	ec10 = 7.054911620801123e-09
	ec11 = 4.4455382718708116e-10
	ec12 = 2.5678435993488206e-11
	ec13 = 1.3691488853904128e-12
)

// Exp2Coef holds Exp2Poly's coefficients, index n for r^n, for vector
// versions of it.
var Exp2Coef = [14]float64{ec0, ec1, ec2, ec3, ec4, ec5, ec6, ec7, ec8, ec9, ec10, ec11, ec12, ec13}

// Exp2PolyMin is the smallest argument for which Exp2Poly is not 0.
const Exp2PolyMin = -1000

// Exp2Poly returns 2^x for x in [Exp2PolyMin, 0], and 0 for x <
// Exp2PolyMin (a decay factor below 1e-301 is no weight at all). It is
// exact where 2^x is a power of two (Exp2Poly(0) = 1) and measured within
// 2 ulp of math.Exp2 elsewhere (TestExp2Poly).
//
// Unlike Exp2 it is not math.Exp2: it is the decay function of vector
// code (netflow/v1), and the same function on every platform. Every step is
// one IEEE operation that vector lanes repeat exactly (round to nearest
// integer, subtract, fused multiply-adds of a degree-13 polynomial in
// Estrin's order, a product by a power of two), so that a lane-wise vector
// version returns the same bits. The order of the operations is part of
// the definition: change it and vector versions must change with it.
func Exp2Poly(x float64) float64 {
	if !(x >= Exp2PolyMin) { // also NaN
		return 0
	}
	k := math.RoundToEven(x)
	r := x - k // exact, |r| ≤ 1/2
	r2 := r * r
	r4 := r2 * r2
	r8 := r4 * r4
	a0 := math.FMA(ec1, r, ec0)
	a1 := math.FMA(ec3, r, ec2)
	a2 := math.FMA(ec5, r, ec4)
	a3 := math.FMA(ec7, r, ec6)
	a4 := math.FMA(ec9, r, ec8)
	a5 := math.FMA(ec11, r, ec10)
	a6 := math.FMA(ec13, r, ec12)
	b0 := math.FMA(a1, r2, a0)
	b1 := math.FMA(a3, r2, a2)
	b2 := math.FMA(a5, r2, a4)
	c0 := math.FMA(b1, r4, b0)
	c1 := math.FMA(a6, r4, b2)
	p := math.FMA(c1, r8, c0)
	// p·2^k, k ≥ -1000: a normal power of two, so the product is exact.
	return p * math.Float64frombits(uint64(int64(k)+1023)<<52)
}
