package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/internal/termsafe"
	"github.com/vigil-edge/vigil/models/ae"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/calib"
	"github.com/vigil-edge/vigil/models/dataset"
	"github.com/vigil-edge/vigil/models/features/netflow"
	"github.com/vigil-edge/vigil/models/features/nethost"
	"github.com/vigil-edge/vigil/models/runtime"
	"github.com/vigil-edge/vigil/models/train"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	"github.com/vigil-edge/vigil/test/trafficgen"
)

// Config is the trainer's configuration.
type Config struct {
	Benign, Attacks, Manifest, Out, ORTLib string
	Seed, Version                          uint64
	// HostSeed is the training seed of the per-source (nethost) model;
	// 0 means Seed.
	HostSeed uint64
	FPR      float64
	Epochs   int
	Created  time.Time
	Validity time.Duration
	NoWrite  bool
	Ship     string
	// Lab lists lab baseline captures (test/lab, comma-separated): the last
	// fifth of each (in time) is held out for calibration, the rest trains.
	Lab string
	// Only, if set, trains and evaluates only this feature set (quick
	// iterations with -dry-run); the others flag nothing.
	Only string
	// SweepVariants, if set, limits -sweep-quant to the variants whose name contains one of
	// these comma-separated strings (the float32 reference always runs).
	SweepVariants string
	// Zero names features that are set to 0 in every capture (training,
	// calibration and evaluation alike; comma-separated): an ablation, to
	// measure what a feature adds. Use with -dry-run.
	Zero string
	// HostSet is the per-source feature set the second model is trained
	// on: nethost/v1 to v7.
	HostSet string
	// SweepQuant compares the int8 export variants (models/export options) with the float model
	// and writes a table to stdout instead of training the bundles.
	SweepQuant bool
	// Netflow is the netflow/v1 model's recipe: RecipeKitNET (the default) or
	// RecipeSingleLean.
	Netflow string
	// SplitInput exports both models with train.LayoutSplitInput (the int8 encoder takes its
	// input in two uint8 passes).
	SplitInput bool
	// Layout, if set, exports both models with this int8 layout (train.ParseLayout).
	Layout string
	// SnapEpochs and OutMinRange set ae.Config's of both models (0: as before).
	SnapEpochs  int
	OutMinRange float64
}

// Recipes of the netflow/v1 model (Config.Netflow).
const (
	// RecipeKitNET is a KitNET ensemble (groups of at most 10 features,
	// hidden ratio 0.5), int8 encoders with float decoders.
	RecipeKitNET = "kitnet"
	// RecipeSingleLean is one autoencoder of 64 hidden units, int8 encoder
	// and decoder stored lean (train.LayoutInt8Lean).
	RecipeSingleLean = "single-lean"
)

// set is one feature set the detector scores, with its training recipe.
type set struct {
	name    string
	dim     int
	names   []string
	model   ae.Config
	layout  train.Layout
	extract func(*event.Packet, []float32)
}

// capFeatures holds the features of every packet of one capture for both
// feature sets (models/dataset).
type capFeatures = dataset.Capture

// extractSets are the feature sets of the trainer's models, in its order,
// and zeroCols the columns of each that Config.Zero clears (set by Run).
var (
	extractSets []dataset.FeatureSet
	zeroCols    [][]int
)

// extractFile runs a capture through the agent's capture code and the
// trainer's feature sets, with fresh extractor state (as `vigil-agent
// scan` does). A capture cut at the packet bound is logged as a warning:
// only its first packets are used.
func extractFile(ctx context.Context, log *slog.Logger, path string) (*capFeatures, error) {
	cf, err := dataset.Extract(ctx, path, extractSets, dataset.DefaultMaxPackets)
	if err != nil {
		return cf, err
	}
	if note := cf.TruncatedNote(); note != "" {
		log.Warn("capture "+note+": the rest of it is not used", "file", termsafe.Text(path))
	}
	for k, cols := range zeroCols {
		d := extractSets[k].Dim
		for i := range cf.N {
			for _, j := range cols {
				cf.Feats[k][i*d+j] = 0
			}
		}
	}
	return cf, nil
}

