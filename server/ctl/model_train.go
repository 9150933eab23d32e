package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/vigil-edge/vigil/internal/termsafe"
	"github.com/vigil-edge/vigil/models/ae"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/calib"
	"github.com/vigil-edge/vigil/models/dataset"
	"github.com/vigil-edge/vigil/models/eval"
	"github.com/vigil-edge/vigil/models/train"
)

// `model train` and `model eval` are added to the model group in model.go;
// TestModelTrainAttached guards that they stay there.

// trainOptions are the flags of `model train`.
type trainOptions struct {
	featureSet string
	benign     []string
	holdout    float64
	kind       string
	seed       uint64
	epochs     int
	snapEpochs int
	fpr        float64
	quant      string
	splitInput bool
	layout     string
	name       string
	version    uint64
	out        string
	ortLib     string
	created    string
	validity   time.Duration
	minAgent   string
	maxPackets int
	asJSON     bool
}

// TrainResult is what `model train --json` prints.
type TrainResult struct {
	Bundle       string   `json:"bundle"`
	FeatureSet   string   `json:"feature_set"`
	Kind         string   `json:"kind"`
	Quantization string   `json:"quantization"`
	TrainFiles   int      `json:"train_files"`
	HoldoutFiles int      `json:"holdout_files"`
	SkippedFiles []string `json:"skipped_files"`
	// TruncatedFiles are the captures cut at --max-packets ("PATH: truncated at N packets"):
	// only their first packets were used.
	TruncatedFiles    []string `json:"truncated_files,omitempty"`
	HoldoutSplit      string   `json:"holdout_split"` // "files" or "tail" (last packets of each capture)
	TrainRows         int      `json:"train_rows"`
	HoldoutRows       int      `json:"holdout_rows"`
	FinalLoss         float64  `json:"final_loss"`
	TrainSeconds      float64  `json:"train_seconds"`
	PeakHeapBytes     uint64   `json:"peak_heap_bytes"`
	PeakRSSBytes      uint64   `json:"peak_rss_bytes"`
	Int8Bytes         int      `json:"int8_bytes"`
	FloatBytes        int      `json:"float_bytes"`
	SpearmanInt8Float float64  `json:"spearman_int8_float"`
	// Held-out rows scored per CPU-second in runs of 256, int8 and float side by side (absent
	// with fewer than 256 held-out rows).
	Speeds      *train.Speeds `json:"speeds,omitempty"`
	Metrics     calib.Metrics `json:"metrics"`
	HoldoutList string        `json:"holdout_list,omitempty"` // held-out capture paths, for model eval --benign @FILE
}

