package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vigil-edge/vigil/models/ae"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/calib"
	"github.com/vigil-edge/vigil/models/export"
	"github.com/vigil-edge/vigil/models/runtime"
	"github.com/vigil-edge/vigil/models/train"
)

// quantVariant is one export layout compared by -sweep-quant.
type quantVariant struct {
	name string
	opt  export.Options
}

// selected reports whether the variant runs under -sweep-variants filter (comma-separated
// substrings of variant names; empty: all). The float32 reference always runs.
func (v quantVariant) selected(filter string) bool {
	if filter == "" || v.opt.Quant == bundle.QuantNone {
		return true
	}
	for _, f := range strings.Split(filter, ",") {
		if f = strings.TrimSpace(f); f != "" && strings.Contains(v.name, f) {
			return true
		}
	}
	return false
}

// quantVariants are the int8 export options -sweep-quant compares with the float model.
func quantVariants() []quantVariant {
	q := bundle.QuantInt8Static
	return []quantVariant{
		{"float32", export.Options{Quant: bundle.QuantNone}},
		{"qdq minmax uint8", export.Options{Quant: q}},
		{"qdq minmax, FloatDecoder", export.Options{Quant: q, FloatDecoder: true}},
		{"qdq percentile 99.9", export.Options{Quant: q, ActRange: export.RangePercentile, ActPercentile: 99.9}},
		{"qdq percentile 99.99", export.Options{Quant: q, ActRange: export.RangePercentile, ActPercentile: 99.99}},
		{"qdq percentile 99.999", export.Options{Quant: q, ActRange: export.RangePercentile, ActPercentile: 99.999}},
		{"qdq MSE", export.Options{Quant: q, ActRange: export.RangeMSE}},
		{"qdq minmax int8 asymmetric", export.Options{Quant: q, ActType: export.ActInt8}},
		{"qdq minmax int8 symmetric", export.Options{Quant: q, ActType: export.ActInt8Sym}},
		{"qdq MSE int8 symmetric", export.Options{Quant: q, ActType: export.ActInt8Sym, ActRange: export.RangeMSE}},
		{"qdq percentile 99.99, FloatDecoder", export.Options{Quant: q, ActRange: export.RangePercentile, ActPercentile: 99.99, FloatDecoder: true}},
		{"qdq MSE, FloatDecoder", export.Options{Quant: q, ActRange: export.RangeMSE, FloatDecoder: true}},
		{"qdq weights 7 bit", export.Options{Quant: q, WeightBits: 7}},
		{"qdq PadHidden 16", export.Options{Quant: q, PadHidden: 16}},
		{"qdq PadHidden 32", export.Options{Quant: q, PadHidden: 32}},
		{"qdq PadHidden 16, FloatDecoder", export.Options{Quant: q, PadHidden: 16, FloatDecoder: true}},
		{"qdq FloatDecoder AMXSafe (shipped: train.Export)", export.Options{Quant: q, FloatDecoder: true, AMXSafe: true}},
		{"qdq FloatDecoder AMXSafe SplitInput (train.LayoutSplitInput)", export.Options{Quant: q, FloatDecoder: true, AMXSafe: true, SplitInput: true}},
		{"qdq FloatDecoder AMXSafe FitRounding", export.Options{Quant: q, FloatDecoder: true, AMXSafe: true, FitRounding: true}},
		{"qdq FloatDecoder AMXSafe SplitInput FitRounding", export.Options{Quant: q, FloatDecoder: true, AMXSafe: true, SplitInput: true, FitRounding: true}},
		{"qdq AMXSafe Lean FitRounding (int8 decoder)", export.Options{Quant: q, AMXSafe: true, Lean: true, FitRounding: true}},
		{"qdq AMXSafe Lean SplitInput (int8 decoder)", export.Options{Quant: q, AMXSafe: true, Lean: true, SplitInput: true}},
		{"qdq AMXSafe Lean (int8 decoder)", export.Options{Quant: q, AMXSafe: true, Lean: true}},
		{"qdq AMXSafe Lean SplitInput SplitHidden", export.Options{Quant: q, AMXSafe: true, Lean: true, SplitInput: true, SplitHidden: true}},
		{"qdq AMXSafe Lean SplitHidden", export.Options{Quant: q, AMXSafe: true, Lean: true, SplitHidden: true}},
		{"qdq FloatDecoder AMXSafe InputGain 1 p99.9", export.Options{Quant: q, FloatDecoder: true, AMXSafe: true, InputGain: 1, InputGainPercentile: 99.9}},
		{"qdq FloatDecoder AMXSafe InputGain 0.5 p99.9", export.Options{Quant: q, FloatDecoder: true, AMXSafe: true, InputGain: 0.5, InputGainPercentile: 99.9}},
		{"qdq FloatDecoder AMXSafe InputGain 1 p99.99", export.Options{Quant: q, FloatDecoder: true, AMXSafe: true, InputGain: 1, InputGainPercentile: 99.99}},
		{"qdq FloatDecoder AMXSafe InputGain 0.5 p99.99", export.Options{Quant: q, FloatDecoder: true, AMXSafe: true, InputGain: 0.5, InputGainPercentile: 99.99}},
		{"qdq FloatDecoder AMXSafe InputGain 0.75 p99.9", export.Options{Quant: q, FloatDecoder: true, AMXSafe: true, InputGain: 0.75, InputGainPercentile: 99.9}},
		{"qdq FloatDecoder AMXSafe InputGain 0.75 p99.9 FitRounding", export.Options{Quant: q, FloatDecoder: true, AMXSafe: true, InputGain: 0.75, InputGainPercentile: 99.9, FitRounding: true}},
		{"qdq FloatDecoder AMXSafe InputGain 1 p99.9 FitRounding", export.Options{Quant: q, FloatDecoder: true, AMXSafe: true, InputGain: 1, InputGainPercentile: 99.9, FitRounding: true}},
		{"qdq FloatDecoder AMXSafe InputGain 0.5 p99.9 FitRounding", export.Options{Quant: q, FloatDecoder: true, AMXSafe: true, InputGain: 0.5, InputGainPercentile: 99.9, FitRounding: true}},
	}
}

