//go:build goexperiment.simd && amd64

package netflow

import (
	"math"
	"simd/archsimd"
	"unsafe"

	"github.com/vigil-edge/vigil/models/features/internal/fmath"
)

// With GOEXPERIMENT=simd on amd64, and a CPU with AVX-512 (F, CD, BW,
// DQ, VL), the window updates run the five windows as vector lanes: the
// fast (float32-stored) windows as lanes 0-2 of a Float64x4 (lane 3 is
// ignored), the slow ones as a Float64x2. Every lane does the operations
// of the scalar code (stats.go) in the same order, and vector add,
// multiply, divide, square root and float32<->float64 conversions round
// per lane as the scalar instructions do; the scalar code's branches
// become lane masks that select between both sides' results. So the state
// and the features are bit for bit those of the scalar code
// (TestSIMDMatchesScalar). The features are then put in output order by
// two-table permutes (AVX-512) and stored with a few vector stores.
//
// Mixing legacy SSE instructions (the compiler's scalar float code, its
// 16-byte moves and spills, zeroing from X15) with 256- and 512-bit code
// while the upper halves of the vector registers are dirty costs hundreds
// of cycles per switch on the machines measured. So the wide code is in
// functions of their own (multi1.updateSIMD, multi2.fast), written so
// that they compile to VEX and EVEX instructions only: constants are
// loaded from memory, values are stored as soon as they are final so that
// nothing is spilled, and they clear the upper halves before returning.
// The slow windows' code of multi2 uses 128-bit VEX instructions, which
// leave the upper halves clean, and runs first. After changing them,
// check their disassembly (objdump -d) for SSE instructions (movups,
// movss, ...): a single one in a hot path costs more than the vectors
// gain.

// simdActive reports whether update runs the SIMD code.
var simdActive = archsimd.X86.AVX512()

// update adds x to every window after decaying it by f and writes weight,
// mean and std of each window, windows in lambdas order.
func (s *multi1) update(f *decays, x float64, out *[3 * nLambda]float32) {
	if simdActive {
		s.updateSIMD(f, x, out)
	} else {
		s.updateScalar(f, x, out)
	}
}

// update adds x of direction d (0 or 1) to every window after decaying the
// whole pair by f and writes, for direction d, weight, mean, std,
// magnitude, radius, covariance and correlation coefficient of each window.
func (s *multi2) update(f *decays, d int, x float64, out *[7 * nLambda]float32) {
	if simdActive {
		s.updateSIMD(f, d, x, out)
	} else {
		s.updateScalar(f, d, x, out)
	}
}

var (
	// laneMask's lanes 0-2 are 1 and lane 3 NaN: comparing it with itself
	// gives the mask of the fast windows' lanes without the zero register.
	laneMask = [4]float32{1, 1, 1, float32(math.NaN())}
	zeros4   = [4]float64{}
	ones4    = [4]float64{1, 1, 1, 1}
)

// exp2Coef holds fmath.Exp2Poly's coefficients, each in all lanes, and
// exp2Min its smallest argument.
var (
	exp2Coef = func() (c [len(fmath.Exp2Coef)]decays) {
		for n, v := range fmath.Exp2Coef {
			c[n] = splat(v)
		}
		return c
	}()
	exp2Min = splat(fmath.Exp2PolyMin)
)

// splat returns v in every lane.
func splat(v float64) (d decays) {
	for i := range d {
		d[i] = v
	}
	return d
}

// decaySIMD is setDecay with the lanes of decays as vector lanes:
// fmath.Exp2Poly's operations in its order, each rounding per lane as the
// scalar instruction does (TestDecaySIMD). Wide code, see above.
//
//go:noinline
func decaySIMD(f *decays, dt int64) {
	d := archsimd.BroadcastFloat64x8(float64(dt))
	x := d.Mul(archsimd.LoadFloat64x8((*[8]float64)(&decayRates)))
	k := x.RoundToEvenScaled(0)
	r := x.Sub(k)
	r2 := r.Mul(r)
	r4 := r2.Mul(r2)
	r8 := r4.Mul(r4)
	c := func(n int) archsimd.Float64x8 { return archsimd.LoadFloat64x8((*[8]float64)(&exp2Coef[n])) }
	a0 := c(1).MulAdd(r, c(0))
	a1 := c(3).MulAdd(r, c(2))
	a2 := c(5).MulAdd(r, c(4))
	a3 := c(7).MulAdd(r, c(6))
	a4 := c(9).MulAdd(r, c(8))
	a5 := c(11).MulAdd(r, c(10))
	a6 := c(13).MulAdd(r, c(12))
	b0 := a1.MulAdd(r2, a0)
	b1 := a3.MulAdd(r2, a2)
	b2 := a5.MulAdd(r2, a4)
	c0 := b1.MulAdd(r4, b0)
	c1 := a6.MulAdd(r4, b2)
	p := c1.MulAdd(r8, c0)
	// p·2^k (exact: k ≥ Exp2PolyMin), and 0 below Exp2PolyMin.
	p.Scale(k).Masked(x.GreaterEqual(archsimd.LoadFloat64x8((*[8]float64)(&exp2Min)))).Store((*[8]float64)(f))
	archsimd.ClearAVXUpperBits()
}

