// Package filedetect is the agent's file-event detection pipeline: the
// recursive watcher (agent/watch) produces file events with content
// statistics, which go in batches (at least BatchMin events per call, or
// whatever arrived within BatchDelay; under load, every batch already
// waiting, up to BatchMax) over unary gRPC calls to the
// fileactivity detector plugin (agent/pluginhost); the anomalies it returns
// are merged into findings (Aggregator: one burst finding per tree for mass
// renaming, encryption or deletion, one finding per path for an anomalous
// file) that go to a pipeline.Sink (the spool in `vigil-agent run --watch`).
// Scan does the same offline for the files of a folder (`vigil-agent scan
// --dir`).
//
// It implements agent/pipeline.Source (with Counters and ModelReporter). It
// is part of the agent core: pure Go, it never links ONNX Runtime (the
// plugin does) and imports no plugin package.
package filedetect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/pluginhost"
	"github.com/vigil-edge/vigil/agent/update"
	"github.com/vigil-edge/vigil/agent/watch"
	"github.com/vigil-edge/vigil/internal/fsutil"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Defaults of Config.
const (
	DefaultBatchMin   = 64
	DefaultBatchMax   = 1024 // the plugin's own chunk; larger calls only cost memory on both sides
	DefaultBatchDelay = 250 * time.Millisecond
)

// Config configures a Pipeline.
type Config struct {
	// Plugin is the fileactivity plugin binary; Bundle is given to it at
	// every start (-bundle).
	Plugin string
	Bundle detect.BundleInfo
	// ORTLib is passed to the plugin as ONNXRUNTIME_LIB.
	ORTLib string
	// PluginArgs are extra plugin arguments (e.g. -calibrate 10m: per-sensor
	// calibration, followed as detect.Calibration describes).
	PluginArgs []string
	// CalibrationFile, with a calibration grace period in PluginArgs, keeps
	// the model's per-sensor calibration across agent restarts
	// (detect.Calibration.Persist).
	CalibrationFile string
	// StageBundle copies the bundle into a private directory the
	// unprivileged plugin can read (for a bundle in a user's home).
	StageBundle bool

	// Watch configures the watcher (Roots: the trees to watch).
	Watch watch.Config
	// BatchMin events are sent to the plugin in one call as soon as they
	// are there; fewer wait at most BatchDelay. BatchMax bounds a call.
	BatchMin, BatchMax int
	BatchDelay         time.Duration

	Aggregate AggregatorConfig
	// Host tunes the plugin host (Path, Args, Env and Logger are set here).
	Host   pluginhost.Config
	Logger *slog.Logger
}

