//go:build arm64 || loong64 || s390x

package fmath

import "math"

// Exp2 is math.Exp2 (see fmath.go).
func Exp2(x float64) float64 { return math.Exp2(x) }

// Exp2Pair is Exp2(x0), Exp2(x1).
func Exp2Pair(x0, x1 float64) (float64, float64) { return math.Exp2(x0), math.Exp2(x1) }

// Log1p is math.Log1p (see fmath.go).
func Log1p(x float64) float64 { return math.Log1p(x) }