// sweepAttack is one attack capture of the sweep with its labelled attacker's packets.
type sweepAttack struct {
	name     string
	cf       *capFeatures
	attacker []bool
}

// variantResult is what -sweep-quant measures for one export variant of one model.
type variantResult struct {
	bytes      int
	hold       []float32 // held-out benign scores in runs of scoreChunk
	threshold  float64
	fpr        float64
	detected   []string
	tpr, auc   float64
	runChanged int     // held-out rows whose score changes in runs of 256
	runMaxDiff float64 // largest such change, in thresholds
	speed      float64 // held-out rows scored per thread CPU-second in runs of 256 (best of 3)
}

// sweepQuant trains each feature set's model once and compares the int8 export variants on the
// held-out benign packets (Spearman with the float scores over all packets, over distinct feature
// vectors, over packets whose float score is at least a tenth of the float threshold and over the
// top 5% of float scores; threshold at the target FPR) and on the attack captures (captures with a
// flagged packet, pooled TPR over the labelled attackers' packets, ROC AUC attacker packets vs
// held-out benign), each model alone. It writes a Markdown table to w and logs diagnostics of the
// float model's score distribution and of simulated rounding.
func sweepQuant(ctx context.Context, cfg Config, sets []set, trainCaps, holdCaps []*capFeatures, log *slog.Logger, w io.Writer) error {
	labels, err := readLabels(cfg.Manifest)
	if err != nil {
		labels = map[string]label{}
	}
	afiles, err := listCaptures(cfg.Attacks)
	if err != nil {
		return fmt.Errorf("list attack captures: %w", err)
	}
	var atk []sweepAttack
	for _, p := range afiles {
		rel, _ := filepath.Rel(cfg.Attacks, p)
		cf, err := extractFile(ctx, log, p)
		if err != nil {
			continue
		}
		a := sweepAttack{name: rel, cf: cf, attacker: make([]bool, cf.N)}
		if lab := labels[rel]; lab.attacker.IsValid() {
			for i := range cf.N {
				a.attacker[i] = cf.Src[i].Unmap() == lab.attacker
			}
		}
		atk = append(atk, a)
	}
	fmt.Fprintf(w, "| feature set | variant | int8 bytes | Spearman all | distinct vectors | float score ≥ 0.1×thr | top 5%% | threshold | held-out FPR | captures detected | attacker TPR | ROC AUC | captures differing from float | rows changed in 256-row runs (max Δ/thr) | rows/CPU-s at 256 |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for k, s := range sets {
		if cfg.Only != "" && s.name != cfg.Only {
			continue
		}
		data := stack(trainCaps, k, s.dim)
		hold := stack(holdCaps, k, s.dim)
		m, err := ae.Fit(ctx, data, s.model)
		if err != nil {
			return fmt.Errorf("train %s: %w", s.name, err)
		}
		calibData := sample(data, 20000)
		if m.Kind == ae.KindSingle {
			logSimulations(log, m, hold, calibData)
		}
		distinct := hold.DistinctRows()
		var ref *variantResult
		for _, v := range quantVariants() {
			if !v.selected(cfg.SweepVariants) {
				continue
			}
			opt := v.opt
			if opt.Quant != bundle.QuantNone {
				opt.Calibration = calibData
			}
			r, err := measureVariant(m, opt, k, hold, atk, cfg.FPR)
			if err != nil {
				return fmt.Errorf("%s %s: %w", s.name, v.name, err)
			}
			rho, rhoTop, rhoDistinct, rhoHigh := 1.0, 1.0, 1.0, 1.0
			if ref == nil {
				ref = &r
				if m.Kind == ae.KindSingle {
					logTies(log, m, hold, r.hold)
				}
			} else {
				rho, _ = calib.Spearman(ref.hold, r.hold)
				rhoTop = topSpearman(ref.hold, r.hold, 0.05)
				rhoDistinct = calib.SubsetSpearman(ref.hold, r.hold, distinct)
				var high []int
				for i, x := range ref.hold {
					if float64(x) >= 0.1*ref.threshold {
						high = append(high, i)
					}
				}
				rhoHigh = calib.SubsetSpearman(ref.hold, r.hold, high)
			}
			var diff []string
			for _, d := range r.detected {
				if !slices.Contains(ref.detected, d) {
					diff = append(diff, "+"+filepath.Base(d))
				}
			}
			for _, d := range ref.detected {
				if !slices.Contains(r.detected, d) {
					diff = append(diff, "-"+filepath.Base(d))
				}
			}
			fmt.Fprintf(w, "| %s | %s | %d | %.4f | %.4f | %.4f | %.4f | %.4g | %.3f%% | %d of %d | %.3f | %.4f | %s | %d (%.2f) | %.2fM |\n", s.name, v.name, r.bytes,
				rho, rhoDistinct, rhoHigh, rhoTop, r.threshold, r.fpr*100, len(r.detected), len(atk), r.tpr, r.auc, strings.Join(diff, " "), r.runChanged, r.runMaxDiff, r.speed/1e6)
			log.Info("variant", "set", s.name, "variant", v.name, "spearman", rho, "top5", rhoTop, "detected", len(r.detected))
		}
	}
	return nil
}

