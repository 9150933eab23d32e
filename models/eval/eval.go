// Package eval computes and writes the evaluation report of a model bundle
// (`vigilctl model eval`, the baseline trainer): ROC AUC, PR AUC, the
// true-positive rate at the bundle's calibrated threshold and at a fixed
// false-positive rate, per attack capture (detected or not, TPR on the
// attacker's packets where ground truth exists, time to first detection), and
// the scoring throughput, as eval.md, eval.json and an ROC plot roc.svg
// (hand-written SVG, no dependencies).
//
// It works on scores: the caller scores the captures (with the int8 model in
// ONNX Runtime, as the plugin does) and passes them in, so this package is pure
// Go and deterministic.
//
// Conventions as in models/calib: higher scores are more anomalous, a packet is
// flagged when its score is strictly greater than the threshold.
package eval

import (
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/vigil-edge/vigil/models/calib"
)

// ModelInfo identifies the evaluated model.
type ModelInfo struct {
	Name         string  `json:"name"`
	Version      uint64  `json:"version"`
	FeatureSet   string  `json:"feature_set"`
	Dim          int     `json:"dim"`
	Quantization string  `json:"quantization"`
	Digest       string  `json:"digest,omitempty"`
	Threshold    float64 `json:"threshold"` // the bundle's calibrated threshold
	// Unit names what a score is for in the written reports: "packets"
	// (default) or "file events" (the *_packets JSON fields count them too).
	Unit string `json:"unit,omitempty"`
}

// unit is m.Unit, "packets" by default.
func (m ModelInfo) unit() string {
	if m.Unit == "" {
		return "packets"
	}
	return m.Unit
}

// Benign is the scores of one benign capture.
type Benign struct {
	Name   string
	Scores []float32
	// Truncated is the packet bound that cut the capture (dataset.Capture.Truncated):
	// 0 when it was read to its end.
	Truncated int
}

// Attack is one attack capture's per-packet scores and truth.
type Attack struct {
	Name string
	What string
	// Attacker is shown in the report ("" when unknown).
	Attacker string
	Scores   []float32
	TS       []int64 // packet times, unix ns
	// Positive marks the attack packets (the attacker's, within the attack's
	// time span); nil when the capture has no per-packet truth, in which
	// case every packet counts as an attack packet for the AUCs and the
	// capture is judged on detection only.
	Positive []bool
	// Error is set when the capture could not be read (it is listed, not
	// scored).
	Error string
	// Truncated is the packet bound that cut the capture (dataset.Capture.Truncated):
	// 0 when it was read to its end.
	Truncated int
}

// Truncated is a capture cut at the packet bound (--max-packets): only its
// first At packets (or file events) were scored.
type Truncated struct {
	File string `json:"file"`
	Kind string `json:"kind"` // "benign" or "attack"
	At   int    `json:"at"`
}

// Throughput is a measured scoring rate.
type Throughput struct {
	Vectors int     `json:"vectors"`
	Seconds float64 `json:"seconds"`
	Batch   int     `json:"batch"`
	PerSec  float64 `json:"vectors_per_second"`
}

// Input is everything Evaluate needs.
type Input struct {
	Model      ModelInfo
	Benign     []Benign
	Attacks    []Attack
	TargetFPR  float64 // the fixed FPR of the second operating point (calib.DefaultFPR if 0)
	Throughput []Throughput
}

// Operating is one operating point: a threshold and the rates it gives.
type Operating struct {
	Threshold float64 `json:"threshold"`
	FPR       float64 `json:"fpr"` // on the evaluation's benign packets
	TPR       float64 `json:"tpr"` // on the attack packets
}

// Report is the evaluation.
type Report struct {
	Model         ModelInfo      `json:"model"`
	TargetFPR     float64        `json:"target_fpr"`
	BenignFiles   int            `json:"benign_files"`
	BenignPackets int            `json:"benign_packets"`
	BenignP99     float64        `json:"benign_p99"`
	BenignMax     float64        `json:"benign_max"`
	AttackPackets int            `json:"attack_packets"` // positives pooled over the attack captures
	ROCAUC        float64        `json:"roc_auc"`
	PRAUC         float64        `json:"pr_auc"`
	AtThreshold   Operating      `json:"at_threshold"`  // the bundle's calibrated threshold
	AtTargetFPR   Operating      `json:"at_target_fpr"` // threshold re-derived on these benign packets
	Undercounted  bool           `json:"undercounted,omitempty"`
	Captures      int            `json:"captures"`
	Detected      int            `json:"detected"`
	Attacks       []AttackResult `json:"attacks"`
	Throughput    []Throughput   `json:"throughput"`
	// Truncated lists the captures cut at the packet bound: the rates
	// above are over their first packets only.
	Truncated   []Truncated `json:"truncated,omitempty"`
	pooledCurve []Point
}

