package train_test

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/ae"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/calib"
	"github.com/vigil-edge/vigil/models/dataset"
	"github.com/vigil-edge/vigil/models/export"
	"github.com/vigil-edge/vigil/models/runtime"
	"github.com/vigil-edge/vigil/models/runtime/runtimetest"
	"github.com/vigil-edge/vigil/models/train"
	"github.com/vigil-edge/vigil/test/trafficgen"
)

// realAttack is one attack capture of the study with its labelled attacker's packets.
type realAttack struct {
	name     string
	x        ae.Matrix
	attacker []bool
}

// TestNetflowLayoutsReal (VIGIL_LAYOUT_REAL=1, VIGIL_SHARED_DATA) trains netflow/v1 models of
// several shapes on the shared benign captures the way `make models` does (every fifth file and
// the last synthetic baseline held out, minmax normalisation, 10 epochs, seed 1), exports each
// as float32 and in the int8 layouts of the width study, and logs one Markdown row per model and
// layout: size, Spearman of the int8 scores with the float scores on the held-out benign packets
// (all, distinct feature vectors, top 5%), threshold at 0.1% FPR on the layout's own scores,
// attack captures with a flagged packet, pooled TPR over the labelled attackers' packets, ROC
// AUC (attacker packets against held-out benign), and the run-size check (runtime.ConsistentRun
// at 256 and the held-out rows whose score in runs of 256 differs from single-row runs).
// docs/models.md, section 6, has the table.
//
//	VIGIL_LAYOUT_REAL=1 VIGIL_SHARED_DATA=/work/shared/data ONNXRUNTIME_LIB=bin/lib/libonnxruntime.so \
//	    go test ./models/train -run TestNetflowLayoutsReal -v -timeout 30m
func TestNetflowLayoutsReal(t *testing.T) {
	if os.Getenv("VIGIL_LAYOUT_REAL") == "" {
		t.Skip("set VIGIL_LAYOUT_REAL=1 (and VIGIL_SHARED_DATA) to run the netflow/v1 layout study on real captures")
	}
	data := os.Getenv("VIGIL_SHARED_DATA")
	if data == "" {
		t.Skip("VIGIL_SHARED_DATA not set")
	}
	if err := runtime.Init(runtimetest.Library(t)); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	set, err := dataset.Lookup("netflow/v1")
	if err != nil {
		t.Fatal(err)
	}
	sets := []dataset.FeatureSet{set}
	files, err := dataset.List(filepath.Join(data, "benign"))
	if err != nil {
		t.Fatal(err)
	}
	var trainCaps, holdCaps []*dataset.Capture
	for i, p := range files {
		cf, err := dataset.Extract(ctx, p, sets, dataset.DefaultMaxPackets)
		if err != nil || cf.N == 0 {
			continue
		}
		if i%5 == 2 {
			holdCaps = append(holdCaps, cf)
		} else {
			trainCaps = append(trainCaps, cf)
		}
	}
	// The trainer's synthetic baselines (models/cmd/vigil-train-baseline, baselineConfigs).
	dir := t.TempDir()
	base := []trafficgen.Config{
		{Seed: 101, Duration: 3 * time.Minute, Clients: 4, Sessions: 900},
		{Seed: 102, Duration: 3 * time.Minute, Clients: 8, Sessions: 1200},
		{Seed: 103, Duration: 2 * time.Minute, Clients: 16, Sessions: 1200},
		{Seed: 104, Duration: 2 * time.Minute, Clients: 2, Sessions: 600},
		{Seed: 105, Duration: 3 * time.Minute, Clients: 8, Sessions: 1000},
	}
	for i, c := range base {
		p := filepath.Join(dir, fmt.Sprintf("baseline-%d.pcap", c.Seed))
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		_, err = trafficgen.Write(f, c)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		cf, err := dataset.Extract(ctx, p, sets, dataset.DefaultMaxPackets)
		if err != nil {
			t.Fatal(err)
		}
		if i == len(base)-1 {
			holdCaps = append(holdCaps, cf)
		} else {
			trainCaps = append(trainCaps, cf)
		}
	}
	trainX, hold := dataset.Stack(trainCaps, 0), dataset.Stack(holdCaps, 0)
	labels, err := dataset.ReadLabels(filepath.Join(data, "MANIFEST.csv"))
	if err != nil {
		t.Fatal(err)
	}
	afiles, err := dataset.List(filepath.Join(data, "attacks"))
	if err != nil {
		t.Fatal(err)
	}
	var atk []realAttack
	for _, p := range afiles {
		cf, err := dataset.Extract(ctx, p, sets, dataset.DefaultMaxPackets)
		if err != nil || cf.N == 0 {
			continue
		}
		rel, _ := filepath.Rel(filepath.Join(data, "attacks"), p)
		a := realAttack{name: rel, x: cf.Matrix(0), attacker: make([]bool, cf.N)}
		// As the trainer counts them: every packet of the first label's attacker address.
		if ls := labels.For(rel); len(ls) > 0 && ls[0].Attacker.IsValid() {
			for i := range cf.N {
				a.attacker[i] = cf.Src[i].Unmap() == ls[0].Attacker.Unmap()
			}
		}
		atk = append(atk, a)
	}
	t.Logf("train %d rows, held-out %d rows, %d attack captures", trainX.Rows, hold.Rows, len(atk))
	distinct := hold.DistinctRows()
	calibData := dataset.Sample(trainX, 20000)

	qat := ae.TrainConfig{InputNoise: 0.5 / 255, HiddenNoise: 0.5 / 255}
	shapes := []struct {
		name string
		cfg  ae.Config
	}{
		{"KitNET m=10 (experimental bundle)", ae.Config{Kind: ae.KindKitNET, MaxGroup: 10}},
		{"single h87", ae.Config{Kind: ae.KindSingle, HiddenRatio: 0.75}},
		{"single h64", ae.Config{Kind: ae.KindSingle, HiddenRatio: 63.5 / 115}},
		{"single h48", ae.Config{Kind: ae.KindSingle, HiddenRatio: 47.5 / 115}},
		{"single h32", ae.Config{Kind: ae.KindSingle, HiddenRatio: 31.5 / 115}},
		// Trained for 8-bit inference (ae.TrainConfig.InputNoise, HiddenNoise: half a uint8
		// step of the [0, 1] ranges).
		{"single h64 QAT", ae.Config{Kind: ae.KindSingle, HiddenRatio: 63.5 / 115, Train: qat}},
		{"single h48 QAT", ae.Config{Kind: ae.KindSingle, HiddenRatio: 47.5 / 115, Train: qat}},
		{"single h32 QAT", ae.Config{Kind: ae.KindSingle, HiddenRatio: 31.5 / 115, Train: qat}},
		{"KitNET m=10 QAT", ae.Config{Kind: ae.KindKitNET, MaxGroup: 10, Train: qat}},
		{"KitNET m=10 ratio 0.5", ae.Config{Kind: ae.KindKitNET, MaxGroup: 10, HiddenRatio: 0.5}},
		{"single h64 QAT×2", ae.Config{Kind: ae.KindSingle, HiddenRatio: 63.5 / 115, Train: ae.TrainConfig{InputNoise: 1.0 / 255, HiddenNoise: 1.0 / 255}}},
	}
	if f := os.Getenv("VIGIL_LAYOUT_REAL_FILTER"); f != "" {
		shapes = slices.DeleteFunc(shapes, func(s struct {
			name string
			cfg  ae.Config
		}) bool {
			for _, part := range strings.Split(f, ",") {
				if exact, ok := strings.CutPrefix(part, "="); ok && s.name == exact || !ok && strings.Contains(s.name, part) {
					return false
				}
			}
			return true
		})
	}
	q := bundle.QuantInt8Static
	layouts := []struct {
		name string
		opt  export.Options
	}{
		{"float32", export.Options{Quant: bundle.QuantNone}},
		{"QDQ+AMXSafe+FloatDecoder (train.Export today)", export.Options{Quant: q, AMXSafe: true, FloatDecoder: true}},
		{"QDQ+AMXSafe", export.Options{Quant: q, AMXSafe: true}},
		{"QDQ+AMXSafe+Lean", export.Options{Quant: q, AMXSafe: true, Lean: true}},
	}
	var rows []string
	for _, sh := range shapes {
		cfg := sh.cfg
		cfg.Norm = ae.NormMinMax
		cfg.Train.Epochs, cfg.Train.Seed = 10, 1
		t0 := time.Now()
		m, err := ae.Fit(ctx, trainX, cfg)
		if err != nil {
			t.Fatal(err)
		}
		trainDur := time.Since(t0)
		var floatBytes int
		var ref []float32
		for _, l := range layouts {
			opt := l.opt
			if opt.Quant != bundle.QuantNone {
				opt.Calibration = calibData
			}
			raw, err := export.Export(m, opt)
			if err != nil {
				t.Fatal(err)
			}
			if opt.Quant == bundle.QuantNone {
				floatBytes = len(raw)
			}
			sc, err := runtime.OpenWith("", raw, m.Dim, 256, runtime.Options{})
			if err != nil {
				t.Fatal(err)
			}
			// Held-out scores in runs of 256 (what a detector scoring 256-row runs sees) and
			// alone (the reference of the run-size check).
			hs, err := train.Scores(sc, hold, 256)
			if err != nil {
				t.Fatal(err)
			}
			one, err := train.Scores(sc, hold, 1)
			if err != nil {
				t.Fatal(err)
			}
			thr, err := calib.Threshold(hs, 0.001)
			if err != nil {
				t.Fatal(err)
			}
			run, err := runtime.ConsistentRun(sc, nil, 256, thr/1000)
			if err != nil {
				t.Fatal(err)
			}
			changed := 0
			for i := range hs {
				if math.Abs(float64(hs[i]-one[i])) > thr/1000 {
					changed++
				}
			}
			var attackScores []float32
			var tp, detected int
			var perCapture []string
			for _, a := range atk {
				as, err := train.Scores(sc, a.x, 256)
				if err != nil {
					t.Fatal(err)
				}
				hit := false
				ctp, cpos := 0, 0
				for i, x := range as {
					flagged := float64(x) > thr
					hit = hit || flagged
					if a.attacker[i] {
						cpos++
						attackScores = append(attackScores, x)
						if flagged {
							tp++
							ctp++
						}
					}
				}
				if hit {
					detected++
				}
				if hit || cpos > 0 {
					perCapture = append(perCapture, fmt.Sprintf("%s:%v:%d/%d", filepath.Base(a.name), hit, ctp, cpos))
				}
			}
			sc.Close()
			met, err := calib.Evaluate(hs, attackScores, 0.001)
			if err != nil {
				t.Fatal(err)
			}
			rho, rhoD, rhoTop := 1.0, 1.0, 1.0
			if ref == nil {
				ref = hs
			} else {
				rho, _ = calib.Spearman(ref, hs)
				rhoD = calib.SubsetSpearman(ref, hs, distinct)
				rhoTop = topSpearman(ref, hs, 0.05)
			}
			row := fmt.Sprintf("| %s | %s | %d | %.3f | %.4f | %.4f | %.4f | %.5g | %.3f%% | %d of %d | %.3f | %.4f | %d | %d |",
				sh.name, l.name, len(raw), float64(len(raw))/float64(floatBytes), rho, rhoD, rhoTop, thr, met.FPR*100,
				detected, len(atk), float64(tp)/float64(max(len(attackScores), 1)), met.ROCAUC, run, changed)
			t.Log(row, "train", trainDur.Round(time.Second))
			t.Logf("CAPTURES %s | %s: %s", sh.name, l.name, strings.Join(perCapture, " "))
			rows = append(rows, row)
		}
	}
	t.Log("\n| model | layout | bytes | int8/float | Spearman all | distinct vectors | top 5% | threshold | held-out FPR | captures detected | attacker TPR | ROC AUC | consistent run | held-out rows changed in 256-runs |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n" + strings.Join(rows, "\n"))
}

// topSpearman is Spearman's rho over the rows whose reference score a is in the top frac.
func topSpearman(a, b []float32, frac float64) float64 {
	idx := make([]int, len(a))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(i, j int) int {
		switch {
		case a[i] > a[j]:
			return -1
		case a[i] < a[j]:
			return 1
		}
		return 0
	})
	return calib.SubsetSpearman(a, b, idx[:max(2, int(frac*float64(len(a))))])
}
