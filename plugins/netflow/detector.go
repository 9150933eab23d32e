// Package netflow is Vigil's packet anomaly detector (the plugin binary
// vigil-detector-netflow): it computes two feature sets per packet, Kitsune's
// per-stream statistics (models/features/netflow, netflow/v1) and per-source
// evidence over time (models/features/nethost: nethost/v2, or nethost/v1
// for older bundles), scores each with
// its own int8 ONNX model in ONNX Runtime (models/runtime), and flags a packet
// when either model's score exceeds its threshold. Each anomaly carries the
// score and threshold of the model with the larger score/threshold ratio,
// that model's five largest feature contributions with their names, the
// packet's context (addresses, ports, protocol, time, length) and the model's
// identity.
//
// nethost vectors are scored per source rather than per packet: a
// packet whose source's vector has not changed materially since that
// source's last scored vector reuses its score (hostcache.go).
//
// One bundle is loaded per slot: LoadModel puts a bundle into the slot of its
// manifest's feature set (netflow/v1; nethost/v1 to v6 share the
// per-source slot), and a newer bundle of the slot replaces the old one. A
// bundle of one nethost version replacing another restarts the per-source
// state cold, as the later versions keep more of it. A bundle of another
// set, dimension or detector is refused and the active models stay. Scoring runs one reused session per model with
// pre-allocated tensors and one intra-op thread.
//
// Per-sensor calibration (Options.Calibrate): for a grace period of packet
// time after the first packet the detector only observes (no anomalies),
// collecting each model's scores (an evenly thinned sample, bounded); then
// each threshold becomes the larger of the model's and the observed
// Options.CalibrateQuantile quantile. A model loaded later (an update) is
// calibrated the same way on its own scores, but flags at its own threshold
// while it observes: an update never silences a calibrated sensor, and a
// threshold measured on another model's score scale is never carried over.
// Health reports the outcome per feature set (calibration_* stats), which
// the agent forwards to the server in its Status counters.
package netflow

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vigil-edge/vigil/models/bundle"
	nffeat "github.com/vigil-edge/vigil/models/features/netflow"
	nhfeat "github.com/vigil-edge/vigil/models/features/nethost"
	"github.com/vigil-edge/vigil/models/runtime"
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	"github.com/vigil-edge/vigil/plugins/sdk/selfcal"
)

// Name is the detector's name (findings' "detector", manifests' "detector").
const Name = "netflow"

// Version is the plugin's version.
const Version = "0.1.0"

// DefaultScoreChunk is the default Options.ScoreChunk.
const DefaultScoreChunk = 256

// TopK is the number of feature contributions reported per anomaly.
const TopK = 5

// Context keys the detector adds to the well-known sdk.Context* keys.
const (
	ContextTimeNs       = "ts_ns"         // packet time, Unix nanoseconds
	ContextLength       = "len"           // bytes on the wire
	ContextTCPFlags     = "tcp_flags"     // TCP flags byte, decimal
	ContextSrcMAC       = "src_mac"       // source MAC
	ContextARPClaim     = "arp_claim"     // "1": an ARP claim on src_ip by src_mac (nethost's ARPClaim)
	ContextARPPrevMAC   = "arp_prev_mac"  // the MAC that announced src_ip before the claim, if it changed
	ContextModel        = "model"         // model name
	ContextModelVersion = "model_version" // model version
	ContextModelDigest  = "model_digest"  // "sha256:..." of the bundle file
	ContextFeatureSet   = "feature_set"   // feature set of the flagging model
	// The beacon rule's evidence (beacon.go), on an anomaly led by
	// BeaconFeature: the median interval between the pair's connections,
	// the connections seen, and their destination address:port.
	ContextBeaconPeriodNs    = "beacon_period_ns"
	ContextBeaconConnections = "beacon_connections"
	ContextBeaconDst         = "beacon_dst"
)

// feature-set slots.
const (
	slotNetflow = iota
	slotNethost
	nslots
)

// slotBeacon marks a packet the beacon rule flagged (which), in place of a
// model's slot.
const slotBeacon = nslots

// slotSets are the feature sets each slot accepts, with their dimensions.
var slotSets = [nslots][]struct {
	name string
	dim  int
}{
	slotNetflow: {{nffeat.Name, nffeat.Dim}},
	slotNethost: {{nhfeat.NameV7, nhfeat.DimV7}, {nhfeat.NameV6, nhfeat.DimV6}, {nhfeat.NameV5, nhfeat.DimV5}, {nhfeat.NameV4, nhfeat.DimV4}, {nhfeat.NameV3, nhfeat.DimV3}, {nhfeat.NameV2, nhfeat.DimV2}, {nhfeat.Name, nhfeat.Dim}},
}

// maxDims are the largest dimensions of each slot's sets (buffer sizes).
var maxDims = [nslots]int{nffeat.Dim, nhfeat.DimV7}

