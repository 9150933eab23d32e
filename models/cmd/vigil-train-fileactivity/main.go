// Command vigil-train-fileactivity trains, calibrates, evaluates and bundles
// the baseline model of the fileactivity detector (feature set
// fileactivity/v1). It generates its own benign training data: real
// workloads (test/filework: unpacking a source archive with tar, building C
// code with gcc, editing files, log rotation with gzip, a dpkg-like install
// of real system files, saving office documents) run in temporary trees that
// the agent's own watcher (agent/watch) observes, so training sees exactly
// the events, content statistics and timing the agent produces. Whole
// sessions are held out for calibration (threshold at -fpr on held-out benign
// events) and attack sessions (ransomware, wiper, packed and obfuscated files)
// are evaluated. It writes fileactivity-VERSION.vgb and
// fileactivity-REPORT.md / fileactivity-report.json into -out.
//
//	vigil-train-fileactivity -out models/baseline
//
// With -save DIR the recorded sessions are kept as file-event traces (one
// gzip-compressed event.TraceWriter file per session, the format of
// `vigil-agent record`) and an index, sessions.json; -traces DIR trains from
// saved traces without running the workloads again. `make models` trains the
// shipped bundle from the traces in models/baseline/fileactivity.
//
// The recipe (KitNET, at most 16 features per autoencoder, hidden ratio
// 0.75, min-max normalisation with a spread floor of 0.2) keeps every benign
// session's events under 1.5 × the threshold, from which the agent reports a
// single file (docs/models.md, section 10). One more epoch with the encoders'
// weights on their int8 grid and a floor of 0.001 on the group RMSEs' spread
// make the int8 model rank like the float one (section 21).
package main

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/vigil-edge/vigil/models/ae"
	"github.com/vigil-edge/vigil/models/cmd/internal/cli"
	"github.com/vigil-edge/vigil/models/train"
)

func main() { cli.Main("vigil-train-fileactivity", parseFlags, Run) }

// parseFlags reads the command line into a Config (the defaults are the
// shipped recipe's: `make models` passes only the data, -version and -out).
func parseFlags(args []string, stderr io.Writer) (Config, error) {
	var cfg Config
	fs := flag.NewFlagSet("vigil-train-fileactivity", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Out, "out", "models/baseline", "output folder for the bundle and the report")
	fs.StringVar(&cfg.ORTLib, "ort", "", "libonnxruntime.so (default $ONNXRUNTIME_LIB)")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "workload and training seed")
	fs.Uint64Var(&cfg.Version, "version", 1, "bundle version")
	fs.Float64Var(&cfg.FPR, "fpr", 0.001, "target false-positive rate on held-out benign events")
	fs.IntVar(&cfg.Epochs, "epochs", 40, "training epochs")
	fs.Float64Var(&cfg.OutMinRange, "out-min-range", 0.001, "KitNET: floor of each group RMSE's spread in the output normalisation (0: none; docs/models.md section 21)")
	fs.IntVar(&cfg.SnapEpochs, "snap-epochs", 1, "then this many epochs with the encoders' weights rounded to their int8 grid and fixed (quantization-aware fine-tuning; docs/models.md section 21)")
	fs.IntVar(&cfg.TrainSessions, "sessions", 16, "benign training sessions (each runs every workload)")
	fs.IntVar(&cfg.HoldSessions, "holdout", 6, "benign held-out sessions (calibration)")
	fs.StringVar(&cfg.Save, "save", "", "keep the recorded traces in this folder")
	fs.StringVar(&cfg.Traces, "traces", "", "train from traces saved with -save instead of running the workloads")
	fs.StringVar(&cfg.Kind, "kind", "kitnet", "model kind: kitnet or single")
	fs.StringVar(&cfg.Norm, "norm", "minmax", "input normalisation: minmax or zscore")
	fs.IntVar(&cfg.MaxGroup, "max-group", 16, "KitNET: most features per ensemble autoencoder")
	fs.Float64Var(&cfg.Hidden, "hidden", 0.75, "hidden units per input (ratio)")
	fs.Float64Var(&cfg.MinRange, "min-range", 0.2, "floor of each feature's spread in the normalisation (0: none)")
	created := fs.String("created", "2026-01-01T00:00:00Z", "manifest creation time (fixed for reproducible bundles)")
	fs.DurationVar(&cfg.Validity, "validity", 2*365*24*time.Hour, "bundle validity")
	fs.BoolVar(&cfg.NoWrite, "dry-run", false, "evaluate only, write nothing")
	fs.StringVar(&cfg.Layout, "layout", "", "int8 graph layout: float-decoder (default), split-input, fit-rounding, input-gain or split-weights (docs/models.md, sections 17 and 20)")
	fs.BoolVar(&cfg.SplitInput, "split-input", false, "the int8 encoder takes its input in two uint8 passes, with fitted weight rounding (train.LayoutSplitInput: int8/float Spearman 0.9718 → 0.9940 on fileactivity-3's recipe, about 15% slower scoring)")
	var err error
	if cfg.Created, err = cli.Parse(fs, args, created); err != nil {
		return cfg, err
	}
	// Checked here, not when the model is fitted and exported: that comes
	// after minutes of recorded workloads.
	switch {
	case cfg.Kind != ae.KindKitNET && cfg.Kind != ae.KindSingle:
		return cfg, fmt.Errorf("-kind %q: want %s or %s", cfg.Kind, ae.KindKitNET, ae.KindSingle)
	case cfg.Norm != ae.NormMinMax && cfg.Norm != ae.NormZScore:
		return cfg, fmt.Errorf("-norm %q: want %s or %s", cfg.Norm, ae.NormMinMax, ae.NormZScore)
	}
	if _, err := train.ParseLayout(cfg.Layout); err != nil {
		return cfg, fmt.Errorf("-layout: %w", err)
	}
	return cfg, nil
}
