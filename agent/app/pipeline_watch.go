package app

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/filedetect"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/update"
	"github.com/vigil-edge/vigil/agent/watch"
)

// The file-event pipeline (watcher -> fileactivity detector plugin ->
// findings) runs when `run` has folders to watch (--watch DIR, config
// "watch").
func init() { RegisterSources("fileactivity", newWatchSources) }

// Live file findings: a burst is reported a second after it qualified and
// updated every 5 s while it grows; a single anomalous file is held 2 s so
// that a burst starting in its tree can absorb it.
const (
	watchFirstAfter  = time.Second
	watchUpdateEvery = 5 * time.Second
	watchHold        = 2 * time.Second
)

func newWatchSources(env pipeline.Env) ([]pipeline.Source, error) {
	if len(env.Watch) == 0 {
		return nil, nil
	}
	s := envDirs(env).search(env.StateDir)
	inst, err := filedetect.Discover(s)
	if err != nil {
		return nil, fmt.Errorf("file detection: %w", err)
	}
	for f, err := range inst.Skipped {
		env.Log.Warn("bundle skipped", "file", f, "err", err)
	}
	// The model the updater activated (a pushed or rolled-back one, kept
	// under <state>/models/fileactivity) wins over the newest installed
	// bundle, as it does for the packet pipeline (preferActive).
	act, err := update.ActiveModels(env.StateDir)
	if err != nil {
		env.Log.Warn("active models unreadable; using the baseline bundle", "err", err)
	}
	for _, a := range act {
		if a.Detector == filedetect.DetectorName {
			inst.Bundle = detect.BundleInfo{Path: a.Path, Name: a.Manifest.Name, Version: a.Manifest.Version, FeatureSet: a.FeatureSet, Digest: a.Digest}
		}
	}
	if inst.Bundle.Path == "" {
		return nil, fmt.Errorf("file detection: %w", filedetect.ErrNoBundle)
	}
	env.Log.Info("fileactivity model", "name", inst.Bundle.Name, "version", inst.Bundle.Version, "path", inst.Bundle.Path)
	p, err := filedetect.New(filedetect.Config{
		Plugin: inst.Plugin, Bundle: inst.Bundle, ORTLib: inst.ORTLib, PluginArgs: calibrationArgs(env, "fileactivity"),
		CalibrationFile: filepath.Join(env.StateDir, CalibrationFilePrefix+"fileactivity"),
		// The plugin reads models only from the pipeline's stage directory
		// (its sandbox fixes the readable paths at its start), where the
		// updater's models go while it runs.
		StageBundle: true,
		Watch:       watch.Config{Roots: env.Watch},
		Aggregate:   filedetect.AggregatorConfig{FirstAfter: watchFirstAfter, UpdateEvery: watchUpdateEvery, Hold: watchHold},
		Logger:      env.Log.With("part", "fileactivity"),
	})
	if err != nil {
		return nil, fmt.Errorf("file detection: %w", err)
	}
	return []pipeline.Source{p}, nil
}
