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

// decays holds the decay factor 2^(-λ·Δt) of every window, in the lanes
// the SIMD update loads: the fast windows in lanes 0-2, the slow ones from
// lane hiOff (4-5), so that each group is one aligned load; lane 3 repeats
// lane 2 (the fast code computes a fourth lane that it discards: it gets
// an ordinary number) and lanes 6-7 are 1.
type decays [8]float64

// hiOff is the lane of the first slow window in decays.
const hiOff = 4

// decayRates holds -λ per nanosecond for every lane of decays.
var decayRates = decays{-5e-9, -3e-9, -1e-9, -1e-9, -1e-10, -1e-11, 0, 0}

// decayFactors returns the decay factors of a time step of dt nanoseconds.
// dt <= 0 (a repeated or out-of-order timestamp) means no decay, as in
// AfterImage.
func decayFactors(dt int64) (f decays) {
	if dt <= 0 {
		return ones
	}
	setDecay(&f, dt)
	return f
}

// setDecay stores the factors of a step of dt > 0 nanoseconds in *f: each
// is fmath.Exp2Poly(-λ·dt), an exponential that vector lanes compute
// exactly (decaySIMD in stats_simd_amd64.go), as the reference does
// (internal/v1ref).
func setDecay(f *decays, dt int64) {
	d := float64(dt)
	for i := range nLo {
		f[i] = fmath.Exp2Poly(float64(d * decayRates[i])) // rounded: no fused multiply-add
	}
	for i := hiOff; i < hiOff+nHi; i++ {
		f[i] = fmath.Exp2Poly(float64(d * decayRates[i]))
	}
	f[nLo], f[6], f[7] = f[nLo-1], 1, 1 // lane 3 repeats lane 2 (same rate); lanes 6-7 have rate 0
}

// ones is the decay of a zero or negative time step: none.
var ones = decays{1, 1, 1, 1, 1, 1, 1, 1}

// decayCache computes the decay factors of the time steps. The SIMD code
// computes the factors of a step (decaySIMD, a few dozen vector
// instructions without a branch) unless it is the step of the call before;
// the scalar code remembers the factors of recent time steps in a
// direct-mapped table, allocated at its first use. The tables' clocks often
// agree (the channel and the jitter of a packet, or its MAC+IP and its
// channel, were often last seen by the same earlier packet), and time steps
// recur (captures have microsecond timestamps): on the reference capture a
// packet needs 3.4 sets of factors (twins, see Extractor.update, need none)
// and 25% of them miss the scalar code's table.
type decayCache struct {
	cur decays // the SIMD code's factors of the step dt
	dt  int64
	e   *[dcSize]dcEntry
}

// dcBits sizes the scalar code's table: 4096 entries, 288 KB.
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
	if simdActive {
		if dt != c.dt { // else the factors are there: a packet's tables often share a clock
			c.dt = dt
			decaySIMD(&c.cur, dt)
		}
		return &c.cur
	}
	if c.e == nil {
		c.e = new([dcSize]dcEntry)
	}
	m := &c.e[uint64(dt)*0x9e3779b97f4a7c15>>(64-dcBits)] // Fibonacci hashing
	if m.dt != dt {
		m.dt = dt
		setDecay(&m.f, dt)
	}
	return &m.f
}

// bytes is the memory the cache holds.
func (c *decayCache) bytes() int64 {
	n := int64(unsafe.Sizeof(*c))
	if c.e != nil {
		n += int64(unsafe.Sizeof(*c.e))
	}
	return n
}

// The statistics are kept in Welford form: for each window a decayed
// weight w, mean m and decayed sum of squared deviations v, so that
// variance = v/w. This equals AfterImage's |CF2/w - mean²| in exact
// arithmetic and does not cancel catastrophically.
//
// The state is laid out window by window within each field (a "structure
// of arrays"), so that the SIMD update (stats_simd_amd64.go) loads a
// field of all fast or all slow windows with one instruction; the scalar
// update does the same arithmetic window by window. The float64 fields of
// the slow windows come first, then the float32 ones: the SIMD update
// reads 16 bytes from a 12-byte float32 field (the 4th lane is ignored),
// and the fields after it, or the struct's padding, keep that read inside
// the struct (see the layout checks at the end of this file).