// AttackResult is the evaluation of one attack capture.
type AttackResult struct {
	File     string `json:"file"`
	What     string `json:"what,omitempty"`
	Attacker string `json:"attacker,omitempty"`
	Error    string `json:"error,omitempty"`
	Packets  int    `json:"packets"`
	// TruncatedAt is the packet bound that cut the capture (0: read to
	// its end; Report.Truncated lists it too).
	TruncatedAt int `json:"truncated_at,omitempty"`
	Flagged     int `json:"flagged"` // packets above the calibrated threshold, any source
	// Labelled: per-packet truth exists; AttackPackets and the rates then
	// count the attacker's packets only, else every packet of the capture.
	Labelled       bool     `json:"labelled"`
	AttackPackets  int      `json:"attack_packets"`
	FlaggedAttack  int      `json:"flagged_attack"`
	Detected       bool     `json:"detected"` // at least one attack packet flagged at the calibrated threshold
	TPR            float64  `json:"tpr"`      // at the calibrated threshold
	TPRAtTargetFPR float64  `json:"tpr_at_target_fpr"`
	ROCAUC         float64  `json:"roc_auc"`
	PRAUC          float64  `json:"pr_auc"`
	FirstDetection *float64 `json:"first_detection_seconds,omitempty"` // from the earliest attack packet before the first flagged one to it (never negative)
	curve          []Point
}

// Point is one point of an ROC curve.
type Point struct{ FPR, TPR float64 }

// Evaluate computes the report.
func Evaluate(in Input) (*Report, error) {
	if in.TargetFPR == 0 {
		in.TargetFPR = calib.DefaultFPR
	}
	r := &Report{Model: in.Model, TargetFPR: in.TargetFPR, BenignFiles: len(in.Benign), Throughput: in.Throughput}
	var benign []float32
	for _, b := range in.Benign {
		// The benign scores give the report's thresholds and statistics,
		// which must be numbers (eval.json has no NaN or Inf).
		if i, v := nonFinite(b.Scores, true); i >= 0 {
			return nil, fmt.Errorf("evaluate: benign capture %s: score %d is %v: the model does not score it (non-finite features, or overflow)", b.Name, i, v)
		}
		if b.Truncated > 0 {
			r.Truncated = append(r.Truncated, Truncated{File: b.Name, Kind: "benign", At: b.Truncated})
		}
		benign = append(benign, b.Scores...)
	}
	if len(benign) == 0 {
		return nil, errors.New("evaluate: no benign packets")
	}
	r.BenignPackets = len(benign)
	benignDesc := sortedDesc(benign)
	r.BenignMax = benignDesc[0]
	p99, err := calib.Quantile(benign, 0.99)
	if err != nil {
		return nil, fmt.Errorf("evaluate: %w", err)
	}
	r.BenignP99 = p99
	thrFPR, err := calib.Threshold(benign, in.TargetFPR)
	if err != nil {
		return nil, fmt.Errorf("evaluate: %w", err)
	}
	r.Undercounted = len(benign) < calib.MinSamples(in.TargetFPR)
	thr := in.Model.Threshold
	var pooled []float32
	for _, a := range in.Attacks {
		ar := AttackResult{File: a.Name, What: a.What, Attacker: a.Attacker, Error: a.Error, Packets: len(a.Scores)}
		if a.Truncated > 0 && a.Error == "" {
			ar.TruncatedAt = a.Truncated
			r.Truncated = append(r.Truncated, Truncated{File: a.Name, Kind: "attack", At: a.Truncated})
		}
		if a.Error != "" {
			r.Attacks = append(r.Attacks, ar)
			continue
		}
		if a.Positive != nil && len(a.Positive) != len(a.Scores) {
			return nil, fmt.Errorf("evaluate %s: %d truth flags for %d scores", a.Name, len(a.Positive), len(a.Scores))
		}
		if len(a.TS) != len(a.Scores) {
			return nil, fmt.Errorf("evaluate %s: %d times for %d scores", a.Name, len(a.TS), len(a.Scores))
		}
		// ±Inf ranks as the extreme it is (+Inf is flagged at any threshold),
		// NaN has no rank.
		if i, v := nonFinite(a.Scores, false); i >= 0 {
			return nil, fmt.Errorf("evaluate %s: score %d is %v: the model does not score it (non-finite features)", a.Name, i, v)
		}
		ar.Labelled = a.Positive != nil
		var pos []float32
		firstPos := -1
		var startTS int64 // the earliest attack time so far (a capture's clock may step back)
		for i, s := range a.Scores {
			isPos := a.Positive == nil || a.Positive[i]
			if float64(s) > thr {
				ar.Flagged++
			}
			if !isPos {
				continue
			}
			pos = append(pos, s)
			if firstPos < 0 || a.TS[i] < startTS {
				startTS = a.TS[i]
			}
			if firstPos < 0 {
				firstPos = i
			}
			if float64(s) > thr {
				ar.FlaggedAttack++
				if ar.FirstDetection == nil {
					d := float64(a.TS[i]-startTS) / 1e9
					ar.FirstDetection = &d
				}
			}
		}
		r.Captures++
		ar.AttackPackets = len(pos)
		if len(pos) > 0 {
			ar.Detected = ar.FlaggedAttack > 0
			ar.TPR = calib.RateAbove(pos, thr)
			ar.TPRAtTargetFPR = calib.RateAbove(pos, thrFPR)
			if ar.ROCAUC, err = calib.ROCAUC(benign, pos); err != nil {
				return nil, fmt.Errorf("evaluate %s: %w", a.Name, err)
			}
			if ar.PRAUC, err = calib.AveragePrecision(benign, pos); err != nil {
				return nil, fmt.Errorf("evaluate %s: %w", a.Name, err)
			}
			if ar.curve, err = rocCurve(benignDesc, pos); err != nil {
				return nil, fmt.Errorf("evaluate %s: %w", a.Name, err)
			}
		}
		if ar.Detected {
			r.Detected++
		}
		pooled = append(pooled, pos...)
		r.Attacks = append(r.Attacks, ar)
	}
	r.AttackPackets = len(pooled)
	r.AtThreshold = Operating{Threshold: thr, FPR: calib.RateAbove(benign, thr)}
	r.AtTargetFPR = Operating{Threshold: thrFPR, FPR: calib.RateAbove(benign, thrFPR)}
	if len(pooled) > 0 {
		if r.ROCAUC, err = calib.ROCAUC(benign, pooled); err != nil {
			return nil, fmt.Errorf("evaluate: pooled attacks: %w", err)
		}
		if r.PRAUC, err = calib.AveragePrecision(benign, pooled); err != nil {
			return nil, fmt.Errorf("evaluate: pooled attacks: %w", err)
		}
		r.AtThreshold.TPR = calib.RateAbove(pooled, thr)
		r.AtTargetFPR.TPR = calib.RateAbove(pooled, thrFPR)
		if r.pooledCurve, err = rocCurve(benignDesc, pooled); err != nil {
			return nil, fmt.Errorf("evaluate: pooled attacks: %w", err)
		}
	}
	return r, nil
}