// Options configure the detector.
type Options struct {
	// ORTLib is the ONNX Runtime library (default $ONNXRUNTIME_LIB).
	ORTLib string
	// MaxBatch is the largest batch scored in one session run (default 4096,
	// the SDK's ring batch).
	MaxBatch int
	// Calibrate is the grace period (packet time) of per-sensor
	// calibration; 0 disables it.
	Calibrate time.Duration
	// CalibrateQuantile is the local score quantile that the threshold must
	// reach after calibration (default 0.999).
	CalibrateQuantile float64
	// Calibrated are the local quantiles of models an earlier instance of
	// this plugin calibrated on this sensor, by bundle digest (the agent
	// passes them to a restarted plugin: -calibrated, selfcal.ParseRestored). A
	// model loaded with one of these digests starts calibrated. Any entry
	// also means that the sensor's initial grace period is over: a model
	// without one observes while flagging at its own threshold, as a model
	// loaded into the earlier instance would (a shadow instance beside a
	// calibrated sensor's models; a restart after a model update).
	Calibrated map[string]float32
	// ScoreChunk is the most rows per ONNX Runtime run (default 256). At
	// load, each model's run size is lowered to the largest one at which
	// its scores match single-row runs on this machine
	// (runtime.ConsistentRun): with ONNX Runtime 1.24.3, the int8 QGemm of
	// an AVX-512 VNNI / AMX Xeon computes the 32nd row of every 32-row
	// block wrongly, by up to several thresholds (docs/models.md, section
	// 4; probably microsoft/onnxruntime#26324), so a static-QDQ decoder
	// runs 16 rows at a time there, while the shipped layout (int8 encoder,
	// float decoder) passes at 256. A packet's score thus never depends on
	// how the ring cut the stream into batches. 0 or negative: the default.
	ScoreChunk int
	// HashSeed seeds the feature tables' hashes (0: random, which keeps
	// outsiders from crafting colliding keys).
	HashSeed uint64
	// MaxSockets etc. bound the feature state (0: the feature sets' defaults).
	MaxSockets, MaxChannels, MaxHosts int
	// NoReuse scores every packet's nethost/v1 vector (see hostcache.go);
	// by default a source's last score is reused while its vector stays
	// within ReuseAbs + ReuseRel·|value| per feature (defaults 0.01, 0.01)
	// and the score is younger than ReuseMaxAge of packet time (default 1 s).
	NoReuse            bool
	ReuseAbs, ReuseRel float32
	ReuseMaxAge        time.Duration
	// NoAggregate reports every anomalous packet as its own anomaly; by
	// default the anomalies of a batch are merged per source and window
	// (aggregate.go) with AggregateWindow (default 30 s, the agent's).
	NoAggregate     bool
	AggregateWindow time.Duration
	// LeadIn is how far back the anomaly that opens a source's window
	// reports the source's packets before it (lead.go; default
	// DefaultLeadIn, 10 s; at most sdk.MaxLeadIn). Negative: no lead-in.
	// Only with aggregation.
	LeadIn time.Duration
	// BeaconIntervals is the beacon rule's number of regular intervals
	// between a pair's connections before it flags one (beacon.go; 0:
	// DefaultBeaconIntervals, at most 31). Negative: no beacon rule.
	BeaconIntervals int
}

// model is one loaded bundle.
type model struct {
	info   sdk.ModelInfo
	slot   int
	thr    float32 // active threshold (the model's, or raised by calibration)
	scorer *runtime.Scorer
	names  []string
	ctxVer string
	// per-sensor calibration of this model: observing until its grace
	// period has passed, then calibrated with calLocal, the local quantile
	// of calSamples observed scores.
	observing, calibrated bool
	calLocal              float32
	calSamples            int
}

// Detector implements sdk.Detector.
type Detector struct {
	log  *slog.Logger
	opts Options

	loadMu sync.Mutex // serialises LoadModel
	mu     sync.Mutex // held while scoring a batch and while swapping models
	models [nslots]atomic.Pointer[model]

	// Feature state and buffers of a slot are allocated when its first
	// model loads (a feature set without a model is not computed).
	nf    *nffeat.Extractor
	nh    *nhfeat.Extractor
	dims  [nslots]int // dimension of the feature set each slot computes now
	seeds [nslots]uint64
	feats [nslots][]float32
	ratio []float32
	which []int8
	claim []arpClaim        // per packet of the current chunk: an ARP claim (nethost's ARPClaim)
	rsc   []float32         // raw scores of the current chunk's packets, per slot
	con   [nslots][]float32 // contributions of the current chunk's scored rows, per slot

	// nethost score reuse (hostcache.go); nil with Options.NoReuse.
	cache  *hostCache
	ref    []int32   // per packet: scored row (>= 0), or -1-k: contributions in hitCon[k·Dim:]
	rowsc  []float32 // scores of the scored rows
	hitCon []float32
	raw    nhfeat.Raw // the current packet's raw nethost features

	// anomaly pre-aggregation (aggregate.go); nil with Options.NoAggregate.
	agg *aggState
	// lead-in slots per source (lead.go); nil without aggregation or with
	// a negative Options.LeadIn.
	lead          *leadTable
	leadEvictions atomic.Uint64

	// the beacon rule (beacon.go); nil with a negative
	// Options.BeaconIntervals. beaconHit holds, per packet of the current
	// chunk whose which is slotBeacon, what the rule saw.
	beacon    *beaconTable
	beaconHit []Beacon
	beacons   atomic.Uint64 // connection starts the rule flagged

	// per-sensor calibration: calDone is false during the sensor's initial
	// grace period (no anomalies); cal[s] samples the observing model of
	// slot s (scoring goroutine only, under mu).
	calDone  atomic.Bool
	cal      [nslots]selfcal.Sample
	calModel [nslots]*model // the model cal[s] samples

	memBytes  atomic.Int64
	scored    atomic.Uint64
	anomalies atomic.Uint64
	evictions atomic.Uint64
	entries   atomic.Int64
}