// measureVariant exports m with opt, scores the held-out benign rows and the attack captures
// (feature set k) in ONNX Runtime and calibrates the threshold at fpr on the variant's own scores.
func measureVariant(m *ae.Model, opt export.Options, k int, hold ae.Matrix, atk []sweepAttack, fpr float64) (variantResult, error) {
	var r variantResult
	raw, err := export.Export(m, opt)
	if err != nil {
		return r, fmt.Errorf("export: %w", err)
	}
	r.bytes = len(raw)
	sc, err := runtime.OpenWith("", raw, m.Dim, 4096, runtime.Options{})
	if err != nil {
		return r, fmt.Errorf("open in onnx runtime: %w", err)
	}
	defer sc.Close()
	if r.hold, err = train.Scores(sc, hold, scoreChunk); err != nil {
		return r, err
	}
	if r.threshold, err = calib.Threshold(r.hold, fpr); err != nil {
		return r, err
	}
	// Rows whose score in runs of 256 differs from the plugin's runs of scoreChunk.
	big, err := train.Scores(sc, hold, 256)
	if err != nil {
		return r, err
	}
	for i := range big {
		if d := math.Abs(float64(big[i] - r.hold[i])); d > 1e-5*math.Abs(float64(r.hold[i])) {
			r.runChanged++
			r.runMaxDiff = max(r.runMaxDiff, d/max(r.threshold, 1e-12))
		}
	}
	if r.speed, err = train.Speed(sc, hold, 256, 3, 0); err != nil {
		return r, err
	}
	var attackScores []float32
	var tp int
	for _, a := range atk {
		as, err := train.Scores(sc, a.cf.Matrix(k), scoreChunk)
		if err != nil {
			return r, err
		}
		hit := false
		for i, x := range as {
			flagged := float64(x) > r.threshold
			hit = hit || flagged
			if a.attacker[i] {
				attackScores = append(attackScores, x)
				if flagged {
					tp++
				}
			}
		}
		if hit {
			r.detected = append(r.detected, a.name)
		}
	}
	met, err := calib.Evaluate(r.hold, attackScores, fpr)
	if err != nil {
		return r, err
	}
	r.fpr, r.auc = met.FPR, met.ROCAUC
	r.tpr = float64(tp) / float64(max(len(attackScores), 1))
	return r, nil
}

