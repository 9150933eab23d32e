package app

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/state"
	"github.com/vigil-edge/vigil/agent/update"
	"github.com/vigil-edge/vigil/models/bundle"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// ModelLoaderSource is implemented by a pipeline source that runs detector plugins (the packet
// pipeline): the updater hands activated models to those plugins, so the live pipeline scores
// with them at once. Detectors no source serves are checked by starting their plugin for the
// update only (update.PluginLoaders), and picked up by the pipeline at its next start from
// <state>/models (update.ActiveModels).
type ModelLoaderSource interface {
	ModelLoaders() update.LoaderMap
}

// failpointEnv names an update step at which the agent kills itself with SIGKILL (fault tests
// only; honoured only when VIGIL_TEST_FAILPOINTS=1 too).
const failpointEnv = "VIGIL_UPDATE_FAILPOINT"

// agentUpdater is the updater of a running agent.
type agentUpdater struct {
	u      *update.Updater
	status chan *wirev1.ModelStatus // read by the uplink, connected or not
	// statusDropped counts reports the full status channel refused (the
	// uplink drains it at once: only when it is not running).
	statusDropped atomic.Uint64
	log           *slog.Logger
	// shadowEvery is the shadow summary's report interval (config
	// update.shadow_report_interval; default config.DefaultShadowReportInterval).
	shadowEvery time.Duration
}

func pluginEnv() []string {
	var env []string
	if v := os.Getenv("ONNXRUNTIME_LIB"); v != "" {
		env = append(env, "ONNXRUNTIME_LIB="+v)
	}
	return env
}

// newUpdater builds the updater of `run` (or of `update`, with fetch == false).
func newUpdater(stateDir, trustSeed string, dirs searchDirs, sources []pipeline.Source, fetch bool, log *slog.Logger) (*agentUpdater, error) {
	running := update.LoaderMap{}
	for _, s := range sources {
		if ls, ok := s.(ModelLoaderSource); ok {
			for k, v := range ls.ModelLoaders() {
				running[k] = v
			}
		}
	}
	a := &agentUpdater{status: make(chan *wirev1.ModelStatus, 256), log: log, shadowEvery: config.DefaultShadowReportInterval}
	cfg := update.Config{
		StateDir:  stateDir,
		TrustSeed: trustSeed,
		Loaders:   &update.PluginLoaders{Dirs: dirs.pluginDirs(), Env: pluginEnv(), Running: running, Logger: log},
		Baseline:  installedBaseline(baselineDirs(stateDir, dirs)),
		Logger:    log,
		Report: func(st *wirev1.ModelStatus) {
			select {
			case a.status <- st:
			default:
				if a.statusDropped.Add(1) == 1 {
					log.Warn("model status report dropped: the uplink takes none (counter model_status_dropped)",
						"rollout", st.GetRolloutId(), "state", st.GetState())
				}
			}
		},
	}
	if fetch {
		cfg.Fetcher = &update.QUICFetcher{Dir: state.Dir(stateDir)}
	}
	if step := os.Getenv(failpointEnv); step != "" && os.Getenv("VIGIL_TEST_FAILPOINTS") == "1" {
		cfg.Failpoint = func(s update.Step) error {
			if string(s) == step {
				log.Warn("test failpoint: killing the agent", "step", s)
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				time.Sleep(time.Minute)
			}
			return nil
		}
	}
	u, err := update.New(cfg)
	if err != nil {
		return nil, err
	}
	a.u = u
	act, err := u.Recover()
	if err != nil {
		return nil, err
	}
	if fetch { // the running agent: no shadow model runs yet, so one left in shadow/ is stale
		if err := u.RemoveStaleShadows(); err != nil {
			log.Warn("stale shadow bundles not removed", "err", err)
		}
	}
	for _, m := range act {
		log.Info("active model", "detector", m.Detector, "feature_set", m.FeatureSet, "name", m.Manifest.Name,
			"version", m.Manifest.Version, "path", m.Path)
	}
	return a, nil
}

// shadowRollouts lists the rollout of the running shadow model, if any (Hello.shadow_rollouts).
func (a *agentUpdater) shadowRollouts() []string {
	if rid, _, on := a.u.ShadowRunning(); on && rid != "" {
		return []string{rid}
	}
	return nil
}

// run processes offers and withdrawals and sends the shadow summary every shadowEvery until ctx
// ends.
func (a *agentUpdater) run(ctx context.Context) {
	every := a.shadowEvery
	if every <= 0 {
		every = config.DefaultShadowReportInterval
	}
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				a.u.ShadowReport()
			}
		}
	}()
	_ = a.u.Run(ctx)
}

// activeRefs are the updater's active models, for Hello and Status.
func (a *agentUpdater) activeRefs(stateDir string) []*wirev1.ModelRef {
	act, err := update.ActiveModels(stateDir)
	if err != nil {
		return nil
	}
	out := make([]*wirev1.ModelRef, 0, len(act))
	for _, m := range act {
		out = append(out, &wirev1.ModelRef{Name: m.Manifest.Name, Version: m.Manifest.Version, Digest: m.Digest, Detector: m.Detector})
	}
	return out
}

// baselineDirs are the directories the detector pipelines take their installed (baseline) bundles
// from, in the order detect.Discover searches them for newPacketSources: models/ next to the agent
// binary, <state>/models, then the configured model_dirs (default detect.DefaultModelDirs).
func baselineDirs(stateDir string, d searchDirs) []string {
	var dirs []string
	if exe := update.ExeDir(); exe != "" {
		dirs = append(dirs, filepath.Join(exe, "models"))
	}
	dirs = append(dirs, filepath.Join(stateDir, update.ModelsDir))
	return append(dirs, d.models...)
}

// installedBaseline is update.Config.Baseline: the newest bundle of the detector and feature set in
// dirs, i.e. the installed bundle a pipeline of that detector runs when the slot has no active
// model. The updater takes its version as a floor, for every detector: also in `vigil-agent
// update` and for detectors no running pipeline serves (their plugin starts for the update only).
// Before session 25 those had no floor from the baseline, and an older signed bundle activated
// there ran in place of the installed one from the pipeline's next start. A model without a
// previous one that fails its health check is rolled back to the baseline: loaded into the
// pipeline's plugin, or into the plugin started for the update, which stops with it.
func installedBaseline(dirs []string) func(detector, featureSet string) string {
	return func(detector, featureSet string) string {
		var best string
		var bestVersion uint64
		for _, d := range dirs {
			files, _ := filepath.Glob(filepath.Join(d, "*"+bundle.Extension))
			for _, f := range files {
				b, err := bundle.Read(f, bundle.DefaultLimits())
				if err != nil || b.Manifest.Detector != detector || b.Manifest.FeatureSet != featureSet {
					continue
				}
				if best == "" || b.Manifest.Version > bestVersion {
					best, bestVersion = f, b.Manifest.Version
				}
			}
		}
		return best
	}
}
