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
// selfcal.MaxRestored; a digest reported again is updated.
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
	for i := range 100 {
		p.remember(d(10+i), 0x3f800000)
	}
	if n := strings.Count(p.LaunchArgs()[1], "="); n != selfcal.MaxRestored {
		t.Fatalf("%d remembered, want at most %d", n, selfcal.MaxRestored)
	}
	if !strings.Contains(p.LaunchArgs()[1], d(1)) {
		t.Fatal("an early calibration was pushed out")
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
