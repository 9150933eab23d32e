package netflow

import (
	"math"
	"unsafe"

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

// decayFactors returns 2^(-λ·dt) for every λ; dt in seconds. dt <= 0 (a
// repeated or out-of-order timestamp) means no decay, as in AfterImage.
func decayFactors(dt float64) decays {
	if !(dt > 0) { // also NaN
		return decays{1, 1, 1, 1, 1}
	}
	// One exp2 and a few products: f(0.1)=f(0.01)^10, f(1)=f(0.1)^10,
	// f(3)=f(1)^3, f(5)=f(3)·f(1)^2. Relative error stays near 1e-15.
	e := fmath.Exp2(-0.01 * dt)
	e2 := e * e
	e4 := e2 * e2
	e8 := e4 * e4
	f01 := e8 * e2
	g2 := f01 * f01
	g4 := g2 * g2
	g8 := g4 * g4
	f1 := g8 * g2
	f12 := f1 * f1
	f3 := f12 * f1
	f5 := f3 * f12
	return decays{f5, f3, f1, f01, e}
}

// ones is the decay of a zero or negative time step: none.
var ones = decays{1, 1, 1, 1, 1}

// decayCache remembers the decay factors of recent time steps in a
// direct-mapped table. The tables' clocks often agree (the channel and the
// jitter of a packet, or its MAC+IP and its channel, were often last seen
// by the same earlier packet), and time steps recur (captures have
// microsecond timestamps): on the reference capture a packet needs 3.4
// sets of factors (twins, see Extractor.update, need none) and computes
// 0.84 of them.
type decayCache struct {
	e [dcSize]dcEntry
}

// dcBits sizes the table: 4096 entries, 192 KB. On the reference capture
// 31% of the time steps miss a 1024-entry table, 25% this one.
const (
	dcBits = 12
	dcSize = 1 << dcBits
)

type dcEntry struct {
	dt int64 // the step f is for; 0 = none (steps used are > 0)
	f  decays
}

// advance moves an entry's clock to now and returns the decay factors for
// the time elapsed since its previous packet. The result is valid until
// the next call.
func (c *decayCache) advance(last *int64, now int64) *decays {
	dt := now - *last
	if dt <= 0 {
		return &ones
	}
	*last = now
	m := &c.e[uint64(dt)*0x9e3779b97f4a7c15>>(64-dcBits)] // Fibonacci hashing
	if m.dt != dt {
		m.dt = dt
		m.f = decayFactors(float64(dt) * 1e-9)
	}
	return &m.f
}

// stat1 is one damped 1D statistic (AfterImage incStat) in Welford form:
// decayed weight w, mean m and the decayed sum of squared deviations v, so
// that variance = v/w. This equals AfterImage's |CF2/w - mean²| in exact
// arithmetic and does not cancel catastrophically.
type stat1[F float] struct{ w, m, v F }

// stat2 is the damped statistics of the two directions of one channel or
// socket pair plus their correlation (AfterImage incStat_cov): for direction
// d, weight s[d].w, mean s[d].m, squared deviations s[d].v; cf3 is the
// decayed sum of residual products and r[d] the last residual of direction
// d. The covariance weight (AfterImage w3) equals w[0]+w[1]: both grow by
// one per packet of the pair and decay together, so it is not stored.
type stat2[F float] struct {
	s   [2]stat1[F]
	cf3 F
	r   [2]float32
}

// multi1 is a 1D statistic over all five windows.
type multi1 struct {
	lo [nLo]stat1[float32]
	hi [nHi]stat1[float64]
}

// multi2 is a 2D statistic over all five windows.
type multi2 struct {
	lo [nLo]stat2[float32]
	hi [nHi]stat2[float64]
}

// The update functions below are the hot path of the extractor (25 window
// updates per packet), written out per storage type without calls. Each
// window's update, on weight w, mean m and squared deviations v decayed by f:
//
//	w' = w·f + 1,  m' = m + (x-m)/w',  v' = v·f + (x-m)(x-m')
//
// with the same operations in the same order as the straightforward code
// (internal/v1ref), so that the state stays bit-identical to it. Then the
// features from the stored state, as in AfterImage: weight, mean and std =
// sqrt(v'/w'); for 2D statistics also magnitude sqrt(m_d² + m_o²), radius
// sqrt(var_d² + var_o²), covariance cf3/(w_d+w_o) and pcc = cov/(std_d·std_o).
// The other direction's variance and the covariance share one reciprocal:
// the features equal the reference's within a float32 rounding or two
// (TestMatchesReference).
//
// Every feature is finite, so the extractor needs no NaN/Inf pass over its
// output (TestFiniteOnOddInput and FuzzExtract check it): inputs are
// finite (sizes up to 65535, time steps up to 2^63 ns), weights are at
// least 1 after an update, means stay within the values, variances within
// their squared range, square roots get non-negative arguments, and every
// divisor is checked (w >= 1, w_d+w_o >= 1, the other direction's weight
// > 0, or > 2^-900 for the shared reciprocal in float64). The one quotient
// that can overflow float32, the correlation of two vanishing deviations,
// is set to 0 then, as the reference's NaN/Inf pass did.

// update adds x to every window after decaying it by f and writes weight,
// mean and std of each window, windows in lambdas order.
func (s *multi1) update(f *decays, x float64, out *[3 * nLambda]float32) {
	for i := range nLo {
		st := &s.lo[i]
		fi := f[i]
		w := float64(st.w)*fi + 1
		m := float64(st.m)
		d := x - m
		m += d / w
		wf, mf, vf := float32(w), float32(m), float32(float64(st.v)*fi+d*(x-m))
		st.w, st.m, st.v = wf, mf, vf
		var sd float32
		if vf > 0 {
			sd = float32(math.Sqrt(float64(vf) / float64(wf)))
		}
		ob := (*[3]float32)(out[3*i:])
		ob[0], ob[1], ob[2] = wf, mf, sd
	}
	for i := range nHi {
		st := &s.hi[i]
		fi := f[nLo+i]
		w := st.w*fi + 1
		m := st.m
		d := x - m
		m += d / w
		v := st.v*fi + d*(x-m)
		st.w, st.m, st.v = w, m, v
		var sd float32
		if v > 0 {
			sd = float32(math.Sqrt(v / w))
		}
		ob := (*[3]float32)(out[3*(nLo+i):])
		ob[0], ob[1], ob[2] = float32(w), float32(m), sd
	}
}

// update adds x of direction d (0 or 1) to every window after decaying the
// whole pair by f and writes, for direction d, weight, mean, std,
// magnitude, radius, covariance and correlation coefficient of each window.
func (s *multi2) update(f *decays, d int, x float64, out *[7 * nLambda]float32) {
	d &= 1
	o := 1 - d
	for i := range nLo {
		st := &s.lo[i]
		sd, so := &st.s[d], &st.s[o]
		fi := f[i]
		if fi != 1 {
			so.w = float32(float64(so.w) * fi)
			so.v = float32(float64(so.v) * fi)
			st.cf3 = float32(float64(st.cf3) * fi)
		}
		w := float64(sd.w)*fi + 1
		m := float64(sd.m)
		dev := x - m
		m += dev / w
		wf, mf, vf := float32(w), float32(m), float32(float64(sd.v)*fi+dev*(x-m))
		sd.w, sd.m, sd.v = wf, mf, vf
		res := x - m
		cf3 := float32(float64(st.cf3) + res*float64(st.r[o]))
		st.cf3 = cf3
		st.r[d] = float32(res)

		// Features from the stored state.
		var vd float64
		if vf > 0 {
			vd = float64(vf) / float64(wf)
		}
		wo, vo := float64(so.w), float64(so.v)
		w3 := float64(wf) + wo // >= 1: w[d] >= 1
		var vod, cov float64
		if vo > 0 && wo > 0 {
			q := 1 / (wo * w3)            // finite: float32 weights are >= 1e-45
			vod = vo * (w3 * q)           // vo/wo
			cov = float64(cf3) * (wo * q) // cf3/w3
		} else {
			cov = float64(cf3) / w3
		}
		sdd, sdo := math.Sqrt(vd), math.Sqrt(vod)
		var pcc float32
		if ss := sdd * sdo; ss != 0 {
			if pcc = float32(cov / ss); pcc-pcc != 0 { // ±Inf: vanishing deviations
				pcc = 0
			}
		}
		md, mo := float64(mf), float64(so.m)
		ob := (*[7]float32)(out[7*i:])
		ob[0], ob[1], ob[2] = wf, mf, float32(sdd)
		ob[3] = float32(math.Sqrt(md*md + mo*mo))
		ob[4] = float32(math.Sqrt(vd*vd + vod*vod))
		ob[5], ob[6] = float32(cov), pcc
	}
	for i := range nHi {
		st := &s.hi[i]
		sd, so := &st.s[d], &st.s[o]
		fi := f[nLo+i]
		if fi != 1 {
			so.w *= fi
			so.v *= fi
			st.cf3 *= fi
		}
		w := sd.w*fi + 1
		m := sd.m
		dev := x - m
		m += dev / w
		v := sd.v*fi + dev*(x-m)
		sd.w, sd.m, sd.v = w, m, v
		res := x - m
		cf3 := st.cf3 + res*float64(st.r[o])
		st.cf3 = cf3
		st.r[d] = float32(res)

		var vd float64
		if v > 0 {
			vd = v / w
		}
		wo, vo := so.w, so.v
		w3 := w + wo
		var vod, cov float64
		if vo > 0 && wo > 0x1p-900 { // far from underflow: q stays finite
			q := 1 / (wo * w3)
			vod = vo * (w3 * q)  // vo/wo
			cov = cf3 * (wo * q) // cf3/w3; no underflow of cf3·wo
		} else {
			if vo > 0 && wo > 0 {
				vod = vo / wo
			}
			cov = cf3 / w3
		}
		sdd, sdo := math.Sqrt(vd), math.Sqrt(vod)
		var pcc float32
		if ss := sdd * sdo; ss != 0 {
			if pcc = float32(cov / ss); pcc-pcc != 0 { // ±Inf: vanishing deviations
				pcc = 0
			}
		}
		mo := so.m
		ob := (*[7]float32)(out[7*(nLo+i):])
		ob[0], ob[1], ob[2] = float32(w), float32(m), float32(sdd)
		ob[3] = float32(math.Sqrt(m*m + mo*mo))
		ob[4] = float32(math.Sqrt(vd*vd + vod*vod))
		ob[5], ob[6] = float32(cov), pcc
	}
}

// The fresh functions are update on a zero (just created) statistic, whose
// clock is now (no decay): every window then holds weight 1, mean x and no
// deviation, and its features follow without arithmetic. A port or host
// scan creates an entry per packet, so this keeps it cheap.

// fresh is update on a zero s.
func (s *multi1) fresh(x float64, out *[3 * nLambda]float32) {
	for i := range nLo {
		s.lo[i] = stat1[float32]{w: 1, m: float32(x)}
	}
	for i := range nHi {
		s.hi[i] = stat1[float64]{w: 1, m: x}
	}
	for i := range nLambda {
		out[3*i], out[3*i+1], out[3*i+2] = 1, float32(x), 0
	}
}

// fresh is update on a zero s.
func (s *multi2) fresh(d int, x float64, out *[7 * nLambda]float32) {
	d &= 1
	for i := range nLo {
		s.lo[i].s[d] = stat1[float32]{w: 1, m: float32(x)}
	}
	for i := range nHi {
		s.hi[i].s[d] = stat1[float64]{w: 1, m: x}
	}
	mag := float32(math.Sqrt(float64(float32(x)) * float64(float32(x))))
	for i := range nLambda {
		o := out[7*i : 7*i+7 : 7*i+7]
		o[0], o[1], o[2], o[3], o[4], o[5], o[6] = 1, float32(x), 0, mag, 0, 0, 0
	}
}

// The twins functions report whether two statistics hold the same bytes
// (and so evolve identically). Float comparison would call +0 and -0
// equal and NaN unequal; the arrays compare with the runtime's vector
// memequal. Padding bytes take part: should they differ, the twins are
// merely computed twice.
type (
	words1 = [unsafe.Sizeof(multi1{}) / 4]uint32
	words2 = [unsafe.Sizeof(multi2{}) / 4]uint32
)

func twins1(a, b *multi1) bool {
	return *(*words1)(unsafe.Pointer(a)) == *(*words1)(unsafe.Pointer(b))
}

func twins2(a, b *multi2) bool {
	return *(*words2)(unsafe.Pointer(a)) == *(*words2)(unsafe.Pointer(b))
}

// The word views above need sizes that are multiples of 4.
var _ = [1]struct{}{}[unsafe.Sizeof(multi1{})%4+unsafe.Sizeof(multi2{})%4]