func (c *Config) defaults() {
	if c.BatchMin <= 0 {
		c.BatchMin = DefaultBatchMin
	}
	if c.BatchMax < c.BatchMin {
		c.BatchMax = max(DefaultBatchMax, c.BatchMin)
	}
	if c.BatchDelay <= 0 {
		c.BatchDelay = DefaultBatchDelay
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Pipeline watches trees and reports anomalous file activity; it is a
// pipeline.Source.
type Pipeline struct {
	cfg  Config
	log  *slog.Logger
	agg  *Aggregator
	eng  *engine
	w    atomic.Pointer[watch.Watcher]
	refs atomic.Pointer[[]*wirev1.ModelRef] // the model the plugin runs
	shadowState
}

var (
	_ pipeline.Source        = (*Pipeline)(nil)
	_ pipeline.Counters      = (*Pipeline)(nil)
	_ pipeline.ModelReporter = (*Pipeline)(nil)
)

// New checks the configuration and returns a pipeline.
func New(cfg Config) (*Pipeline, error) {
	cfg.defaults()
	if cfg.Plugin == "" {
		return nil, errors.New("filedetect: no detector plugin")
	}
	if cfg.Bundle.Path == "" {
		return nil, ErrNoBundle
	}
	if len(cfg.Watch.Roots) == 0 {
		return nil, errors.New("filedetect: no folder to watch")
	}
	agg := NewAggregator(cfg.Aggregate)
	p := &Pipeline{cfg: cfg, log: cfg.Logger, agg: agg, eng: &engine{cfg: &cfg, agg: agg}}
	p.setRef(cfg.Bundle.Name, cfg.Bundle.Version, cfg.Bundle.Digest)
	if cfg.CalibrationFile != "" && p.eng.calibrating() {
		p.eng.cal.Persist(cfg.CalibrationFile, cfg.PluginArgs, p.log)
	}
	if err := p.eng.prepare(p.log); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Pipeline) setRef(name string, version uint64, digest string) {
	p.refs.Store(&[]*wirev1.ModelRef{{Name: name, Version: version, Digest: digest, Detector: DetectorName}})
}

// ModelLoaders implements the agent's ModelLoaderSource (agent/app): the
// updater hands a newly activated fileactivity model to this pipeline's
// plugin host, so the running plugin scores with it at once (and reloads it
// after a restart), and the pipeline reports it as its active model. With
// Config.StageBundle the bundle is first copied into the pipeline's stage
// directory, which the plugin's sandbox lets it read; without it the plugin
// must be able to read the updater's path.
func (p *Pipeline) ModelLoaders() update.LoaderMap {
	return update.LoaderMap{DetectorName: &modelLoader{HostLoader: update.HostLoader{Host: p.eng.host.Load(), StageDir: p.eng.stageDir}, p: p}}
}

// modelLoader is the plugin host's update.ModelLoader that also records
// the model the pipeline runs.
type modelLoader struct {
	update.HostLoader
	p *Pipeline
}

// LoadModel implements update.ModelLoader.
func (l *modelLoader) LoadModel(ctx context.Context, path string) (sdk.ModelInfo, error) {
	m, err := l.HostLoader.LoadModel(ctx, path)
	if err != nil {
		return m, err
	}
	l.p.setRef(m.Name, m.Version, m.Digest)
	l.p.log.Info("fileactivity model loaded into the running plugin", "name", m.Name, "version", m.Version)
	return m, nil
}

// Name implements pipeline.Source.
func (p *Pipeline) Name() string { return "fileactivity" }

// ActiveModels implements pipeline.ModelReporter.
func (p *Pipeline) ActiveModels() []*wirev1.ModelRef { return *p.refs.Load() }

// Stats are the pipeline's counters.
type Stats struct {
	Watch      watch.Stats
	Host       pluginhost.Stats
	Events     uint64 // events received from the watcher (or the scan)
	Scored     uint64 // events the plugin scored
	Lost       uint64 // events not scored (plugin down or failing)
	Calls      uint64 // Score calls
	Aggregator AggregatorStats
	// Shadow mode (shadow.go): events the shadow model did not score
	// (its queue full, or its plugin failing), and its anomalies, dropped.
	ShadowDropped, ShadowAnomalies uint64
}

// Stats returns a snapshot.
func (p *Pipeline) Stats() Stats {
	st := p.eng.stats()
	if w := p.w.Load(); w != nil {
		st.Watch = w.Stats()
	}
	return st
}

// Counters implements pipeline.Counters.
func (p *Pipeline) Counters() map[string]uint64 { return p.counters(p.Stats()) }

// counters names the counters of st and of the engine's outbox and
// calibration.
func (p *Pipeline) counters(st Stats) map[string]uint64 {
	out := p.eng.out.Stats()
	c := map[string]uint64{
		"file_events":            st.Events,
		"file_events_scored":     st.Scored,
		"file_events_lost":       st.Lost,
		"file_anomalies":         st.Aggregator.Anomalies,
		"file_findings":          st.Aggregator.FileFindings,
		"file_burst_findings":    st.Aggregator.BurstFindings,
		"file_suppressed":        st.Aggregator.Suppressed,
		"file_plugin_restarts":   st.Host.Restarts,
		"file_plugin_unconfined": st.Host.Unconfined,
		"file_plugin_unfiltered": st.Host.Unfiltered,
		"watch_dirs":             uint64(st.Watch.Watches),
		"watch_dropped":          st.Watch.Dropped,
		"watch_overflows":        st.Watch.Overflows,
		"watch_rescans":          st.Watch.Rescans,
		"watch_vanished":         st.Watch.Vanished,
		"watch_denied":           st.Watch.Denied,
		"watch_limit":            st.Watch.WatchLimit,
		"watch_roots_lost":       st.Watch.RootsLost,
		"file_shadow_dropped":    st.ShadowDropped,
		"file_shadow_anomalies":  st.ShadowAnomalies,
		// the spool could not take them: failed appends, and findings
		// dropped from the full outbox
		"file_append_errors": out.AppendErrors,
		"file_findings_lost": out.Lost,
		// the plugin host: launches that failed, lines of the plugin's
		// stderr over the rate limit, anomalies of the plugin's answers
		// dropped or clamped (sdk.CheckResult)
		"file_plugin_start_failures":    st.Host.StartFailures,
		"file_plugin_log_lines_dropped": st.Host.LogLinesDropped,
		"file_plugin_anomalies_refused": st.Host.AnomaliesRefused,
	}
	maps.Copy(c, p.eng.cal.Counters())
	return c
}

// calibrating tells whether the plugin was started with a calibration grace period.
func (e *engine) calibrating() bool { return detect.Calibrating(e.cfg.PluginArgs) }

// PluginPID returns the running plugin's process id, or 0.
func (p *Pipeline) PluginPID() int { return p.eng.pid() }

// Run implements pipeline.Source: it starts the plugin and the watcher and
// appends findings to sink until ctx ends; findings still open are flushed
// before it returns.
//
// A watch root deleted, renamed or replaced while the agent runs
// (watch.ErrRootGone) does not stop the pipeline, nor the agent: the loss
// is logged and counted (watch_roots_lost), and the watcher starts again on
// the roots that exist, then on all of them once the lost ones are back
// (checked every rootRetry). A root missing when the agent starts is a
// configuration error: Run fails.
func (p *Pipeline) Run(ctx context.Context, sink pipeline.Sink) error {
	defer p.endShadow()
	w, err := watch.New(p.cfg.Watch, p.log.With("part", "watch"))
	if err != nil {
		p.eng.removeStage()
		return fmt.Errorf("watch: %w", err)
	}
	p.w.Store(w)
	stop, err := p.eng.start(ctx, p.log)
	if err != nil {
		return err
	}
	defer stop()
	if p.eng.calibrating() {
		cctx, ccancel := context.WithCancel(ctx)
		calDone := make(chan struct{})
		go func() {
			defer close(calDone)
			p.eng.cal.Poll(cctx, func(ctx context.Context) (sdk.Health, error) { return p.eng.host.Load().Health(ctx) },
				detect.CalibrationPoll, p.log)
		}()
		defer func() { ccancel(); <-calDone }()
	}
	var runErr error
	for {
		var lost bool
		lost, runErr = p.watchOnce(ctx, w, sink)
		if !lost || runErr != nil || ctx.Err() != nil {
			break
		}
		if w = p.rewatch(ctx); w == nil {
			break
		}
	}
	// Every watcher closed its output after delivering what it had and
	// watchOnce scored it: flush every open finding.
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	p.eng.queue(p.agg.Flush())
	if err := p.eng.drain(sctx, sink, p.log); err != nil && runErr == nil {
		runErr = err
	}
	st := p.Stats()
	p.log.Info("file detection stopped", "events", st.Events, "scored", st.Scored, "lost", st.Lost,
		"anomalies", st.Aggregator.Anomalies, "file_findings", st.Aggregator.FileFindings,
		"burst_findings", st.Aggregator.BurstFindings, "watch_dropped", st.Watch.Dropped)
	return runErr
}

// rootRetry is how often the pipeline looks for lost watch roots.
const rootRetry = 5 * time.Second

// existingRoots returns the configured roots that are directories now (not
// links to one: the watcher refuses those, as it never follows links).
func (p *Pipeline) existingRoots() []string {
	var out []string
	for _, r := range p.cfg.Watch.Roots {
		if st, err := os.Lstat(r); err == nil && st.IsDir() {
			out = append(out, r)
		}
	}
	return out
}

// rewatch starts a watcher on the configured roots that exist, waiting
// (rootRetry) until one does; nil when ctx ends first.
func (p *Pipeline) rewatch(ctx context.Context) *watch.Watcher {
	t := time.NewTicker(rootRetry)
	defer t.Stop()
	for logged := false; ; {
		if roots := p.existingRoots(); len(roots) > 0 {
			cfg := p.cfg.Watch
			cfg.Roots = roots
			w, err := watch.New(cfg, p.log.With("part", "watch"))
			if err == nil {
				if prev := p.w.Load(); prev != nil {
					w.Carry(prev.Stats()) // keep the counts (dropped, overflows, roots lost) across watchers
				}
				p.w.Store(w)
				p.log.Warn("watching again", "roots", roots, "configured", p.cfg.Watch.Roots)
				return w
			}
			if !logged {
				p.log.Error("watch: cannot watch the roots again; retrying", "roots", roots, "err", err)
				logged = true
			}
		} else if !logged {
			p.log.Error("watch: no configured root exists; retrying", "roots", p.cfg.Watch.Roots, "every", rootRetry)
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// watchOnce runs watcher w until it ends, scoring its events and draining
// findings into sink. lost reports that it ended because a root was lost
// (watch.ErrRootGone), or, when w watches fewer roots than configured,
// because a missing root is back (w is stopped to watch it again).
func (p *Pipeline) watchOnce(ctx context.Context, w *watch.Watcher, sink pipeline.Sink) (lost bool, runErr error) {
	out := make(chan []event.File, 1024)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	werr := make(chan error, 1)
	go func() { werr <- w.Run(wctx, out) }()
	p.log.Info("watching", "roots", w.Roots(), "dirs", w.Stats().Watches)
	partial := len(w.Roots()) < len(p.cfg.Watch.Roots)

	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	retry := time.NewTicker(rootRetry)
	defer retry.Stop()
	delay := time.NewTimer(time.Hour)
	delay.Stop()
	var pending []event.File
	flush := func(ctx context.Context) {
		if len(pending) > 0 {
			p.eng.score(ctx, pending)
			pending = pending[:0]
		}
		delay.Stop()
	}
loop:
	for {
		select {
		case b, ok := <-out:
			if !ok {
				break loop
			}
			if len(pending) == 0 {
				delay.Reset(p.cfg.BatchDelay)
			}
			pending = append(pending, b...)
			// Under load more batches are already waiting (they arrived
			// while the previous call ran): take them into this call, up
			// to BatchMax, so the per-call cost shrinks as the load grows.
		more:
			for len(pending) < p.cfg.BatchMax {
				select {
				case b2, ok := <-out:
					if !ok {
						break more
					}
					pending = append(pending, b2...)
				default:
					break more
				}
			}
			if len(pending) >= p.cfg.BatchMin {
				flush(ctx)
			}
		case <-delay.C:
			flush(ctx)
		case <-tick.C:
			p.eng.queue(p.agg.Tick(p.eng.lastTs.Load() - int64(5*time.Second)))
			// A spool that cannot be written (a full or failing disk) may
			// heal: detection goes on, the findings stay (bounded,
			// counted) and the next tick retries.
			_ = p.eng.drain(ctx, sink, p.log)
		case <-retry.C:
			if partial && len(p.existingRoots()) > len(w.Roots()) {
				p.log.Warn("a lost watch root is back: watching it again")
				lost = true
				wcancel()
			}
		}
	}
	err := <-werr
	switch {
	case errors.Is(err, watch.ErrRootGone) && ctx.Err() == nil:
		p.log.Error("watch root lost: watching the other roots, and this one again when it is back", "err", err)
		lost = true
	case err != nil && runErr == nil && ctx.Err() == nil && !lost:
		runErr = fmt.Errorf("watch: %w", err)
	}
	// The watcher closed out after delivering what it had: score it.
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	flush(sctx)
	return lost, runErr
}

// engine is the part shared by the live pipeline and the offline scan: the
// plugin host, batching into Score calls, the aggregator and the pending
// findings.
type engine struct {
	cfg  *Config
	agg  *Aggregator
	host atomic.Pointer[pluginhost.Host]
	cal  detect.Calibration
	// stageDir holds the staged bundle (Config.StageBundle) and the
	// models the updater hands the plugin; removed when the plugin stops.
	stageDir string

	events, scored, lost, calls atomic.Uint64
	lastTs                      atomic.Int64
	failures                    atomic.Uint64

	// shadow is the running shadow instance (shadow.go), if any.
	shadow                         atomic.Pointer[shadowRun]
	shadowDropped, shadowAnomalies atomic.Uint64

	out pipeline.Outbox // findings on their way to the sink
}

func (e *engine) pid() int {
	if h := e.host.Load(); h != nil {
		return h.PID()
	}
	return 0
}

func (e *engine) stats() Stats {
	st := Stats{Events: e.events.Load(), Scored: e.scored.Load(), Lost: e.lost.Load(), Calls: e.calls.Load(),
		Aggregator: e.agg.Stats(), ShadowDropped: e.shadowDropped.Load(), ShadowAnomalies: e.shadowAnomalies.Load()}
	if h := e.host.Load(); h != nil {
		st.Host = h.Stats()
	}
	return st
}

// prepare creates the plugin host, not yet started, so that the updater
// can be handed it before the pipeline runs (Pipeline.ModelLoaders). With
// Config.StageBundle the bundle is first copied into a world-readable stage
// directory, and the plugin's sandbox lets it read that directory: the
// models the updater hands the running plugin are staged there too.
func (e *engine) prepare(log *slog.Logger) error {
	if e.host.Load() != nil {
		return nil
	}
	bundle := e.cfg.Bundle.Path
	if e.cfg.StageBundle {
		dir, staged, err := stageBundle(bundle)
		if err != nil {
			return err
		}
		bundle, e.stageDir = staged, dir
	}
	hc := e.hostConfig(bundle, log)
	if e.calibrating() {
		// A restarted plugin keeps its model's calibration.
		hc.LaunchArgs = e.cal.LaunchArgs
	}
	h, err := pluginhost.New(hc)
	if err != nil {
		e.removeStage()
		return fmt.Errorf("detector plugin: %w", err)
	}
	e.host.Store(h)
	return nil
}

// hostConfig is the plugin host configuration of an instance of the
// fileactivity plugin started with bundle ("": none): the pipeline's, or its
// shadow instance's (shadow.go). The plugin's sandbox lets it read the
// bundle (pluginhost adds -bundle paths) and the stage directory, if any.
func (e *engine) hostConfig(bundle string, log *slog.Logger) pluginhost.Config {
	hc := e.cfg.Host
	hc.Path = e.cfg.Plugin
	hc.Logger = log.With("plugin", filepath.Base(e.cfg.Plugin))
	if hc.RingSlots == 0 {
		hc.RingSlots = 1024 // file events do not use the packet ring
		hc.MaxBatch = min(hc.MaxBatch, 1024)
		if hc.MaxBatch == 0 {
			hc.MaxBatch = 1024
		}
	}
	hc.Args = slices.Clone(e.cfg.PluginArgs)
	if bundle != "" {
		hc.Args = append([]string{"-bundle", bundle}, hc.Args...)
	}
	hc.Sandbox.ReadOnly = slices.Clone(hc.Sandbox.ReadOnly)
	if e.stageDir != "" {
		hc.Sandbox.ReadOnly = append(hc.Sandbox.ReadOnly, e.stageDir)
	}
	if e.cfg.ORTLib != "" {
		hc.Env = append(slices.Clone(hc.Env), "ONNXRUNTIME_LIB="+e.cfg.ORTLib)
	}
	return hc
}

// removeStage removes the stage directory, if any.
func (e *engine) removeStage() {
	if e.stageDir != "" {
		_ = os.RemoveAll(e.stageDir)
	}
}

// start launches the plugin with the bundle (preparing the host first if
// prepare has not); stop closes it and removes the stage directory.
func (e *engine) start(ctx context.Context, log *slog.Logger) (stop func(), err error) {
	if err := e.prepare(log); err != nil {
		return nil, err
	}
	h := e.host.Load()
	if err := h.Start(ctx); err != nil {
		e.removeStage()
		return nil, fmt.Errorf("start detector plugin %s: %w", e.cfg.Plugin, err)
	}
	if hl, err := h.Health(ctx); err == nil {
		log.Info("detector plugin ready", "pid", h.PID(), "health", hl.Message, "model", hl.Model.Name, "version", hl.Model.Version)
		if hl.Model.Name == "" {
			log.Warn("fileactivity plugin has no model: nothing will be flagged", "bundle", e.cfg.Bundle.Path, "health", hl.Message)
		}
	}
	return func() {
		closeHost(h, log)
		e.removeStage()
	}, nil
}

// closeHost closes a plugin host, bounded: pluginhost's Close (at the time
// of writing) waits forever for a plugin without a packet ring after
// killing it (its exit watcher returns on cancellation without ending the
// instance). It returns once the plugin process is gone, or after 10 s.
func closeHost(h *pluginhost.Host, log *slog.Logger) {
	pid := h.PID()
	done := make(chan error, 1)
	go func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done <- h.Close(cctx)
	}()
	limit := time.After(10 * time.Second)
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	gone := 0
	for {
		select {
		case err := <-done:
			if err != nil {
				log.Warn("closing detector plugin", "err", err)
			}
			return
		case <-poll.C:
			if pid > 0 && !processExists(pid) {
				if gone++; gone >= 3 {
					return
				}
			}
		case <-limit:
			log.Warn("closing detector plugin: the host did not return in 10 s")
			return
		}
	}
}

// maxCallBytes bounds the encoded events of one Score call: the plugin's
// gRPC server refuses a request over 4 MiB (gRPC's default), and BatchMax
// events with long paths (up to three of event.MaxPathLen each) exceed it.
const maxCallBytes = 3 << 20

// score sends evs to the plugin in calls of at most BatchMax events and
// maxCallBytes and aggregates the anomalies. Failures (plugin down,
// restarting) lose the batch's events, counted.
func (e *engine) score(ctx context.Context, evs []event.File) {
	e.events.Add(uint64(len(evs)))
	if n := len(evs); n > 0 && evs[n-1].TimeNs > e.lastTs.Load() {
		e.lastTs.Store(evs[n-1].TimeNs)
	}
	h := e.host.Load()
	for off := 0; off < len(evs); {
		n, size := 0, 0
		for off+n < len(evs) && n < e.cfg.BatchMax {
			s := evs[off+n].EncodedSize()
			if n > 0 && size+s > maxCallBytes {
				break
			}
			size += s
			n++
		}
		b := evs[off : off+n]
		off += n
		e.calls.Add(1)
		res, err := h.ScoreFiles(ctx, b)
		if err != nil {
			e.lost.Add(uint64(len(b)))
			if e.failures.Add(1) <= 5 {
				e.cfg.Logger.Warn("file events not scored", "events", len(b), "err", err)
			}
			continue
		}
		e.scored.Add(uint64(len(b)))
		e.toShadow(b, res.Stats)
		for i := range res.Anomalies {
			an := &res.Anomalies[i]
			if an.Index >= uint64(len(b)) {
				continue
			}
			e.queue(e.agg.AddEvent(an, &b[an.Index]))
		}
	}
}

func (e *engine) queue(fs []*wirev1.Finding) { e.out.Add(fs) }

// drain appends the pending findings to sink. A failed append keeps them
// (bounded, counted: pipeline.Outbox) for the next drain; the first failure
// of a run of them is logged, and the end of the run.
func (e *engine) drain(ctx context.Context, sink pipeline.Sink, log *slog.Logger) error {
	turn, err := e.out.Drain(ctx, sink)
	switch st := e.out.Stats(); turn {
	case pipeline.Failed:
		log.Error("cannot append file findings to the spool; keeping them and retrying", "err", err,
			"pending", st.Pending, "lost", st.Lost)
	case pipeline.Recovered:
		log.Info("file findings reach the spool again", "append_errors", st.AppendErrors, "lost", st.Lost)
	}
	return err
}

// stageBundle copies a bundle into a new world-readable directory.
func stageBundle(p string) (string, string, error) {
	dir, err := os.MkdirTemp("", "vigil-fa-bundle-")
	if err != nil {
		return "", "", fmt.Errorf("stage bundle: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		_ = os.RemoveAll(dir)
		return "", "", fmt.Errorf("stage bundle: %w", err)
	}
	b, err := fsutil.ReadRegular(p, bundle.DefaultLimits().MaxTotal)
	if err != nil {
		_ = os.RemoveAll(dir)
		return "", "", fmt.Errorf("stage bundle: %w", err)
	}
	out := filepath.Join(dir, filepath.Base(p))
	if err := os.WriteFile(out, b, 0o644); err != nil {
		_ = os.RemoveAll(dir)
		return "", "", fmt.Errorf("stage bundle: %w", err)
	}
	return dir, out, nil
}

// processExists reports whether a process with this id exists (and is not
// a zombie).
func processExists(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}
