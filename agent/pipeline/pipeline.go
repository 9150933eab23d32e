// Package pipeline is the contract between the parts of the agent that
// produce findings (capture + detector plugins, file watchers, the demo
// generator) and the agent core that stores and ships them. It holds only
// interfaces and a tiny adapter so that producers need not import the core.
package pipeline

import (
	"context"
	"log/slog"
	"time"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Sink receives findings. The spool implements it: Append assigns seqs and
// commits the batch durably before it returns.
type Sink interface {
	Append(ctx context.Context, findings []*wirev1.Finding) error
}

// Source produces findings into sink until ctx ends. Run returns nil when
// ctx is cancelled; an error ends the agent (`run` exits non-zero), so a
// source that can recover (a plugin that crashed) must do so itself.
type Source interface {
	Name() string
	Run(ctx context.Context, sink Sink) error
}

// Counters is optionally implemented by a Source: its counters are added to
// the Status messages sent to the server (captured, kernel_drops,
// plugin_restarts, events_lost, ...), prefixed by nothing: keep names unique.
type Counters interface {
	Counters() map[string]uint64
}

// ModelReporter is optionally implemented by a Source that loads models: the
// active models go into Hello and Status.
type ModelReporter interface {
	ActiveModels() []*wirev1.ModelRef
}

// Env is what a source factory gets to build its sources.
type Env struct {
	Log        *slog.Logger
	StateDir   string
	Interfaces []string // --iface / capture.interfaces
	Pcaps      []string // --pcap / capture.pcaps
	Watch      []string // --watch / watch
	PluginDirs []string // plugin_dirs: where detector plugins are searched
	ModelDirs  []string // model_dirs: where model bundles are searched
	// Calibrate and CalibrateQuantile: per-sensor calibration of the
	// detectors (calibration.grace and .quantile; 0: none).
	Calibrate         time.Duration
	CalibrateQuantile float64
	// BeaconIntervals is capture.beacon_intervals (0: the netflow plugin's
	// default; -1: no beacon rule).
	BeaconIntervals int
}

// Factory builds the sources a pipeline package contributes for this run
// (none if its inputs are not configured).
type Factory func(env Env) ([]Source, error)

// SinkFunc adapts a function to Sink.
type SinkFunc func(ctx context.Context, findings []*wirev1.Finding) error

// Append calls f.
func (f SinkFunc) Append(ctx context.Context, findings []*wirev1.Finding) error {
	return f(ctx, findings)
}
