// Package train glues the model pipeline together for `vigilctl model train` and `make models`:
// collect feature vectors from a source, fit a model (models/ae), export it to ONNX
// (models/export), calibrate its threshold on held-out benign scores (models/calib) and pack the
// bundle (models/bundle). It is pure Go: scoring for calibration goes through the small Scorer
// interface, which models/runtime.Scorer (cgo, ONNX Runtime) satisfies, so thresholds are
// calibrated on the exported (for example int8) model's own scores.
package train

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/models/ae"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/calib"
	"github.com/vigil-edge/vigil/models/export"
)

// Source yields feature vectors one at a time; Next returns io.EOF after the last. The returned
// slice may be reused by the source after the next call.
type Source interface {
	Next(ctx context.Context) ([]float32, error)
}

// SliceSource is a Source over vectors in memory.
type SliceSource struct {
	Vectors [][]float32
	i       int
}

// Next implements Source.
func (s *SliceSource) Next(ctx context.Context) ([]float32, error) {
	if s.i >= len(s.Vectors) {
		return nil, io.EOF
	}
	s.i++
	return s.Vectors[s.i-1], nil
}

// Collect reads src into a matrix of at most maxRows rows (0 = unbounded). Beyond maxRows it keeps
// a uniform reservoir sample (deterministic for seed), so memory stays bounded on long captures.
// It returns the matrix and the number of vectors seen.
func Collect(ctx context.Context, src Source, dim, maxRows int, seed uint64) (ae.Matrix, int, error) {
	if dim <= 0 {
		return ae.Matrix{}, 0, fmt.Errorf("collect: invalid dim %d", dim)
	}
	m := ae.Matrix{Cols: dim}
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	seen := 0
	for {
		if seen%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return m, seen, fmt.Errorf("collect: %w", err)
			}
		}
		v, err := src.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return m, seen, fmt.Errorf("collect: %w", err)
		}
		if len(v) != dim {
			return m, seen, fmt.Errorf("collect: vector %d has %d values, want %d", seen, len(v), dim)
		}
		seen++
		if maxRows <= 0 || m.Rows < maxRows {
			m.Data = append(m.Data, v...)
			m.Rows++
			continue
		}
		if j := rng.IntN(seen); j < maxRows {
			copy(m.Row(j), v)
		}
	}
	return m, seen, nil
}

// Config controls Train.
type Config struct {
	Dim     int
	MaxRows int // bound on the vectors kept for training (0 = all)
	Model   ae.Config
}

// Result is a trained model with its costs.
type Result struct {
	Model     *ae.Model
	Rows      int // rows trained on
	Seen      int // vectors read from the source
	Duration  time.Duration
	PeakHeap  uint64 // bytes, sampled runtime.MemStats.HeapAlloc maximum during collection and training
	PeakSys   uint64 // bytes obtained from the OS (MemStats.Sys) at the end
	FinalLoss float64
}

// Train collects the vectors of src and fits a model.
func Train(ctx context.Context, src Source, cfg Config) (*Result, error) {
	start := time.Now()
	stop := make(chan struct{})
	var peak uint64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // sample the heap; ReadMemStats is cheap at this rate
		defer wg.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	data, seen, err := Collect(ctx, src, cfg.Dim, cfg.MaxRows, cfg.Model.Train.Seed)
	var model *ae.Model
	var last float64
	if err == nil {
		mc := cfg.Model
		user := mc.Progress
		mc.Progress = func(p ae.Progress) {
			last = p.Loss
			if user != nil {
				user(p)
			}
		}
		model, err = ae.Fit(ctx, data, mc)
	}
	close(stop)
	wg.Wait()
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return &Result{Model: model, Rows: data.Rows, Seen: seen, Duration: time.Since(start),
		PeakHeap: max(peak, ms.HeapAlloc), PeakSys: ms.Sys, FinalLoss: last}, nil
}