// The output permutes. A feature vector k (a Float32x8) holds window i in
// lane i for the fast windows (0-2) and lane i+1 for the slow ones (3-4);
// features 2j and 2j+1 share Float32x16 j (2j in lanes 0-7). perm1 puts
// multi1's 15 features, ordered window by window, into out[0:8] and
// out[7:15]; perm2's a and b tables gather multi2's 35 features from
// vectors 0-1 and 2-3 into out[0:16], out[16:32] and out[31:35], and its
// masks select a's lanes.
var (
	perm1 [2][16]uint32
	perm2 struct {
		a, b [3][16]uint32
		mask [3]uint16
	}
)

func init() {
	lane := func(i int) int { return i + i/nLo } // window -> lane
	for v, first := range []int{0, 7} {
		for j := range 8 {
			p := first + j
			i, k := p/3, p%3
			perm1[v][j] = uint32(k*8 + lane(i)) // k 0-1: x; k 2: y (16+)
		}
	}
	for v, first := range []int{0, 16, 31} {
		for j := range 16 {
			p := first + j
			if p >= 7*nLambda || (v == 2 && j >= 4) {
				continue
			}
			i, k := p/7, p%7
			e := uint32((k%2)*8 + lane(i))
			if k/2%2 == 1 {
				e += 16 // the second table of the pair
			}
			if k < 4 {
				perm2.a[v][j] = e
				perm2.mask[v] |= 1 << j
			} else {
				perm2.b[v][j] = e
			}
		}
	}
}

// lanes3 returns the mask of lanes 0-2.
func lanes3() archsimd.Mask32x4 {
	v := archsimd.LoadFloat32x4(&laneMask)
	return v.Equal(v)
}

// ld3 loads a fast-window field (3 float32s; the 4th lane reads the next
// 4 bytes of the struct, see the layout checks in stats.go) as float64.
func ld3(p *[nLo]float32) archsimd.Float64x4 {
	return archsimd.LoadFloat32x4((*[4]float32)(unsafe.Pointer(p))).ConvertToFloat64()
}

// st3 stores lanes 0-2 of v to a fast-window field.
func st3(p *[nLo]float32, v archsimd.Float32x4, m archsimd.Mask32x4) {
	v.StoreMasked((*[4]float32)(unsafe.Pointer(p)), m)
}

// join puts the fast windows' lanes lo and the slow windows' lanes hi of
// a feature into one vector (see the output permutes).
func join(lo, hi archsimd.Float32x4) archsimd.Float32x8 {
	return archsimd.Float32x8{}.SetLo(lo).SetHi(hi)
}

// pair puts two features' vectors into one.
func pair(a, b archsimd.Float32x8) archsimd.Float32x16 {
	return archsimd.Float32x16{}.SetLo(a).SetHi(b)
}