var _ sdk.Detector = (*Detector)(nil)

// New returns a detector with no model loaded (it scores nothing until one is).
func New(log *slog.Logger, opts Options) *Detector {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 4096
	}
	if opts.ScoreChunk <= 0 {
		opts.ScoreChunk = DefaultScoreChunk
	}
	opts.ScoreChunk = min(opts.ScoreChunk, opts.MaxBatch)
	if opts.CalibrateQuantile <= 0 || opts.CalibrateQuantile >= 1 {
		opts.CalibrateQuantile = 0.999
	}
	var seed [16]byte
	_, _ = rand.Read(seed[:])
	if opts.HashSeed != 0 {
		binary.LittleEndian.PutUint64(seed[:8], opts.HashSeed)
		binary.LittleEndian.PutUint64(seed[8:], opts.HashSeed+1)
	}
	if opts.ReuseAbs <= 0 {
		opts.ReuseAbs = DefaultReuseAbs
	}
	if opts.ReuseRel <= 0 {
		opts.ReuseRel = DefaultReuseRel
	}
	if opts.ReuseMaxAge <= 0 {
		opts.ReuseMaxAge = DefaultReuseMaxAge
	}
	if opts.AggregateWindow <= 0 {
		opts.AggregateWindow = DefaultAggregateWindow
	}
	if opts.LeadIn == 0 {
		opts.LeadIn = DefaultLeadIn
	}
	opts.LeadIn = min(opts.LeadIn, sdk.MaxLeadIn)
	d := &Detector{
		log:   log,
		opts:  opts,
		seeds: [nslots]uint64{binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])},
	}
	d.ratio = make([]float32, opts.MaxBatch)
	d.which = make([]int8, opts.MaxBatch)
	d.claim = make([]arpClaim, opts.MaxBatch)
	d.rsc = make([]float32, nslots*opts.MaxBatch)
	if !opts.NoAggregate {
		d.agg = newAggState()
		if opts.LeadIn > 0 {
			d.lead = newLeadTable(d.seeds[0]^0x6c656164, int64(opts.LeadIn))
		}
	}
	if opts.BeaconIntervals >= 0 {
		if opts.BeaconIntervals == 0 {
			opts.BeaconIntervals = DefaultBeaconIntervals
		}
		d.opts.BeaconIntervals = opts.BeaconIntervals
		d.beacon = newBeaconTable(d.seeds[1]^0x626561636f6e, opts.BeaconIntervals)
		d.beaconHit = make([]Beacon, opts.MaxBatch)
	}
	if opts.Calibrate <= 0 || len(opts.Calibrated) > 0 {
		d.calDone.Store(true)
	}
	d.updateMem()
	return d
}

// Info implements sdk.Detector. Dim is netflow/v1's; nethost/v7, v6, v5, v4, v3, v2 and v1
// are the other accepted feature sets.
func (d *Detector) Info() sdk.Info {
	return sdk.Info{Name: Name, Version: Version, EventKind: sdk.EventPacket,
		FeatureSets: []string{nffeat.Name, nhfeat.NameV7, nhfeat.NameV6, nhfeat.NameV5, nhfeat.NameV4, nhfeat.NameV3, nhfeat.NameV2, nhfeat.Name}, Dim: nffeat.Dim}
}

