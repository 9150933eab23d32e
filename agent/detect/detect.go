// Package detect is the agent's packet detection pipeline: it reads packets
// from capture sources (pcap files, live interfaces; agent/capture), pushes
// them through the shared-memory ring into the netflow detector plugin
// (agent/pluginhost), receives the anomalies the plugin returns, and merges
// them into findings (Aggregator) that go to a pipeline.Sink (the spool in
// `vigil-agent run`, memory in `vigil-agent scan`).
//
// It implements agent/pipeline.Source (with Counters and ModelReporter). It
// is part of the agent core: pure Go, it never links ONNX Runtime (the plugin
// does) and imports no plugin package.
package detect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-edge/vigil/agent/capture"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/pluginhost"
	"github.com/vigil-edge/vigil/agent/update"
	"github.com/vigil-edge/vigil/internal/fsutil"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Config configures a Pipeline.
type Config struct {
	// Plugin is the detector plugin binary; Bundles are given to it at every
	// start (-bundle, one per feature set); Bundle, if set, is loaded
	// through LoadModel after the start (e.g. `scan --bundle`).
	Plugin  string
	Bundles []BundleInfo
	Bundle  string
	// ORTLib is passed to the plugin as ONNXRUNTIME_LIB.
	ORTLib string
	// PluginArgs are extra plugin arguments (e.g. -calibrate 10m).
	PluginArgs []string
	// CalibrationFile, with a calibration grace period in PluginArgs, keeps
	// the models' per-sensor calibrations across agent restarts
	// (Calibration.Persist).
	CalibrationFile string
	// StageBundles copies the bundles into a private directory the
	// unprivileged plugin can read (for bundles in a user's home). It is
	// also the one directory of models the plugin's sandbox lets it read
	// (Host.Sandbox): without it, a model handed to the running plugin
	// later (the updater's, ModelLoaders) must lie beneath
	// Host.Sandbox.ReadOnly, or the plugin cannot open it.
	StageBundles bool

	// Pcaps are read in order, then (Follow) the pipeline idles until ctx
	// ends; Interfaces are captured live, concurrently.
	Pcaps      []string
	Interfaces []string
	Live       capture.LiveOptions
	// Follow keeps Run going after the pcaps end (`run`); without it Run
	// returns once every pcap is read and scored (`scan`).
	Follow bool

	Aggregate AggregatorConfig
	// Host tunes the plugin host (Path, Args, Env, OnResult and Logger are
	// set by the pipeline, which adds the bundles and the stage directory to
	// Sandbox.ReadOnly).
	Host pluginhost.Config
	// Progress, if set, is called about every 100 ms with the source stats.
	Progress func(capture.Stats)
	Logger   *slog.Logger
}

// Pipeline is a packet detection pipeline; it is a pipeline.Source.
type Pipeline struct {
	cfg  Config
	log  *slog.Logger
	agg  *Aggregator
	host atomic.Pointer[pluginhost.Host]

	pushMu sync.Mutex // the ring has one producer
	lastTs atomic.Int64

	srcMu   sync.Mutex
	sources []capture.Source
	done    capture.Stats // stats of closed sources

	out       pipeline.Outbox // findings on their way to the sink
	batchErrs atomic.Uint64

	models atomic.Pointer[[]runModel] // what the plugin runs, per feature set
	modMu  sync.Mutex                 // serialises setModel
	start  atomic.Pointer[time.Time]  // set by Run; read by Stats from other goroutines

	// stageDir holds the bundles copied for the unprivileged plugin
	// (Config.StageBundles) and the models the updater activates; Run
	// removes it when it returns.
	stageDir   string
	extra      string   // Config.Bundle as the plugin reads it
	pluginArgs []string // the plugin's command line (tests)

	// loaded is the bundle the plugin runs per feature-set family, as the plugin
	// reads it (start bundles, then what the updater loaded); the shadow
	// instance runs the same set with one bundle replaced.
	loadedMu sync.Mutex
	loaded   map[string]string

	// Shadow mode (shadow.go): a second plugin instance, its lifecycle
	// serialised by shadowMu.
	shadowMu                       sync.Mutex
	shadow                         atomic.Pointer[shadowRun]
	running                        atomic.Bool   // Run has started the plugin and not yet stopped
	ready                          chan struct{} // closed once running was first set
	readyOnce                      sync.Once
	shadowDropped, shadowAnomalies atomic.Uint64

	// cal follows the plugin's per-sensor calibration (calibration.go).
	cal Calibration
}