// updateSIMD is updateScalar with the windows as vector lanes (wide
// code, see above).
//
//go:noinline
func (s *multi1) updateSIMD(f *decays, x float64, out *[3 * nLambda]float32) {
	// Slow windows (128-bit).
	fh := archsimd.LoadFloat64x2((*[2]float64)(f[hiOff : hiOff+nHi]))
	xh := archsimd.BroadcastFloat64x2(x)
	wh := archsimd.LoadFloat64x2(&s.hw).Mul(fh).Add(archsimd.LoadFloat64x2((*[2]float64)(ones4[0:2])))
	mh := archsimd.LoadFloat64x2(&s.hm)
	dh := xh.Sub(mh)
	mh = mh.Add(dh.Div(wh))
	vh := archsimd.LoadFloat64x2(&s.hv).Mul(fh).Add(dh.Mul(xh.Sub(mh)))
	wh.Store(&s.hw)
	mh.Store(&s.hm)
	vh.Store(&s.hv)
	sdh := vh.Div(wh).Sqrt().Masked(vh.Greater(archsimd.LoadFloat64x2((*[2]float64)(zeros4[0:2])))).ConvertToFloat32()

	// Fast windows.
	m3 := lanes3()
	fi := archsimd.LoadFloat64x4((*[4]float64)(f[0:4]))
	xv := archsimd.BroadcastFloat64x4(x)
	w := ld3(&s.lw).Mul(fi).Add(archsimd.LoadFloat64x4(&ones4))
	m := ld3(&s.lm)
	d := xv.Sub(m)
	m = m.Add(d.Div(w))
	v := ld3(&s.lv).Mul(fi).Add(d.Mul(xv.Sub(m)))
	wf, mf, vf := w.ConvertToFloat32(), m.ConvertToFloat32(), v.ConvertToFloat32()
	st3(&s.lw, wf, m3)
	st3(&s.lm, mf, m3)
	st3(&s.lv, vf, m3)
	vs := vf.ConvertToFloat64()
	sd := vs.Div(wf.ConvertToFloat64()).Sqrt().Masked(vs.Greater(archsimd.LoadFloat64x4(&zeros4))).ConvertToFloat32()

	wm := pair(join(wf, wh.ConvertToFloat32()), join(mf, mh.ConvertToFloat32()))
	sv := pair(join(sd, sdh), archsimd.Float32x8{})
	wm.ConcatPermute(sv, archsimd.LoadUint32x16(&perm1[0])).GetLo().Store((*[8]float32)(out[0:8]))
	wm.ConcatPermute(sv, archsimd.LoadUint32x16(&perm1[1])).GetLo().Store((*[8]float32)(out[7:15]))
	archsimd.ClearAVXUpperBits()
}

// updateSIMD is updateScalar with the windows as vector lanes.
func (s *multi2) updateSIMD(f *decays, d int, x float64, out *[7 * nLambda]float32) {
	d &= 1
	o := 1 - d
	// Slow windows: weight, mean, std, magnitude, radius, covariance and
	// pcc in lanes 0-1 of h.
	var h [7][4]float32
	fi := archsimd.LoadFloat64x2((*[2]float64)(f[hiOff : hiOff+nHi]))
	xv := archsimd.BroadcastFloat64x2(x)
	one := archsimd.BroadcastFloat64x2(1)
	var zero archsimd.Float64x2
	wo := archsimd.LoadFloat64x2(&s.hw[o]).Mul(fi)
	vo := archsimd.LoadFloat64x2(&s.hv[o]).Mul(fi)
	cf3 := archsimd.LoadFloat64x2(&s.hcf3).Mul(fi)
	wo.Store(&s.hw[o])
	vo.Store(&s.hv[o])
	w := archsimd.LoadFloat64x2(&s.hw[d]).Mul(fi).Add(one)
	m := archsimd.LoadFloat64x2(&s.hm[d])
	dev := xv.Sub(m)
	m = m.Add(dev.Div(w))
	v := archsimd.LoadFloat64x2(&s.hv[d]).Mul(fi).Add(dev.Mul(xv.Sub(m)))
	w.Store(&s.hw[d])
	m.Store(&s.hm[d])
	v.Store(&s.hv[d])
	res := xv.Sub(m)
	ro := archsimd.BroadcastFloat64x2(float64(s.r[o][nLo])).SetElem(1, float64(s.r[o][nLo+1]))
	cf3 = cf3.Add(res.Mul(ro))
	cf3.Store(&s.hcf3)
	rf := res.ConvertToFloat32()
	s.r[d][nLo], s.r[d][nLo+1] = rf.GetElem(0), rf.GetElem(1)

	vd := v.Div(w).Masked(v.Greater(zero))
	w3 := w.Add(wo)
	vpos := vo.Greater(zero)
	a := vpos.And(wo.Greater(archsimd.BroadcastFloat64x2(0x1p-900))) // q stays finite
	q := one.Div(wo.Mul(w3))
	vod := vo.Mul(w3.Mul(q)).Merge(vo.Div(wo).Masked(vpos.And(wo.Greater(zero))), a)
	cov := cf3.Mul(wo.Mul(q)).Merge(cf3.Div(w3), a)
	sdd, sdo := vd.Sqrt(), vod.Sqrt()
	p := cov.Div(sdd.Mul(sdo)).ConvertToFloat32() // not finite where sdd·sdo = 0
	pcc := p.Masked(p.Sub(p).Equal(archsimd.Float32x4{}))
	mo := archsimd.LoadFloat64x2(&s.hm[o])
	w.ConvertToFloat32().Store(&h[0])
	m.ConvertToFloat32().Store(&h[1])
	sdd.ConvertToFloat32().Store(&h[2])
	m.Mul(m).Add(mo.Mul(mo)).Sqrt().ConvertToFloat32().Store(&h[3])
	vd.Mul(vd).Add(vod.Mul(vod)).Sqrt().ConvertToFloat32().Store(&h[4])
	cov.ConvertToFloat32().Store(&h[5])
	pcc.Store(&h[6])

	s.fast(f, d, x, &h, out)
}

