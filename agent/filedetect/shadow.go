package filedetect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"

	"github.com/vigil-edge/vigil/agent/pluginhost"
	"github.com/vigil-edge/vigil/agent/update"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Shadow mode (docs/rollouts.md): a shadow rollout runs a new fileactivity
// model beside the active one on the same file events, without findings, so
// that its alert rate can be compared with the active model's before it is
// activated anywhere. agent/detect does the same for packets.
//
// The shadow model runs in a second instance of the fileactivity plugin
// (same binary, same privileges and sandbox, the same plugin arguments),
// which loads the shadow bundle once it runs (update.StartShadowPlugin).
// Every batch the active plugin scored is
// handed, with the active model's statistics for it, to the shadow
// instance's worker through a bounded queue (shadowQueue batches): the
// worker scores the same events and passes both statistics, as one pair of
// the same events, to the observer (update.Updater.ObserveShadow). The
// active pipeline never waits for the shadow: a batch the queue cannot take
// is counted (file_shadow_dropped), as is a batch the shadow plugin fails
// to score. The shadow's anomalies are counted (file_shadow_anomalies) and
// dropped: they never reach the aggregator, so never a finding. The
// plugin's features follow each tree's activity over time, so a shadow that
// dropped events sees a thinner stream than the active one from then on;
// the counter says so.

// shadowQueue bounds the batches waiting for the shadow plugin (each at
// most BatchMax events).
const shadowQueue = 64

// shadowBatch is a batch the active plugin scored, with its statistics.
type shadowBatch struct {
	evs    []event.File
	active sdk.Stats
}

// shadowRun is the running shadow instance.
type shadowRun struct {
	host    *pluginhost.Host
	observe func(active, shadow sdk.Stats)
	staged  string // the bundle copy in the stage directory ("" = none)
	info    sdk.ModelInfo
	in      chan shadowBatch
	cancel  context.CancelFunc
	done    chan struct{}
}

// offer queues a copy of a scored batch for the shadow; false when the
// queue is full.
func (s *shadowRun) offer(evs []event.File, active sdk.Stats) bool {
	select {
	case s.in <- shadowBatch{evs: slices.Clone(evs), active: active}:
		return true
	default:
		return false
	}
}

// run scores the queued batches with the shadow plugin until ctx ends.
func (s *shadowRun) run(ctx context.Context, e *engine, log *slog.Logger) {
	defer close(s.done)
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case b := <-s.in:
			res, err := s.host.ScoreFiles(ctx, b.evs)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				e.shadowDropped.Add(uint64(len(b.evs)))
				if failures++; failures <= 5 {
					log.Warn("file events not scored by the shadow model", "events", len(b.evs), "err", err)
				}
				continue
			}
			e.shadowAnomalies.Add(res.Stats.Anomalies)
			if s.observe != nil {
				s.observe(b.active, res.Stats)
			}
		}
	}
}

// toShadow hands a batch the active plugin scored to the shadow instance,
// if one runs, without waiting.
func (e *engine) toShadow(evs []event.File, active sdk.Stats) {
	if sh := e.shadow.Load(); sh != nil && !sh.offer(evs, active) {
		e.shadowDropped.Add(uint64(len(evs)))
	}
}

// ErrNotRunning is returned by LoadShadow once the pipeline has stopped.
var ErrNotRunning = errors.New("filedetect: the file pipeline is not running")

var _ update.ShadowLoader = (*modelLoader)(nil)

// LoadShadow implements update.ShadowLoader.
func (l *modelLoader) LoadShadow(ctx context.Context, path string, observe func(active, shadow sdk.Stats)) (sdk.ModelInfo, error) {
	return l.p.LoadShadow(ctx, path, observe)
}

// StopShadow implements update.ShadowLoader.
func (l *modelLoader) StopShadow(ctx context.Context) error { return l.p.StopShadow(ctx) }