// LoadModel implements sdk.Detector: it reads the bundle strictly, checks
// detector, feature set, dimension and expiry, opens the model in ONNX
// Runtime, test-scores one vector, and only then makes it the active model
// of its feature set.
func (d *Detector) LoadModel(_ context.Context, path string) (sdk.ModelInfo, error) {
	d.loadMu.Lock()
	defer d.loadMu.Unlock()
	b, err := runtime.ReadBundle(path)
	if err != nil {
		return sdk.ModelInfo{}, err
	}
	man := b.Manifest
	slot, dim := -1, 0
	for i, sets := range slotSets {
		for _, fs := range sets {
			if man.FeatureSet == fs.name {
				slot, dim = i, fs.dim
			}
		}
	}
	switch {
	case man.Detector != Name:
		return sdk.ModelInfo{}, fmt.Errorf("load bundle %s: made for detector %q, not %q", path, man.Detector, Name)
	case slot < 0:
		return sdk.ModelInfo{}, fmt.Errorf("load bundle %s: feature set %q not supported (want %s, %s, %s, %s, %s, %s, %s or %s)", path, man.FeatureSet, nffeat.Name, nhfeat.NameV7, nhfeat.NameV6, nhfeat.NameV5, nhfeat.NameV4, nhfeat.NameV3, nhfeat.NameV2, nhfeat.Name)
	case man.Dim != dim:
		return sdk.ModelInfo{}, fmt.Errorf("load bundle %s: feature set %s has dimension %d, manifest says %d", path, man.FeatureSet, dim, man.Dim)
	}
	// Scores are float32: a threshold that narrows to 0 or +Inf would flag
	// everything or nothing (the bundle reader refuses it; checked again
	// where it is narrowed).
	thr, err := bundle.Threshold32(man.Threshold)
	if err != nil {
		return sdk.ModelInfo{}, fmt.Errorf("load bundle %s: %w", path, err)
	}
	// One Score call per batch; the scorer runs it in runs of the checked
	// run size, on pre-allocated tensors.
	sc, digest, err := runtime.OpenBundle(path, b, d.opts.MaxBatch, runtime.Options{LibraryPath: d.opts.ORTLib,
		IntraOpThreads: 1, MaxRun: d.opts.ScoreChunk})
	if err != nil {
		return sdk.ModelInfo{}, err
	}
	m := &model{
		info: sdk.ModelInfo{Name: man.Name, Version: man.Version, Digest: digest, FeatureSet: man.FeatureSet,
			Threshold: thr},
		slot:   slot,
		thr:    thr,
		scorer: sc,
		ctxVer: strconv.FormatUint(man.Version, 10),
	}
	switch man.FeatureSet {
	case nffeat.Name:
		m.names = nffeat.Names()
	case nhfeat.NameV7:
		m.names = nhfeat.NamesV7()
	case nhfeat.NameV6:
		m.names = nhfeat.NamesV6()
	case nhfeat.NameV5:
		m.names = nhfeat.NamesV5()
	case nhfeat.NameV4:
		m.names = nhfeat.NamesV4()
	case nhfeat.NameV3:
		m.names = nhfeat.NamesV3()
	case nhfeat.NameV2:
		m.names = nhfeat.NamesV2()
	default:
		m.names = nhfeat.Names()
	}
	m.observing = d.opts.Calibrate > 0
	if v, ok := d.opts.Calibrated[digest]; ok && m.observing {
		// Options.Calibrated comes from outside (the agent's -calibrated):
		// an unusable quantile is refused and the model observes again.
		if thr, ok := selfcal.Restore(d.log, man.FeatureSet, digest, m.thr, v); ok {
			m.observing, m.calibrated, m.calLocal, m.thr = false, true, v, thr
		}
	}
	d.mu.Lock()
	d.allocSlot(slot, man.FeatureSet, dim)
	if d.cache != nil && slot == slotNethost {
		d.cache.reset() // scores of the old model
	}
	old := d.models[slot].Swap(m)
	d.mu.Unlock()
	if old != nil {
		_ = old.scorer.Close()
	}
	d.log.Info("model loaded", "name", man.Name, "version", man.Version, "feature_set", man.FeatureSet,
		"threshold", man.Threshold, "digest", digest, "run_size", sc.RunSize())
	return m.info, nil
}

// allocSlot allocates the feature state and buffers of a slot for feature
// set name of dimension dim; a slot that computes another set (nethost/v1,
// v2, v3, v4, v5 and v6) gets a new extractor, with cold state. The caller holds
// d.mu.
func (d *Detector) allocSlot(s int, name string, dim int) {
	n := d.opts.MaxBatch
	if d.feats[s] == nil {
		d.feats[s] = make([]float32, n*maxDims[s])
		d.con[s] = make([]float32, n*maxDims[s])
	}
	switch s {
	case slotNetflow:
		if d.nf == nil {
			d.nf = nffeat.New(nffeat.Config{MaxSockets: d.opts.MaxSockets, MaxChannels: d.opts.MaxChannels,
				MaxHosts: d.opts.MaxHosts, HashSeed: d.seeds[s]})
		}
	case slotNethost:
		if d.nh == nil || d.nh.Name() != name {
			d.nh = nhfeat.New(nhfeat.Config{MaxHosts: d.opts.MaxHosts, HashSeed: d.seeds[s], V2: name == nhfeat.NameV2, V3: name == nhfeat.NameV3, V4: name == nhfeat.NameV4, V5: name == nhfeat.NameV5, V6: name == nhfeat.NameV6, V7: name == nhfeat.NameV7})
		}
		if !d.opts.NoReuse && d.cache == nil {
			d.cache = newHostCache(d.seeds[s])
			d.ref = make([]int32, n)
			d.rowsc = make([]float32, n)
			d.hitCon = make([]float32, n*maxDims[s])
		}
	}
	d.dims[s] = dim
}

// primary is the model Health reports: netflow/v1's, else the nethost
// model's.
func (d *Detector) primary() sdk.ModelInfo {
	for i := range d.models {
		if m := d.models[i].Load(); m != nil {
			return m.info
		}
	}
	return sdk.ModelInfo{}
}