func listCaptures(dir string) ([]string, error) { return dataset.List(dir) }

// label is the attacker of an attack capture, from MANIFEST.csv.
type label struct {
	what     string
	attacker netip.Addr
}

// readLabels reads the attacker address of each attack capture (see
// dataset.ParseManifest), keyed by the path under attacks/.
func readLabels(path string) (map[string]label, error) {
	ls, err := dataset.ReadLabels(path)
	if err != nil {
		return nil, err
	}
	out := map[string]label{}
	for k, v := range ls {
		if len(v) > 0 {
			out[k] = label{what: v[0].What, attacker: v[0].Attacker.Unmap()}
		}
	}
	return out, nil
}

// Run trains, calibrates, evaluates and writes the bundles and the report.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := runtime.Init(cfg.ORTLib); err != nil {
		return fmt.Errorf("onnx runtime: %w", err)
	}
	if cfg.HostSet == "" {
		cfg.HostSet = nethost.NameV7
	}
	host, err := dataset.Lookup(cfg.HostSet)
	if err != nil || !strings.HasPrefix(host.Name, "nethost/") {
		return fmt.Errorf("-host %q: want %s, %s, %s, %s, %s, %s or %s", cfg.HostSet, nethost.Name, nethost.NameV2, nethost.NameV3, nethost.NameV4, nethost.NameV5, nethost.NameV6, nethost.NameV7)
	}
	nf := set{name: netflow.Name, dim: netflow.Dim, names: netflow.Names(),
		model: ae.Config{Kind: ae.KindKitNET, MaxGroup: 10, HiddenRatio: 0.5, Norm: ae.NormMinMax, Train: ae.TrainConfig{Epochs: cfg.Epochs, Seed: cfg.Seed}}}
	switch cfg.Netflow {
	case "", RecipeKitNET:
	case RecipeSingleLean:
		// ceil(0.55 · 115) = 64 hidden units.
		nf.model = ae.Config{Kind: ae.KindSingle, HiddenRatio: 0.55, Norm: ae.NormMinMax, Train: ae.TrainConfig{Epochs: cfg.Epochs, Seed: cfg.Seed}}
		nf.layout = train.LayoutInt8Lean
	default:
		return fmt.Errorf("-netflow %q: want %s or %s", cfg.Netflow, RecipeKitNET, RecipeSingleLean)
	}
	if cfg.SplitInput {
		if nf.layout == train.LayoutInt8Lean {
			return errors.New("-split-input: not with -netflow single-lean")
		}
		nf.layout = train.LayoutSplitInput
	}
	// nethost: a single autoencoder of 16 hidden units for nethost/v4
	// (D = 32) to v7 (D = 35): train.NethostHiddenRatio.
	hostSeed := cfg.HostSeed
	if hostSeed == 0 {
		hostSeed = cfg.Seed
	}
	sets := []set{
		nf,
		{name: host.Name, dim: host.Dim, names: host.Names(),
			model: ae.Config{Kind: ae.KindSingle, HiddenRatio: train.NethostHiddenRatio(host.Dim), Norm: ae.NormMinMax, Train: ae.TrainConfig{Epochs: cfg.Epochs, Seed: hostSeed}}},
	}
	if cfg.SplitInput {
		sets[1].layout = train.LayoutSplitInput
	}
	if cfg.Layout != "" {
		l, err := train.ParseLayout(cfg.Layout)
		if err != nil {
			return err
		}
		if l == train.LayoutInt8Lean || cfg.SplitInput || nf.layout == train.LayoutInt8Lean {
			return errors.New("-layout: not with -split-input, -netflow single-lean or int8-lean")
		}
		sets[0].layout, sets[1].layout = l, l
	}
	for k := range sets {
		sets[k].model.SnapEpochs, sets[k].model.OutMinRange = cfg.SnapEpochs, cfg.OutMinRange
	}
	if cfg.Only != "" && cfg.Only != sets[0].name && cfg.Only != sets[1].name {
		return fmt.Errorf("-only %q: want %s or %s (the -host set)", cfg.Only, sets[0].name, sets[1].name)
	}
	extractSets, zeroCols = nil, make([][]int, len(sets))
	for k, s := range sets {
		ds, err := dataset.Lookup(s.name)
		if err != nil {
			return err
		}
		extractSets = append(extractSets, ds)
		if cfg.Zero == "" {
			continue
		}
		for _, z := range strings.Split(cfg.Zero, ",") {
			if j := slices.Index(s.names, z); j >= 0 {
				zeroCols[k] = append(zeroCols[k], j)
			}
		}
	}
	if cfg.Zero != "" && !cfg.NoWrite && !cfg.SweepQuant {
		return fmt.Errorf("-zero is an ablation: use it with -dry-run (its models must not be bundled)")
	}
	if n := len(slices.Concat(zeroCols...)); cfg.Zero != "" && n != len(strings.Split(cfg.Zero, ",")) {
		return fmt.Errorf("-zero %q: %d of the names are features of the trained sets", cfg.Zero, n)
	}

	// Benign captures: every fifth file (by sorted path) is held out for
	// calibration; the rest trains.
	files, err := listCaptures(cfg.Benign)
	if err != nil {
		return fmt.Errorf("list benign captures: %w", err)
	}
	var trainCaps, holdCaps []*capFeatures
	var skipped, excluded []string
	for i, p := range files {
		cf, err := extractFile(ctx, log, p)
		if err != nil || cf.N == 0 {
			skipped = append(skipped, p)
			continue
		}
		// Neither trained on nor held out (the split of the others does
		// not move).
		if why := cf.NotBenign(); why != "" {
			excluded = append(excluded, p)
			log.Info("benign capture excluded", "file", p, "why", why)
			continue
		}
		if i%5 == 2 {
			holdCaps = append(holdCaps, cf)
		} else {
			trainCaps = append(trainCaps, cf)
		}
	}
	// The shared benign captures are short single-purpose sessions: no host
	// in them is a busy client using several services for minutes. A few
	// long synthetic baselines (trafficgen: clients browsing, resolving and
	// pinging several servers) stand in for the lab baseline of issue 4;
	// the last one is held out for calibration only.
	base, err := baselines()
	if err != nil {
		return err
	}
	defer os.RemoveAll(filepath.Dir(base[0]))
	for i, p := range base {
		cf, err := extractFile(ctx, log, p)
		if err != nil {
			return fmt.Errorf("synthetic baseline: %w", err)
		}
		if i == len(base)-1 {
			holdCaps = append(holdCaps, cf)
		} else {
			trainCaps = append(trainCaps, cf)
		}
	}
	var labFiles []string
	if cfg.Lab != "" {
		for _, p := range strings.Split(cfg.Lab, ",") {
			cf, err := extractFile(ctx, log, p)
			if err != nil {
				return fmt.Errorf("lab baseline: %w", err)
			}
			tr, ho := dataset.SplitTail([]*capFeatures{cf}, 0.2)
			trainCaps, holdCaps = append(trainCaps, tr...), append(holdCaps, ho...)
			labFiles = append(labFiles, p)
		}
	}
	log.Info("benign captures read", "lab", len(labFiles), "train_files", len(trainCaps), "holdout_files", len(holdCaps), "skipped", len(skipped),
		"synthetic_baselines", len(base))

	if cfg.SweepQuant {
		return sweepQuant(ctx, cfg, sets, trainCaps, holdCaps, log, os.Stdout)
	}
	rep := &Report{
		Created: cfg.Created, Seed: cfg.Seed, HostSeed: hostSeed, FPR: cfg.FPR, HostSet: host.Name,
		TrainFiles: len(trainCaps), HoldoutFiles: len(holdCaps), SkippedFiles: len(skipped),
		ExcludedBenign: relPaths(cfg.Benign, excluded), LabFiles: baseNames(labFiles),
	}
	var scorers [2]*runtime.Scorer
	var thresholds [2]float64
	var onnxBytes [2][]byte
	for k, s := range sets {
		if cfg.Only != "" && s.name != cfg.Only {
			thresholds[k] = math.Inf(1)
			rep.Models = append(rep.Models, ModelReport{FeatureSet: s.name, Kind: "skipped (-only)"})
			continue
		}
		data := stack(trainCaps, k, s.dim)
		hold := stack(holdCaps, k, s.dim)
		rep.TrainPackets, rep.HoldoutPackets = data.Rows, hold.Rows
		t0 := time.Now()
		mc := s.model
		mc.Progress = func(p ae.Progress) {
			if p.Epoch == p.Epochs {
				log.Info("training", "set", s.name, "stage", p.Stage, "epoch", p.Epoch, "loss", p.Loss)
			}
		}
		m, err := ae.Fit(ctx, data, mc)
		if err != nil {
			return fmt.Errorf("train %s: %w", s.name, err)
		}
		trainDur := time.Since(t0)
		// Static QDQ int8: fixed activation scales, so a packet's score does
		// not depend on the other packets of its batch (dynamic quantization
		// scales each batch by its own range: scores then change with the
		// batching, and an outlier in a batch shifts everyone's scores).
		model, err := train.ExportLayout(m, bundle.QuantInt8Static, sample(data, 20000), s.layout)
		if err != nil {
			return fmt.Errorf("export %s: %w", s.name, err)
		}
		floatModel, err := train.Export(m, bundle.QuantNone, ae.Matrix{})
		if err != nil {
			return fmt.Errorf("export %s: %w", s.name, err)
		}
		sc, err := runtime.OpenWith("", model, s.dim, 4096, runtime.Options{})
		if err != nil {
			return fmt.Errorf("open %s in onnx runtime: %w", s.name, err)
		}
		scorers[k] = sc
		met, err := train.Calibrate(chunked(sc), hold, ae.Matrix{}, cfg.FPR)
		if err != nil {
			return fmt.Errorf("calibrate %s: %w", s.name, err)
		}
		thresholds[k] = met.Threshold
		onnxBytes[k] = model
		// Rank agreement of the int8 scores with the float model's.
		fsc, err := runtime.OpenWith("", floatModel, s.dim, 4096, runtime.Options{})
		if err != nil {
			return fmt.Errorf("open float %s: %w", s.name, err)
		}
		a, _ := train.Scores(sc, hold, scoreChunk)
		b, _ := train.Scores(fsc, hold, scoreChunk)
		speeds, err := train.SideBySide(sc, fsc, hold)
		_ = fsc.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		rho, _ := calib.Spearman(a, b)
		rep.Models = append(rep.Models, ModelReport{
			FeatureSet: s.name, Kind: m.Kind, Dim: s.dim, TrainRows: data.Rows, HoldoutRows: hold.Rows,
			TrainSeconds: trainDur.Seconds(), Int8Bytes: len(model), FloatBytes: len(floatModel),
			Threshold: met.Threshold, HoldoutFPR: met.FPR, BenignP99: met.BenignP99, BenignMax: met.BenignMax,
			SpearmanInt8Float: rho, Speeds: speeds, Metrics: met,
		})
		log.Info("calibrated", "set", s.name, "threshold", met.Threshold, "fpr", met.FPR, "int8_bytes", len(model), "float_bytes", len(floatModel), "spearman", rho, "int8_rows_per_cpu_s", speeds.Int8, "float_rows_per_cpu_s", speeds.Float)
	}
	defer func() {
		for _, s := range scorers {
			if s != nil {
				_ = s.Close()
			}
		}
	}()

	// Held-out benign: the union's false-positive rate.
	var holdFlag, holdN int
	for _, cf := range holdCaps {
		fl, err := flags(cf, sets, scorers, thresholds)
		if err != nil {
			return err
		}
		for i := range fl.any {
			holdN++
			if fl.any[i] {
				holdFlag++
			}
		}
	}
	rep.HoldoutUnionFPR = float64(holdFlag) / float64(max(holdN, 1))

	// Attack captures.
	if cfg.Attacks != "" {
		labels, err := readLabels(cfg.Manifest)
		if err != nil {
			log.Warn("no labels", "err", err)
			labels = map[string]label{}
		}
		afiles, err := listCaptures(cfg.Attacks)
		if err != nil {
			return fmt.Errorf("list attack captures: %w", err)
		}
		syn, err := synthetic(labels)
		if err != nil {
			return err
		}
		defer os.RemoveAll(filepath.Dir(syn[0]))
		afiles = append(afiles, syn...)
		for _, p := range afiles {
			rel, err := filepath.Rel(cfg.Attacks, p)
			if err != nil || strings.HasPrefix(rel, "..") {
				rel = filepath.Base(p)
			}
			cf, err := extractFile(ctx, log, p)
			if err != nil {
				rep.Attacks = append(rep.Attacks, AttackReport{File: rel, Error: err.Error()})
				continue
			}
			fl, err := flags(cf, sets, scorers, thresholds)
			if err != nil {
				return err
			}
			ar := AttackReport{File: rel, Packets: cf.N, What: labels[rel].what}
			lab := labels[rel]
			if lab.attacker.IsValid() {
				ar.Attacker = lab.attacker.String()
			}
			var tp, pos int
			for i := range cf.N {
				if fl.per[0][i] {
					ar.FlaggedNetflow++
				}
				if fl.per[1][i] {
					ar.FlaggedNethost++
				}
				if fl.any[i] {
					ar.Flagged++
					if ar.FirstFlagSeconds == nil {
						s := float64(cf.TS[i]-cf.TS[0]) / 1e9
						ar.FirstFlagSeconds = &s
					}
				}
				if lab.attacker.IsValid() && cf.Src[i].Unmap() == lab.attacker {
					pos++
					if fl.any[i] {
						tp++
					}
					if fl.per[0][i] {
						ar.AttackerFlaggedNetflow++
					}
					if fl.per[1][i] {
						ar.AttackerFlaggedNethost++
					}
				}
			}
			ar.Detected = ar.Flagged > 0
			if pos > 0 {
				tpr := float64(tp) / float64(pos)
				ar.AttackerPackets = pos
				ar.TPR = &tpr
			}
			rep.Attacks = append(rep.Attacks, ar)
		}
	}
	if cfg.NoWrite {
		return rep.write(os.Stdout, nil)
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", cfg.Out, err)
	}
	for k, s := range sets {
		if onnxBytes[k] == nil {
			continue
		}
		name := strings.SplitN(s.name, "/", 2)[0]
		man := bundle.Manifest{
			Name: name, Detector: "netflow", Version: cfg.Version, FeatureSet: s.name, Dim: s.dim,
			Created: cfg.Created, Expires: cfg.Created.Add(cfg.Validity), Quantization: bundle.QuantInt8Static,
		}
		dir := cfg.Out
		shipped := slices.Contains(strings.Split(cfg.Ship, ","), s.name)
		if !shipped {
			dir = filepath.Join(cfg.Out, "experimental")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("create %s: %w", dir, err)
			}
		}
		path, err := train.Build(dir, onnxBytes[k], man, rep.Models[k].Metrics)
		if err != nil {
			return fmt.Errorf("bundle %s: %w", s.name, err)
		}
		dg, _ := bundle.Digest(path)
		rel, _ := filepath.Rel(cfg.Out, path)
		rep.Models[k].Bundle, rep.Models[k].Digest, rep.Models[k].Shipped = rel, dg, shipped
		log.Info("bundle written", "path", path, "digest", dg)
	}
	md, err := os.Create(filepath.Join(cfg.Out, "REPORT.md"))
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	defer md.Close()
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(filepath.Join(cfg.Out, "report.json"), append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return rep.write(md, nil)
}

