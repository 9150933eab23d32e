// Package fileactivity is Vigil's file-event anomaly detector (the plugin
// binary vigil-detector-fileactivity): it turns the agent's file events
// (event.File, sent in batches over unary gRPC Score calls) into
// fileactivity/v1 feature vectors (models/features/fileactivity: per-file
// content features plus damped per-tree activity rates), scores them with an
// int8 ONNX autoencoder in ONNX Runtime (models/runtime), and returns the
// events whose score exceeds the model's threshold, each with its five
// largest feature contributions (named), the file's context (path, old path,
// watched tree, operation, content type, entropy) and a kind:
//
//   - "burst" when most of the anomaly comes from the tree's activity rates
//     (ransomware renaming and encrypting, a wiper deleting): the agent merges
//     these per tree into one finding with counts;
//   - "file" when it comes from the file's own content, or whenever the file
//     carries a packing or obfuscation indicator (exec_packed, script_base64,
//     packed_script), even amid a burst: the agent reports the path.
//
// In a burst nearly every event is anomalous, so burst anomalies are slim:
// only the strongest burst anomaly of each tree in a Score call carries the
// full context and the top features; the others carry only the kind and the
// derived flags (high_entropy, ext_changed), and the agent takes path, time,
// operation and content facts from its own copy of the event (Index). File
// anomalies always carry everything. The model's identity (model,
// model_version, model_digest, feature_set) is in every full context and at
// least in the first anomaly of each call.
//
// The feature state (per-tree rates) lives in the plugin and follows the
// event stream; a restarted plugin starts with empty rates.
package fileactivity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-edge/vigil/models/bundle"
	feat "github.com/vigil-edge/vigil/models/features/fileactivity"
	"github.com/vigil-edge/vigil/models/runtime"
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	"github.com/vigil-edge/vigil/plugins/sdk/selfcal"
)

// Name is the detector's name (findings' "detector", manifests' "detector").
const Name = "fileactivity"

// Version is the plugin's version.
const Version = "0.1.0"

// TopK is the number of feature contributions reported per anomaly.
const TopK = 5

// Context keys the detector adds to the well-known sdk.Context* keys
// (sdk.ContextPath holds the path; for a file moved out of the tree, the old
// path).
const (
	ContextTimeNs       = "ts_ns"         // event time, Unix nanoseconds
	ContextOldPath      = "old_path"      // a rename's old name
	ContextRoot         = "root"          // the watched tree
	ContextOp           = "op"            // create, write, rename, remove, chmod
	ContextSize         = "size"          // bytes, -1 unknown
	ContextMagic        = "magic"         // content type from the first bytes
	ContextEntropy      = "entropy"       // bits per byte of the sampled content
	ContextHighEntropy  = "high_entropy"  // "1": high-entropy content that is not a compressed or media format
	ContextExtChanged   = "ext_changed"   // "1": a rename that changed the extension
	ContextKind         = "kind"          // KindFile or KindBurst
	ContextRateShare    = "rate_share"    // share of the score from the tree's rate features (0..1)
	ContextModel        = "model"         // model name
	ContextModelVersion = "model_version" // model version
	ContextModelDigest  = "model_digest"  // "sha256:..." of the bundle file
	ContextFeatureSet   = "feature_set"
)

// Anomaly kinds (ContextKind).
const (
	KindFile  = "file"
	KindBurst = "burst"
)

// BurstShare is the share of an anomaly's per-feature error coming from the
// rate features from which it is a burst anomaly.
const BurstShare = 0.5

// nEvent is the number of per-event features at the start of a vector (the
// rest are the per-tree rates).
var nEvent = func() int {
	for i, n := range feat.Names() {
		if len(n) > 4 && n[:4] == "rate" {
			return i
		}
	}
	return feat.Dim
}()