// fast is updateSIMD's fast windows and output (wide code, see above).
//
//go:noinline
func (s *multi2) fast(f *decays, d int, x float64, h *[7][4]float32, out *[7 * nLambda]float32) {
	d &= 1
	o := 1 - d
	m3 := lanes3()
	fi := archsimd.LoadFloat64x4((*[4]float64)(f[0:4]))
	xv := archsimd.BroadcastFloat64x4(x)
	// The fields are loaded and stored in memory order, each store after
	// the load of the next field, which its 16 bytes touch: a load that
	// overlaps an earlier store in flight would wait for it to reach the
	// cache.
	// Features are computed as soon as their inputs are known, and put
	// into their output vectors: fewer live values, nothing spilled.
	lwo, lwd := ld3(&s.lw[o]), ld3(&s.lw[d])
	lmd, mo := ld3(&s.lm[d]), ld3(&s.lm[o])
	// Decay the other direction and the residual products (a factor of 1
	// leaves them unchanged, as the scalar code's skip does).
	wof := lwo.Mul(fi).ConvertToFloat32()
	w := lwd.Mul(fi).Add(archsimd.LoadFloat64x4(&ones4))
	wf := w.ConvertToFloat32()
	st3(&s.lw[o], wof, m3)
	st3(&s.lw[d], wf, m3)
	wo, wd := wof.ConvertToFloat64(), wf.ConvertToFloat64()
	w3 := wd.Add(wo)
	m := lmd
	dev := xv.Sub(m)
	m = m.Add(dev.Div(w))
	mf := m.ConvertToFloat32()
	// r[d]'s 16 bytes touch no field loaded here.
	res := xv.Sub(m)
	res.ConvertToFloat32().StoreMasked((*[4]float32)(s.r[d][0:4]), m3)
	lvo, lvd, lcf3 := ld3(&s.lv[o]), ld3(&s.lv[d]), ld3(&s.lcf3)
	st3(&s.lm[d], mf, m3)
	vof := lvo.Mul(fi).ConvertToFloat32()
	st3(&s.lv[o], vof, m3)
	z0 := pair(join(wf, archsimd.LoadFloat32x4(&h[0])), join(mf, archsimd.LoadFloat32x4(&h[1])))
	md := mf.ConvertToFloat64()
	mag := md.Mul(md).Add(mo.Mul(mo)).Sqrt().ConvertToFloat32()
	v := lvd.Mul(fi).Add(dev.Mul(xv.Sub(m)))
	vf := v.ConvertToFloat32()
	st3(&s.lv[d], vf, m3)
	zero := archsimd.LoadFloat64x4(&zeros4)
	vo, vs := vof.ConvertToFloat64(), vf.ConvertToFloat64()
	vd := vs.Div(wd).Masked(vs.Greater(zero))
	sdd := vd.Sqrt()
	z1 := pair(join(sdd.ConvertToFloat32(), archsimd.LoadFloat32x4(&h[2])), join(mag, archsimd.LoadFloat32x4(&h[3])))
	ro := archsimd.LoadFloat32x4((*[4]float32)(s.r[o][0:4])).ConvertToFloat64()
	cf3f := lcf3.Mul(fi).ConvertToFloat32().ConvertToFloat64().Add(res.Mul(ro)).ConvertToFloat32()
	st3(&s.lcf3, cf3f, m3)

	// The features of both directions.
	a := vo.Greater(zero).And(wo.Greater(zero))
	q := archsimd.LoadFloat64x4(&ones4).Div(wo.Mul(w3))
	vod := vo.Mul(w3.Mul(q)).Masked(a)
	cf3d := cf3f.ConvertToFloat64()
	cov := cf3d.Mul(wo.Mul(q)).Merge(cf3d.Div(w3), a)
	sdo := vod.Sqrt()
	rad := vd.Mul(vd).Add(vod.Mul(vod)).Sqrt().ConvertToFloat32()
	z2 := pair(join(rad, archsimd.LoadFloat32x4(&h[4])), join(cov.ConvertToFloat32(), archsimd.LoadFloat32x4(&h[5])))
	p := cov.Div(sdd.Mul(sdo)).ConvertToFloat32() // not finite where sdd·sdo = 0
	pp := p.Sub(p)                                // NaN where p is not finite
	z3 := pair(join(p.Masked(pp.Equal(pp)), archsimd.LoadFloat32x4(&h[6])), archsimd.Float32x8{})

	// Output order.
	o0 := z0.ConcatPermute(z1, archsimd.LoadUint32x16(&perm2.a[0])).
		Merge(z2.ConcatPermute(z3, archsimd.LoadUint32x16(&perm2.b[0])), archsimd.Mask32x16FromBits(perm2.mask[0]))
	o0.Store((*[16]float32)(out[0:16]))
	o1 := z0.ConcatPermute(z1, archsimd.LoadUint32x16(&perm2.a[1])).
		Merge(z2.ConcatPermute(z3, archsimd.LoadUint32x16(&perm2.b[1])), archsimd.Mask32x16FromBits(perm2.mask[1]))
	o1.Store((*[16]float32)(out[16:32]))
	o2 := z0.ConcatPermute(z1, archsimd.LoadUint32x16(&perm2.a[2])).
		Merge(z2.ConcatPermute(z3, archsimd.LoadUint32x16(&perm2.b[2])), archsimd.Mask32x16FromBits(perm2.mask[2]))
	o2.GetLo().GetLo().Store((*[4]float32)(out[31:35]))
	archsimd.ClearAVXUpperBits()
}

