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

// MaxTopContributions bounds k of TopContributions.
const MaxTopContributions = 16

// TopContributions returns the k (at most MaxTopContributions) largest
// contributions of c, largest first, with their names (names[i] names c[i]).
// A NaN counts as +Inf, so a broken feature is reported first; ties keep the
// lower index first. Both detector plugins report their top features with it.
func TopContributions(c []float32, names []string, k int) []Contribution {
	k = min(max(k, 0), MaxTopContributions)
	var idx [MaxTopContributions]int
	n := 0
	for i := range c {
		if n < k {
			idx[n] = i
			n++
		} else if k == 0 || contribVal(c, i) <= contribVal(c, idx[n-1]) {
			continue
		} else {
			idx[n-1] = i
		}
		for j := n - 1; j > 0 && contribVal(c, idx[j]) > contribVal(c, idx[j-1]); j-- {
			idx[j], idx[j-1] = idx[j-1], idx[j]
		}
	}
	out := make([]Contribution, n)
	for j := range n {
		out[j] = Contribution{Name: names[idx[j]], Contribution: c[idx[j]]}
	}
	return out
}

func contribVal(c []float32, i int) float32 {
	if v := c[i]; v == v {
		return v
	}
	return float32(math.Inf(1))
}