// Options configure the detector.
type Options struct {
	// ORTLib is the ONNX Runtime library (default $ONNXRUNTIME_LIB).
	ORTLib string
	// MaxBatch is the largest batch scored in one session run (default 1024).
	MaxBatch int
	// Calibrate is the per-sensor calibration grace period (event time; 0:
	// none): the detector observes that long without anomalies, then the
	// model's threshold becomes the larger of its own and the observed
	// CalibrateQuantile (default 0.999) score quantile (plugins/sdk/selfcal).
	// A model loaded later observes on its own scores while flagging at its
	// own threshold. Calibrated are local quantiles, by bundle digest, of
	// models an earlier instance calibrated (the agent passes them back to a
	// restarted plugin, and to a shadow instance): such a model starts
	// calibrated. Any entry also means that the sensor's initial grace
	// period is over: a model without one observes while flagging at its own
	// threshold, as a model loaded later does.
	Calibrate         time.Duration
	CalibrateQuantile float64
	Calibrated        map[string]float32
}

type model struct {
	info   sdk.ModelInfo
	thr    float32 // active threshold: the model's, or raised by calibration
	scorer *runtime.Scorer
	ctxVer string
	// per-sensor calibration
	observing, calibrated bool
	calLocal              float32
	calSamples            int
}

// Detector implements sdk.Detector and sdk.FileScorer.
type Detector struct {
	log  *slog.Logger
	opts Options

	loadMu sync.Mutex // serialises LoadModel
	mu     sync.Mutex // held while scoring and while swapping models
	model  atomic.Pointer[model]

	x         *feat.Extractor
	feats     []float32
	names     []string
	strongest []strongestBurst

	// per-sensor calibration: calDone is false during the initial grace
	// period (no anomalies); cal samples calModel's scores (under mu).
	calDone  atomic.Bool
	cal      selfcal.Sample
	calModel *model

	scored    atomic.Uint64
	anomalies atomic.Uint64
	bursts    atomic.Uint64
	trees     atomic.Int64
}

var (
	_ sdk.Detector   = (*Detector)(nil)
	_ sdk.FileScorer = (*Detector)(nil)
)

// New returns a detector with no model loaded (it flags nothing until one is).
func New(log *slog.Logger, opts Options) *Detector {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1024
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.CalibrateQuantile <= 0 || opts.CalibrateQuantile >= 1 {
		opts.CalibrateQuantile = 0.999
	}
	d := &Detector{
		log: log, opts: opts, x: feat.NewExtractor(),
		feats: make([]float32, opts.MaxBatch*feat.Dim), names: feat.Names(),
	}
	d.calDone.Store(opts.Calibrate <= 0 || len(opts.Calibrated) > 0)
	return d
}

// Info implements sdk.Detector.
func (d *Detector) Info() sdk.Info {
	return sdk.Info{Name: Name, Version: Version, EventKind: sdk.EventFile, FeatureSets: []string{feat.Name}, Dim: feat.Dim}
}

// LoadModel implements sdk.Detector: it reads the bundle strictly, checks
// detector, feature set, dimension, threshold and expiry, opens the model in
// ONNX Runtime, test-scores one vector and only then makes it active.
func (d *Detector) LoadModel(_ context.Context, path string) (sdk.ModelInfo, error) {
	d.loadMu.Lock()
	defer d.loadMu.Unlock()
	b, err := runtime.ReadBundle(path)
	if err != nil {
		return sdk.ModelInfo{}, err
	}
	man := b.Manifest
	switch {
	case man.Detector != Name:
		return sdk.ModelInfo{}, fmt.Errorf("load bundle %s: made for detector %q, not %q", path, man.Detector, Name)
	case man.FeatureSet != feat.Name:
		return sdk.ModelInfo{}, fmt.Errorf("load bundle %s: feature set %q not supported (want %s)", path, man.FeatureSet, feat.Name)
	case man.Dim != feat.Dim:
		return sdk.ModelInfo{}, fmt.Errorf("load bundle %s: feature set %s has dimension %d, manifest says %d", path, feat.Name, feat.Dim, man.Dim)
	}
	// Scores are float32: a threshold that narrows to 0 or +Inf would flag
	// everything or nothing (the bundle reader refuses it; checked again
	// where it is narrowed).
	thr, err := bundle.Threshold32(man.Threshold)
	if err != nil {
		return sdk.ModelInfo{}, fmt.Errorf("load bundle %s: %w", path, err)
	}
	sc, digest, err := runtime.OpenBundle(path, b, d.opts.MaxBatch, runtime.Options{LibraryPath: d.opts.ORTLib, IntraOpThreads: 1})
	if err != nil {
		return sdk.ModelInfo{}, err
	}
	m := &model{
		info: sdk.ModelInfo{Name: man.Name, Version: man.Version, Digest: digest, FeatureSet: man.FeatureSet,
			Threshold: thr},
		thr: thr, scorer: sc, ctxVer: strconv.FormatUint(man.Version, 10),
		observing: d.opts.Calibrate > 0,
	}
	if v, ok := d.opts.Calibrated[digest]; ok && m.observing {
		// Options.Calibrated comes from outside (the agent's -calibrated):
		// an unusable quantile is refused and the model observes again.
		if thr, ok := selfcal.Restore(d.log, man.FeatureSet, digest, m.thr, v); ok {
			m.observing, m.calibrated, m.calLocal, m.thr = false, true, v, thr
		}
	}
	d.mu.Lock()
	old := d.model.Swap(m)
	d.mu.Unlock()
	if old != nil {
		_ = old.scorer.Close()
	}
	d.log.Info("model loaded", "name", man.Name, "version", man.Version, "feature_set", man.FeatureSet,
		"threshold", man.Threshold, "digest", digest)
	return m.info, nil
}