var (
	_ pipeline.Source        = (*Pipeline)(nil)
	_ pipeline.Counters      = (*Pipeline)(nil)
	_ pipeline.ModelReporter = (*Pipeline)(nil)
)

// New checks the configuration and returns a pipeline.
func New(cfg Config) (*Pipeline, error) {
	if cfg.Plugin == "" {
		return nil, errors.New("detect: no detector plugin")
	}
	if len(cfg.Bundles) == 0 && cfg.Bundle == "" {
		return nil, ErrNoBundle
	}
	if len(cfg.Pcaps) == 0 && len(cfg.Interfaces) == 0 {
		return nil, errors.New("detect: no packet source (give a pcap file or an interface)")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Pipeline{cfg: cfg, log: cfg.Logger, agg: NewAggregator(cfg.Aggregate), ready: make(chan struct{})}
	var ms []runModel
	for _, b := range cfg.Bundles {
		ms = append(ms, runModel{set: b.FeatureSet, ref: &wirev1.ModelRef{Name: b.Name, Version: b.Version, Digest: b.Digest, Detector: DetectorName}})
	}
	p.models.Store(&ms)
	if cfg.CalibrationFile != "" && p.calibrating() {
		p.cal.Persist(cfg.CalibrationFile, cfg.PluginArgs, p.log)
	}
	if err := p.prepare(); err != nil {
		if p.stageDir != "" {
			os.RemoveAll(p.stageDir)
		}
		return nil, err
	}
	return p, nil
}

// prepare stages the bundles (Config.StageBundles) and creates the plugin
// host, not yet started: ModelLoaders can hand it to the updater before Run.
func (p *Pipeline) prepare() error {
	bundles := make([]string, 0, len(p.cfg.Bundles))
	for _, b := range p.cfg.Bundles {
		bundles = append(bundles, b.Path)
	}
	p.extra = p.cfg.Bundle
	if p.cfg.StageBundles {
		dir, staged, err := stage(append(bundles, p.extra))
		if err != nil {
			return err
		}
		p.stageDir = dir
		bundles, p.extra = staged[:len(bundles)], staged[len(bundles)]
	}
	p.loaded = map[string]string{}
	for i, b := range p.cfg.Bundles {
		if b.FeatureSet != "" {
			p.loaded[sdk.FeatureFamily(b.FeatureSet)] = bundles[i]
		}
	}
	hc := p.hostConfig(bundles, p.onResult, "")
	p.pluginArgs = hc.Args
	h, err := pluginhost.New(hc)
	if err != nil {
		return fmt.Errorf("detector plugin: %w", err)
	}
	p.host.Store(h)
	return nil
}

// hostConfig is the plugin host configuration of an instance of the
// detector plugin that loads bundles at start (the pipeline's, or its shadow
// instance's, whose logs carry role).
func (p *Pipeline) hostConfig(bundles []string, onResult func(sdk.BatchResult), role string) pluginhost.Config {
	hc := p.cfg.Host
	hc.Path = p.cfg.Plugin
	hc.Logger = p.log.With("plugin", filepath.Base(p.cfg.Plugin))
	if role != "" {
		hc.Logger = hc.Logger.With("role", role)
	}
	hc.OnResult = onResult
	hc.Args = nil
	for _, b := range bundles {
		hc.Args = append(hc.Args, "-bundle", b)
	}
	hc.Args = append(hc.Args, p.cfg.PluginArgs...)
	if p.calibrating() {
		// A restarted plugin keeps the calibration of the models it runs
		// (calibration.go) instead of observing, silent, once more. The
		// shadow instance, which gets -calibrate too, starts with the
		// same calibrations: the active models it runs beside the shadow
		// one flag at the thresholds they have in the active instance.
		hc.LaunchArgs = p.cal.LaunchArgs
	}
	if w := p.cfg.Aggregate.Window; w > 0 && w != 30*time.Second && !hasFlag(p.cfg.PluginArgs, "aggregate-window") {
		// The plugin merges anomalies per source within the agent's
		// finding window: keep the two windows equal (its default is 30s).
		hc.Args = append(hc.Args, "-aggregate-window", w.String())
	}
	if len(p.cfg.Interfaces) == 0 && !hasFlag(p.cfg.PluginArgs, "hash-seed") {
		// Offline scans are reproducible by default; live capture keeps
		// the plugin's random seed (crafted hash collisions).
		hc.Args = append(hc.Args, "-hash-seed", strconv.FormatUint(OfflineHashSeed, 10))
	}
	hc.Env = slices.Clone(hc.Env)
	if p.cfg.ORTLib != "" {
		// The host's sandbox lets the plugin read this library's directory.
		hc.Env = append(hc.Env, "ONNXRUNTIME_LIB="+p.cfg.ORTLib)
	}
	// The plugin's sandbox (pluginhost.Sandbox): it reads its start bundles,
	// Config.Bundle and, later, whatever the pipeline stages for it (the
	// updater's models, shadow bundles): nothing else of the agent's.
	hc.Sandbox.ReadOnly = append(slices.Clone(hc.Sandbox.ReadOnly), bundles...)
	if p.extra != "" {
		hc.Sandbox.ReadOnly = append(hc.Sandbox.ReadOnly, p.extra)
	}
	if p.stageDir != "" {
		hc.Sandbox.ReadOnly = append(hc.Sandbox.ReadOnly, p.stageDir)
	}
	return hc
}

// OfflineHashSeed is the feature-table hash seed of pipelines without live
// interfaces (`vigil-agent scan`) when PluginArgs set none: offline results
// are then reproducible run after run. Live capture (any interface) keeps the
// plugin's default, a random seed, so that outsiders cannot craft packets
// whose keys collide in the feature tables (hash flooding).
const OfflineHashSeed = 0x5eed_0001

func hasFlag(args []string, name string) bool {
	for _, a := range args {
		a = strings.TrimLeft(a, "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// ModelLoaders implements the agent's ModelLoaderSource (agent/app): the
// updater hands a newly activated netflow model to this pipeline's plugin
// host, so the running plugin scores with it at once (and reloads it after a
// restart). With Config.StageBundles the bundle is first copied into the
// pipeline's world-readable stage directory, which the unprivileged plugin
// can read (the agent's state directory is private).
//
// The loader also runs shadow models (update.ShadowLoader): see shadow.go.
func (p *Pipeline) ModelLoaders() update.LoaderMap {
	return update.LoaderMap{DetectorName: &pipelineLoader{HostLoader: update.HostLoader{Host: p.host.Load(), StageDir: p.stageDir}, p: p}}
}

// Name implements pipeline.Source.
func (p *Pipeline) Name() string { return "netflow" }

// ActiveModels implements pipeline.ModelReporter.
func (p *Pipeline) ActiveModels() []*wirev1.ModelRef {
	ms := *p.models.Load()
	out := make([]*wirev1.ModelRef, len(ms))
	for i, m := range ms {
		out[i] = m.ref
	}
	return out
}

// runModel is a model the plugin runs, and its feature set.
type runModel struct {
	set string
	ref *wirev1.ModelRef
}

// setModel records that the plugin now runs m: it replaces the model of m's
// feature-set family (sdk.FeatureFamily: a nethost/v7 model takes the place
// of a nethost/v6 one in the plugin), or, when either has no feature set,
// of m's name.
func (p *Pipeline) setModel(m sdk.ModelInfo) {
	p.modMu.Lock()
	defer p.modMu.Unlock()
	ref := &wirev1.ModelRef{Name: m.Name, Version: m.Version, Digest: m.Digest, Detector: DetectorName}
	ms := slices.Clone(*p.models.Load())
	i := slices.IndexFunc(ms, func(r runModel) bool {
		if r.set != "" && m.FeatureSet != "" {
			return sdk.FeatureFamily(r.set) == sdk.FeatureFamily(m.FeatureSet)
		}
		return r.ref.GetName() == m.Name
	})
	if i < 0 {
		ms = append(ms, runModel{set: m.FeatureSet, ref: ref})
	} else {
		ms[i] = runModel{set: m.FeatureSet, ref: ref}
	}
	p.models.Store(&ms)
}

// Stats are the pipeline's counters.
type Stats struct {
	Capture   capture.Stats
	Host      pluginhost.Stats
	Anomalies uint64
	Findings  uint64
	Elapsed   time.Duration
}

// Stats returns a snapshot.
func (p *Pipeline) Stats() Stats {
	var st Stats
	p.srcMu.Lock()
	st.Capture = p.done
	for _, s := range p.sources {
		addStats(&st.Capture, s.Stats())
	}
	p.srcMu.Unlock()
	if h := p.host.Load(); h != nil {
		st.Host = h.Stats()
	}
	st.Anomalies, st.Findings = p.agg.Stats()
	if t := p.start.Load(); t != nil {
		st.Elapsed = time.Since(*t)
	}
	return st
}

func addStats(a *capture.Stats, b capture.Stats) {
	a.Packets += b.Packets
	a.Bytes += b.Bytes
	a.Decoded += b.Decoded
	a.DecodeErrors += b.DecodeErrors
	a.Truncated += b.Truncated
	a.UnknownLinkType += b.UnknownLinkType
	a.KernelDrops += b.KernelDrops
	a.OurDrops += b.OurDrops
	a.CookiesUntracked += b.CookiesUntracked
}

// Counters implements pipeline.Counters (names as the Status message uses).
func (p *Pipeline) Counters() map[string]uint64 { return p.counters(p.Stats()) }

// counters names the counters of st and of the pipeline's outbox and
// calibration.
func (p *Pipeline) counters(st Stats) map[string]uint64 {
	out := p.out.Stats()
	c := map[string]uint64{
		"captured":          st.Capture.Packets,
		"decoded":           st.Capture.Decoded,
		"decode_errors":     st.Capture.DecodeErrors,
		"unknown_link_type": st.Capture.UnknownLinkType,
		"kernel_drops":      st.Capture.KernelDrops,
		"capture_drops":     st.Capture.OurDrops,
		"cookies_untracked": st.Capture.CookiesUntracked,
		"scored":            st.Host.Scored,
		"anomalies":         st.Anomalies,
		"netflow_findings":  st.Findings,
		"plugin_restarts":   st.Host.Restarts,
		"plugin_unconfined": st.Host.Unconfined,
		"plugin_unfiltered": st.Host.Unfiltered,
		"events_lost":       st.Host.Lost(),
		"batch_errors":      st.Host.BatchErrors,
		"shadow_dropped":    p.shadowDropped.Load(),
		"shadow_anomalies":  p.shadowAnomalies.Load(),
		// the spool could not take them: failed appends, and findings
		// dropped from the full outbox
		"netflow_append_errors": out.AppendErrors,
		"netflow_findings_lost": out.Lost,
		// the plugin host: launches that failed, lines of the plugin's
		// stderr over the rate limit, anomalies of the plugin's answers
		// dropped or clamped (sdk.CheckResult)
		"plugin_start_failures":    st.Host.StartFailures,
		"plugin_log_lines_dropped": st.Host.LogLinesDropped,
		"plugin_anomalies_refused": st.Host.AnomaliesRefused,
	}
	maps.Copy(c, p.cal.Counters())
	return c
}

// Run implements pipeline.Source: it starts the plugin and the sources and
// appends findings to sink until the sources end (without Follow) or ctx
// ends. Findings still open are flushed before it returns.
func (p *Pipeline) Run(ctx context.Context, sink pipeline.Sink) error {
	now := time.Now()
	p.start.Store(&now)
	if p.stageDir != "" {
		defer os.RemoveAll(p.stageDir)
	}
	h := p.host.Load()
	if err := h.Start(ctx); err != nil {
		return fmt.Errorf("start detector plugin %s: %w", p.cfg.Plugin, err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := h.Close(cctx); err != nil {
			p.log.Warn("closing detector plugin", "err", err)
		}
	}()
	if extra := p.extra; extra != "" {
		m, err := h.LoadModel(ctx, extra)
		if err != nil {
			return fmt.Errorf("load bundle %s: %w", p.cfg.Bundle, err)
		}
		p.setModel(m)
	}
	p.running.Store(true)
	p.readyOnce.Do(func() { close(p.ready) })
	defer p.stopShadowAtEnd()
	if hl, err := h.Health(ctx); err == nil {
		p.log.Info("detector plugin ready", "pid", h.PID(), "health", hl.Message, "model", hl.Model.Name, "version", hl.Model.Version)
	}

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(p.cfg.Interfaces)+1)
	if len(p.cfg.Pcaps) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, f := range p.cfg.Pcaps {
				if err := p.readFile(rctx, f); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	for _, ifc := range p.cfg.Interfaces {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.readLive(rctx, ifc); err != nil {
				errc <- err
			}
		}()
	}
	srcDone := make(chan struct{})
	go func() { wg.Wait(); close(srcDone) }()
	if p.calibrating() {
		calDone := make(chan struct{})
		go func() {
			defer close(calDone)
			p.pollCalibration(rctx)
		}()
		defer func() { cancel(); <-calDone }()
	}

	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var prog <-chan time.Time
	if p.cfg.Progress != nil {
		pt := time.NewTicker(100 * time.Millisecond)
		defer pt.Stop()
		prog = pt.C
	}
	var runErr error
	finished := false
	for !finished {
		select {
		case <-ctx.Done():
			finished = true
		case err := <-errc:
			runErr = err
			finished = true
		case <-srcDone:
			srcDone = nil
			if !p.cfg.Follow {
				finished = true
			}
		case <-prog:
			p.cfg.Progress(p.Stats().Capture)
		case <-tick.C:
			p.flushShadow()
			p.queue(p.agg.Tick(p.lastTs.Load() - int64(2*time.Second)))
			// A spool that cannot be written (a full or failing disk) may
			// heal: detection goes on, the findings stay (bounded,
			// counted) and the next tick retries.
			_ = p.drain(ctx, sink)
		}
	}
	cancel()
	wg.Wait()
	p.stopShadowAtEnd()
	// Let the plugin score what is in the ring, then flush everything.
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	if err := h.Close(cctx); err != nil {
		p.log.Warn("closing detector plugin", "err", err)
	}
	ccancel()
	if p.cfg.Progress != nil {
		p.cfg.Progress(p.Stats().Capture)
	}
	p.queue(p.agg.Flush())
	fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer fcancel()
	if err := p.drain(fctx, sink); err != nil && runErr == nil {
		runErr = err
	}
	st := p.Stats()
	p.log.Info("packet detection stopped", "captured", st.Capture.Packets, "decoded", st.Capture.Decoded,
		"scored", st.Host.Scored, "anomalies", st.Anomalies, "findings", st.Findings,
		"plugin_restarts", st.Host.Restarts, "events_lost", st.Host.Lost())
	return runErr
}

// stage copies bundles into a new world-readable directory. Only regular
// files are copied (a symbolic link to one is followed: an admin names
// Config.Bundle), at most the bundle size limit each: a named pipe would
// otherwise hold the pipeline's start for good.
func stage(paths []string) (string, []string, error) {
	dir, err := os.MkdirTemp("", "vigil-bundles-")
	if err != nil {
		return "", nil, fmt.Errorf("stage bundles: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", nil, fmt.Errorf("stage bundles: %w", err)
	}
	out := make([]string, len(paths))
	for i, p := range paths {
		if p == "" {
			continue
		}
		b, err := fsutil.ReadRegular(p, bundle.DefaultLimits().MaxTotal)
		if err != nil {
			os.RemoveAll(dir)
			return "", nil, fmt.Errorf("stage bundle: %w", err)
		}
		out[i] = filepath.Join(dir, fmt.Sprintf("%d-%s", i, filepath.Base(p)))
		if err := os.WriteFile(out[i], b, 0o644); err != nil {
			os.RemoveAll(dir)
			return "", nil, fmt.Errorf("stage bundle: %w", err)
		}
	}
	return dir, out, nil
}

func (p *Pipeline) onResult(br sdk.BatchResult) {
	if sh := p.shadow.Load(); sh != nil {
		sh.addActive(br.Stats)
	}
	if br.Err != "" {
		if p.batchErrs.Add(1) <= 5 {
			p.log.Warn("detector failed on a batch", "start", br.Start, "end", br.End, "err", br.Err)
		}
	}
	for i := range br.Anomalies {
		p.queue(p.agg.Add(&br.Anomalies[i]))
	}
}

func (p *Pipeline) queue(fs []*wirev1.Finding) { p.out.Add(fs) }

// drain appends the pending findings to sink. A failed append keeps them
// (bounded, counted: pipeline.Outbox) for the next drain; the first failure
// of a run of them is logged, and the end of the run.
func (p *Pipeline) drain(ctx context.Context, sink pipeline.Sink) error {
	turn, err := p.out.Drain(ctx, sink)
	switch st := p.out.Stats(); turn {
	case pipeline.Failed:
		p.log.Error("cannot append findings to the spool; keeping them and retrying", "err", err,
			"pending", st.Pending, "lost", st.Lost)
	case pipeline.Recovered:
		p.log.Info("findings reach the spool again", "append_errors", st.AppendErrors, "lost", st.Lost)
	}
	return err
}

func (p *Pipeline) addSource(s capture.Source) {
	p.srcMu.Lock()
	p.sources = append(p.sources, s)
	p.srcMu.Unlock()
}

func (p *Pipeline) closeSource(s capture.Source) {
	p.srcMu.Lock()
	defer p.srcMu.Unlock()
	for i, x := range p.sources {
		if x == s {
			addStats(&p.done, s.Stats())
			p.sources = append(p.sources[:i], p.sources[i+1:]...)
			break
		}
	}
	_ = s.Close()
}

// readFile replays one capture file into the plugin.
func (p *Pipeline) readFile(ctx context.Context, path string) error {
	src, err := capture.OpenFile(path)
	if err != nil {
		return fmt.Errorf("open capture %s: %w", path, err)
	}
	p.addSource(src)
	defer p.closeSource(src)
	err = p.pump(ctx, src)
	if errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) {
		return nil
	}
	if err != nil {
		// A truncated or corrupt file: what came before was scored.
		p.log.Warn("capture file ended with an error", "file", path, "err", err)
	}
	return nil
}

// readLive captures from an interface until ctx ends.
func (p *Pipeline) readLive(ctx context.Context, iface string) error {
	opts := p.cfg.Live
	if opts.Logger == nil {
		opts.Logger = p.log
	}
	src, err := capture.OpenLive(iface, opts)
	if err != nil {
		return fmt.Errorf("capture on %s: %w", iface, err)
	}
	p.addSource(src)
	defer p.closeSource(src)
	p.log.Info("capturing", "iface", iface)
	err = p.pump(ctx, src)
	if errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) || ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("capture on %s: %w", iface, err)
}

func (p *Pipeline) pump(ctx context.Context, src capture.Source) error {
	buf := make([]event.Packet, 1024)
	for {
		n, err := src.Next(ctx, buf)
		if n > 0 {
			if ts := buf[n-1].TimestampNs; ts > p.lastTs.Load() {
				p.lastTs.Store(ts)
			}
			h := p.host.Load()
			p.pushMu.Lock()
			_, perr := h.Push(ctx, buf[:n])
			if sh := p.shadow.Load(); sh != nil {
				// The shadow never slows the active model down: what
				// its ring cannot take now is dropped and counted.
				if k := sh.host.TryPush(buf[:n]); k < n {
					p.shadowDropped.Add(uint64(n - k))
				}
			}
			p.pushMu.Unlock()
			if perr != nil {
				return perr
			}
		}
		if err != nil {
			return err
		}
	}
}

// PluginPID returns the running plugin's process id, or 0.
func (p *Pipeline) PluginPID() int {
	if h := p.host.Load(); h != nil {
		return h.PID()
	}
	return 0
}
