//go:build arm64 || loong64

package netflow

import "math"

// exp2 is math.Exp2 (see exp2_fast.go).
func exp2(x float64) float64 { return math.Exp2(x) }
