package detect

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/pluginhost"
	"github.com/vigil-edge/vigil/agent/update"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/plugins/sdk"
)

// Shadow mode (issue 5): a shadow rollout runs a new model beside the active
// one on the same packets, without findings, so that its alert rate can be
// compared with the active model's before it is activated anywhere.
//
// The shadow model runs in a second instance of the same detector plugin
// binary (same checksum pin, same privileges and sandbox, its own ring),
// started with the bundles the active instance runs, the shadow bundle
// replacing the one of its feature set: the two instances then differ only by
// that model. The capture loop pushes every packet batch into both rings; the
// shadow ring is fed with TryPush, so a slow shadow never slows the active
// pipeline (what it cannot take is counted as shadow_dropped). The shadow's
// anomalies are counted (shadow_anomalies) and dropped: they never reach the
// aggregator, so never a finding. Both instances' per-batch sdk.Stats are
// accumulated and, every pipeline tick (250 ms) at which both produced
// results, handed to the observer (update.Updater.ObserveShadow) as one pair:
// the two plugins cut their batches independently, so the pairs cover the
// same stretch of traffic up to the batches still in flight.

// shadowRun is the running shadow instance.
type shadowRun struct {
	host    *pluginhost.Host
	observe func(active, shadow sdk.Stats)
	staged  string // the bundle copy in the stage directory ("" = none)
	info    sdk.ModelInfo

	mu             sync.Mutex
	active, shadow sdk.Stats // accumulated since the last observe
}

// mergeStats adds s to d: counts add up, quantiles and max keep the larger.
func mergeStats(d *sdk.Stats, s sdk.Stats) {
	d.Count += s.Count
	d.Anomalies += s.Anomalies
	d.P50 = max(d.P50, s.P50)
	d.P90 = max(d.P90, s.P90)
	d.P99 = max(d.P99, s.P99)
	d.Max = max(d.Max, s.Max)
}

func (s *shadowRun) addActive(st sdk.Stats) {
	s.mu.Lock()
	mergeStats(&s.active, st)
	s.mu.Unlock()
}

// take returns the accumulated pair when both models scored something since
// the last call, and resets it.
func (s *shadowRun) take() (a, sh sdk.Stats, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active.Count == 0 || s.shadow.Count == 0 {
		return a, sh, false
	}
	a, sh = s.active, s.shadow
	s.active, s.shadow = sdk.Stats{}, sdk.Stats{}
	return a, sh, true
}

// flushShadow hands the accumulated pair to the observer (pipeline tick).
func (p *Pipeline) flushShadow() {
	sh := p.shadow.Load()
	if sh == nil || sh.observe == nil {
		return
	}
	if a, s, ok := sh.take(); ok {
		sh.observe(a, s)
	}
}

// pipelineLoader is the pipeline's update.ModelLoader: the plugin host's
// loader, which also remembers what the plugin runs per feature set, and the
// shadow instance (update.ShadowLoader).
type pipelineLoader struct {
	update.HostLoader
	p *Pipeline
}

var (
	_ update.ModelLoader  = (*pipelineLoader)(nil)
	_ update.ShadowLoader = (*pipelineLoader)(nil)
)

// LoadModel implements update.ModelLoader.
func (l *pipelineLoader) LoadModel(ctx context.Context, path string) (sdk.ModelInfo, error) {
	// With a stage directory (unprivileged plugin), a world-readable copy there.
	plugPath, err := update.StageForPlugin(l.p.stageDir, path, "")
	if err != nil {
		return sdk.ModelInfo{}, err
	}
	m, err := l.Host.LoadModel(ctx, plugPath)
	if err != nil {
		return m, err
	}
	if m.FeatureSet != "" {
		l.p.loadedMu.Lock()
		l.p.loaded[sdk.FeatureFamily(m.FeatureSet)] = plugPath
		l.p.loadedMu.Unlock()
	}
	l.p.setModel(m)
	return m, nil
}

// LoadShadow implements update.ShadowLoader.
func (l *pipelineLoader) LoadShadow(ctx context.Context, path string, observe func(active, shadow sdk.Stats)) (sdk.ModelInfo, error) {
	return l.p.LoadShadow(ctx, path, observe)
}

// StopShadow implements update.ShadowLoader.
func (l *pipelineLoader) StopShadow(ctx context.Context) error { return l.p.StopShadow(ctx) }

// ErrNotRunning is returned by LoadShadow when the pipeline does not run.
var ErrNotRunning = errors.New("detect: the packet pipeline is not running")