// twins1 reports whether a and b hold the same bytes.
func twins1(a, b *multi1) bool {
	if simdActive {
		return twins1SIMD(a, b)
	}
	return twinsBytes1(a, b)
}

// twins2 reports whether a and b hold the same bytes.
func twins2(a, b *multi2) bool {
	if simdActive {
		return twins2SIMD(a, b)
	}
	return twinsBytes2(a, b)
}

// twins1SIMD is twinsBytes1 with two 64-byte compares, the second
// overlapping the first (wide code, see above).
//
//go:noinline
func twins1SIMD(a, b *multi1) bool {
	pa, pb := (*words1)(unsafe.Pointer(a)), (*words1)(unsafe.Pointer(b))
	// Each compare's mask is moved to a general register before the next:
	// combining the masks as vectors made the compiler keep a 512-bit
	// value past ClearAVXUpperBits.
	m0 := archsimd.LoadUint32x16((*[16]uint32)(pa[0:16])).Equal(archsimd.LoadUint32x16((*[16]uint32)(pb[0:16]))).ToBits()
	m1 := archsimd.LoadUint32x16((*[16]uint32)(pa[len(pa)-16:])).Equal(archsimd.LoadUint32x16((*[16]uint32)(pb[len(pb)-16:]))).ToBits()
	archsimd.ClearAVXUpperBits()
	return m0&m1 == 0xffff
}

// twins2SIMD is twinsBytes2 with four 64-byte compares, the last
// overlapping the third (wide code).
//
//go:noinline
func twins2SIMD(a, b *multi2) bool {
	pa, pb := (*words2)(unsafe.Pointer(a)), (*words2)(unsafe.Pointer(b))
	m0 := archsimd.LoadUint32x16((*[16]uint32)(pa[0:16])).Equal(archsimd.LoadUint32x16((*[16]uint32)(pb[0:16]))).ToBits()
	m1 := archsimd.LoadUint32x16((*[16]uint32)(pa[16:32])).Equal(archsimd.LoadUint32x16((*[16]uint32)(pb[16:32]))).ToBits()
	m2 := archsimd.LoadUint32x16((*[16]uint32)(pa[32:48])).Equal(archsimd.LoadUint32x16((*[16]uint32)(pb[32:48]))).ToBits()
	m3 := archsimd.LoadUint32x16((*[16]uint32)(pa[len(pa)-16:])).Equal(archsimd.LoadUint32x16((*[16]uint32)(pb[len(pb)-16:]))).ToBits()
	archsimd.ClearAVXUpperBits()
	return m0&m1&m2&m3 == 0xffff
}
