// Package calib turns anomaly scores into decisions and numbers: the threshold for a target
// false-positive rate on held-out benign scores, ROC AUC, PR AUC (average precision), the true- and
// false-positive rates at a threshold, and Spearman's rank correlation (used to check that an int8
// model ranks events like its float original).
//
// Convention everywhere: higher scores are more anomalous, attacks are the positive class, and an
// event is flagged when its score is strictly greater than the threshold.
package calib

import (
	"errors"
	"fmt"
	"math"
	"sort"
)

// DefaultFPR is the default target false-positive rate (0.1%).
const DefaultFPR = 0.001

// Float is the score element type.
type Float interface{ ~float32 | ~float64 }

func sorted[T Float](xs []T) ([]float64, error) {
	out := make([]float64, len(xs))
	for i, x := range xs {
		v := float64(x)
		if math.IsNaN(v) {
			return nil, errors.New("score is NaN")
		}
		out[i] = v
	}
	sort.Float64s(out)
	return out, nil
}

// Threshold returns the smallest benign score t such that at most floor(fpr·n) of the n benign
// scores are strictly greater than t: the conservative order statistic, never interpolated
// upwards into a gap, so the realised false-positive rate on these scores is at most fpr. With
// fewer than 1/fpr scores this is the maximum (no false positives allowed), which the caller should
// treat as under-determined (see MinSamples).
func Threshold[T Float](benign []T, fpr float64) (float64, error) {
	if len(benign) == 0 {
		return 0, errors.New("threshold: no benign scores")
	}
	if !(fpr >= 0 && fpr < 1) {
		return 0, fmt.Errorf("threshold: fpr %v outside [0, 1)", fpr)
	}
	s, err := sorted(benign)
	if err != nil {
		return 0, fmt.Errorf("threshold: %w", err)
	}
	n := len(s)
	k := int(math.Floor(fpr*float64(n) + 1e-9))
	if k >= n {
		k = n - 1
	}
	return s[n-1-k], nil
}

// MinSamples is the number of benign scores needed before Threshold at fpr can allow even one
// false positive: ceil(1/fpr).
func MinSamples(fpr float64) int {
	if fpr <= 0 {
		return math.MaxInt
	}
	return int(math.Ceil(1/fpr - 1e-9))
}

// Quantile is the q-quantile of xs with linear interpolation between order statistics (the
// "type 7" definition used by NumPy and R by default). It is what per-sensor calibration reports
// as score quantiles.
func Quantile[T Float](xs []T, q float64) (float64, error) {
	if len(xs) == 0 {
		return 0, errors.New("quantile: no values")
	}
	if !(q >= 0 && q <= 1) {
		return 0, fmt.Errorf("quantile: q %v outside [0, 1]", q)
	}
	s, err := sorted(xs)
	if err != nil {
		return 0, fmt.Errorf("quantile: %w", err)
	}
	h := q * float64(len(s)-1)
	lo := int(math.Floor(h))
	if lo >= len(s)-1 {
		return s[len(s)-1], nil
	}
	if frac := h - float64(lo); frac > 0 && s[lo+1] != s[lo] {
		return s[lo] + frac*(s[lo+1]-s[lo]), nil
	}
	// On a sample point or between equal ones: s[lo] itself (interpolating
	// would give 0·Inf or Inf−Inf = NaN next to +Inf, as a NaN score is
	// counted, or between two of them).
	return s[lo], nil
}

// RateAbove is the fraction of scores strictly greater than thr (TPR on attack scores, FPR on
// benign scores).
func RateAbove[T Float](scores []T, thr float64) float64 {
	if len(scores) == 0 {
		return 0
	}
	n := 0
	for _, s := range scores {
		if float64(s) > thr {
			n++
		}
	}
	return float64(n) / float64(len(scores))
}

// ROCAUC is the area under the ROC curve: the probability that a random attack score exceeds a
// random benign score, ties counting one half (Mann-Whitney U / (n_attack·n_benign)).
func ROCAUC[T Float](benign, attack []T) (float64, error) {
	if len(benign) == 0 || len(attack) == 0 {
		return 0, errors.New("roc auc: need benign and attack scores")
	}
	b, err := sorted(benign)
	if err != nil {
		return 0, fmt.Errorf("roc auc: %w", err)
	}
	a, err := sorted(attack)
	if err != nil {
		return 0, fmt.Errorf("roc auc: %w", err)
	}
	// For each attack score: count benign below (lo) and equal (hi-lo).
	var u float64
	lo, hi := 0, 0
	for _, x := range a {
		for lo < len(b) && b[lo] < x {
			lo++
		}
		if hi < lo {
			hi = lo
		}
		for hi < len(b) && b[hi] <= x {
			hi++
		}
		u += float64(lo) + 0.5*float64(hi-lo)
	}
	return u / (float64(len(a)) * float64(len(b))), nil
}