// baselineConfigs are the synthetic benign baselines added to training (all
// but the last) and calibration (the last). Their seeds differ from the
// evaluation's synthetic captures (seed 7).
var baselineConfigs = []trafficgen.Config{
	{Seed: 101, Duration: 3 * time.Minute, Clients: 4, Sessions: 900},
	{Seed: 102, Duration: 3 * time.Minute, Clients: 8, Sessions: 1200},
	{Seed: 103, Duration: 2 * time.Minute, Clients: 16, Sessions: 1200},
	{Seed: 104, Duration: 2 * time.Minute, Clients: 2, Sessions: 600},
	{Seed: 105, Duration: 3 * time.Minute, Clients: 8, Sessions: 1000},
}

// baselines writes the synthetic benign baselines into a temporary folder.
func baselines() ([]string, error) {
	dir, err := os.MkdirTemp("", "vigil-train-base-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	var out []string
	for _, c := range baselineConfigs {
		p := filepath.Join(dir, fmt.Sprintf("baseline-%d.pcap", c.Seed))
		f, err := os.Create(p)
		if err != nil {
			return nil, fmt.Errorf("create %s: %w", p, err)
		}
		_, err = trafficgen.Write(f, c)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("generate %s: %w", p, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// synthetic writes trafficgen captures (one benign-only, one with a SYN
// scan from 10.99.66.6) into a temporary folder and labels them.
func synthetic(labels map[string]label) ([]string, error) {
	dir, err := os.MkdirTemp("", "vigil-train-synth-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	var out []string
	for _, c := range []struct {
		name string
		cfg  trafficgen.Config
	}{
		{"synthetic-benign.pcap", trafficgen.Config{Seed: 7}},
		{"synthetic-synscan.pcap", trafficgen.Config{Seed: 7, Scan: true}},
	} {
		p := filepath.Join(dir, c.name)
		f, err := os.Create(p)
		if err != nil {
			return nil, fmt.Errorf("create %s: %w", p, err)
		}
		info, err := trafficgen.Write(f, c.cfg)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("generate %s: %w", p, err)
		}
		l := label{what: "trafficgen benign sessions only (should give no finding)"}
		if c.cfg.Scan {
			l = label{what: "trafficgen benign sessions + SYN scan", attacker: netip.MustParseAddr(info.Scanner.String())}
		}
		labels[c.name] = l
		out = append(out, p)
	}
	return out, nil
}

// scoreChunk is the rows per ONNX Runtime run, as the detector plugin
// scores (see dataset.ScoreChunk).
const scoreChunk = dataset.ScoreChunk

// chunked scores in runs of scoreChunk rows.
func chunked(sc *runtime.Scorer) dataset.Chunked { return dataset.Chunked{Scorer: sc, Dim: sc.Dim()} }

func sample(m ae.Matrix, n int) ae.Matrix { return dataset.Sample(m, n) }

// stack concatenates feature set k of the captures into one matrix.
func stack(caps []*capFeatures, k, _ int) ae.Matrix { return dataset.Stack(caps, k) }

type flagged struct {
	per [2][]bool
	any []bool
}

// flags scores a capture with both models: a packet is flagged when either
// model's score exceeds its threshold (the detector's rule).
func flags(cf *capFeatures, sets []set, sc [2]*runtime.Scorer, thr [2]float64) (flagged, error) {
	var fl flagged
	fl.any = make([]bool, cf.N)
	for k := range sets {
		fl.per[k] = make([]bool, cf.N)
		if sc[k] == nil {
			continue
		}
		scores, err := train.Scores(sc[k], cf.Matrix(k), scoreChunk)
		if err != nil {
			return fl, fmt.Errorf("score %s: %w", cf.Path, err)
		}
		for i, v := range scores {
			if float64(v) > thr[k] {
				fl.per[k][i] = true
				fl.any[i] = true
			}
		}
	}
	return fl, nil
}

// relPaths returns paths relative to root (as given where that fails).
func relPaths(root string, paths []string) []string {
	out := make([]string, 0, len(paths))
	for _, p := range paths {
		if r, err := filepath.Rel(root, p); err == nil {
			p = r
		}
		out = append(out, p)
	}
	return out
}

// baseNames returns the file names of paths.
func baseNames(paths []string) []string {
	out := make([]string, 0, len(paths))
	for _, p := range paths {
		out = append(out, filepath.Base(p))
	}
	return out
}
