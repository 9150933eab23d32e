package detect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/selfcal"
)

// TestCalibratedArgs: the calibrations a restarted plugin is given back are
// those the plugin reported with a valid digest and value, sorted, at most
// selfcal.MaxRestored, the most recently reported; a digest reported again
// is updated.
func TestCalibratedArgs(t *testing.T) {
	var p Calibration
	if a := p.LaunchArgs(); a != nil {
		t.Fatalf("nothing seen yet: %v", a)
	}
	d := func(i int) string { return fmt.Sprintf("sha256:%064x", i) }
	p.remember(d(2), 0x3d4eeb9c)
	p.remember(d(1), 0x3f800000)
	p.remember(d(2), 0x3d000000) // updated
	for _, bad := range []struct {
		digest string
		bits   uint64
	}{
		{"sha256:" + strings.Repeat("A", 64), 1},
		{"sha256:abc", 1},
		{d(3), 0},
		{d(3), 1 << 32},
		{d(3), 0x7fc00000}, // NaN
		{d(3), 0x7f800000}, // +Inf
		{d(3), 0xbf800000}, // -1
		{"md5:" + strings.Repeat("a", 64), 1},
	} {
		p.remember(bad.digest, bad.bits)
	}
	want := []string{"-calibrated", d(1) + "=3f800000," + d(2) + "=3d000000"}
	if got := p.LaunchArgs(); !reflect.DeepEqual(got, want) {
		t.Fatalf("args %q, want %q", got, want)
	}
	// What the agent passes, the plugin accepts.
	if r, err := selfcal.ParseRestored(want[1]); err != nil || len(r) != 2 {
		t.Fatalf("the plugin refuses the agent's -calibrated: %v %v", r, err)
	}
	// Beyond MaxRestored models (a long-running sensor, one per update),
	// the newest win: the plugin runs the model it calibrated last, and
	// the one it would need back after a restart (keeping the first ones
	// lost it, and a restart silenced the sensor for a grace period). A
	// model the plugin still runs (d(2), reported at every poll) stays.
	for i := range 100 {
		p.remember(d(10+i), 0x3f800000)
		p.remember(d(2), 0x3d000000)
	}
	args := p.LaunchArgs()[1]
	if n := strings.Count(args, "="); n != selfcal.MaxRestored {
		t.Fatalf("%d remembered, want %d", n, selfcal.MaxRestored)
	}
	for i := 100 - selfcal.MaxRestored + 1; i < 100; i++ {
		if !strings.Contains(args, d(10+i)) {
			t.Fatalf("recent calibration %d of 100 forgotten: %s", i, args)
		}
	}
	if !strings.Contains(args, d(2)) {
		t.Fatal("the calibration of a model still reported was pushed out")
	}
	if strings.Contains(args, d(1)) || strings.Contains(args, d(10)) {
		t.Fatal("the oldest calibrations were kept")
	}
	if r, err := selfcal.ParseRestored(args); err != nil || len(r) != selfcal.MaxRestored {
		t.Fatalf("the plugin refuses the agent's -calibrated: %v %v", len(r), err)
	}
}

// TestCalibrationRead: of a plugin's Health stats, the calibration ones
// become counters, the exact quantiles by digest are kept for a restart (and
// not forwarded), the rest is ignored; a failed Health call keeps the last
// state.
func TestCalibrationRead(t *testing.T) {
	d := fmt.Sprintf("sha256:%064x", 7)
	stats := map[string]uint64{
		"scored": 10, "anomalies": 2, "threshold_micro": 5,
		"calibrated_nethost/v3": 1, "model_threshold_micro_nethost/v3": 50518, "threshold_micro_nethost/v3": 90686,
		"calibration_local_micro_nethost/v3": 90686, "calibration_samples_nethost/v3": 1079,
		selfcal.BitsPrefix + d: 0x3db9b9b9,
	}
	var c Calibration
	ok := func(context.Context) (sdk.Health, error) { return sdk.Health{Stats: stats}, nil }
	c.Read(context.Background(), ok, slog.New(slog.DiscardHandler))
	want := map[string]uint64{
		"calibrated_nethost/v3": 1, "model_threshold_micro_nethost/v3": 50518, "threshold_micro_nethost/v3": 90686,
		"calibration_local_micro_nethost/v3": 90686, "calibration_samples_nethost/v3": 1079,
	}
	if got := c.Counters(); !reflect.DeepEqual(got, want) {
		t.Fatalf("counters %v, want %v", got, want)
	}
	if got := c.LaunchArgs(); !reflect.DeepEqual(got, []string{"-calibrated", d + "=3db9b9b9"}) {
		t.Fatalf("launch args %q", got)
	}
	c.Read(context.Background(), func(context.Context) (sdk.Health, error) { return sdk.Health{}, errors.New("down") }, nil)
	if got := c.Counters(); !reflect.DeepEqual(got, want) {
		t.Fatalf("after a failed read: %v", got)
	}
}

// TestCalibrationReadBounded: a plugin reporting thousands of calibration
// stats, or very long names, cannot inflate the agent's Status beyond what
// the server accepts.
func TestCalibrationReadBounded(t *testing.T) {
	stats := map[string]uint64{"calibrated_" + strings.Repeat("x", 200): 1}
	for i := range 5000 {
		stats[fmt.Sprintf("calibrated_set%d/v1", i)] = 1
		stats[fmt.Sprintf("%ssha256:%064x", selfcal.BitsPrefix, i)] = 0x3f800000
	}
	var c Calibration
	c.Read(context.Background(), func(context.Context) (sdk.Health, error) { return sdk.Health{Stats: stats}, nil }, nil)
	got := c.Counters()
	if len(got) != maxCalibrationStats {
		t.Fatalf("%d counters kept, want %d", len(got), maxCalibrationStats)
	}
	for k := range got {
		if len(k) > maxCalibrationKey {
			t.Fatalf("kept a %d-byte name", len(k))
		}
	}
	if n := strings.Count(c.LaunchArgs()[1], "="); n != selfcal.MaxRestored {
		t.Fatalf("%d calibrations remembered, want %d", n, selfcal.MaxRestored)
	}
}

// TestCalibrationLogBounded: the calibrations logged are remembered per
// feature set (each logged once, again when it changes), and a plugin
// naming new sets at every poll cannot grow that memory.
func TestCalibrationLogBounded(t *testing.T) {
	var buf strings.Builder
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var c Calibration
	read := func(stats map[string]uint64) {
		c.Read(context.Background(), func(context.Context) (sdk.Health, error) { return sdk.Health{Stats: stats}, nil }, log)
	}
	one := map[string]uint64{"calibrated_nethost/v6": 1, "calibration_samples_nethost/v6": 100, "calibration_local_micro_nethost/v6": 5}
	read(one)
	read(one)
	if n := strings.Count(buf.String(), "calibration done"); n != 1 {
		t.Fatalf("one calibration logged %d times:\n%s", n, buf.String())
	}
	one["calibration_local_micro_nethost/v6"] = 6
	read(one)
	if n := strings.Count(buf.String(), "calibration done"); n != 2 {
		t.Fatalf("a new calibration of the set logged %d times in all", n-1)
	}
	for r := range 200 {
		st := map[string]uint64{}
		for i := range maxCalibrationStats {
			st[fmt.Sprintf("calibrated_set%d-%d/v1", r, i)] = 1
		}
		read(st)
		if len(c.logged) > maxCalibrationLog {
			t.Fatalf("read %d: %d logged calibrations remembered, want at most %d", r, len(c.logged), maxCalibrationLog)
		}
	}
}