func modelTrain(app *App) *cobra.Command {
	var o trainOptions
	c := &cobra.Command{
		Use:   "train --feature-set nethost/v7|nethost/v6|nethost/v5|nethost/v4|nethost/v3|nethost/v2|nethost/v1|netflow/v1|fileactivity/v1 --benign PATH... [--holdout 0.2] [--kind kitnet|single] [--seed N] [--epochs N] [--fpr 0.001] [--name NAME --version N --out DIR]",
		Short: "Train an int8 anomaly model on benign captures (or file-event traces), calibrate its threshold on held-out benign events, write NAME-VERSION.vgb (unsigned)",
		Long: "Train an int8 anomaly model on benign captures, calibrate its threshold on held-out benign events, write NAME-VERSION.vgb (unsigned).\n\n" +
			"Packet feature sets (nethost/*, netflow/v1) read pcap or pcapng files. fileactivity/v1 reads file-event traces\n" +
			"(`vigil-agent record` writes them on a sensor; gzip-compressed traces are read as they are).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := runTrain(cmd.Context(), app, o)
			if err != nil {
				return err
			}
			if o.asJSON {
				return app.PrintJSON(res)
			}
			p := func(f string, a ...any) { fmt.Fprintf(app.Stdout, f, a...) }
			p("bundle:         %s (unsigned; sign it with `vigilctl model sign --key KEY %s`)\n", res.Bundle, res.Bundle)
			p("model:          %s %s, %s\n", res.FeatureSet, res.Kind, res.Quantization)
			p("data:           %d training rows from %d captures, %d held-out rows from %d captures (split by %s), %d skipped\n",
				res.TrainRows, res.TrainFiles, res.HoldoutRows, res.HoldoutFiles, res.HoldoutSplit, len(res.SkippedFiles))
			p("training:       %.1f s, final loss %.6g, peak heap %s, peak RSS %s\n", res.TrainSeconds, res.FinalLoss, mib(res.PeakHeapBytes), mib(res.PeakRSSBytes))
			p("threshold:      %.6g at target FPR %.3f%% (held-out FPR %.3f%%, benign p99 %.4g, max %.4g)\n",
				res.Metrics.Threshold, 100*res.Metrics.TargetFPR, 100*res.Metrics.FPR, res.Metrics.BenignP99, res.Metrics.BenignMax)
			if res.Metrics.Undercounted {
				p("                WARNING: fewer held-out rows (%d) than 1/FPR: the threshold is the held-out maximum\n", res.Metrics.BenignN)
			}
			if res.HoldoutList != "" {
				p("held-out list:  %s (evaluate with `vigilctl model eval --benign @%s ...`)\n", res.HoldoutList, res.HoldoutList)
			}
			p("int8 vs float:  %d vs %d bytes, Spearman %.4f on held-out scores\n", res.Int8Bytes, res.FloatBytes, res.SpearmanInt8Float)
			if sp := res.Speeds; sp != nil {
				p("int8 vs float:  %.0f vs %.0f rows per CPU-second at batch 256 (%+.0f%%)\n", sp.Int8, sp.Float, 100*(sp.Int8/sp.Float-1))
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&o.featureSet, "feature-set", "", "feature set: nethost/v7, nethost/v6, nethost/v5, nethost/v4, nethost/v3, nethost/v2, nethost/v1, netflow/v1 or fileactivity/v1")
	f.StringArrayVar(&o.benign, "benign", nil, "benign capture file or folder (pcap/pcapng; file-event traces for fileactivity/v1; repeatable)")
	f.Float64Var(&o.holdout, "holdout", 0.2, "fraction held out for calibration: whole files (every 1/FRAC-th) when there are several, else the last packets of each capture")
	f.StringVar(&o.kind, "kind", "", "model kind: kitnet or single (default: single for nethost/v1 to v7, kitnet for netflow/v1 and fileactivity/v1)")
	f.Uint64Var(&o.seed, "seed", 1, "training seed (same seed and data: same model)")
	f.IntVar(&o.epochs, "epochs", 0, "training epochs (default: 10, or 40 for fileactivity/v1, as the shipped models)")
	f.IntVar(&o.snapEpochs, "snap-epochs", -1, "then this many epochs with the encoders' weights rounded to their int8 grid and fixed, so the int8 encoder's weights carry no error (default: 1 for fileactivity/v1, 0 for the others, as the shipped models; docs/models.md section 21)")
	f.Float64Var(&o.fpr, "fpr", calib.DefaultFPR, "target false-positive rate on held-out benign packets")
	// Static QDQ by default, chosen by measured speed where the model runs: its scores do not
	// depend on the batch, so the detectors score runs of 256 rows, while a dynamically
	// quantized model (one activation scale per run) must be scored one row at a time
	// (runtime.ConsistentRun). A scan of the 1M-packet reference capture took 0.45 s with a
	// nethost/v6 int8-qdq bundle and 1.8-2.0 s with the same model in int8-dynamic
	// (docs/models.md, section 16).
	f.StringVar(&o.quant, "quant", bundle.QuantInt8Static, "int8 format: int8-qdq (static: batch-independent scores, the detectors score runs of 256) or int8-dynamic (one scale per run: scored one row at a time, about 4x slower scans)")
	f.BoolVar(&o.splitInput, "split-input", false, "int8-qdq only: the int8 encoder takes its input in two uint8 passes, with weight rounding fitted on the calibration rows (int8 scores rank like the float model's: Spearman 0.9992 instead of 0.9839 for nethost/v6, at 15-28% more scoring CPU); the same as --layout split-input")
	f.StringVar(&o.layout, "layout", "", "int8-qdq only: the int8 graph layout, float-decoder (default), fit-rounding (weight rounding fitted on the calibration rows; same graph and speed), input-gain (fit-rounding with per-feature input gains: one node more), split-input, or split-weights (the encoder's weights in two int8 parts: one QGemm more; docs/models.md, sections 16, 17 and 20)")
	f.StringVar(&o.name, "name", "", "bundle name (default: the feature set's name, e.g. nethost)")
	f.Uint64Var(&o.version, "version", 1, "bundle version (monotonic)")
	f.StringVar(&o.out, "out", ".", "output folder")
	f.StringVar(&o.ortLib, "ort", "", "libonnxruntime.so (default $ONNXRUNTIME_LIB, else lib/ next to vigilctl)")
	f.StringVar(&o.created, "created", "", "manifest creation time, RFC 3339 (default now; fix it for reproducible bundles)")
	f.DurationVar(&o.validity, "validity", 365*24*time.Hour, "bundle validity")
	f.StringVar(&o.minAgent, "min-agent-version", "", "oldest agent release that may load the bundle (semantic version, e.g. 1.4.0); older agents refuse it")
	f.IntVar(&o.maxPackets, "max-packets", dataset.DefaultMaxPackets, "packets (or file events) read at most per capture")
	f.BoolVar(&o.asJSON, "json", false, "print the result as JSON")
	return c
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// peakRSS is the process's peak resident set size (Linux: ru_maxrss in KiB).
func peakRSS() uint64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return uint64(ru.Maxrss) * 1024
}

// readCaptures extracts every benign file, reporting progress; unreadable
// files, and files that are not benign (dataset.Capture.NotBenign), are
// skipped and named.
func readCaptures(ctx context.Context, files []string, sets []dataset.FeatureSet, maxPackets int, prog *progress) (caps []*dataset.Capture, skipped []string, err error) {
	for i, p := range files {
		prog.step("reading captures", i+1, len(files), filepath.Base(p))
		c, err := dataset.Extract(ctx, p, sets, maxPackets)
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			skipped = append(skipped, err.Error())
			continue
		}
		if c.N == 0 {
			skipped = append(skipped, p+": no packets or file events")
			continue
		}
		if why := c.NotBenign(); why != "" {
			skipped = append(skipped, p+": not benign: "+why)
			continue
		}
		if note := c.TruncatedNote(); note != "" {
			prog.warn(fmt.Sprintf("%s: %s (--max-packets): the rest is not used", p, note))
		}
		caps = append(caps, c)
	}
	prog.done()
	return caps, skipped, nil
}