// LoadShadow starts a shadow instance of the detector plugin running the
// bundle at path (already verified by the updater) beside the active one,
// replacing any shadow instance already running. observe receives the
// paired statistics. The new instance must start, load the bundle and score
// the probe batch with finite scores; otherwise nothing runs. While the
// pipeline is starting (its plugin starting, its start bundles loading) it
// waits for it, at most the plugin host's StartTimeout: an offer repeated at
// the agent's first Hello is not refused.
func (p *Pipeline) LoadShadow(ctx context.Context, path string, observe func(active, shadow sdk.Stats)) (sdk.ModelInfo, error) {
	p.shadowMu.Lock()
	defer p.shadowMu.Unlock()
	if !p.running.Load() {
		wait := p.cfg.Host.StartTimeout
		if wait <= 0 {
			wait = pluginhost.DefaultStartTimeout
		}
		t := time.NewTimer(wait)
		select {
		case <-p.ready:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		if !p.running.Load() { // not started in time, or already stopped
			return sdk.ModelInfo{}, ErrNotRunning
		}
	}
	b, err := bundle.Read(path, bundle.DefaultLimits())
	if err != nil {
		return sdk.ModelInfo{}, fmt.Errorf("shadow bundle: %w", err)
	}
	p.stopShadowLocked(ctx)
	// The active instance's bundles, the shadow replacing its feature-set
	// family's.
	p.loadedMu.Lock()
	sets := make([]string, 0, len(p.loaded)+1)
	for fam := range p.loaded {
		if fam != sdk.FeatureFamily(b.Manifest.FeatureSet) {
			sets = append(sets, fam)
		}
	}
	sort.Strings(sets)
	bundles := make([]string, 0, len(sets)+1)
	for _, fs := range sets {
		bundles = append(bundles, p.loaded[fs])
	}
	p.loadedMu.Unlock()

	sr := &shadowRun{observe: observe}
	hc := p.hostConfig(bundles, func(br sdk.BatchResult) {
		sr.mu.Lock()
		mergeStats(&sr.shadow, br.Stats)
		sr.mu.Unlock()
		// Never a finding: counted (all of them, as the plugin's statistics
		// count them; the anomaly list itself may be capped), then dropped.
		p.shadowAnomalies.Add(br.Stats.Anomalies)
	}, "shadow")
	h, staged, err := update.StartShadowPlugin(ctx, hc, p.stageDir, path, &b.Manifest, func(h *pluginhost.Host) {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = h.Close(cctx)
	})
	if err != nil {
		return sdk.ModelInfo{}, err
	}
	sr.host, sr.staged = h, staged
	sr.info = sdk.ModelInfo{Name: b.Manifest.Name, Version: b.Manifest.Version, FeatureSet: b.Manifest.FeatureSet,
		Threshold: float32(b.Manifest.Threshold)}
	p.shadow.Store(sr)
	p.log.Info("shadow model started", "name", b.Manifest.Name, "version", b.Manifest.Version,
		"feature_set", b.Manifest.FeatureSet, "pid", h.PID(), "bundles", len(bundles)+1)
	return sr.info, nil
}

// StopShadow stops the shadow instance, if one runs.
func (p *Pipeline) StopShadow(ctx context.Context) error {
	p.shadowMu.Lock()
	defer p.shadowMu.Unlock()
	p.stopShadowLocked(ctx)
	return nil
}

// ShadowModel returns the model the shadow instance runs.
func (p *Pipeline) ShadowModel() (sdk.ModelInfo, bool) {
	if sh := p.shadow.Load(); sh != nil {
		return sh.info, true
	}
	return sdk.ModelInfo{}, false
}

func (p *Pipeline) stopShadowLocked(ctx context.Context) {
	sh := p.shadow.Swap(nil)
	if sh == nil {
		return
	}
	// The capture loop may be in TryPush on this host right now: take the
	// push lock so that Close never races a producer.
	p.pushMu.Lock()
	p.pushMu.Unlock() //nolint:staticcheck // an empty critical section: wait for the running push
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := sh.host.Close(cctx); err != nil {
		p.log.Warn("closing shadow plugin", "err", err)
	}
	if sh.staged != "" {
		_ = os.Remove(sh.staged)
	}
	if a, s, ok := sh.take(); ok && sh.observe != nil {
		sh.observe(a, s)
	}
	p.log.Info("shadow model stopped", "name", sh.info.Name, "version", sh.info.Version)
}

// stopShadowAtEnd stops the shadow instance when the pipeline stops.
func (p *Pipeline) stopShadowAtEnd() {
	p.shadowMu.Lock()
	defer p.shadowMu.Unlock()
	p.running.Store(false)
	p.stopShadowLocked(context.Background())
}