// ScorePackets implements sdk.Detector: this detector scores file events only.
func (d *Detector) ScorePackets(context.Context, []event.Packet) (sdk.Result, error) {
	return sdk.Result{}, errors.New("fileactivity scores file events, not packets")
}

// ScoreFiles implements sdk.FileScorer. Events must come in stream order
// (the per-tree rates follow their timestamps). Result.Scores holds each
// event's score divided by the threshold (1 is the threshold); without a
// model nothing is flagged and the scores are zero.
func (d *Detector) ScoreFiles(_ context.Context, files []event.File) (sdk.Result, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	res := sdk.Result{Scores: make([]float32, 0, len(files))}
	probe := sdk.IsProbeFiles(files) // scored, but calibration learns nothing from it
	for off := 0; off < len(files); off += d.opts.MaxBatch {
		chunk := files[off:min(off+d.opts.MaxBatch, len(files))]
		var err error
		if probe {
			err = d.scoreChunk(d.model.Load(), chunk, off, &res, false)
		} else {
			err = d.scoreCalibrated(chunk, off, &res)
		}
		if err != nil {
			return sdk.Result{}, err
		}
	}
	d.scored.Add(uint64(len(files)))
	d.anomalies.Add(uint64(len(res.Anomalies)))
	d.trees.Store(int64(d.x.Trees()))
	return res, nil
}

// scoreCalibrated scores a chunk; one that spans the end of the model's
// calibration grace period is scored in two parts (the events before it are
// observed, those after it judged by the calibrated threshold).
func (d *Detector) scoreCalibrated(files []event.File, base int, res *sdk.Result) error {
	m := d.model.Load()
	if m != nil && m.observing && len(files) > 0 {
		start, grace := files[0].TimeNs, int64(d.opts.Calibrate)
		if d.calModel == m {
			start = d.cal.Start()
		}
		if files[0].TimeNs-start >= grace {
			d.finishCalibration(m)
			m = d.model.Load()
		} else if k := selfcal.Cut(len(files), func(i int) int64 { return files[i].TimeNs }, start, grace); k < len(files) {
			if err := d.scoreChunk(m, files[:k], base, res, true); err != nil {
				return err
			}
			return d.scoreCalibrated(files[k:], base+k, res)
		}
	}
	return d.scoreChunk(m, files, base, res, true)
}

// finishCalibration raises m's threshold to the local quantile of its
// observed scores (never lowers it). The caller holds mu.
func (d *Detector) finishCalibration(m *model) {
	nm := *m
	local, n, ok := d.cal.Finish(d.opts.CalibrateQuantile)
	nm.observing, nm.calibrated, nm.calSamples = false, true, n
	if ok {
		nm.calLocal, nm.thr = local, max(nm.thr, local)
	}
	d.calModel = nil
	if !d.model.CompareAndSwap(m, &nm) {
		return
	}
	d.log.Info("per-sensor calibration done", "feature_set", nm.info.FeatureSet, "samples", nm.calSamples,
		"quantile", d.opts.CalibrateQuantile, "local", nm.calLocal, "model_threshold", nm.info.Threshold, "threshold", nm.thr)
}