func runTrain(ctx context.Context, app *App, o trainOptions) (*TrainResult, error) {
	if o.featureSet == "" || len(o.benign) == 0 {
		return nil, errors.New("--feature-set and --benign are required")
	}
	if o.holdout <= 0 || o.holdout >= 1 {
		return nil, fmt.Errorf("--holdout %g: want a fraction in (0, 1)", o.holdout)
	}
	if o.fpr <= 0 || o.fpr >= 1 {
		return nil, fmt.Errorf("--fpr %g: want a rate in (0, 1)", o.fpr)
	}
	if o.quant != bundle.QuantInt8Dyn && o.quant != bundle.QuantInt8Static {
		return nil, fmt.Errorf("--quant %q: want %s or %s", o.quant, bundle.QuantInt8Dyn, bundle.QuantInt8Static)
	}
	if o.splitInput && o.quant != bundle.QuantInt8Static {
		return nil, fmt.Errorf("--split-input needs --quant %s", bundle.QuantInt8Static)
	}
	layout, err := train.ParseLayout(o.layout)
	if err != nil {
		return nil, fmt.Errorf("--layout: %w", err)
	}
	if o.layout != "" && o.quant != bundle.QuantInt8Static {
		return nil, fmt.Errorf("--layout needs --quant %s", bundle.QuantInt8Static)
	}
	if o.splitInput {
		if o.layout != "" && layout != train.LayoutSplitInput {
			return nil, errors.New("--split-input and --layout disagree")
		}
		layout = train.LayoutSplitInput
	}
	fs, err := dataset.Lookup(o.featureSet)
	if err != nil {
		return nil, err
	}
	// The shipped recipes: nethost (vigil-train-baseline), netflow/v1's
	// experimental KitNET, fileactivity (vigil-train-fileactivity).
	mc, epochs := ae.Config{Kind: ae.KindSingle, HiddenRatio: train.NethostHiddenRatio(fs.Dim), Norm: ae.NormMinMax}, 10
	switch {
	case fs.Files():
		mc, epochs = ae.Config{Kind: ae.KindKitNET, MaxGroup: 16, HiddenRatio: 0.75, Norm: ae.NormMinMax, MinRange: 0.2, OutMinRange: 0.001, SnapEpochs: 1}, 40
	case !strings.HasPrefix(fs.Name, "nethost/"):
		mc = ae.Config{Kind: ae.KindKitNET, MaxGroup: 10, Norm: ae.NormMinMax}
	}
	if err := bundle.CheckMinAgentVersion(o.minAgent); err != nil {
		return nil, fmt.Errorf("--min-agent-version: %w", err)
	}
	if o.epochs < 0 {
		return nil, fmt.Errorf("--epochs %d: want a positive count", o.epochs)
	}
	if o.epochs > 0 {
		epochs = o.epochs
	}
	switch {
	case o.snapEpochs < -1:
		return nil, fmt.Errorf("--snap-epochs %d: want 0 or more", o.snapEpochs)
	case o.snapEpochs >= 0:
		mc.SnapEpochs = o.snapEpochs
	}
	switch o.kind {
	case "":
	case ae.KindKitNET:
		if mc.Kind != ae.KindKitNET {
			mc.Kind, mc.MaxGroup = ae.KindKitNET, 10
		}
	case ae.KindSingle:
		mc.Kind = ae.KindSingle
		if mc.HiddenRatio == 0 {
			mc.HiddenRatio = 0.5
		}
	default:
		return nil, fmt.Errorf("--kind %q: want kitnet or single", o.kind)
	}
	mc.Train = ae.TrainConfig{Epochs: epochs, Seed: o.seed}
	created := time.Now().UTC().Truncate(time.Second)
	if o.created != "" {
		if created, err = time.Parse(time.RFC3339, o.created); err != nil {
			return nil, fmt.Errorf("--created: %w", err)
		}
	}
	name := o.name
	if name == "" {
		name = strings.SplitN(fs.Name, "/", 2)[0]
	}
	man := bundle.Manifest{Name: name, Detector: fs.Detector, Version: o.version, FeatureSet: fs.Name, Dim: fs.Dim,
		Created: created, Expires: created.Add(o.validity), Quantization: o.quant, MinAgentVersion: o.minAgent}
	// The manifest's checks (bundle.Manifest.Validate) run when the bundle
	// is written, after the training: fail on the flags now instead.
	if err := checkManifestFlags(man, o); err != nil {
		return nil, err
	}

	// Listed by file identity: a capture named twice (caps and
	// ./caps/b.pcap) cannot land on both sides of the held-out split.
	files, err := dataset.ListNonEmpty(o.benign...)
	if err != nil {
		return nil, fmt.Errorf("--benign: %w", err)
	}
	if len(files) == 0 {
		return nil, errors.New("no capture files under --benign")
	}
	// Needed to calibrate the trained model: found before the training.
	if err := loadORT(o.ortLib); err != nil {
		return nil, fmt.Errorf("load ONNX Runtime (--ort): %w", err)
	}
	prog := newProgress(app.Stderr)
	sets := []dataset.FeatureSet{fs}
	res := &TrainResult{FeatureSet: fs.Name, Kind: mc.Kind, Quantization: o.quant, SkippedFiles: []string{}}
	var trainCaps, holdCaps []*dataset.Capture
	trainFiles, holdFiles := dataset.SplitHoldout(files, o.holdout)
	if len(trainFiles) > 0 && len(holdFiles) > 0 {
		res.HoldoutSplit = "files"
		var sk1, sk2 []string
		if trainCaps, sk1, err = readCaptures(ctx, trainFiles, sets, o.maxPackets, prog); err != nil {
			return nil, err
		}
		if holdCaps, sk2, err = readCaptures(ctx, holdFiles, sets, o.maxPackets, prog); err != nil {
			return nil, err
		}
		res.SkippedFiles = append(append(res.SkippedFiles, sk1...), sk2...)
	}
	if len(trainCaps) == 0 || len(holdCaps) == 0 { // one file (or one side unreadable): split in time
		res.HoldoutSplit = "tail"
		caps, sk, err := readCaptures(ctx, files, sets, o.maxPackets, prog)
		if err != nil {
			return nil, err
		}
		res.SkippedFiles = sk
		trainCaps, holdCaps = dataset.SplitTail(caps, o.holdout)
	}
	for _, s := range res.SkippedFiles {
		fmt.Fprintf(app.Stderr, "skipped: %s\n", termsafe.Text(s))
	}
	for _, c := range slices.Concat(trainCaps, holdCaps) {
		if note := c.TruncatedNote(); note != "" {
			res.TruncatedFiles = append(res.TruncatedFiles, c.Path+": "+note)
		}
	}
	data, hold := dataset.Stack(trainCaps, 0), dataset.Stack(holdCaps, 0)
	if data.Rows == 0 || hold.Rows == 0 {
		return nil, fmt.Errorf("no events to train on (%d) or to calibrate on (%d)", data.Rows, hold.Rows)
	}
	res.TrainFiles, res.HoldoutFiles, res.TrainRows, res.HoldoutRows = len(trainCaps), len(holdCaps), data.Rows, hold.Rows

	mc.Progress = func(p ae.Progress) {
		prog.step(fmt.Sprintf("training %s (%s)", p.Stage, fs.Name), p.Epoch, p.Epochs, fmt.Sprintf("loss %.6g", p.Loss))
		if p.Epoch == p.Epochs {
			prog.done()
		}
	}
	tr, err := train.Train(ctx, &matrixSource{m: data}, train.Config{Dim: fs.Dim, Model: mc})
	if err != nil {
		return nil, err
	}
	res.TrainSeconds, res.FinalLoss, res.PeakHeapBytes = tr.Duration.Seconds(), tr.FinalLoss, tr.PeakHeap

	model, err := train.ExportLayout(tr.Model, o.quant, dataset.Sample(data, 20000), layout)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	floatModel, err := train.Export(tr.Model, bundle.QuantNone, ae.Matrix{})
	if err != nil {
		return nil, fmt.Errorf("export float: %w", err)
	}
	res.Int8Bytes, res.FloatBytes = len(model), len(floatModel)
	sc, err := openScorer(o.ortLib, model, fs.Dim, 256)
	if err != nil {
		return nil, fmt.Errorf("open int8 model: %w", err)
	}
	defer sc.Close()
	// Calibrated on the int8 model's own scores, in runs whose scores are
	// the plugin's: one row per run for a dynamically quantized model,
	// which quantizes each run with the run's own scale (dataset.ChunkFor).
	int8Scorer := dataset.Chunked{Scorer: sc, Dim: fs.Dim, Chunk: dataset.ChunkFor(o.quant)}
	met, err := train.Calibrate(int8Scorer, hold, ae.Matrix{}, o.fpr)
	if err != nil {
		return nil, err
	}
	res.Metrics = met
	fsc, err := openScorer(o.ortLib, floatModel, fs.Dim, 256)
	if err != nil {
		return nil, fmt.Errorf("open float model: %w", err)
	}
	a, err := train.Scores(int8Scorer, hold, 4096)
	if err == nil {
		var b []float32
		b, err = train.Scores(dataset.Chunked{Scorer: fsc, Dim: fs.Dim}, hold, 4096)
		if err == nil {
			res.SpearmanInt8Float, err = calib.Spearman(a, b)
		}
	}
	if err == nil && hold.Rows >= 256 {
		var sp train.Speeds
		if sp, err = train.SideBySide(sc, fsc, hold); err == nil {
			res.Speeds = &sp
		}
	}
	_ = fsc.Close()
	if err != nil {
		return nil, fmt.Errorf("compare int8 and float scores: %w", err)
	}
	man.Threshold = met.Threshold
	man.Metrics = met.Map()
	man.Metrics["spearman_int8_float"] = res.SpearmanInt8Float
	man.Metrics["train_rows"] = float64(data.Rows)
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", o.out, err)
	}
	if res.Bundle, err = bundle.WriteFile(o.out, model, &man); err != nil {
		return nil, fmt.Errorf("write bundle: %w", err)
	}
	// The held-out captures, for `model eval --benign @FILE` (benign data
	// the model was not trained on).
	if res.HoldoutSplit == "files" {
		paths := make([]string, len(holdCaps))
		for i, c := range holdCaps {
			paths[i] = c.Path
		}
		res.HoldoutList = strings.TrimSuffix(res.Bundle, ".vgb") + ".holdout.txt"
		if err := os.WriteFile(res.HoldoutList, captureList(paths), 0o644); err != nil {
			return nil, fmt.Errorf("write held-out list: %w", err)
		}
	}
	res.PeakRSSBytes = peakRSS()
	return res, nil
}