// LoadShadow starts a shadow instance of the fileactivity plugin running the
// bundle at path (already verified by the updater) beside the active one,
// replacing any shadow instance already running. observe receives the
// paired statistics of every batch both scored. The new instance must
// start, load the bundle, report itself healthy and score the probe batch
// with finite scores; otherwise nothing runs. While the pipeline's
// own plugin is starting it waits for it (at most the host's StartTimeout).
func (p *Pipeline) LoadShadow(ctx context.Context, path string, observe func(active, shadow sdk.Stats)) (sdk.ModelInfo, error) {
	p.shadowMu.Lock()
	defer p.shadowMu.Unlock()
	if p.ended {
		return sdk.ModelInfo{}, ErrNotRunning
	}
	b, err := bundle.Read(path, bundle.DefaultLimits())
	if err != nil {
		return sdk.ModelInfo{}, fmt.Errorf("shadow bundle: %w", err)
	}
	if b.Manifest.Detector != DetectorName {
		return sdk.ModelInfo{}, fmt.Errorf("shadow bundle: detector %q is not %s", b.Manifest.Detector, DetectorName)
	}
	if err := p.eng.host.Load().WaitStarted(ctx); err != nil {
		return sdk.ModelInfo{}, fmt.Errorf("shadow model: %w", err)
	}
	p.stopShadowLocked()

	log := p.log.With("role", "shadow")
	hc := p.eng.hostConfig("", log) // the shadow bundle is loaded once the instance runs
	if p.eng.calibrating() {
		// The calibrations of this sensor so far: with one, the plugin knows
		// the sensor's grace period is over, and the shadow model observes
		// while flagging at its own threshold, as it would once activated,
		// instead of keeping silent for a grace period of its own.
		hc.LaunchArgs = p.eng.cal.LaunchArgs
	}
	h, staged, err := update.StartShadowPlugin(ctx, hc, p.eng.stageDir, path, &b.Manifest,
		func(h *pluginhost.Host) { closeHost(h, log) })
	if err != nil {
		return sdk.ModelInfo{}, err
	}
	sctx, scancel := context.WithCancel(context.Background())
	sr := &shadowRun{host: h, observe: observe, staged: staged, in: make(chan shadowBatch, shadowQueue), cancel: scancel,
		done: make(chan struct{})}
	sr.info = sdk.ModelInfo{Name: b.Manifest.Name, Version: b.Manifest.Version, FeatureSet: b.Manifest.FeatureSet,
		Threshold: float32(b.Manifest.Threshold)}
	go sr.run(sctx, p.eng, log)
	p.eng.shadow.Store(sr)
	p.log.Info("shadow model started", "name", b.Manifest.Name, "version", b.Manifest.Version, "pid", h.PID())
	return sr.info, nil
}

// StopShadow stops the shadow instance, if one runs. It implements
// update.ShadowLoader.
func (p *Pipeline) StopShadow(context.Context) error {
	p.shadowMu.Lock()
	defer p.shadowMu.Unlock()
	p.stopShadowLocked()
	return nil
}

// stopShadowLocked stops the shadow worker, then its plugin; the caller
// holds shadowMu. Batches still queued are not scored: the observer saw
// every pair it was given.
func (p *Pipeline) stopShadowLocked() {
	sh := p.eng.shadow.Swap(nil)
	if sh == nil {
		return
	}
	sh.cancel()
	<-sh.done
	closeHost(sh.host, p.log.With("role", "shadow"))
	if sh.staged != "" {
		_ = os.Remove(sh.staged)
	}
	p.log.Info("shadow model stopped", "name", sh.info.Name, "version", sh.info.Version)
}

// endShadow stops the shadow instance when the pipeline stops; no shadow
// starts after it.
func (p *Pipeline) endShadow() {
	p.shadowMu.Lock()
	defer p.shadowMu.Unlock()
	p.ended = true
	p.stopShadowLocked()
}

// shadowState is the pipeline's part of shadow mode.
type shadowState struct {
	shadowMu sync.Mutex
	ended    bool // Run returned: LoadShadow refuses
}
