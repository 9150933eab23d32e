package sdk

import "testing"

func TestFeatureFamily(t *testing.T) {
	for _, tc := range []struct {
		set, family string
		version     int
	}{
		{"nethost/v6", "nethost", 6},
		{"netflow/v1", "netflow", 1},
		{"fileactivity/v12", "fileactivity", 12},
		{"probe", "probe", 0},
		{"", "", 0},
		{"x/vz", "x", 0},
		{"x/v-1", "x", 0},
		{"x/2", "x", 0},
	} {
		if f, v := FeatureFamily(tc.set), FeatureVersion(tc.set); f != tc.family || v != tc.version {
			t.Errorf("%q: family %q version %d, want %q %d", tc.set, f, v, tc.family, tc.version)
		}
	}
}