// scoreChunk scores a chunk with m. With learn, an observing model's scores
// go into its calibration sample (the first chunk starts it), and the first
// chunk judged after the sensor's grace period ends that period; without
// (the probe batch), calibration is left as it was.
func (d *Detector) scoreChunk(m *model, files []event.File, base int, res *sdk.Result, learn bool) error {
	n := len(files)
	fv := d.feats[:n*feat.Dim]
	for i := range files {
		d.x.Extract(&files[i], fv[i*feat.Dim:(i+1)*feat.Dim])
	}
	if m == nil {
		res.Scores = append(res.Scores, make([]float32, n)...)
		return nil
	}
	scores, contrib, err := m.scorer.Score(fv, n)
	if err != nil {
		return fmt.Errorf("score %s: %w", feat.Name, err)
	}
	thr := m.thr
	if m.observing && learn {
		if d.calModel != m {
			d.calModel = m
			d.cal.Reset(files[0].TimeNs)
		}
		d.cal.Add(scores)
	}
	if !d.calDone.Load() {
		if m.observing { // the sensor's initial grace period: no anomalies
			for _, s := range scores {
				if s != s {
					s = float32(math.Inf(1))
				}
				res.Scores = append(res.Scores, s/thr)
			}
			return nil
		}
		if learn {
			d.calDone.Store(true)
		}
	}
	first := len(res.Anomalies)
	// The strongest burst anomaly of each tree in this chunk (the first one
	// at the maximum): it alone of the tree's burst anomalies carries the
	// full context and the top features.
	strongest := d.strongest[:0]
	for i, s := range scores {
		if s != s { // NaN: the most anomalous
			s = float32(math.Inf(1))
		}
		res.Scores = append(res.Scores, s/thr)
		if !(s > thr) {
			continue
		}
		c := contrib[i*feat.Dim : (i+1)*feat.Dim]
		v := fv[i*feat.Dim : (i+1)*feat.Dim]
		share := rateShare(c)
		packed := v[idxExecPacked] >= 0.5 || v[idxScriptBase64] >= 0.5 || v[idxPackedScript] >= 0.5
		a := sdk.Anomaly{Index: uint64(base + i), Score: s, Threshold: thr}
		if !packed && (share >= BurstShare || files[i].Op == event.FileRemove) {
			d.bursts.Add(1)
			// Slim: the agent has the event (Index) and derives path, time,
			// operation and content facts from it.
			a.Context = make(map[string]string, 3)
			a.Context[ContextKind] = KindBurst
			if v[idxHighEntropy] > 0 {
				a.Context[ContextHighEntropy] = "1"
			}
			if v[idxExtChanged] > 0 {
				a.Context[ContextExtChanged] = "1"
			}
			k := len(res.Anomalies)
			j := 0
			for j < len(strongest) && files[strongest[j].file].Root != files[i].Root {
				j++
			}
			if j == len(strongest) {
				strongest = append(strongest, strongestBurst{anomaly: k, file: i, contrib: c, share: share})
			} else if s > res.Anomalies[strongest[j].anomaly].Score {
				strongest[j] = strongestBurst{anomaly: k, file: i, contrib: c, share: share}
			}
		} else {
			a.TopFeatures = sdk.TopContributions(c, d.names, TopK)
			a.Context = fileContext(&files[i], v, m)
			a.Context[ContextRateShare] = strconv.FormatFloat(float64(share), 'f', 3, 32)
			a.Context[ContextKind] = KindFile
		}
		res.Anomalies = append(res.Anomalies, a)
	}
	for _, sb := range strongest {
		a := &res.Anomalies[sb.anomaly]
		i := sb.file
		a.TopFeatures = sdk.TopContributions(sb.contrib, d.names, TopK)
		a.Context = fileContext(&files[i], fv[i*feat.Dim:(i+1)*feat.Dim], m)
		a.Context[ContextRateShare] = strconv.FormatFloat(float64(sb.share), 'f', 3, 32)
		a.Context[ContextKind] = KindBurst
	}
	d.strongest = strongest[:0]
	// The model's identity rides on the chunk's first anomaly at least.
	if first < len(res.Anomalies) {
		if a := &res.Anomalies[first]; a.Context[ContextModel] == "" {
			a.Context[ContextModel] = m.info.Name
			a.Context[ContextModelVersion] = m.ctxVer
			a.Context[ContextModelDigest] = m.info.Digest
			a.Context[ContextFeatureSet] = m.info.FeatureSet
		}
	}
	return nil
}