// logSimulations logs Spearman's rho of float64 scores with simulated 8-bit (and finer) rounding
// of the encoder input and the hidden activations against exact float64 scores.
func logSimulations(log *slog.Logger, m *ae.Model, hold, calibData ae.Matrix) {
	for _, c := range []struct {
		in, hid bool
		levels  float64
	}{{true, false, 255}, {false, true, 255}, {true, true, 255}, {true, false, 65535}, {false, true, 65535}, {true, true, 1023}} {
		log.Info("simulated rounding", "input", c.in, "hidden", c.hid, "levels", c.levels, "spearman", simulateSingle(m, hold, c.in, c.hid, c.levels))
	}
	inR, hR := channelRanges(m, calibData, 1)
	log.Info("simulated per-channel minmax", "hidden_only", simulateChannels(m, hold, false, true, 255, inR, hR), "both", simulateChannels(m, hold, true, true, 255, inR, hR))
	for _, p := range []float64{0.9999, 0.999, 0.99} {
		inR, hR := channelRanges(m, calibData, p)
		log.Info("simulated per-channel percentile", "p", p, "input_only", simulateChannels(m, hold, true, false, 255, inR, hR),
			"hidden_only", simulateChannels(m, hold, false, true, 255, inR, hR), "both", simulateChannels(m, hold, true, true, 255, inR, hR))
	}
}

// logTies logs the float model's score distribution on the held-out rows: agreement of ONNX
// Runtime's float32 scores hs with the float64 reference, the largest block of equal scores, its
// feature vector, and which features the rows within 1% of that score differ in.
func logTies(log *slog.Logger, m *ae.Model, hold ae.Matrix, hs []float32) {
	ref := make([]float64, hold.Rows)
	for r := range ref {
		ref[r] = m.Score(hold.Row(r), nil)
	}
	r64, _ := calib.Spearman(ref, f64s(hs))
	counts := map[float32]int{}
	for _, x := range hs {
		counts[x]++
	}
	var tieScore float32
	top := 0
	for x, c := range counts {
		if c > top || (c == top && x < tieScore) {
			tieScore, top = x, c
		}
	}
	xt := make([]float64, m.Dim)
	m.Norm.Apply(hold.Row(slices.Index(hs, tieScore)), xt)
	dsum := make([]float64, m.Dim)
	xr := make([]float64, m.Dim)
	near := 0
	for r, x := range hs {
		if x != tieScore && math.Abs(float64(x-tieScore)) < 0.01*float64(tieScore) {
			near++
			m.Norm.Apply(hold.Row(r), xr)
			for i := range xr {
				dsum[i] += math.Abs(xr[i] - xt[i])
			}
		}
	}
	for i := range dsum {
		dsum[i] /= float64(max(near, 1))
	}
	q := func(f float64) float64 { v, _ := calib.Quantile(hs, f); return v }
	log.Info("float32 vs float64 reference", "spearman", r64, "distinct_scores", len(counts), "rows", len(hs), "largest_tie", top, "tie_score", tieScore,
		"p10", q(0.1), "p25", q(0.25), "p50", q(0.5), "p75", q(0.75), "p90", q(0.9))
	log.Info("tie vector (normalised)", "xn", fmt.Sprintf("%.4f", xt))
	log.Info("rows within 1% of the tie score", "n", near, "mean_abs_diff_per_feature", fmt.Sprintf("%.5f", dsum))
}

// topSpearman is Spearman's rho over the rows whose reference score a is in the top frac.
func topSpearman(a, b []float32, frac float64) float64 {
	idx := make([]int, len(a))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(i, j int) int { return -cmpF(a[i], a[j]) })
	n := max(2, int(frac*float64(len(a))))
	x, y := make([]float32, n), make([]float32, n)
	for i := range n {
		x[i], y[i] = a[idx[i]], b[idx[i]]
	}
	rho, _ := calib.Spearman(x, y)
	return rho
}