// ScorePackets implements sdk.Detector. Result.Scores holds, per packet,
// the largest score/threshold ratio over the loaded models (1 is the
// threshold), so batch statistics are comparable across models.
func (d *Detector) ScorePackets(_ context.Context, pkts []event.Packet) (sdk.Result, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var res sdk.Result
	res.Scores = make([]float32, 0, len(pkts))
	learn := !sdk.IsProbePackets(pkts)
	for off := 0; off < len(pkts); off += d.opts.MaxBatch {
		chunk := pkts[off:min(off+d.opts.MaxBatch, len(pkts))]
		if err := d.scoreChunk(chunk, off, &res, learn); err != nil {
			return sdk.Result{}, err
		}
	}
	d.scored.Add(uint64(len(pkts)))
	d.anomalies.Add(sdk.CountRecords(res.Anomalies))
	d.updateMem()
	return res, nil
}

// scoreChunk scores a chunk. With learn, observing models sample its scores
// for their calibration (and a grace period may start or end with it), and
// anomalies are merged per source (aggregation, lead-in). Without (the probe
// batch, sdk.IsProbePackets), calibration and the per-source finding state
// are left as they were, and each anomalous packet is returned on its own:
// the probe checks the model, it must not open a finding.
func (d *Detector) scoreChunk(pkts []event.Packet, base int, res *sdk.Result, learn bool) error {
	n := len(pkts)
	ratio, which := d.ratio[:n], d.which[:n]
	for i := range ratio {
		ratio[i], which[i] = 0, -1
	}
	clear(d.claim[:n])
	// A batch that spans the end of a model's calibration grace period is
	// scored in two parts: the packets before it are observed, those after
	// it are judged by the calibrated threshold.
	if learn {
		if k := d.calibrationCut(pkts); k > 0 && k < len(pkts) {
			if err := d.scoreChunk(pkts[:k], base, res, learn); err != nil {
				return err
			}
			return d.scoreChunk(pkts[k:], base+k, res, learn)
		}
	}
	calibrating := !d.calDone.Load()
	if calibrating && learn && d.calibratedAll() {
		d.calDone.Store(true)
		calibrating = false
	}
	var loaded [nslots]*model
	for s := range nslots {
		// A feature set whose model is not loaded is not computed (its state
		// starts cold when a model arrives).
		m := d.models[s].Load()
		if m == nil {
			continue
		}
		loaded[s] = m
		scores := d.rsc[s*d.opts.MaxBatch : s*d.opts.MaxBatch+n]
		var err error
		if s == slotNethost && d.cache != nil {
			err = d.scoreReuse(pkts, m, scores)
		} else {
			err = d.scoreEach(s, pkts, m, scores)
		}
		if err != nil {
			return err
		}
		if m.observing && n > 0 && learn {
			d.observe(m, scores, pkts[0].TimestampNs)
		}
		for i, v := range scores {
			if v != v { // NaN: treat as the most anomalous
				v = float32(math.Inf(1))
			}
			r := v / m.thr
			if r > ratio[i] || which[i] < 0 {
				ratio[i], which[i] = r, int8(s)
			}
		}
	}
	if d.beacon != nil && learn {
		d.flagBeacons(pkts, &loaded, calibrating)
	}
	res.Scores = append(res.Scores, ratio...)
	if calibrating {
		// No anomalies yet, but the lead-in of the first ones after the
		// grace period reaches back into it.
		if d.lead != nil && learn {
			for i := range pkts {
				d.lead.entry(&pkts[i]).add(d.lead, pkts[i].TimestampNs, uint32(pkts[i].Length))
			}
		}
		return nil
	}
	if d.agg != nil && learn {
		d.aggregate(pkts, base, &loaded, res)
		return nil
	}
	for i := range n {
		if which[i] < 0 || !(ratio[i] > 1) {
			continue
		}
		s := int(which[i])
		res.Anomalies = append(res.Anomalies, d.anomalyOf(pkts, i, s, &loaded, uint64(base+i), i, i))
	}
	return nil
}

// anomalyOf is the anomaly of packet i of the chunk as slot s (a model's,
// or slotBeacon) judged it, with its context from packet ctxAt and, when
// the beacon rule judged it, the rule's evidence from packet beaconAt.
func (d *Detector) anomalyOf(pkts []event.Packet, i, s int, loaded *[nslots]*model, index uint64, ctxAt, beaconAt int) sdk.Anomaly {
	if s == slotBeacon {
		b := d.beaconHit[beaconAt]
		ctx := packetContext(&pkts[ctxAt], anyModel(loaded), d.claim[ctxAt])
		p := &pkts[beaconAt]
		ctx[ContextBeaconPeriodNs] = strconv.FormatInt(b.PeriodNs, 10)
		ctx[ContextBeaconConnections] = strconv.FormatUint(uint64(b.Connections), 10)
		ctx[ContextBeaconDst] = netip.AddrPortFrom(p.DstAddr(), p.DstPort).String()
		return sdk.Anomaly{Index: index, Score: BeaconRatio, Threshold: 1,
			TopFeatures: []sdk.Contribution{{Name: BeaconFeature, Contribution: 1}}, Context: ctx}
	}
	m := loaded[s]
	return sdk.Anomaly{
		Index:       index,
		Score:       d.rawScore(s, i),
		Threshold:   m.thr,
		TopFeatures: sdk.TopContributions(d.contrib(s, i), m.names, TopK),
		Context:     packetContext(&pkts[ctxAt], m, d.claim[ctxAt]),
	}
}

