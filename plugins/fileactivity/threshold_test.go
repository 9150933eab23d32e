package fileactivity

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/bundle/bundletest"
)

// TestLoadModelRefusesNarrowedThreshold: scores are float32, and the
// manifest's float64 threshold used to be narrowed without a check: 1e-50
// became 0 (every event flagged), 1e300 +Inf (none). A signed bundle can
// carry either; the detector refuses to load it.
func TestLoadModelRefusesNarrowedThreshold(t *testing.T) {
	lib := ortLib(t)
	b, err := bundle.Read(baseline(t), bundle.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		thr  float64
		want string
	}{
		{"underflows to 0", 1e-50, "below float32's smallest value"},
		{"overflows to +Inf", 1e300, "above float32's largest value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := b.Manifest
			m.Threshold = tc.thr
			path := bundletest.WriteUnchecked(t, t.TempDir(), b.Model, &m)
			d := New(nil, Options{ORTLib: lib})
			defer d.Close()
			info, err := d.LoadModel(context.Background(), path)
			if err == nil {
				t.Fatalf("loaded threshold %g as %g", tc.thr, info.Threshold)
			}
			if !errors.Is(err, bundle.ErrThreshold) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q: want bundle.ErrThreshold mentioning %q", err, tc.want)
			}
			if d.model.Load() != nil {
				t.Fatal("a model became active")
			}
		})
	}
}

// TestCalibrationRestoredRefusesUnusable: a restored calibration
// (Options.Calibrated, from the agent's -calibrated) becomes the threshold;
// one that is not a finite positive number is refused: the model observes
// again at its own threshold instead of flagging nothing (+Inf, NaN) or
// starting calibrated on garbage.
func TestCalibrationRestoredRefusesUnusable(t *testing.T) {
	lib := ortLib(t)
	ctx := context.Background()
	probe := New(nil, Options{ORTLib: lib})
	defer probe.Close()
	info, err := probe.LoadModel(ctx, baseline(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		v    float32
	}{
		{"+Inf", float32(math.Inf(1))},
		{"NaN", float32(math.NaN())},
		{"zero", 0},
		{"negative", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := New(nil, Options{ORTLib: lib, Calibrate: time.Hour, Calibrated: map[string]float32{info.Digest: tc.v}})
			defer d.Close()
			if _, err := d.LoadModel(ctx, baseline(t)); err != nil {
				t.Fatal(err)
			}
			m := d.model.Load()
			if m.calibrated || !m.observing || m.thr != info.Threshold {
				t.Fatalf("restored %v: calibrated %v observing %v threshold %g (model's %g)", tc.v, m.calibrated, m.observing, m.thr, info.Threshold)
			}
		})
	}
}