// strongestBurst is the strongest burst anomaly of one tree in a chunk.
type strongestBurst struct {
	anomaly, file int
	contrib       []float32
	share         float32
}

// rateShare is the part of the total per-feature error from the rate features.
func rateShare(c []float32) float32 {
	var all, rate float64
	for i, v := range c {
		if v != v || v < 0 {
			continue
		}
		all += float64(v)
		if i >= nEvent {
			rate += float64(v)
		}
	}
	if all == 0 {
		return 0
	}
	return float32(rate / all)
}

// fileContext describes the event for the finding. vec is the event's
// feature vector (for the derived flags).
func fileContext(f *event.File, v []float32, m *model) map[string]string {
	ctx := map[string]string{
		ContextTimeNs:       strconv.FormatInt(f.TimeNs, 10),
		ContextRoot:         SafePath(f.Root),
		ContextOp:           f.Op.String(),
		ContextSize:         strconv.FormatInt(f.Size, 10),
		ContextModel:        m.info.Name,
		ContextModelVersion: m.ctxVer,
		ContextModelDigest:  m.info.Digest,
		ContextFeatureSet:   m.info.FeatureSet,
	}
	p := f.Path
	if p == "" {
		p = f.OldPath
	}
	ctx[sdk.ContextPath] = SafePath(p)
	if f.OldPath != "" {
		ctx[ContextOldPath] = SafePath(f.OldPath)
	}
	if f.Flags&event.FileFlagSampled != 0 {
		ctx[ContextMagic] = f.Magic.String()
		ctx[ContextEntropy] = strconv.FormatFloat(float64(f.Entropy), 'f', 2, 32)
	}
	if v[idxHighEntropy] > 0 {
		ctx[ContextHighEntropy] = "1"
	}
	if v[idxExtChanged] > 0 {
		ctx[ContextExtChanged] = "1"
	}
	return ctx
}

// SafePath is event.SafePath (kept for callers of this package).
func SafePath(s string) string { return event.SafePath(s) }

var (
	idxHighEntropy, idxExtChanged = indexOf("high_entropy_content"), indexOf("ext_changed")
	// Content indicators that make an anomaly a file anomaly even amid a
	// burst of activity.
	idxExecPacked, idxScriptBase64, idxPackedScript = indexOf("exec_packed"), indexOf("script_base64"), indexOf("packed_script")
)

func indexOf(name string) int {
	for i, n := range feat.Names() {
		if n == name {
			return i
		}
	}
	panic("fileactivity: feature " + name + " missing from " + feat.Name)
}

// Health implements sdk.Detector.
func (d *Detector) Health(context.Context) sdk.Health {
	h := sdk.Health{
		OK: true,
		Stats: map[string]uint64{
			"scored":          d.scored.Load(),
			"anomalies":       d.anomalies.Load(),
			"burst_anomalies": d.bursts.Load(),
			"trees":           uint64(d.trees.Load()),
		},
		MemoryBytes: uint64(len(d.feats)*4) + uint64(feat.MaxTrees)*1200,
	}
	if m := d.model.Load(); m != nil {
		h.Model = m.info
		h.Message = "model active"
		if !d.calDone.Load() {
			h.Message = fmt.Sprintf("calibrating: observing local file activity for %s (event time) before flagging", d.opts.Calibrate)
		}
		h.Stats["threshold_micro"] = uint64(float64(m.thr) * 1e6)
		if d.opts.Calibrate > 0 {
			selfcal.Report(h.Stats, selfcal.State{FeatureSet: m.info.FeatureSet, Digest: m.info.Digest,
				Model: m.info.Threshold, Active: m.thr, Calibrated: m.calibrated, Local: m.calLocal, Samples: m.calSamples})
		}
	} else {
		h.Message = "no model loaded: scoring nothing"
	}
	return h
}

// Close releases the model.
func (d *Detector) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if m := d.model.Swap(nil); m != nil {
		return m.scorer.Close()
	}
	return nil
}