// flagBeacons runs the beacon rule over the chunk (beacon.go): a connection
// start that completes a beacon is flagged at BeaconRatio, as slotBeacon,
// unless a model flags it higher. While the sensor calibrates the rule
// watches but flags nothing.
func (d *Detector) flagBeacons(pkts []event.Packet, loaded *[nslots]*model, calibrating bool) {
	if anyModel(loaded) == nil {
		return
	}
	for i := range pkts {
		b, ok := d.beacon.observe(&pkts[i])
		if !ok || calibrating {
			continue
		}
		d.beacons.Add(1)
		if d.which[i] < 0 || d.ratio[i] < BeaconRatio {
			d.ratio[i], d.which[i], d.beaconHit[i] = BeaconRatio, slotBeacon, b
		}
	}
}

// anyModel returns a loaded model (nethost's first) for the model keys of
// a beacon anomaly's context, nil if none is loaded.
func anyModel(loaded *[nslots]*model) *model {
	if m := loaded[slotNethost]; m != nil {
		return m
	}
	for _, m := range loaded {
		if m != nil {
			return m
		}
	}
	return nil
}

// rowRatio is the agent's comparison key (agentRatio) of packet i as slot
// s judged it.
func (d *Detector) rowRatio(s, i int, loaded *[nslots]*model) float64 {
	if s == slotBeacon {
		return BeaconRatio
	}
	return agentRatio(d.rawScore(s, i), loaded[s].thr)
}

// scoreEach computes and scores every packet's vector of slot s.
func (d *Detector) scoreEach(s int, pkts []event.Packet, m *model, scores []float32) error {
	n, dim := len(pkts), d.dims[s]
	feats := d.feats[s]
	if s == slotNetflow {
		// The batch form probes the table slots of a few packets ahead,
		// so their cache misses overlap (same features as Extract).
		d.nf.ExtractBatch(pkts, feats[:n*dim])
	} else {
		for i := range pkts {
			d.nh.Extract(&pkts[i], feats[i*dim:(i+1)*dim])
			d.claim[i] = claimOf(d.nh)
		}
	}
	return d.scoreRows(s, m, n, scores)
}

// scoreRows scores the first n rows of d.feats[s] (n ≤ MaxBatch; the
// scorer runs them in runs of its checked size) into scores and d.con[s].
func (d *Detector) scoreRows(s int, m *model, n int, scores []float32) error {
	if n == 0 {
		return nil
	}
	dim := d.dims[s]
	if err := m.scorer.ScoreInto(d.feats[s][:n*dim], n, scores[:n], d.con[s][:n*dim]); err != nil {
		return fmt.Errorf("score %s: %w", m.info.FeatureSet, err)
	}
	return nil
}

// scoreReuse computes every packet's nethost vector and scores only the
// vectors that changed materially since their source's last scored one
// (hostcache.go); the other packets get that score and its contributions.
func (d *Detector) scoreReuse(pkts []event.Packet, m *model, scores []float32) error {
	dim := d.dims[slotNethost]
	c := d.cache
	// Entries still pending were set by a batch whose scoring failed (an
	// error, or a panic the SDK recovered): their row is of that batch, not
	// of this one, and their score was never set. Forget them, or a packet
	// of their source that hits one would take another packet's score.
	for _, idx := range c.pending {
		if e := &c.entries[idx]; e.pending {
			*e = hostEntry{}
		}
	}
	c.pending = c.pending[:0]
	feats := d.feats[slotNethost]
	abs, rel, maxAge := d.opts.ReuseAbs, d.opts.ReuseRel, int64(d.opts.ReuseMaxAge)
	rows, hits := 0, 0
	for i := range pkts {
		p := &pkts[i]
		v := feats[rows*dim : (rows+1)*dim] // the next free row; a reused packet's vector is overwritten
		d.nh.ExtractRaw(p, &d.raw)
		d.claim[i] = claimOf(d.nh)
		idx, fresh := c.lookup(p)
		e := &c.entries[idx]
		now := p.TimestampNs
		// The vector (about a dozen logarithms) is built only when the raw
		// counters cannot prove it close to the source's scored one.
		hit, built := false, false
		if !fresh && now >= e.tns && now-e.tns <= maxAge {
			if hit = e.surelyClose(&d.raw); !hit {
				d.raw.Features(v)
				built = true
				hit = e.close(v, abs, rel)
			}
		}
		if hit {
			c.hits++
			if e.pending {
				d.ref[i] = e.row
				continue
			}
			scores[i] = e.score
			if r := e.score / m.thr; r > 1 || r != r {
				// possibly an anomaly: keep the contributions, the entry
				// may be replaced later in this batch
				copy(d.hitCon[hits*dim:(hits+1)*dim], e.contrib[:])
				d.ref[i] = int32(-1 - hits)
				hits++
			} else {
				d.ref[i] = math.MinInt32
			}
			continue
		}
		if !built {
			d.raw.Features(v)
		}
		c.misses++
		copy(e.vec[:], v)
		e.setBounds(&d.raw, abs, rel)
		e.tns, e.pending, e.row = now, true, int32(rows)
		c.pending = append(c.pending, int32(idx))
		d.ref[i] = int32(rows)
		rows++
	}
	if err := d.scoreRows(slotNethost, m, rows, d.rowsc); err != nil {
		return err
	}
	con := d.con[slotNethost]
	for _, idx := range c.pending {
		if e := &c.entries[idx]; e.pending {
			e.score = d.rowsc[e.row]
			copy(e.contrib[:], con[int(e.row)*dim:(int(e.row)+1)*dim])
			e.pending = false
		}
	}
	for i := range pkts {
		if r := d.ref[i]; r >= 0 {
			scores[i] = d.rowsc[r]
		}
	}
	return nil
}