func cmpF(a, b float32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// simulateSingle scores hold with the float64 reference of a single autoencoder, with the encoder
// input and/or the hidden activations rounded to a uint8 grid over [0, 1] with step 1/levels, and
// returns Spearman's rho against the unrounded scores (diagnostic of where the int8 rank noise
// comes from).
func simulateSingle(m *ae.Model, hold ae.Matrix, qIn, qHid bool, levels float64) float64 {
	return simulateChannels(m, hold, qIn, qHid, levels, nil, nil)
}

// simulateChannels is simulateSingle with per-feature input ranges inR and per-unit hidden ranges
// hR (nil: [0, 1] for all): each channel is rounded on its own grid (per-channel activation
// scales, which an exported graph would fold into the normalisation and the decoder weights).
func simulateChannels(m *ae.Model, hold ae.Matrix, qIn, qHid bool, levels float64, inR, hR [][2]float64) float64 {
	a := m.Single
	qc := func(v float64, r [][2]float64, i int) float64 {
		lo, hi := 0.0, 1.0
		if r != nil {
			lo, hi = r[i][0], r[i][1]
		}
		if hi <= lo {
			return min(max(v, lo), hi)
		}
		return lo + math.Round((min(max(v, lo), hi)-lo)/(hi-lo)*levels)/levels*(hi-lo)
	}
	ref := make([]float64, hold.Rows)
	got := make([]float64, hold.Rows)
	xn := make([]float64, m.Dim)
	xc := make([]float64, m.Dim)
	h := make([]float64, a.Hidden)
	for r := 0; r < hold.Rows; r++ {
		ref[r] = m.Score(hold.Row(r), nil)
		m.Norm.Apply(hold.Row(r), xn)
		for i, v := range xn {
			xc[i] = min(max(v, m.Norm.Lo), m.Norm.Hi)
			if qIn {
				xc[i] = qc(xc[i], inR, i)
			}
		}
		for j := 0; j < a.Hidden; j++ {
			z := a.B1[j]
			for i := 0; i < a.In; i++ {
				z += xc[i] * a.W1[i*a.Hidden+j]
			}
			h[j] = 1 / (1 + math.Exp(-z))
			if qHid {
				h[j] = qc(h[j], hR, j)
			}
		}
		var s float64
		for i := 0; i < a.In; i++ {
			v := a.B2[i]
			for j := 0; j < a.Hidden; j++ {
				v += h[j] * a.W2[j*a.In+i]
			}
			if a.OutAct == ae.ActSigmoid {
				v = 1 / (1 + math.Exp(-v))
			}
			s += (v - xn[i]) * (v - xn[i])
		}
		got[r] = math.Sqrt(s / float64(a.In))
	}
	rho, _ := calib.Spearman(ref, got)
	return rho
}

func f64s(xs []float32) []float64 {
	out := make([]float64, len(xs))
	for i, v := range xs {
		out[i] = float64(v)
	}
	return out
}

// channelRanges returns per-feature ranges of the clipped normalised input and per-unit ranges of
// the hidden activations over the calibration rows, at quantile p (1: min/max).
func channelRanges(m *ae.Model, c ae.Matrix, p float64) (inR, hR [][2]float64) {
	a := m.Single
	xs := make([][]float64, a.In)
	hs := make([][]float64, a.Hidden)
	xn := make([]float64, m.Dim)
	for r := 0; r < c.Rows; r++ {
		m.Norm.Apply(c.Row(r), xn)
		for i, v := range xn {
			xn[i] = min(max(v, m.Norm.Lo), m.Norm.Hi)
			xs[i] = append(xs[i], xn[i])
		}
		for j := 0; j < a.Hidden; j++ {
			z := a.B1[j]
			for i := 0; i < a.In; i++ {
				z += xn[i] * a.W1[i*a.Hidden+j]
			}
			hs[j] = append(hs[j], 1/(1+math.Exp(-z)))
		}
	}
	rng := func(v []float64) [2]float64 {
		slices.Sort(v)
		q := func(f float64) float64 { return v[min(len(v)-1, int(f*float64(len(v)-1)))] }
		return [2]float64{q(1 - p), q(p)}
	}
	for _, v := range xs {
		inR = append(inR, rng(v))
	}
	for _, v := range hs {
		hR = append(hR, rng(v))
	}
	return inR, hR
}