// multi1 is a 1D statistic (AfterImage incStat) over all five windows:
// weight, mean and squared deviations of the slow windows (λ = 0.1,
// 0.01) in float64, then of the fast ones (λ = 5, 3, 1) in float32.
type multi1 struct {
	hw, hm, hv [nHi]float64
	lw, lm, lv [nLo]float32
}

// multi2 is the damped statistics of the two directions of one channel or
// socket pair plus their correlation (AfterImage incStat_cov), over all
// five windows: for direction d and window i, weight w[d][i], mean
// m[d][i] and squared deviations v[d][i] (h* the slow windows in float64,
// l* the fast ones in float32); cf3 is the decayed sum of residual
// products and r[d] the last residuals of direction d (float32 for all
// windows). The covariance weight (AfterImage w3) equals w[0]+w[1]: both
// grow by one per packet of the pair and decay together, so it is not
// stored.
type multi2 struct {
	hw, hm, hv [2][nHi]float64
	hcf3       [nHi]float64
	r          [2][nLambda]float32
	lw, lm, lv [2][nLo]float32
	lcf3       [nLo]float32
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
// update (stats_scalar.go, stats_simd_amd64.go) runs the SIMD version
// where the build and the CPU allow it, else the scalar one here; both
// compute the same bits (TestSIMDMatchesScalar).
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

// updateScalar adds x to every window after decaying it by f and writes
// weight, mean and std of each window, windows in lambdas order.
func (s *multi1) updateScalar(f *decays, x float64, out *[3 * nLambda]float32) {
	for i := range nLo {
		fi := f[i]
		w := float64(s.lw[i])*fi + 1
		m := float64(s.lm[i])
		d := x - m
		m += d / w
		wf, mf, vf := float32(w), float32(m), float32(float64(s.lv[i])*fi+d*(x-m))
		s.lw[i], s.lm[i], s.lv[i] = wf, mf, vf
		var sd float32
		if vf > 0 {
			sd = float32(math.Sqrt(float64(vf) / float64(wf)))
		}
		ob := (*[3]float32)(out[3*i:])
		ob[0], ob[1], ob[2] = wf, mf, sd
	}
	for i := range nHi {
		fi := f[hiOff+i]
		w := s.hw[i]*fi + 1
		m := s.hm[i]
		d := x - m
		m += d / w
		v := s.hv[i]*fi + d*(x-m)
		s.hw[i], s.hm[i], s.hv[i] = w, m, v
		var sd float32
		if v > 0 {
			sd = float32(math.Sqrt(v / w))
		}
		ob := (*[3]float32)(out[3*(nLo+i):])
		ob[0], ob[1], ob[2] = float32(w), float32(m), sd
	}
}

// updateScalar adds x of direction d (0 or 1) to every window after
// decaying the whole pair by f and writes, for direction d, weight, mean,
// std, magnitude, radius, covariance and correlation coefficient of each
// window.
func (s *multi2) updateScalar(f *decays, d int, x float64, out *[7 * nLambda]float32) {
	d &= 1
	o := d ^ 1
	// The two directions' fields, as in the straightforward code's
	// per-direction statistics.
	lwd, lmd, lvd, lwo, lmo, lvo := &s.lw[d], &s.lm[d], &s.lv[d], &s.lw[o], &s.lm[o], &s.lv[o]
	rd, ro := &s.r[d], &s.r[o]
	for i := range nLo {
		fi := f[i]
		if fi != 1 {
			lwo[i] = float32(float64(lwo[i]) * fi)
			lvo[i] = float32(float64(lvo[i]) * fi)
			s.lcf3[i] = float32(float64(s.lcf3[i]) * fi)
		}
		w := float64(lwd[i])*fi + 1
		m := float64(lmd[i])
		dev := x - m
		m += dev / w
		wf, mf, vf := float32(w), float32(m), float32(float64(lvd[i])*fi+dev*(x-m))
		lwd[i], lmd[i], lvd[i] = wf, mf, vf
		res := x - m
		cf3 := float32(float64(s.lcf3[i]) + res*float64(ro[i]))
		s.lcf3[i] = cf3
		rd[i] = float32(res)

		// Features from the stored state.
		var vd float64
		if vf > 0 {
			vd = float64(vf) / float64(wf)
		}
		wo, vo := float64(lwo[i]), float64(lvo[i])
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
		md, mo := float64(mf), float64(lmo[i])
		ob := (*[7]float32)(out[7*i:])
		ob[0], ob[1], ob[2] = wf, mf, float32(sdd)
		ob[3] = float32(math.Sqrt(md*md + mo*mo))
		ob[4] = float32(math.Sqrt(vd*vd + vod*vod))
		ob[5], ob[6] = float32(cov), pcc
	}
	hwd, hmd, hvd, hwo, hmo, hvo := &s.hw[d], &s.hm[d], &s.hv[d], &s.hw[o], &s.hm[o], &s.hv[o]
	rdh, roh := (*[nHi]float32)(rd[nLo:]), (*[nHi]float32)(ro[nLo:])
	for i := range nHi {
		fi := f[hiOff+i]
		if fi != 1 {
			hwo[i] *= fi
			hvo[i] *= fi
			s.hcf3[i] *= fi
		}
		w := hwd[i]*fi + 1
		m := hmd[i]
		dev := x - m
		m += dev / w
		v := hvd[i]*fi + dev*(x-m)
		hwd[i], hmd[i], hvd[i] = w, m, v
		res := x - m
		cf3 := s.hcf3[i] + res*float64(roh[i])
		s.hcf3[i] = cf3
		rdh[i] = float32(res)

		var vd float64
		if v > 0 {
			vd = v / w
		}
		wo, vo := hwo[i], hvo[i]
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
		mo := hmo[i]
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
	xf := float32(x)
	// Element by element: array literals are built on the stack and
	// copied with wider loads, which stall on store forwarding.
	for i := range nLo {
		s.lw[i], s.lm[i], s.lv[i] = 1, xf, 0
	}
	for i := range nHi {
		s.hw[i], s.hm[i], s.hv[i] = 1, x, 0
	}
	for i := range nLambda {
		out[3*i], out[3*i+1], out[3*i+2] = 1, xf, 0
	}
}

// fresh is update on a zero s.
func (s *multi2) fresh(d int, x float64, out *[7 * nLambda]float32) {
	d &= 1
	xf := float32(x)
	for i := range nLo { // element by element, as in multi1.fresh
		s.lw[d][i], s.lm[d][i], s.lv[d][i] = 1, xf, 0
	}
	for i := range nHi {
		s.hw[d][i], s.hm[d][i], s.hv[d][i] = 1, x, 0
	}
	mag := float32(math.Sqrt(float64(xf) * float64(xf)))
	for i := range nLambda {
		o := out[7*i : 7*i+7 : 7*i+7]
		o[0], o[1], o[2], o[3], o[4], o[5], o[6] = 1, xf, 0, mag, 0, 0, 0
	}
}

// The twins functions (twins1 and twins2: stats_scalar.go,
// stats_simd_amd64.go) report whether two statistics hold the same bytes
// (and so evolve identically). Float comparison would call +0 and -0
// equal and NaN unequal; twinsBytes compares the arrays with the runtime's
// memequal, the SIMD code with a few 64-byte compares. Padding bytes take
// part: should they differ, the twins are merely computed twice.
type (
	words1 = [unsafe.Sizeof(multi1{}) / 4]uint32
	words2 = [unsafe.Sizeof(multi2{}) / 4]uint32
)

func twinsBytes1(a, b *multi1) bool {
	return *(*words1)(unsafe.Pointer(a)) == *(*words1)(unsafe.Pointer(b))
}

func twinsBytes2(a, b *multi2) bool {
	return *(*words2)(unsafe.Pointer(a)) == *(*words2)(unsafe.Pointer(b))
}

// The SIMD twins compare 64-byte blocks: multi1 needs at least one, multi2
// three. A negative difference does not compile.
const (
	_ = unsafe.Sizeof(multi1{}) - 64
	_ = unsafe.Sizeof(multi2{}) - 3*64
)

// The word views above need sizes that are multiples of 4.
var _ = [1]struct{}{}[unsafe.Sizeof(multi1{})%4+unsafe.Sizeof(multi2{})%4]

// Layout checks for the SIMD update's 16-byte reads of the 12-byte
// float32 fields (see multi1 and multi2) and of the slow windows'
// residuals r[d][nLo:]: each read must end within the struct. A negative
// difference does not compile.
const (
	_ = unsafe.Sizeof(multi1{}) - unsafe.Offsetof(multi1{}.lv) - 16
	_ = unsafe.Sizeof(multi2{}) - unsafe.Offsetof(multi2{}.lcf3) - 16
	_ = unsafe.Sizeof(multi2{}) - unsafe.Offsetof(multi2{}.r) - (nLambda+nLo)*4 - 16
)
