package app

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/update"
	"github.com/vigil-edge/vigil/plugins/sdk"
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
	s := envDirs(env).search(env.StateDir)
	inst, err := detect.Discover(s)
	if err != nil {
		return nil, fmt.Errorf("packet detection: %w", err)
	}
	for f, err := range inst.Skipped {
		env.Log.Warn("bundle skipped", "file", f, "err", err)
	}
	act, err := update.ActiveModels(env.StateDir)
	if err != nil {
		env.Log.Warn("active models unreadable; using the baseline bundles", "err", err)
	}
	inst.Bundles = preferActive(inst.Bundles, act)
	if len(inst.Bundles) == 0 {
		return nil, fmt.Errorf("packet detection: %w", detect.ErrNoBundle)
	}
	for _, b := range inst.Bundles {
		env.Log.Info("netflow model", "name", b.Name, "version", b.Version, "feature_set", b.FeatureSet, "path", b.Path)
	}
	args := calibrationArgs(env, "netflow")
	if env.BeaconIntervals != 0 {
		// Only when set: the arguments are also the key of the saved
		// calibrations, which a default configuration keeps.
		args = append(args, "-beacon-intervals", strconv.Itoa(env.BeaconIntervals))
	}
	p, err := detect.New(detect.Config{
		Plugin: inst.Plugin, Bundles: inst.Bundles, ORTLib: inst.ORTLib, PluginArgs: args,
		CalibrationFile: filepath.Join(env.StateDir, CalibrationFilePrefix+"netflow"),
		Pcaps:           env.Pcaps, Interfaces: env.Interfaces, Follow: true,
		// The plugin reads models only from the pipeline's stage
		// directory: it receives the updater's models while it runs, and
		// its sandbox (pluginhost.Sandbox) lets it read only the paths
		// fixed at its start; a plugin running as nobody (SwitchesUser)
		// could not read the private state directory anyway. The bundles
		// are a few kilobytes.
		StageBundles: true,
		Aggregate:    detect.AggregatorConfig{FirstAfter: liveFirstAfter, UpdateEvery: liveUpdateEvery},
		Logger:       env.Log.With("part", "netflow"),
	})
	if err != nil {
		return nil, fmt.Errorf("packet detection: %w", err)
	}
	return []pipeline.Source{p}, nil
}

// CalibrationFilePrefix and the detector's name make the state file that
// keeps a pipeline's per-sensor calibrations across agent restarts.
const CalibrationFilePrefix = "calibration-"

// calibrationArgs are a detector plugin's per-sensor calibration arguments
// (none when calibration is off).
func calibrationArgs(env pipeline.Env, detector string) []string {
	if env.Calibrate <= 0 {
		return nil
	}
	env.Log.Info("per-sensor calibration: observing local activity before flagging", "detector", detector,
		"grace", env.Calibrate, "quantile", env.CalibrateQuantile)
	return []string{"-calibrate", env.Calibrate.String(), "-calibrate-quantile", strconv.FormatFloat(env.CalibrateQuantile, 'g', -1, 64)}
}

// preferActive replaces, per feature-set family (sdk.FeatureFamily: the
// plugin runs one model per family), the discovered (baseline) bundle with
// the model the updater activated for the netflow detector
// (<state>/models/netflow/active-<slot>), and adds active models of families
// without a baseline. The updater's slots are per feature set: of a family's
// active models (a nethost/v6 one, then a nethost/v7 one rolled out) the
// newest feature-set version runs. An active model wins over a baseline of a
// newer feature set: it is the CERT's latest choice for this sensor.
func preferActive(found []detect.BundleInfo, act []update.Active) []detect.BundleInfo {
	var actives []detect.BundleInfo
	for _, a := range act {
		if a.Detector == detect.DetectorName {
			actives = append(actives, detect.BundleInfo{Path: a.Path, Name: a.Manifest.Name, Version: a.Manifest.Version, FeatureSet: a.FeatureSet, Digest: a.Digest})
		}
	}
	actives = detect.OnePerFamily(actives)
	byFamily := map[string]detect.BundleInfo{}
	for _, b := range detect.OnePerFamily(found) {
		byFamily[sdk.FeatureFamily(b.FeatureSet)] = b
	}
	for _, b := range actives {
		byFamily[sdk.FeatureFamily(b.FeatureSet)] = b
	}
	out := make([]detect.BundleInfo, 0, len(byFamily))
	for _, b := range byFamily {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b detect.BundleInfo) int { return strings.Compare(b.FeatureSet, a.FeatureSet) })
	return out
}
