package detect

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// TestCalibratedArgs: the calibrations a restarted plugin is given back are
// those the plugin reported with a valid digest and value, sorted, at most
// maxCalibrated; a digest reported again is updated.
func TestCalibratedArgs(t *testing.T) {
	var p Pipeline
	if a := p.calibratedArgs(); a != nil {
		t.Fatalf("nothing seen yet: %v", a)
	}
	d := func(i int) string { return fmt.Sprintf("sha256:%064x", i) }
	p.rememberCalibrated(d(2), 0x3d4eeb9c)
	p.rememberCalibrated(d(1), 0x3f800000)
	p.rememberCalibrated(d(2), 0x3d000000) // updated
	for _, bad := range []struct {
		digest string
		bits   uint64
	}{
		{"sha256:" + strings.Repeat("A", 64), 1},
		{"sha256:abc", 1},
		{d(3), 0},
		{d(3), 1 << 32},
		{"md5:" + strings.Repeat("a", 64), 1},
	} {
		p.rememberCalibrated(bad.digest, bad.bits)
	}
	want := []string{"-calibrated", d(1) + "=3f800000," + d(2) + "=3d000000"}
	if got := p.calibratedArgs(); !reflect.DeepEqual(got, want) {
		t.Fatalf("args %q, want %q", got, want)
	}
	for i := range 100 {
		p.rememberCalibrated(d(10+i), 0x3f800000)
	}
	if n := strings.Count(p.calibratedArgs()[1], "="); n != maxCalibrated {
		t.Fatalf("%d remembered, want at most %d", n, maxCalibrated)
	}
	if !strings.Contains(p.calibratedArgs()[1], d(1)) {
		t.Fatal("an early calibration was pushed out")
	}
}