// contrib returns the contributions of packet i's vector of slot s.
func (d *Detector) contrib(s, i int) []float32 {
	dim := d.dims[s]
	if s == slotNethost && d.cache != nil {
		r := int(d.ref[i])
		if r < 0 {
			r = -1 - r
			return d.hitCon[r*dim : (r+1)*dim]
		}
		return d.con[s][r*dim : (r+1)*dim]
	}
	return d.con[s][i*dim : (i+1)*dim]
}

func (d *Detector) rawScore(s, i int) float32 { return d.rsc[s*d.opts.MaxBatch+i] }

// observe adds an observing model's scores of one batch (its first packet
// at packet time first) to its slot's sample; calibrationCut keeps every
// observed packet inside the grace period.
func (d *Detector) observe(m *model, scores []float32, first int64) {
	if d.calModel[m.slot] != m {
		d.calModel[m.slot] = m
		d.cal[m.slot].Reset(first)
	}
	d.cal[m.slot].Add(scores)
}

// calibrationCut finishes the calibration of every observing model whose
// grace period ended before pkts[0], and returns the index of the first
// packet after the end of a grace period still running (len(pkts) if none
// ends inside pkts).
func (d *Detector) calibrationCut(pkts []event.Packet) int {
	cut := len(pkts)
	if d.opts.Calibrate <= 0 || len(pkts) == 0 {
		return cut
	}
	grace := int64(d.opts.Calibrate)
	for s := range nslots {
		m := d.models[s].Load()
		if m == nil || !m.observing {
			continue
		}
		start := pkts[0].TimestampNs // a model not yet observed starts here
		if d.calModel[s] == m {
			start = d.cal[s].Start()
		}
		if pkts[0].TimestampNs-start >= grace {
			d.finishCalibration(m)
			continue
		}
		cut = min(cut, selfcal.Cut(len(pkts), func(i int) int64 { return pkts[i].TimestampNs }, start, grace))
	}
	return cut
}

// finishCalibration raises m's threshold to the local quantile of its
// observed scores (never lowers it) and marks it calibrated. The caller
// holds mu (no model swap in between).
func (d *Detector) finishCalibration(m *model) {
	nm := *m
	local, n, ok := d.cal[m.slot].Finish(d.opts.CalibrateQuantile)
	nm.observing, nm.calibrated, nm.calSamples = false, true, n
	if ok {
		nm.calLocal, nm.thr = local, max(nm.thr, local)
	}
	d.calModel[m.slot] = nil
	if !d.models[m.slot].CompareAndSwap(m, &nm) {
		return
	}
	d.log.Info("per-sensor calibration done", "feature_set", nm.info.FeatureSet, "samples", nm.calSamples,
		"quantile", d.opts.CalibrateQuantile, "local", nm.calLocal, "model_threshold", nm.info.Threshold, "threshold", nm.thr)
}

// calibratedAll reports whether a model is loaded and none is observing:
// the end of the sensor's initial grace period.
func (d *Detector) calibratedAll() bool {
	any := false
	for s := range nslots {
		if m := d.models[s].Load(); m != nil {
			if m.observing {
				return false
			}
			any = true
		}
	}
	return any
}

// arpClaim is what nethost's extractor said of a packet: an ARP claim
// (ARPClaim), and the MAC it replaced (ARPPreviousMAC).
type arpClaim struct {
	is, changed bool
	prev        [6]byte
}

func claimOf(e *nhfeat.Extractor) arpClaim {
	if !e.ARPClaim() {
		return arpClaim{}
	}
	prev, changed := e.ARPPreviousMAC()
	return arpClaim{is: true, changed: changed, prev: prev}
}

