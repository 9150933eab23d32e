//go:build !(goexperiment.simd && amd64)

package netflow

// Without GOEXPERIMENT=simd on amd64 the window updates are the scalar
// code of stats.go.

// simdActive reports whether update runs the SIMD code: never in this build.
const simdActive = false

// update adds x to every window after decaying it by f and writes weight,
// mean and std of each window, windows in lambdas order.
func (s *multi1) update(f *decays, x float64, out *[3 * nLambda]float32) {
	s.updateScalar(f, x, out)
}

// update adds x of direction d (0 or 1) to every window after decaying the
// whole pair by f and writes, for direction d, weight, mean, std,
// magnitude, radius, covariance and correlation coefficient of each window.
func (s *multi2) update(f *decays, d int, x float64, out *[7 * nLambda]float32) {
	s.updateScalar(f, d, x, out)
}

// decaySIMD is not called in this build (simdActive is false).
func decaySIMD(f *decays, dt int64) { setDecay(f, dt) }

// twins1 reports whether a and b hold the same bytes.
func twins1(a, b *multi1) bool { return twinsBytes1(a, b) }

// twins2 reports whether a and b hold the same bytes.
func twins2(a, b *multi2) bool { return twinsBytes2(a, b) }
