//go:build !arm64 && !loong64 && !s390x

// Package fmath holds copies of the Go standard library's portable
// math.Exp2 and math.Log1p (math/exp.go, math/log1p.go; Copyright The Go
// Authors, BSD-style licence; from FreeBSD's e_exp.c and s_log1p.c) without
// the argument checks that the feature sets' hot paths never need, and
// written so that the compiler can inline and overlap them. They return
// math.Exp2 and math.Log1p bit for bit (TestMatchesMath), so features do not
// change; on the platforms where the math package uses its own assembly
// (arm64, loong64, s390x) fmath_std.go calls the math package instead.
//
// Exp2Poly (exp2poly.go) is not from the math package: an exponential
// defined by operations that vector lanes repeat exactly, for netflow/v1's
// decay factors.
//
// Why a copy: in nethost/v1 and netflow/v1 the decay factors (exp2) and
// the log-scaled features (log1p) were 7-10% of a scan's CPU, most of it
// call overhead and special-case tests.
package fmath

import "math"

// Exp2 is math.Exp2, bit for bit, where math.Exp2 and math.Ldexp are the
// portable Go code (this file's build tags; elsewhere mathstd.go uses the
// math package): that code with its argument checks cut down to the range
// decay factors use (x < 0) and its final Ldexp done by exponent arithmetic when
// the result is a normal number, which is what Ldexp computes then too.
// Inlined into decay, the two windows' evaluations overlap.
func Exp2(x float64) float64 {
	if !(x < 0 && x >= -1020) { // NaN, zero, positive, or a subnormal result
		return math.Exp2(x)
	}
	const (
		Ln2Hi = 6.93147180369123816490e-01
		Ln2Lo = 1.90821492927058770002e-10

		P1 = 1.66666666666666657415e-01  /* 0x3FC55555; 0x55555555 */
		P2 = -2.77777777770155933842e-03 /* 0xBF66C16C; 0x16BEBD93 */
		P3 = 6.61375632143793436117e-05  /* 0x3F11566A; 0xAF25DE2C */
		P4 = -1.65339022054652515390e-06 /* 0xBEBBBD41; 0xC5D26BF1 */
		P5 = 4.13813679705723846039e-08  /* 0x3E663769; 0x72BEA4D0 */
	)
	k := int(x - 0.5)
	t := x - float64(k)
	hi := t * Ln2Hi
	lo := -t * Ln2Lo
	r := hi - lo
	t = r * r
	c := r - t*(P1+t*(P2+t*(P3+t*(P4+t*P5))))
	y := 1 - ((lo - (r*c)/(2-c)) - hi)
	// Ldexp(y, k): y is about 1 and k ≥ -1020, so the result is normal.
	b := math.Float64bits(y)
	e := int(b>>52&0x7ff) + k
	if e <= 0 || e >= 0x7ff {
		return math.Ldexp(y, k)
	}
	return math.Float64frombits(b&^(0x7ff<<52) | uint64(e)<<52)
}

// Exp2Pair is Exp2(x0), Exp2(x1) (each math.Exp2 bit for bit), written
// out side by side so that the two evaluations, each a chain of dependent
// operations with a division, overlap.
func Exp2Pair(x0, x1 float64) (float64, float64) {
	if !(x0 < 0 && x0 >= -1020 && x1 < 0 && x1 >= -1020) {
		return Exp2(x0), Exp2(x1)
	}
	const (
		Ln2Hi = 6.93147180369123816490e-01
		Ln2Lo = 1.90821492927058770002e-10

		P1 = 1.66666666666666657415e-01
		P2 = -2.77777777770155933842e-03
		P3 = 6.61375632143793436117e-05
		P4 = -1.65339022054652515390e-06
		P5 = 4.13813679705723846039e-08
	)
	k0, k1 := int(x0-0.5), int(x1-0.5)
	t0, t1 := x0-float64(k0), x1-float64(k1)
	hi0, hi1 := t0*Ln2Hi, t1*Ln2Hi
	lo0, lo1 := -t0*Ln2Lo, -t1*Ln2Lo
	r0, r1 := hi0-lo0, hi1-lo1
	t0, t1 = r0*r0, r1*r1
	c0 := r0 - t0*(P1+t0*(P2+t0*(P3+t0*(P4+t0*P5))))
	c1 := r1 - t1*(P1+t1*(P2+t1*(P3+t1*(P4+t1*P5))))
	y0 := 1 - ((lo0 - (r0*c0)/(2-c0)) - hi0)
	y1 := 1 - ((lo1 - (r1*c1)/(2-c1)) - hi1)
	b0, b1 := math.Float64bits(y0), math.Float64bits(y1)
	e0, e1 := int(b0>>52&0x7ff)+k0, int(b1>>52&0x7ff)+k1
	if e0 <= 0 || e0 >= 0x7ff || e1 <= 0 || e1 >= 0x7ff {
		return math.Ldexp(y0, k0), math.Ldexp(y1, k1)
	}
	return math.Float64frombits(b0&^(0x7ff<<52) | uint64(e0)<<52), math.Float64frombits(b1&^(0x7ff<<52) | uint64(e1)<<52)
}