// checkManifestFlags validates the manifest that --name, --version,
// --created and --validity give, with the values only training fills in
// (digest, threshold) as placeholders.
func checkManifestFlags(man bundle.Manifest, o trainOptions) error {
	switch {
	case o.version == 0:
		return errors.New("--version 0: want 1 or more")
	case o.validity <= 0:
		return fmt.Errorf("--validity %s: want a positive duration", o.validity)
	}
	man.ModelSHA256 = strings.Repeat("0", 64)
	named := man // the name alone: every other field valid
	named.Version, named.Created, named.Expires, named.MinAgentVersion = 1, time.Unix(1, 0), time.Unix(2, 0), ""
	if err := named.Validate(); err != nil {
		return fmt.Errorf("--name %q: %w", man.Name, err)
	}
	if err := man.Validate(); err != nil {
		return fmt.Errorf("bundle manifest from the flags: %w", err)
	}
	return nil
}

// captureList is a capture list for listWithAt naming paths, one a line: a
// path as it is, or Go-quoted (strconv.Quote) when it would not read back as
// itself or would reach a terminal that shows the list raw: a line break
// would split it (and could name another file), white space at either end
// would be trimmed, a leading '#' makes a comment, a leading '"' a quoted
// path, and controls, bidi controls or bytes that are not UTF-8 would drive
// or mislead the terminal of whoever reads the list.
func captureList(paths []string) []byte {
	var b strings.Builder
	for _, p := range paths {
		if p != strings.TrimSpace(p) || strings.HasPrefix(p, "#") || strings.HasPrefix(p, `"`) ||
			!utf8.ValidString(p) || strings.ContainsFunc(p, termsafe.Unsafe) {
			p = strconv.Quote(p)
		}
		b.WriteString(p)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// listWithAt expands capture paths like dataset.ListNonEmpty; "@FILE" names
// a file listing one capture path per line (as `model train` writes
// NAME-VERSION.holdout.txt, see captureList): blank lines and lines starting
// with '#' are skipped, white space around a path is trimmed, and a line
// that is a Go-quoted string is the path it quotes (a line starting with '"'
// that is none is taken as written, as before quoting).
func listWithAt(paths []string) ([]string, error) {
	var expanded []string
	for _, p := range paths {
		if !strings.HasPrefix(p, "@") {
			expanded = append(expanded, p)
			continue
		}
		data, err := os.ReadFile(p[1:])
		if err != nil {
			return nil, fmt.Errorf("read capture list: %w", err)
		}
		n := len(expanded)
		for _, l := range strings.Split(string(data), "\n") {
			l = strings.TrimSpace(l)
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			if strings.HasPrefix(l, `"`) {
				if u, err := strconv.Unquote(l); err == nil {
					l = u
				}
			}
			expanded = append(expanded, l)
		}
		if len(expanded) == n {
			return nil, fmt.Errorf("capture list %s names no captures", p[1:])
		}
	}
	return dataset.ListNonEmpty(expanded...)
}

// matrixSource feeds a matrix's rows to train.Train.
type matrixSource struct {
	m ae.Matrix
	i int
}

func (s *matrixSource) Next(context.Context) ([]float32, error) {
	if s.i >= s.m.Rows {
		return nil, io.EOF
	}
	s.i++
	return s.m.Row(s.i - 1), nil
}

// progress draws a progress bar on a terminal (one redrawn line) and prints
// plain lines otherwise (at most one per step change of 10%, and the last).
// It escapes what it is given (termsafe.Text): capture names are outside text.
type progress struct {
	w     io.Writer
	tty   bool
	last  string
	shown int
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progress) step(what string, i, n int, detail string) {
	if n <= 0 {
		return
	}
	what, detail = termsafe.Text(what), termsafe.Text(detail)
	if p.tty {
		const width = 30
		fill := width * i / n
		fmt.Fprintf(p.w, "\r\033[K%s [%s%s] %d/%d %s", what, strings.Repeat("#", fill), strings.Repeat(".", width-fill), i, n, truncate(detail, 40))
		p.last = what
		return
	}
	decile := 10 * i / n
	if what != p.last {
		p.last, p.shown = what, -1
	}
	if decile > p.shown || i == n {
		p.shown = decile
		fmt.Fprintf(p.w, "%s %d/%d %s\n", what, i, n, detail)
	}
}

// warn prints a warning line (on a terminal, below the progress bar, which
// the next step redraws), escaped for the terminal.
func (p *progress) warn(msg string) {
	msg = termsafe.Text(msg)
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, "warning: %s\n", msg)
}

func (p *progress) done() {
	if p.tty && p.last != "" {
		fmt.Fprintln(p.w)
	}
	p.last = ""
}

// evalOptions are the flags of `model eval`.
type evalOptions struct {
	bundle     string
	benign     []string
	attack     []string
	labels     string
	out        string
	ortLib     string
	fpr        float64
	chunk      int
	maxPackets int
	asJSON     bool
}

func modelEval(app *App) *cobra.Command {
	var o evalOptions
	c := &cobra.Command{
		Use:   "eval --bundle B --benign PATH... --attack PATH... [--labels MANIFEST.csv|truth.json] [--out DIR]",
		Short: "Evaluate a bundle on benign and attack captures: ROC/PR AUC, TPR at its threshold and at FPR 0.1%, per-capture detection, time to detection, throughput (eval.md, eval.json, roc.svg)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := runEval(cmd.Context(), app, o)
			if err != nil {
				return err
			}
			if o.asJSON {
				return app.PrintJSON(r)
			}
			p := func(f string, a ...any) { fmt.Fprintf(app.Stdout, f, a...) }
			p("model:        %s v%d (%s, %s), threshold %.6g\n", r.Model.Name, r.Model.Version, r.Model.FeatureSet, r.Model.Quantization, r.Model.Threshold)
			u := r.Model.Unit
			if u == "" {
				u = "packets"
			}
			p("data:         %d benign %s (%d captures), %d attack %s (%d captures)\n", r.BenignPackets, u, r.BenignFiles, r.AttackPackets, u, r.Captures)
			p("ROC AUC %.4f, PR AUC %.4f\n", r.ROCAUC, r.PRAUC)
			p("calibrated:   FPR %.3f%%, TPR %.3f%%\n", 100*r.AtThreshold.FPR, 100*r.AtThreshold.TPR)
			p("FPR %.3f%%:   threshold %.6g, TPR %.3f%%\n", 100*r.TargetFPR, r.AtTargetFPR.Threshold, 100*r.AtTargetFPR.TPR)
			p("detected:     %d of %d attack captures\n", r.Detected, r.Captures)
			for _, t := range r.Throughput {
				p("throughput:   %.0f vectors/s at batch %d\n", t.PerSec, t.Batch)
			}
			p("written:      %s, %s, %s in %s\n", eval.MarkdownFile, eval.JSONFile, eval.SVGFile, o.out)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&o.bundle, "bundle", "", "model bundle (NAME-VERSION.vgb)")
	f.StringArrayVar(&o.benign, "benign", nil, "benign capture file or folder (file-event traces for a fileactivity bundle), not trained on, or @FILE listing captures (repeatable)")
	f.StringArrayVar(&o.attack, "attack", nil, "attack capture file or folder (file-event traces for a fileactivity bundle; repeatable)")
	f.StringVar(&o.labels, "labels", "", "ground truth: MANIFEST.csv (attacker address per capture) or a lab truth .json")
	f.StringVar(&o.out, "out", ".", "folder for eval.md, eval.json, roc.svg")
	f.StringVar(&o.ortLib, "ort", "", "libonnxruntime.so (default $ONNXRUNTIME_LIB, else lib/ next to vigilctl)")
	f.Float64Var(&o.fpr, "fpr", calib.DefaultFPR, "the fixed false-positive rate of the second operating point")
	f.IntVar(&o.chunk, "chunk", 0, fmt.Sprintf("rows per ONNX Runtime run when scoring (default: as the plugin scores, %d for int8-qdq and float bundles, 1 for int8-dynamic ones, whose scores depend on the run)", dataset.ScoreChunk))
	f.IntVar(&o.maxPackets, "max-packets", dataset.DefaultMaxPackets, "packets (or file events) read at most per capture")
	f.BoolVar(&o.asJSON, "json", false, "print the report as JSON")
	return c
}

// timedScorer scores in the plugin's runs and accumulates the time spent.
type timedScorer struct {
	sc      dataset.Chunked
	vectors int
	elapsed time.Duration
}

func (t *timedScorer) scores(m ae.Matrix) ([]float32, error) {
	start := time.Now()
	s, _, err := t.sc.Score(m.Data, m.Rows)
	t.elapsed += time.Since(start)
	t.vectors += m.Rows
	if err != nil {
		return nil, err
	}
	return append([]float32(nil), s...), nil
}

func runEval(ctx context.Context, app *App, o evalOptions) (*eval.Report, error) {
	if o.bundle == "" || len(o.benign) == 0 || len(o.attack) == 0 {
		return nil, errors.New("--bundle, --benign and --attack are required")
	}
	if o.chunk < 0 {
		return nil, fmt.Errorf("--chunk %d: want a positive row count", o.chunk)
	}
	// As model train: eval.Evaluate would refuse it after every capture is
	// scored, and take 0 for its default (0.1%).
	if o.fpr <= 0 || o.fpr >= 1 {
		return nil, fmt.Errorf("--fpr %g: want a rate in (0, 1)", o.fpr)
	}
	// Listed first, to fail before loading the model. Every path given
	// must hold captures: an attack folder that holds none (or a symlink
	// that resolves to nothing) would otherwise report "0 of 0 detected".
	benignFiles, err := listWithAt(o.benign)
	if err != nil {
		return nil, fmt.Errorf("--benign: %w", err)
	}
	attackFiles, err := dataset.ListNonEmpty(o.attack...)
	if err != nil {
		return nil, fmt.Errorf("--attack: %w", err)
	}
	b, err := bundle.Read(o.bundle, bundle.DefaultLimits())
	if err != nil {
		return nil, err
	}
	m := b.Manifest
	fs, err := dataset.Lookup(m.FeatureSet)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", o.bundle, err)
	}
	if fs.Dim != m.Dim {
		return nil, fmt.Errorf("bundle %s: dimension %d, feature set %s has %d", o.bundle, m.Dim, fs.Name, fs.Dim)
	}
	digest, err := bundle.Digest(o.bundle)
	if err != nil {
		return nil, err
	}
	var labels dataset.Labels
	if o.labels != "" {
		if labels, err = dataset.ReadLabels(o.labels); err != nil {
			return nil, err
		}
	}
	sc, err := openScorer(o.ortLib, b.Model, fs.Dim, 256)
	if err != nil {
		return nil, fmt.Errorf("open model: %w", err)
	}
	defer sc.Close()
	chunk := dataset.ChunkFor(m.Quantization)
	if o.chunk > 0 {
		if o.chunk > chunk && m.Quantization == bundle.QuantInt8Dyn {
			fmt.Fprintf(app.Stderr, "warning: --chunk %d: a %s model's scores depend on the run, sensors score it one row at a time\n", o.chunk, m.Quantization)
		}
		chunk = o.chunk
	}
	ts := &timedScorer{sc: dataset.Chunked{Scorer: sc, Dim: fs.Dim, Chunk: chunk}}
	sets := []dataset.FeatureSet{fs}
	prog := newProgress(app.Stderr)

	in := eval.Input{TargetFPR: o.fpr, Model: eval.ModelInfo{Name: m.Name, Version: m.Version, FeatureSet: m.FeatureSet, Dim: m.Dim,
		Quantization: m.Quantization, Digest: digest, Threshold: m.Threshold}}
	if fs.Files() {
		in.Model.Unit = "file events"
	}
	var benignVecs ae.Matrix
	for i, p := range benignFiles {
		prog.step("scoring benign captures", i+1, len(benignFiles), filepath.Base(p))
		c, err := dataset.Extract(ctx, p, sets, o.maxPackets)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			fmt.Fprintf(app.Stderr, "skipped %s\n", termsafe.Text(err.Error()))
			continue
		}
		if note := c.TruncatedNote(); note != "" {
			prog.warn(fmt.Sprintf("%s: %s (--max-packets): the rest is not scored", termsafe.Text(p), note))
		}
		s, err := ts.scores(c.Matrix(0))
		if err != nil {
			return nil, fmt.Errorf("score %s: %w", p, err)
		}
		in.Benign = append(in.Benign, eval.Benign{Name: p, Scores: s, Truncated: c.Truncated})
		if benignVecs.Rows < 1<<18 { // a sample for the batch-256 throughput
			benignVecs.Data = append(benignVecs.Data, c.Feats[0]...)
			benignVecs.Rows += c.N
		}
	}
	prog.done()
	for i, p := range attackFiles {
		prog.step("scoring attack captures", i+1, len(attackFiles), filepath.Base(p))
		name := displayName(p, o.attack)
		c, err := dataset.Extract(ctx, p, sets, o.maxPackets)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			in.Attacks = append(in.Attacks, eval.Attack{Name: name, Error: err.Error()})
			continue
		}
		s, err := ts.scores(c.Matrix(0))
		if err != nil {
			return nil, fmt.Errorf("score %s: %w", p, err)
		}
		a := eval.Attack{Name: name, Scores: s, TS: c.TS, Truncated: c.Truncated}
		if note := c.TruncatedNote(); note != "" {
			prog.warn(fmt.Sprintf("%s: %s (--max-packets): the rest is not scored", termsafe.Text(p), note))
		}
		ls := labels.For(p)
		var whats, attackers []string
		for _, l := range ls {
			whats = append(whats, l.What)
			// A lab truth names its one attacker host once per attack.
			if a := l.Attacker.String(); l.Attacker.IsValid() && !slices.Contains(attackers, a) {
				attackers = append(attackers, a)
			}
		}
		a.What = strings.Join(whats, "; ")
		a.Attacker = strings.Join(attackers, ", ")
		if len(attackers) > 0 {
			a.Positive = make([]bool, c.N)
			for i := range c.N {
				for _, l := range ls {
					var mac [6]byte
					if c.SrcMAC != nil {
						mac = c.SrcMAC[i]
					}
					if l.Positive(c.Src[i], mac, c.TS[i]) {
						a.Positive[i] = true
						break
					}
				}
			}
		}
		in.Attacks = append(in.Attacks, a)
	}
	prog.done()
	if ts.elapsed > 0 {
		in.Throughput = append(in.Throughput, eval.Throughput{Vectors: ts.vectors, Seconds: ts.elapsed.Seconds(), Batch: ts.sc.Chunk,
			PerSec: float64(ts.vectors) / ts.elapsed.Seconds()})
	}
	if benignVecs.Rows > 0 { // the yardstick: batch 256, one thread, at least 2^18 vectors
		benignVecs.Cols = fs.Dim
		n := 0
		start := time.Now()
		for pass := 0; n < 1<<18 && pass < 1<<18; pass++ {
			if _, err := train.Scores(sc, benignVecs, 256); err != nil {
				return nil, fmt.Errorf("throughput: %w", err)
			}
			n += benignVecs.Rows
		}
		d := time.Since(start).Seconds()
		in.Throughput = append(in.Throughput, eval.Throughput{Vectors: n, Seconds: d, Batch: 256, PerSec: float64(n) / d})
	}
	r, err := eval.Evaluate(in)
	if err != nil {
		return nil, err
	}
	if err := r.WriteFiles(o.out); err != nil {
		return nil, err
	}
	return r, nil
}

// displayName names a capture relative to the --attack root it came from.
func displayName(path string, roots []string) string {
	for _, r := range roots {
		if rel, err := filepath.Rel(r, path); err == nil && !strings.HasPrefix(rel, "..") && rel != "." {
			return filepath.ToSlash(rel)
		}
	}
	return filepath.Base(path)
}
