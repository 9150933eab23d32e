// Package app is the composition root of vigil-agent: the cobra command tree
// (enroll, run, status; further subcommands register themselves, one file
// each) and Run, which wires config, state directory, spool, the server's
// suppressions (agent/suppress), uplink, metrics and the finding sources
// together. Only agent/cmd/vigil-agent imports it (and end-to-end tests
// under test/).
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/metrics"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/spool"
	"github.com/vigil-edge/vigil/agent/state"
	"github.com/vigil-edge/vigil/agent/suppress"
	"github.com/vigil-edge/vigil/agent/uplink"
	"github.com/vigil-edge/vigil/internal/buildinfo"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

var (
	factoriesMu sync.Mutex
	factories   []namedFactory
)

type namedFactory struct {
	name string
	f    pipeline.Factory
}

// RegisterSources adds a pipeline factory that Run consults on every start
// (e.g. the capture + detector pipeline registers from an init function in
// a file of this package: app/pipeline_capture.go). Factories that find
// nothing configured return no sources.
func RegisterSources(name string, f pipeline.Factory) {
	factoriesMu.Lock()
	defer factoriesMu.Unlock()
	factories = append(factories, namedFactory{name, f})
}

// Options are Run's extension points beyond the config.
type Options struct {
	// Sources run in addition to the registered factories' sources.
	Sources []pipeline.Source
	// OnModelOffer receives model offers (the updater); nil logs them.
	OnModelOffer func(*wirev1.ModelOffer)
	// Ready, if set, is called once everything started (tests).
	Ready func(r *Running)
}

// Running exposes a running agent's parts (tests, the status endpoint).
type Running struct {
	Spool      *spool.Spool
	Uplink     *uplink.Client
	FindingsIn func() uint64
	// Suppressions is the server's suppressions set in front of the spool
	// (its Suppressed() counts the findings it dropped).
	Suppressions *suppress.Keeper
}

// countingSink counts findings on their way to the spool.
type countingSink struct {
	next pipeline.Sink
	n    atomic.Uint64
}

func (c *countingSink) Append(ctx context.Context, fs []*wirev1.Finding) error {
	if err := c.next.Append(ctx, fs); err != nil {
		return err
	}
	c.n.Add(uint64(len(fs)))
	return nil
}

