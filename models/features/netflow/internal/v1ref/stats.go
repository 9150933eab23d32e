package v1ref

import (
	"math"

	"github.com/vigil-edge/vigil/models/features/internal/fmath"
)

// Decay windows. Index i of every per-λ array refers to lambdas[i]. The
// first nLo windows are fast (their state stays small and is kept in
// float32); the last nHi are slow (their decayed weights grow to millions on a
// busy stream, where float32 rounding would stall the sums), kept in float64.
var lambdas = [nLambda]float64{5, 3, 1, 0.1, 0.01}

var lambdaLabels = [nLambda]string{"5", "3", "1", "0.1", "0.01"}

const (
	nLambda = 5
	nLo     = 3
	nHi     = nLambda - nLo
)

// float is the storage type of damped statistics.
type float interface{ ~float32 | ~float64 }

// decays holds the decay factor 2^(-λ·Δt) of every window.
type decays [nLambda]float64

// decayRates holds -λ per nanosecond.
var decayRates = [nLambda]float64{-5e-9, -3e-9, -1e-9, -1e-10, -1e-11}

// decayFactors returns 2^(-λ·dt) for every λ; dt in nanoseconds. dt <= 0
// (a repeated or out-of-order timestamp) means no decay, as in AfterImage.
// Each factor is fmath.Exp2Poly of -λ·dt (the exponential that the SIMD
// code computes lane by lane).
func decayFactors(dt int64) decays {
	if dt <= 0 {
		return decays{1, 1, 1, 1, 1}
	}
	var f decays
	for i := range f {
		f[i] = fmath.Exp2Poly(float64(float64(dt) * decayRates[i])) // rounded: no fused multiply-add
	}
	return f
}

// stat1 is one damped 1D statistic (AfterImage incStat) in Welford form:
// decayed weight w, mean m and the decayed sum of squared deviations v, so
// that variance = v/w. This equals AfterImage's |CF2/w - mean²| in exact
// arithmetic and does not cancel catastrophically.
type stat1[F float] struct{ w, m, v F }

func (s *stat1[F]) insert(f, x float64) {
	w := float64(s.w)*f + 1
	m := float64(s.m)
	d := x - m
	m += d / w
	s.v = F(float64(s.v)*f + d*(x-m))
	s.w = F(w)
	s.m = F(m)
}

func (s *stat1[F]) variance() float64 {
	if s.w <= 0 || s.v <= 0 {
		return 0
	}
	return float64(s.v) / float64(s.w)
}

// put writes weight, mean, std.
func (s *stat1[F]) put(out []float32) {
	out[0] = float32(s.w)
	out[1] = float32(s.m)
	out[2] = float32(math.Sqrt(s.variance()))
}

// stat2 is the damped statistics of the two directions of one channel or
// socket pair plus their correlation (AfterImage incStat_cov): for direction
// d, weight w[d], mean m[d], squared deviations v[d]; cf3 is the decayed sum
// of residual products and r[d] the last residual of direction d. The
// covariance weight (AfterImage w3) equals w[0]+w[1]: both grow by one per
// packet of the pair and decay together, so it is not stored.
type stat2[F float] struct {
	w, m, v [2]F
	cf3     F
	r       [2]float32
}

// insert adds value x of direction d after decaying the whole pair by f.
func (s *stat2[F]) insert(f float64, d int, x float64) {
	o := 1 - d
	if f != 1 {
		s.w[o] = F(float64(s.w[o]) * f)
		s.v[o] = F(float64(s.v[o]) * f)
		s.cf3 = F(float64(s.cf3) * f)
	}
	w := float64(s.w[d])*f + 1
	m := float64(s.m[d])
	dev := x - m
	m += dev / w
	s.v[d] = F(float64(s.v[d])*f + dev*(x-m))
	s.w[d] = F(w)
	s.m[d] = F(m)
	res := x - m
	s.cf3 = F(float64(s.cf3) + res*float64(s.r[o]))
	s.r[d] = float32(res)
}

func (s *stat2[F]) variance(d int) float64 {
	if s.w[d] <= 0 || s.v[d] <= 0 {
		return 0
	}
	return float64(s.v[d]) / float64(s.w[d])
}

// put writes, for direction d: weight, mean, std, magnitude, radius,
// covariance, correlation coefficient.
func (s *stat2[F]) put(d int, out []float32) {
	o := 1 - d
	vd, vo := s.variance(d), s.variance(o)
	md, mo := float64(s.m[d]), float64(s.m[o])
	sd, so := math.Sqrt(vd), math.Sqrt(vo)
	cov := 0.0
	if w3 := float64(s.w[0]) + float64(s.w[1]); w3 > 0 {
		cov = float64(s.cf3) / w3
	}
	pcc := 0.0
	if ss := sd * so; ss != 0 {
		pcc = cov / ss
	}
	out[0] = float32(s.w[d])
	out[1] = float32(md)
	out[2] = float32(sd)
	out[3] = float32(math.Sqrt(md*md + mo*mo))
	out[4] = float32(math.Sqrt(vd*vd + vo*vo))
	out[5] = float32(cov)
	out[6] = float32(pcc)
}

// multi1 is a 1D statistic over all five windows.
type multi1 struct {
	lo [nLo]stat1[float32]
	hi [nHi]stat1[float64]
}

func (s *multi1) insert(f *decays, x float64) {
	for i := range s.lo {
		s.lo[i].insert(f[i], x)
	}
	for i := range s.hi {
		s.hi[i].insert(f[nLo+i], x)
	}
}

// put writes 3 values per window, windows in lambdas order.
func (s *multi1) put(out []float32) {
	for i := range s.lo {
		s.lo[i].put(out[3*i : 3*i+3])
	}
	for i := range s.hi {
		s.hi[i].put(out[3*(nLo+i) : 3*(nLo+i)+3])
	}
}

// multi2 is a 2D statistic over all five windows.
type multi2 struct {
	lo [nLo]stat2[float32]
	hi [nHi]stat2[float64]
}

func (s *multi2) insert(f *decays, d int, x float64) {
	for i := range s.lo {
		s.lo[i].insert(f[i], d, x)
	}
	for i := range s.hi {
		s.hi[i].insert(f[nLo+i], d, x)
	}
}

// put writes 7 values per window, windows in lambdas order.
func (s *multi2) put(d int, out []float32) {
	for i := range s.lo {
		s.lo[i].put(d, out[7*i:7*i+7])
	}
	for i := range s.hi {
		s.hi[i].put(d, out[7*(nLo+i):7*(nLo+i)+7])
	}
}
