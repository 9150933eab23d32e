package app

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/pipeline"
)

// The packet pipeline (capture -> netflow detector plugin -> findings) runs
// when `run` has interfaces or pcaps to read.
func init() { RegisterSources("netflow", newPacketSources) }

// Live findings: a new one is reported a second after its first anomalous
// packet and updated every 5 s while it grows (see detect.Aggregator).
const (
	liveFirstAfter  = time.Second
	liveUpdateEvery = 5 * time.Second
)

func newPacketSources(env pipeline.Env) ([]pipeline.Source, error) {
	if len(env.Interfaces) == 0 && len(env.Pcaps) == 0 {
		return nil, nil
	}
	s := detect.Search{ModelDirs: append([]string{filepath.Join(env.StateDir, "models")}, detect.DefaultModelDirs...)}
	inst, err := detect.Discover(s)
	if err != nil {
		return nil, fmt.Errorf("packet detection: %w", err)
	}
	for f, err := range inst.Skipped {
		env.Log.Warn("bundle skipped", "file", f, "err", err)
	}
	if len(inst.Bundles) == 0 {
		return nil, fmt.Errorf("packet detection: %w", detect.ErrNoBundle)
	}
	for _, b := range inst.Bundles {
		env.Log.Info("netflow model", "name", b.Name, "version", b.Version, "feature_set", b.FeatureSet, "path", b.Path)
	}
	p, err := detect.New(detect.Config{
		Plugin: inst.Plugin, Bundles: inst.Bundles, ORTLib: inst.ORTLib,
		Pcaps: env.Pcaps, Interfaces: env.Interfaces, Follow: true,
		Aggregate: detect.AggregatorConfig{FirstAfter: liveFirstAfter, UpdateEvery: liveUpdateEvery},
		Logger:    env.Log.With("part", "netflow"),
	})
	if err != nil {
		return nil, fmt.Errorf("packet detection: %w", err)
	}
	return []pipeline.Source{p}, nil
}
