package sdk

import (
	"math"
)

// ComputeStats derives batch statistics from one score per record.
// Quantiles are nearest-rank, found by selection (linear time) in scratch,
// which is grown as needed and returned for reuse. NaN scores count as +Inf.
func ComputeStats(scores []float32, anomalies int, scratch []float32) (Stats, []float32) {
	st := Stats{Count: uint64(len(scores)), Anomalies: uint64(anomalies)}
	n := len(scores)
	if n == 0 {
		return st, scratch
	}
	scratch = append(scratch[:0], scores...)
	for i, v := range scratch {
		if v != v {
			scratch[i] = float32(math.Inf(1))
		}
	}
	rank := func(q float64) int { return max(int(math.Ceil(q*float64(n)))-1, 0) }
	k99, k90, k50 := rank(0.99), rank(0.90), rank(0.50)
	st.P99 = selectK(scratch, k99)
	// After selecting k99, scratch[:k99] holds the smaller values.
	st.P90 = selectK(scratch[:k99+1], k90)
	st.P50 = selectK(scratch[:k90+1], k50)
	m := scratch[k99]
	for _, v := range scratch[k99:] {
		m = max(m, v)
	}
	st.Max = m
	return st, scratch
}

// selectK partially orders a so that a[k] is the k-th smallest value, every
// element before it is <= a[k] and every element after it is >= a[k]
// (Hoare's quickselect with median-of-three pivots). a holds no NaN.
func selectK(a []float32, k int) float32 {
	lo, hi := 0, len(a)-1
	for lo < hi {
		mid := lo + (hi-lo)/2
		if a[mid] < a[lo] {
			a[mid], a[lo] = a[lo], a[mid]
		}
		if a[hi] < a[lo] {
			a[hi], a[lo] = a[lo], a[hi]
		}
		if a[hi] < a[mid] {
			a[hi], a[mid] = a[mid], a[hi]
		}
		pivot := a[mid]
		i, j := lo, hi
		for i <= j {
			for a[i] < pivot {
				i++
			}
			for a[j] > pivot {
				j--
			}
			if i <= j {
				a[i], a[j] = a[j], a[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return a[k]
		}
	}
	return a[k]
}