// Export serialises the model to ONNX with the given quantization (bundle.Quant*). Static
// QDQ keeps the main decoder in float32 (export.Options.FloatDecoder): the int8 encoder does
// the bulk of the work, and the reconstruction carries no 8-bit rounding of the hidden layer
// (the int8 scores of the ranks that matter match the float model's: Spearman 0.990 on the
// top 5% of nethost's held-out benign scores instead of 0.948). Every int8 GEMM avoids the
// output widths that ONNX Runtime 1.24's AMX kernel gets wrong in runs of 32 rows or more
// (export.Options.AMXSafe; docs/models.md, section 4), so scores do not depend on the run
// length and the detectors can score 256 rows per run.
func Export(m *ae.Model, quant string, calibration ae.Matrix) ([]byte, error) {
	return export.Export(m, export.Options{Quant: quant, Calibration: calibration,
		FloatDecoder: quant == bundle.QuantInt8Static, AMXSafe: quant != bundle.QuantNone})
}

// Layout is an int8 graph layout for ExportLayout.
type Layout int

// Layouts (docs/models.md, sections 5 and 6).
const (
	// LayoutFloatDecoder is Export's layout: int8 encoder, float32 decoder, AMXSafe. Best
	// int8/float rank agreement; the float decoder keeps the file at about 2/3 of the float
	// model's size.
	LayoutFloatDecoder Layout = iota
	// LayoutInt8Lean quantizes encoder and decoder (AMXSafe) and stores the int8 constants
	// compactly (export.Options.Lean): at most a third of the float model's size for
	// netflow/v1's single autoencoder of 64 (or 87) hidden units, and the fastest correct
	// int8 layout there; int8/float Spearman 0.96-0.97 on the held-out benign packets.
	LayoutInt8Lean
	// LayoutSplitInput is LayoutFloatDecoder with the encoder's input quantized in two uint8
	// passes (export.Options.SplitInput: the int8 encoder sees its input at about 16-bit
	// precision) and the int8 weights' rounding fitted on the calibration rows
	// (export.Options.FitRounding). int8/float Spearman on the held-out benign rows: nethost/v6
	// 0.9839 → 0.9992, netflow/v1 KitNET 0.9736 → 0.9999, fileactivity/v1 0.9718 → 0.9940;
	// the int8 model is 15-28% slower than the float one at batch 256 instead of about as fast
	// (docs/models.md, sections 16 and 17). Not the default.
	LayoutSplitInput
	// LayoutFitRounding is LayoutFloatDecoder with the int8 weights' rounding fitted on the
	// calibration rows (export.Options.FitRounding): the same graph, size and speed.
	LayoutFitRounding
	// LayoutInputGain is LayoutFitRounding with per-feature input gains before the int8
	// encoder (export.Options.InputGain 0.75 at the 99.9th percentiles): one Mul node more.
	LayoutInputGain
	// LayoutSplitWeights is LayoutFloatDecoder with the encoder's weights in two int8 parts,
	// the rounded weights and their rounding residual (export.Options.SplitWeights): one
	// QGemm and one Add more.
	LayoutSplitWeights
)

// layoutNames are the names ParseLayout accepts, in Layout order.
var layoutNames = []string{"float-decoder", "int8-lean", "split-input", "fit-rounding", "input-gain", "split-weights"}

// String returns the layout's name (ParseLayout's input).
func (l Layout) String() string {
	if l >= 0 && int(l) < len(layoutNames) {
		return layoutNames[l]
	}
	return fmt.Sprintf("layout(%d)", int(l))
}

// ParseLayout returns the layout of that name ("" is LayoutFloatDecoder).
func ParseLayout(name string) (Layout, error) {
	if name == "" {
		return LayoutFloatDecoder, nil
	}
	for i, n := range layoutNames {
		if n == name {
			return Layout(i), nil
		}
	}
	return 0, fmt.Errorf("unknown int8 layout %q (want one of %s)", name, strings.Join(layoutNames, ", "))
}

// ExportLayout is Export with a chosen int8 layout (for bundle.QuantNone and dynamic
// quantization it is Export).
func ExportLayout(m *ae.Model, quant string, calibration ae.Matrix, layout Layout) ([]byte, error) {
	if quant != bundle.QuantInt8Static || layout == LayoutFloatDecoder {
		return Export(m, quant, calibration)
	}
	switch layout {
	case LayoutInt8Lean:
		return export.Export(m, export.Options{Quant: quant, Calibration: calibration, AMXSafe: true, Lean: true})
	case LayoutSplitInput:
		return export.Export(m, export.Options{Quant: quant, Calibration: calibration, FloatDecoder: true, AMXSafe: true, SplitInput: true, FitRounding: true})
	case LayoutFitRounding:
		return export.Export(m, export.Options{Quant: quant, Calibration: calibration, FloatDecoder: true, AMXSafe: true, FitRounding: true})
	case LayoutInputGain:
		return export.Export(m, export.Options{Quant: quant, Calibration: calibration, FloatDecoder: true, AMXSafe: true, FitRounding: true, InputGain: 0.75, InputGainPercentile: 99.9})
	case LayoutSplitWeights:
		return export.Export(m, export.Options{Quant: quant, Calibration: calibration, FloatDecoder: true, AMXSafe: true, SplitWeights: true})
	}
	return nil, fmt.Errorf("export: unknown layout %d", layout)
}