// nonFinite returns the index and value of the first NaN in xs (or, with
// inf, the first NaN or ±Inf), or -1.
func nonFinite(xs []float32, inf bool) (int, float32) {
	for i, v := range xs {
		if v != v || inf && math.IsInf(float64(v), 0) {
			return i, v
		}
	}
	return -1, 0
}

func sortedDesc(xs []float32) []float64 {
	out := make([]float64, len(xs))
	for i, v := range xs {
		out[i] = float64(v)
	}
	sort.Sort(sort.Reverse(sort.Float64Slice(out)))
	return out
}

// rocCurve is the ROC curve of positives against the benign scores (sorted
// descending): one point per distinct threshold, from (0,0) to (1,1), thinned
// so that consecutive kept points differ by at least 1/500 in FPR or TPR.
// ±Inf scores are thresholds like any other; a NaN score is an error (it
// equals no threshold, so the walk could not pass it).
func rocCurve(benignDesc []float64, positives []float32) ([]Point, error) {
	pos := sortedDesc(positives)
	for _, v := range benignDesc {
		if math.IsNaN(v) {
			return nil, errors.New("roc curve: benign score is NaN")
		}
	}
	for _, v := range pos {
		if math.IsNaN(v) {
			return nil, errors.New("roc curve: attack score is NaN")
		}
	}
	nb, np := float64(len(benignDesc)), float64(len(pos))
	pts := []Point{{0, 0}}
	i, j := 0, 0
	for i < len(benignDesc) || j < len(pos) {
		// the next threshold: the largest remaining score
		t := math.Inf(-1)
		if i < len(benignDesc) {
			t = benignDesc[i]
		}
		if j < len(pos) && pos[j] > t {
			t = pos[j]
		}
		i0, j0 := i, j
		for i < len(benignDesc) && benignDesc[i] == t {
			i++
		}
		for j < len(pos) && pos[j] == t {
			j++
		}
		if i == i0 && j == j0 { // nothing equals t: unreachable without NaN, never loop on it
			return nil, fmt.Errorf("roc curve: stuck at threshold %v (benign %d of %d, attack %d of %d)", t, i, len(benignDesc), j, len(pos))
		}
		pts = append(pts, Point{float64(i) / nb, float64(j) / np})
	}
	return thin(pts, 1.0/500), nil
}

func thin(pts []Point, step float64) []Point {
	if len(pts) <= 2 {
		return pts
	}
	out := []Point{pts[0]}
	for _, p := range pts[1 : len(pts)-1] {
		last := out[len(out)-1]
		if math.Abs(p.FPR-last.FPR) >= step || math.Abs(p.TPR-last.TPR) >= step {
			out = append(out, p)
		}
	}
	return append(out, pts[len(pts)-1])
}

// ROC returns the thinned ROC curve of attack scores against benign scores
// (nil if either is empty); a NaN score is an error.
func ROC(benign, attack []float32) ([]Point, error) {
	if len(benign) == 0 || len(attack) == 0 {
		return nil, nil
	}
	return rocCurve(sortedDesc(benign), attack)
}