// AveragePrecision is the area under the precision-recall curve as average precision:
// sum over distinct thresholds (descending) of (R_k − R_{k−1})·P_k, where all events with equal
// scores enter at the same threshold (as scikit-learn's average_precision_score).
func AveragePrecision[T Float](benign, attack []T) (float64, error) {
	if len(attack) == 0 {
		return 0, errors.New("average precision: no attack scores")
	}
	type ev struct {
		s   float64
		pos bool
	}
	evs := make([]ev, 0, len(benign)+len(attack))
	for _, x := range benign {
		evs = append(evs, ev{float64(x), false})
	}
	for _, x := range attack {
		evs = append(evs, ev{float64(x), true})
	}
	for _, e := range evs {
		if math.IsNaN(e.s) {
			return 0, errors.New("average precision: score is NaN")
		}
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].s > evs[j].s })
	var ap, tp, fp, prevRecall float64
	total := float64(len(attack))
	for i := 0; i < len(evs); {
		j := i
		for j < len(evs) && evs[j].s == evs[i].s {
			if evs[j].pos {
				tp++
			} else {
				fp++
			}
			j++
		}
		recall := tp / total
		if tp > 0 {
			ap += (recall - prevRecall) * tp / (tp + fp)
		}
		prevRecall = recall
		i = j
	}
	return ap, nil
}

// Ranks returns the 1-based ranks of xs with ties given their average rank. NaN has no rank: the
// ranks of a slice holding one are meaningless (Spearman rejects it).
func Ranks[T Float](xs []T) []float64 {
	idx := make([]int, len(xs))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return xs[idx[a]] < xs[idx[b]] })
	r := make([]float64, len(xs))
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && xs[idx[j+1]] == xs[idx[i]] {
			j++
		}
		avg := float64(i+j)/2 + 1
		for k := i; k <= j; k++ {
			r[idx[k]] = avg
		}
		i = j + 1
	}
	return r
}

// SubsetSpearman is Spearman's rho of a and b over the rows idx (0 when Spearman cannot
// compute it, e.g. fewer than two rows).
func SubsetSpearman[T Float](a, b []T, idx []int) float64 {
	x, y := make([]T, len(idx)), make([]T, len(idx))
	for k, i := range idx {
		x[k], y[k] = a[i], b[i]
	}
	rho, _ := Spearman(x, y)
	return rho
}

// Spearman is Spearman's rank correlation coefficient (Pearson correlation of the average ranks).
func Spearman[T Float](a, b []T) (float64, error) {
	if len(a) != len(b) {
		return 0, fmt.Errorf("spearman: lengths differ (%d, %d)", len(a), len(b))
	}
	if len(a) < 2 {
		return 0, errors.New("spearman: need at least two pairs")
	}
	for i := range a {
		if a[i] != a[i] || b[i] != b[i] {
			return 0, fmt.Errorf("spearman: pair %d: score is NaN", i)
		}
	}
	return pearson(Ranks(a), Ranks(b))
}

func pearson(x, y []float64) (float64, error) {
	n := float64(len(x))
	var mx, my float64
	for i := range x {
		mx += x[i]
		my += y[i]
	}
	mx /= n
	my /= n
	var sxy, sxx, syy float64
	for i := range x {
		dx, dy := x[i]-mx, y[i]-my
		sxy += dx * dy
		sxx += dx * dx
		syy += dy * dy
	}
	if sxx == 0 || syy == 0 {
		return 0, errors.New("spearman: constant input")
	}
	return sxy / math.Sqrt(sxx*syy), nil
}

// Metrics is the evaluation summary stored in bundle manifests (flattened by Map).
type Metrics struct {
	Threshold    float64 `json:"threshold"`
	TargetFPR    float64 `json:"target_fpr"`
	BenignN      int     `json:"benign_n"`
	AttackN      int     `json:"attack_n"`
	FPR          float64 `json:"fpr"`           // benign rate above the threshold
	TPR          float64 `json:"tpr,omitempty"` // attack rate above the threshold
	ROCAUC       float64 `json:"roc_auc,omitempty"`
	PRAUC        float64 `json:"pr_auc,omitempty"`
	BenignP50    float64 `json:"benign_p50"`
	BenignP99    float64 `json:"benign_p99"`
	BenignMax    float64 `json:"benign_max"`
	Undercounted bool    `json:"undercounted,omitempty"` // fewer benign scores than MinSamples(TargetFPR)
}

// Evaluate calibrates the threshold at fpr on the benign scores and, when attack scores are given,
// computes TPR at it, ROC AUC and PR AUC.
func Evaluate[T Float](benign, attack []T, fpr float64) (Metrics, error) {
	thr, err := Threshold(benign, fpr)
	if err != nil {
		return Metrics{}, err
	}
	m := Metrics{Threshold: thr, TargetFPR: fpr, BenignN: len(benign), AttackN: len(attack), FPR: RateAbove(benign, thr),
		Undercounted: len(benign) < MinSamples(fpr)}
	m.BenignP50, _ = Quantile(benign, 0.5)
	m.BenignP99, _ = Quantile(benign, 0.99)
	m.BenignMax, _ = Quantile(benign, 1)
	if len(attack) > 0 {
		m.TPR = RateAbove(attack, thr)
		if m.ROCAUC, err = ROCAUC(benign, attack); err != nil {
			return m, err
		}
		if m.PRAUC, err = AveragePrecision(benign, attack); err != nil {
			return m, err
		}
	}
	return m, nil
}

// Map flattens the metrics for a bundle manifest.
func (m Metrics) Map() map[string]float64 {
	out := map[string]float64{
		"target_fpr": m.TargetFPR, "fpr": m.FPR, "benign_n": float64(m.BenignN),
		"benign_p50": m.BenignP50, "benign_p99": m.BenignP99, "benign_max": m.BenignMax,
	}
	if m.AttackN > 0 {
		out["attack_n"] = float64(m.AttackN)
		out["tpr"] = m.TPR
		out["roc_auc"] = m.ROCAUC
		out["pr_auc"] = m.PRAUC
	}
	return out
}