// Run runs the agent until ctx ends (then it stops cleanly and returns nil)
// or a part fails. cfg must be validated.
func Run(ctx context.Context, cfg *config.Config, opts Options, log *slog.Logger) error {
	dir := state.Dir(cfg.StateDir)
	id, err := dir.ReadIdentity()
	if err != nil {
		return fmt.Errorf("run: %w (enroll first: vigil-agent enroll --server HOST:PORT --token TOKEN --ca-pin sha256:HEX --state %s)", err, cfg.StateDir)
	}
	// Check the credentials once: a key, certificate or identity that do not
	// belong together (a copied or edited identity.json) cannot heal by
	// retrying, so the agent stops with the reason instead of looping.
	if _, err := dir.LoadCredentials(); err != nil {
		return fmt.Errorf("run: credentials in %s: %w", cfg.StateDir, err)
	}
	log = log.With("agent_id", id.AgentID)
	sp, spoolAside, err := openSpool(dir.Path(state.SpoolFile), spool.Options{MaxBytes: int64(cfg.Spool.MaxBytes)}, log)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	defer func() {
		if err := sp.Close(); err != nil {
			log.Error("closing spool", "err", err)
		}
	}()
	st := sp.Stats()
	log.Info("spool open", "depth", st.Depth, "next_seq", st.NextSeq, "dropped", st.Dropped, "capacity_bytes", st.CapacityBytes)
	counted := &countingSink{next: sp}
	// The server's false-positive suppressions drop matching findings before
	// the spool; the set kept in the state directory applies from the start.
	sups := suppress.Open(dir.Path(suppress.FileName), counted, log.With("part", "suppress"))
	var sink pipeline.Sink = sups

	sources := append([]pipeline.Source(nil), opts.Sources...)
	env := pipeline.Env{Log: log, StateDir: cfg.StateDir, Interfaces: cfg.Capture.Interfaces, Pcaps: cfg.Capture.Pcaps, Watch: cfg.Watch,
		PluginDirs: cfg.PluginDirs, ModelDirs: cfg.ModelDirs,
		Calibrate: cfg.Calibration.Grace.D(), CalibrateQuantile: cfg.Calibration.Quantile,
		BeaconIntervals: cfg.Capture.BeaconIntervals}
	factoriesMu.Lock()
	fs := append([]namedFactory(nil), factories...)
	factoriesMu.Unlock()
	for _, f := range fs {
		ss, err := f.f(env)
		if err != nil {
			return fmt.Errorf("run: pipeline %s: %w", f.name, err)
		}
		sources = append(sources, ss...)
	}
	if cfg.Demo.Rate > 0 {
		sources = append(sources, NewDemoGenerator(cfg.Demo.Rate, log))
	}
	if len(sources) == 0 {
		log.Warn("no finding sources configured: the agent only ships what is already spooled")
	}

	var upd *agentUpdater // set below, before the counters are read
	counters := func() map[string]uint64 {
		out := map[string]uint64{"findings_in": counted.n.Load(), "findings_suppressed": sups.Suppressed(),
			"spool_corrupt_files": uint64(spoolAside)}
		if upd != nil {
			out["model_status_dropped"] = upd.statusDropped.Load()
		}
		for _, s := range sources {
			if c, ok := s.(pipeline.Counters); ok {
				maps.Copy(out, c.Counters())
			}
		}
		return out
	}
	upd, err = newUpdater(cfg.StateDir, cfg.Update.TrustSeed, dirsOf(cfg.PluginDirs, cfg.ModelDirs), sources, true, log.With("part", "update"))
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	upd.shadowEvery = cfg.Update.ShadowReportInterval.D()
	onOffer := opts.OnModelOffer
	if onOffer == nil {
		onOffer = upd.u.HandleOffer
	}
	models := func() []*wirev1.ModelRef { return reportedModels(upd.activeRefs(cfg.StateDir), sources) }
	up, err := uplink.New(uplink.Config{
		Server:            cfg.Server,
		Spool:             sp,
		Credentials:       dir,
		Log:               log.With("part", "uplink"),
		StatusInterval:    cfg.Uplink.StatusInterval.D(),
		BatchMax:          cfg.Uplink.BatchMax,
		Inflight:          cfg.Uplink.Inflight,
		BackoffMin:        cfg.Uplink.BackoffMin.D(),
		BackoffMax:        cfg.Uplink.BackoffMax.D(),
		Counters:          counters,
		ActiveModels:      models,
		ShadowRollouts:    upd.shadowRollouts,
		OnModelOffer:      onOffer,
		OnModelWithdrawal: upd.u.HandleWithdrawal,
		OnSuppressions:    sups.Update,
		ModelStatus:       upd.status,
		StatusFile:        dir.Path(uplink.StatusFile),
		Interfaces:        cfg.Capture.Interfaces,
	})
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}

	// Sources stop first, then the uplink and metrics, then the spool closes.
	srcCtx, stopSources := context.WithCancel(ctx)
	defer stopSources()
	coreCtx, stopCore := context.WithCancel(context.Background())
	defer stopCore()

	errc := make(chan error, len(sources)+2)
	var srcWG, coreWG sync.WaitGroup
	for _, s := range sources {
		srcWG.Add(1)
		go func() {
			defer srcWG.Done()
			log.Info("source started", "source", s.Name())
			if err := s.Run(srcCtx, sink); err != nil && srcCtx.Err() == nil {
				errc <- fmt.Errorf("source %s: %w", s.Name(), err)
			}
		}()
	}
	// The updater loads models into the sources' plugins: it stops before them, so that an
	// install cut short by the shutdown is not reported as a (final) rejection.
	updCtx, stopUpdater := context.WithCancel(coreCtx)
	defer stopUpdater()
	var updWG sync.WaitGroup
	updWG.Add(1)
	go func() {
		defer updWG.Done()
		upd.run(updCtx)
	}()
	coreWG.Add(1)
	go func() {
		defer coreWG.Done()
		if err := up.Run(coreCtx); err != nil {
			errc <- err
		}
	}()
	if cfg.Metrics.Listen != "off" {
		ms := metrics.Sources{
			Spool: sp.Stats, Uplink: up.Stats, FindingsIn: counted.n.Load, Suppressed: sups.Suppressed, Counters: counters,
			AgentID: id.AgentID, Entity: id.Entity, Version: buildinfo.Version,
		}
		coreWG.Add(1)
		go func() {
			defer coreWG.Done()
			if err := metrics.Serve(coreCtx, cfg.Metrics.Listen, ms, log); err != nil {
				errc <- err
			}
		}()
	}
	log.Info("agent running", "version", buildinfo.Version, "entity", id.Entity, "sources", len(sources))
	if opts.Ready != nil {
		opts.Ready(&Running{Spool: sp, Uplink: up, FindingsIn: counted.n.Load, Suppressions: sups})
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("stopping")
	case runErr = <-errc:
		log.Error("agent part failed", "err", runErr)
	}
	stopUpdater()
	waitTimeout(&updWG, 10*time.Second, log, "updater")
	stopSources()
	// A source flushes its last findings into the spool while it stops: the
	// packet pipeline gives its plugin up to 30 s to score what its ring
	// holds, then appends with 10 s to spare; the file pipeline up to 35 s.
	// The spool must stay open until then.
	srcStopped := waitTimeout(&srcWG, sourceStopTimeout, log, "sources")
	// Let the uplink ship what the sources flushed last, briefly.
	drainUntil := time.Now().Add(2 * time.Second)
	for runErr == nil && up.Stats().Connected && sp.Stats().Depth > 0 && time.Now().Before(drainUntil) {
		time.Sleep(50 * time.Millisecond)
	}
	stopCore()
	waitTimeout(&coreWG, 10*time.Second, log, "uplink and metrics")
	st = sp.Stats()
	log.Info("stopped", "spool_depth", st.Depth, "dropped", st.Dropped)
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return fmt.Errorf("run: %w", runErr)
	}
	if !srcStopped {
		// The spool closes under them: what they append now is lost.
		return fmt.Errorf("run: sources did not stop within %s: their last findings may be lost", sourceStopTimeout)
	}
	return nil
}