// packetContext describes p for the finding; claim marks an ARP claim
// (ContextARPClaim, ContextARPPrevMAC).
func packetContext(p *event.Packet, m *model, claim arpClaim) map[string]string {
	ctx := map[string]string{
		sdk.ContextProto:    p.ProtoName(),
		ContextTimeNs:       strconv.FormatInt(p.TimestampNs, 10),
		ContextLength:       strconv.Itoa(int(p.Length)),
		ContextSrcMAC:       macString(p.SrcMAC),
		ContextModel:        m.info.Name,
		ContextModelVersion: m.ctxVer,
		ContextModelDigest:  m.info.Digest,
		ContextFeatureSet:   m.info.FeatureSet,
	}
	if p.Flags&(event.FlagIPv4|event.FlagIPv6|event.FlagARP) != 0 {
		ctx[sdk.ContextSrcIP] = p.SrcAddr().String()
		ctx[sdk.ContextDstIP] = p.DstAddr().String()
	}
	if p.Proto == event.ProtoTCP || p.Proto == event.ProtoUDP {
		ctx[sdk.ContextSrcPort] = strconv.Itoa(int(p.SrcPort))
		ctx[sdk.ContextDstPort] = strconv.Itoa(int(p.DstPort))
	}
	if p.Proto == event.ProtoTCP {
		ctx[ContextTCPFlags] = strconv.Itoa(int(p.TCPFlags))
	}
	if claim.is {
		ctx[ContextARPClaim] = "1"
	}
	if claim.changed {
		ctx[ContextARPPrevMAC] = macString(claim.prev)
	}
	return ctx
}

func macString(m [6]byte) string {
	const hexd = "0123456789abcdef"
	b := make([]byte, 0, 17)
	for i, x := range m {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, hexd[x>>4], hexd[x&15])
	}
	return string(b)
}

func (d *Detector) updateMem() {
	var mem int64
	var ev uint64
	var ent int64
	if d.nf != nil {
		a := d.nf.Stats()
		mem += a.MemoryBytes
		for _, t := range a.Tables {
			ev += t.Evictions
			ent += int64(t.Entries)
		}
	}
	if d.nh != nil {
		for _, b := range []nhfeat.Stats{d.nh.Stats(), d.nh.PairStats()} {
			mem += b.MemoryBytes
			ev += b.Evictions
			ent += int64(b.Entries)
		}
	}
	if d.cache != nil {
		mem += int64(len(d.cache.entries)) * int64(unsafe.Sizeof(hostEntry{}))
	}
	if d.lead != nil {
		mem += int64(len(d.lead.entries))*int64(unsafe.Sizeof(leadEntry{})) + int64(len(d.lead.tags))*int64(unsafe.Sizeof(leadTag{}))
		d.leadEvictions.Store(d.lead.evicted)
	}
	if d.beacon != nil {
		mem += int64(len(d.beacon.entries))*int64(unsafe.Sizeof(beaconEntry{})) + int64(len(d.beacon.tags))*int64(unsafe.Sizeof(beaconTag{}))
	}
	if mem > d.memBytes.Load()+1<<20 && mem > 4<<20 {
		// A feature table doubled: the old slot arrays are garbage now.
		// Return them (and other freed spans) to the OS at once rather than
		// when the background scavenger gets to them; otherwise the old and
		// the new arrays stay resident together (about 4 MB more peak RSS
		// on the reference capture). Tables double at most a few times.
		debug.FreeOSMemory()
	}
	d.memBytes.Store(mem)
	d.evictions.Store(ev)
	d.entries.Store(ent)
}

// Health implements sdk.Detector. MemoryBytes is the feature state (flow
// tables, allocated up front); Stats carry counters and the active
// thresholds (×1e6).
func (d *Detector) Health(_ context.Context) sdk.Health {
	h := sdk.Health{
		OK:          true,
		Model:       d.primary(),
		MemoryBytes: uint64(d.memBytes.Load()),
		Stats: map[string]uint64{
			"scored":           d.scored.Load(),
			"anomalies":        d.anomalies.Load(),
			"flow_evictions":   d.evictions.Load(),
			"flow_entries":     uint64(d.entries.Load()),
			"flow_table_bytes": uint64(d.memBytes.Load()),
			// sources whose lead-in slots were replaced while still recent
			// (lead.go): a later finding of theirs starts later than it could
			"lead_evictions": d.leadEvictions.Load(),
			// connection starts the beacon rule flagged (beacon.go)
			"beacon_starts": d.beacons.Load(),
		},
	}
	var loaded int
	for s := range nslots {
		if m := d.models[s].Load(); m != nil {
			loaded++
			h.Stats["threshold_micro_"+m.info.FeatureSet] = uint64(float64(m.thr) * 1e6)
			if d.opts.Calibrate > 0 {
				selfcal.Report(h.Stats, selfcal.State{FeatureSet: m.info.FeatureSet, Digest: m.info.Digest,
					Model: m.info.Threshold, Active: m.thr, Calibrated: m.calibrated, Local: m.calLocal, Samples: m.calSamples})
			}
		}
	}
	switch {
	case loaded == 0:
		h.Message = "no model loaded: scoring nothing"
	case !d.calDone.Load():
		h.Message = fmt.Sprintf("calibrating: observing local traffic for %s (packet time) before flagging", d.opts.Calibrate)
	default:
		h.Message = fmt.Sprintf("%d model(s) active", loaded)
	}
	return h
}

// Close releases the models.
func (d *Detector) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for s := range nslots {
		if m := d.models[s].Swap(nil); m != nil {
			errs = append(errs, m.scorer.Close())
		}
	}
	return errors.Join(errs...)
}