// Log1p is math.Log1p, bit for bit, for finite x > 0 (the only arguments
// the feature sets pass), where math.Log1p is the portable Go code (this file's build
// tags): that code without the special cases x ≤ 0, NaN and +Inf, and
// without the call.
func Log1p(x float64) float64 {
	const (
		Sqrt2M1 = 4.142135623730950488017e-01 // Sqrt(2)-1 = 0x3fda827999fcef34
		Small   = 1.0 / (1 << 29)             // 2**-29 = 0x3e20000000000000
		Tiny    = 1.0 / (1 << 54)             // 2**-54
		Two53   = 1 << 53                     // 2**53
		Ln2Hi   = 6.93147180369123816490e-01  // 3fe62e42fee00000
		Ln2Lo   = 1.90821492927058770002e-10  // 3dea39ef35793c76
		Lp1     = 6.666666666666735130e-01    // 3FE5555555555593
		Lp2     = 3.999999999940941908e-01    // 3FD999999997FA04
		Lp3     = 2.857142874366239149e-01    // 3FD2492494229359
		Lp4     = 2.222219843214978396e-01    // 3FCC71C51D8E78AF
		Lp5     = 1.818357216161805012e-01    // 3FC7466496CB03DE
		Lp6     = 1.531383769920937332e-01    // 3FC39A09D078C69F
		Lp7     = 1.479819860511658591e-01    // 3FC2F112DF3E5244
	)
	// x > 0, so |x| = x and x > Sqrt(2)/2-1.
	var f float64
	var iu uint64
	k := 1
	if x < Sqrt2M1 {
		if x < Small {
			if x < Tiny {
				return x
			}
			return x - x*x*0.5
		}
		k = 0
		f = x
		iu = 1
	}
	var c float64
	if k != 0 {
		var u float64
		if x < Two53 {
			u = 1.0 + x
			iu = math.Float64bits(u)
			k = int((iu >> 52) - 1023)
			// correction term
			if k > 0 {
				c = 1.0 - (u - x)
			} else {
				c = x - (u - 1.0)
			}
			c /= u
		} else {
			u = x
			iu = math.Float64bits(u)
			k = int((iu >> 52) - 1023)
			c = 0
		}
		iu &= 0x000fffffffffffff
		if iu < 0x0006a09e667f3bcd { // mantissa of Sqrt(2)
			u = math.Float64frombits(iu | 0x3ff0000000000000) // normalize u
		} else {
			k++
			u = math.Float64frombits(iu | 0x3fe0000000000000) // normalize u/2
			iu = (0x0010000000000000 - iu) >> 2
		}
		f = u - 1.0 // Sqrt(2)/2 < u < Sqrt(2)
	}
	hfsq := 0.5 * f * f
	var s, R, z float64
	if iu == 0 { // |f| < 2**-20
		if f == 0 {
			if k == 0 {
				return 0
			}
			c += float64(k) * Ln2Lo
			return float64(k)*Ln2Hi + c
		}
		R = hfsq * (1.0 - 0.66666666666666666*f) // avoid division
		if k == 0 {
			return f - R
		}
		return float64(k)*Ln2Hi - ((R - (float64(k)*Ln2Lo + c)) - f)
	}
	s = f / (2.0 + f)
	z = s * s
	R = z * (Lp1 + z*(Lp2+z*(Lp3+z*(Lp4+z*(Lp5+z*(Lp6+z*Lp7))))))
	if k == 0 {
		return f - (hfsq - s*(hfsq+R))
	}
	return float64(k)*Ln2Hi - ((hfsq - (s*(hfsq+R) + (float64(k)*Ln2Lo + c))) - f)
}