// sourceStopTimeout bounds how long Run waits for its sources to stop (and
// flush) before it closes the spool; the systemd unit's TimeoutStopSec
// leaves room for it.
var sourceStopTimeout = 45 * time.Second

// waitTimeout waits for wg at most d; it reports whether wg finished.
func waitTimeout(wg *sync.WaitGroup, d time.Duration, log *slog.Logger, what string) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		log.Warn("parts did not stop in time", "parts", what, "timeout", d)
		return false
	}
}

// reportedModels are the active models Hello and Status report: what each
// running pipeline's plugin runs (it follows the updater's activations,
// ModelLoaderSource), then the updater's active models of the detectors no
// running pipeline serves. Each model once: an activated model that a
// pipeline runs is not reported twice, and a model a pipeline no longer runs
// is not reported beside its successor.
func reportedModels(activated []*wirev1.ModelRef, sources []pipeline.Source) []*wirev1.ModelRef {
	var out []*wirev1.ModelRef
	served := map[string]bool{}
	for _, s := range sources {
		if m, ok := s.(pipeline.ModelReporter); ok {
			for _, r := range m.ActiveModels() {
				served[r.GetDetector()] = true
				out = append(out, r)
			}
		}
	}
	for _, r := range activated {
		if !served[r.GetDetector()] {
			out = append(out, r)
		}
	}
	return out
}
