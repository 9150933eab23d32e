//go:build !arm64 && !loong64

package netflow

import "math"

// exp2 is math.Exp2, bit for bit, on the platforms where math.Exp2 is the
// portable Go code (this file's build tags): that code with its argument
// checks cut down to the range decayFactors uses and its final Ldexp done
// with exponent arithmetic when the result is a normal number, which is
// what Ldexp computes too. Elsewhere (exp2_std.go) it is math.Exp2.
// Adapted from the Go standard library's math/exp.go (Copyright The Go
// Authors, BSD-style licence, as the rest of this toolchain's library), itself
// from FreeBSD's e_exp.c. TestExp2 checks the bits against math.Exp2.
func exp2(x float64) float64 {
	if !(x <= 0 && x >= -1020) { // NaN, positive, or a subnormal result
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
	k := 0
	if x < 0 {
		k = int(x - 0.5)
	}
	t := x - float64(k)
	hi := t * Ln2Hi
	lo := -t * Ln2Lo
	r := hi - lo
	t = r * r
	c := r - t*(P1+t*(P2+t*(P3+t*(P4+t*P5))))
	y := 1 - ((lo - (r*c)/(2-c)) - hi)
	// Ldexp(y, k): y is about 1, k >= -1020, so the result is normal.
	b := math.Float64bits(y)
	e := int(b>>52&0x7ff) + k
	if e <= 0 || e >= 0x7ff {
		return math.Ldexp(y, k)
	}
	return math.Float64frombits(b&^(0x7ff<<52) | uint64(e)<<52)
}
