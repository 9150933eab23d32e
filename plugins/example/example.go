// Package example is a tiny detector that shows how to write a Vigil detector
// plugin and exercises the SDK in tests: it flags TCP packets with both SYN
// and FIN set (a classic scanner fingerprint) with a constant score. It loads
// no ONNX model: its "model bundle" is a small JSON file
// ({"name", "version", "threshold", "score"}).
package example

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// FeatureSet is the example's (one-feature) feature set.
const FeatureSet = "example/v1"

// Version is the example plugin's version.
const Version = "0.1.0"

// MaxBundleSize bounds the JSON "bundle" read by LoadModel.
const MaxBundleSize = 1 << 16

// model is one loaded "model".
type model struct {
	info  sdk.ModelInfo
	score float32
}

// Options configure the detector.
type Options struct {
	// Noop makes ScorePackets return nothing (for IPC benchmarks).
	Noop bool
	// BatchSleep makes every ScorePackets call sleep (a slow detector, for
	// the host's backpressure and loss tests).
	BatchSleep time.Duration
}

// Detector is the example detector.
type Detector struct {
	log   *slog.Logger
	opts  Options
	model atomic.Pointer[model]
	seen  atomic.Uint64
}

var (
	_ sdk.Detector = (*Detector)(nil)
)

// New returns the detector with its built-in model (threshold 0.5, score 1).
func New(log *slog.Logger, opts Options) *Detector {
	d := &Detector{log: log, opts: opts}
	d.model.Store(&model{
		info:  sdk.ModelInfo{Name: "builtin", Version: 0, Digest: "", FeatureSet: FeatureSet, Threshold: 0.5},
		score: 1,
	})
	return d
}

// Info implements sdk.Detector.
func (d *Detector) Info() sdk.Info {
	return sdk.Info{Name: "example", Version: Version, EventKind: sdk.EventPacket, FeatureSets: []string{FeatureSet}, Dim: 1}
}

type bundle struct {
	Name       string  `json:"name"`
	Version    uint64  `json:"version"`
	FeatureSet string  `json:"feature_set"`
	Threshold  float32 `json:"threshold"`
	Score      float32 `json:"score"`
}

// LoadModel implements sdk.Detector: it reads a JSON bundle; on any error
// the active model is unchanged.
func (d *Detector) LoadModel(_ context.Context, path string) (sdk.ModelInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return sdk.ModelInfo{}, fmt.Errorf("open bundle: %w", err)
	}
	defer f.Close()
	b := make([]byte, MaxBundleSize+1)
	n, _ := f.Read(b)
	if n > MaxBundleSize {
		return sdk.ModelInfo{}, fmt.Errorf("bundle %s larger than %d bytes", path, MaxBundleSize)
	}
	b = b[:n]
	var bu bundle
	if err := json.Unmarshal(b, &bu); err != nil {
		return sdk.ModelInfo{}, fmt.Errorf("parse bundle %s: %w", path, err)
	}
	if bu.Name == "" || bu.FeatureSet != FeatureSet || !(bu.Threshold > 0) {
		return sdk.ModelInfo{}, fmt.Errorf("bundle %s: want a name, feature set %q and a positive threshold", path, FeatureSet)
	}
	sum := sha256.Sum256(b)
	m := &model{
		info: sdk.ModelInfo{
			Name: bu.Name, Version: bu.Version, Digest: "sha256:" + hex.EncodeToString(sum[:]),
			FeatureSet: bu.FeatureSet, Threshold: bu.Threshold,
		},
		score: bu.Score,
	}
	d.model.Store(m)
	return m.info, nil
}

// ScorePackets implements sdk.Detector.
func (d *Detector) ScorePackets(_ context.Context, pkts []event.Packet) (sdk.Result, error) {
	d.seen.Add(uint64(len(pkts)))
	if d.opts.BatchSleep > 0 {
		time.Sleep(d.opts.BatchSleep)
	}
	if d.opts.Noop {
		return sdk.Result{}, nil
	}
	m := d.model.Load()
	var res sdk.Result
	res.Scores = make([]float32, len(pkts))
	for i := range pkts {
		p := &pkts[i]
		if p.Proto != event.ProtoTCP || p.TCPFlags&(event.TCPSyn|event.TCPFin) != event.TCPSyn|event.TCPFin {
			continue
		}
		res.Scores[i] = m.score
		if m.score < m.info.Threshold {
			continue
		}
		res.Anomalies = append(res.Anomalies, sdk.Anomaly{
			Index: uint64(i), Score: m.score, Threshold: m.info.Threshold,
			TopFeatures: []sdk.Contribution{{Name: "tcp_syn_fin", Contribution: m.score}},
			Context: map[string]string{
				sdk.ContextSrcIP: p.SrcAddr().String(), sdk.ContextDstIP: p.DstAddr().String(),
				sdk.ContextSrcPort: strconv.Itoa(int(p.SrcPort)), sdk.ContextDstPort: strconv.Itoa(int(p.DstPort)),
				sdk.ContextProto: p.ProtoName(),
			},
		})
	}
	return res, nil
}

// Health implements sdk.Detector.
func (d *Detector) Health(context.Context) sdk.Health {
	return sdk.Health{
		OK: true, Model: d.model.Load().info, MemoryBytes: 0,
		Stats: map[string]uint64{"packets_seen": d.seen.Load()},
	}
}