// Scorer is what calibration needs from a model runtime (models/runtime.Scorer satisfies it).
type Scorer interface {
	Score(features []float32, n int) (scores, contrib []float32, err error)
}

// Scores scores every row of data in batches and returns a copy of the scores.
func Scores(sc Scorer, data ae.Matrix, batch int) ([]float32, error) {
	if batch <= 0 {
		batch = 256
	}
	out := make([]float32, 0, data.Rows)
	for start := 0; start < data.Rows; start += batch {
		n := min(batch, data.Rows-start)
		s, _, err := sc.Score(data.Data[start*data.Cols:(start+n)*data.Cols], n)
		if err != nil {
			return nil, fmt.Errorf("score rows %d..%d: %w", start, start+n, err)
		}
		out = append(out, s...)
	}
	return out, nil
}

// Calibrate scores held-out benign rows (and attack rows, if any) with sc and returns the
// threshold at fpr (calib.DefaultFPR if 0) with the validation metrics.
func Calibrate(sc Scorer, benign, attack ae.Matrix, fpr float64) (calib.Metrics, error) {
	if fpr == 0 {
		fpr = calib.DefaultFPR
	}
	bs, err := Scores(sc, benign, 256)
	if err != nil {
		return calib.Metrics{}, fmt.Errorf("calibrate: %w", err)
	}
	var as []float32
	if attack.Rows > 0 {
		if as, err = Scores(sc, attack, 256); err != nil {
			return calib.Metrics{}, fmt.Errorf("calibrate: %w", err)
		}
	}
	m, err := calib.Evaluate(bs, as, fpr)
	if err != nil {
		return m, fmt.Errorf("calibrate: %w", err)
	}
	return m, nil
}

// Build writes dir/NAME-VERSION.vgb from the model bytes and manifest, filling the threshold and
// metrics from met. It returns the bundle's path.
func Build(dir string, model []byte, man bundle.Manifest, met calib.Metrics) (string, error) {
	man.Threshold = met.Threshold
	man.Metrics = met.Map()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("build bundle: %w", err)
	}
	p, err := bundle.WriteFile(dir, model, &man)
	if err != nil {
		return "", fmt.Errorf("build bundle: %w", err)
	}
	return p, nil
}

// ReferenceScorer scores with the model's float64 Go reference (no ONNX Runtime); for tests and
// for checking an exported graph.
type ReferenceScorer struct{ Model *ae.Model }

// Score implements Scorer.
func (r ReferenceScorer) Score(features []float32, n int) ([]float32, []float32, error) {
	d := r.Model.Dim
	if len(features) < n*d {
		return nil, nil, fmt.Errorf("score: %d values for %d vectors of %d", len(features), n, d)
	}
	scores := make([]float32, n)
	contrib := make([]float32, n*d)
	c := make([]float64, d)
	for i := 0; i < n; i++ {
		scores[i] = float32(r.Model.Score(features[i*d:(i+1)*d], c))
		for j, v := range c {
			contrib[i*d+j] = float32(v)
		}
	}
	return scores, contrib, nil
}

// NethostHiddenRatio is the hidden ratio of the shipped nethost recipe (a
// single autoencoder of ceil(ratio·dim) hidden units) for a nethost set of
// dimension dim: 16 units from nethost/v4 (D = 32) to v7 (D = 35). 0.47
// gives v4 to v6 16 units; v7 takes 0.45, because ceil(0.47·35) = 17, a
// width that AMXSafe widens to 32 (docs/models.md, sections 13 and 15).
// Earlier sets keep the ratios they were trained with up to v6 (0.47).
func NethostHiddenRatio(dim int) float64 {
	if dim >= 35 {
		return 0.45
	}
	return 0.47
}
